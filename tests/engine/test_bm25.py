"""Qdrant's server-side BM25 (`qdrant/bm25`) run through qdrant-edge: vectors checked by hand against the
formula and mmh3 token ids, the option translation, error texts, and agreement with fastembed's Bm25.

Pure unit tests: no Django, no installed models, no files.
"""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mmh3
import pytest

from inference.engine.bm25 import Bm25Runner, bm25_model, count_words
from inference.engine.types import (
    EmbedRequest,
    EmbedResult,
    InputType,
    InvalidInput,
    Kind,
    ModelSpec,
    Output,
    Runtime,
    SparseVector,
)

MODEL = "qdrant/bm25"
SPEC = ModelSpec(
    name=MODEL,
    runtime=Runtime.BM25,
    output=Output.SPARSE,
    input_type=InputType.TEXT,
    dim=None,
    context_window=None,
    pooling="none",
    normalize=False,
)
NO_STEM = {"type": "none"}


def tid(token: str) -> int:
    """The expected index of a token, straight from mmh3 (murmur3_32, seed 0, as i32, absolute value)."""
    return abs(mmh3.hash(token, seed=0, signed=True))


def tf(n: int, doc_len: int, k: float = 1.2, b: float = 0.75, avg_len: float = 256.0) -> float:
    """BM25 document weight: n(k+1) / (n + k(1 - b + b|d|/avg_len))."""
    return n * (k + 1) / (n + k * (1 - b + b * doc_len / avg_len))


@pytest.fixture
def runner() -> Bm25Runner:
    # model_dir is not read any more: a path that does not exist proves it.
    return Bm25Runner(SPEC, Path("/nonexistent/bm25"))


def embed(
    runner: Bm25Runner,
    text: Any,
    kind: Kind = Kind.DOCUMENT,
    input_type: InputType = InputType.TEXT,
    **options: Any,
) -> EmbedResult:
    request = EmbedRequest(MODEL, kind, input_type, text, options or None)
    runner.check(request)
    (result,) = runner.embed([request])
    return result


def sparse(result: EmbedResult) -> SparseVector:
    assert isinstance(result.vector, SparseVector)
    return result.vector


def as_dict(result: EmbedResult) -> dict[int, float]:
    vector = sparse(result)
    assert vector.indices == sorted(vector.indices), "indices must be sorted ascending"
    assert len(set(vector.indices)) == len(vector.indices), "indices must be unique"
    return dict(zip(vector.indices, vector.values, strict=True))


def ids(result: EmbedResult) -> list[int]:
    return sorted(as_dict(result))


def assert_weights(result: EmbedResult, expected: dict[int, float]) -> None:
    got = as_dict(result)
    assert sorted(got) == sorted(expected)
    for index, value in expected.items():
        assert got[index] == pytest.approx(value, rel=1e-6), index


def error_of(runner: Bm25Runner, **options: Any) -> str:
    with pytest.raises(InvalidInput) as info:
        embed(runner, "some text", **options)
    return str(info.value)


# ---- the document and query vectors, by hand ----------------------------------------------------------


def test_document_weights_follow_the_formula_with_default_options(runner: Bm25Runner) -> None:
    # Defaults: lowercase, Qdrant's English stopwords (the, over, and), English Snowball (jumps -> jump).
    result = embed(runner, "The fox jumps over the dog and the FOX")
    # 9 words in; the pipeline keeps fox, jump, dog, fox, so |d| = 4.
    assert result.tokens == 9
    assert_weights(
        result,
        {
            tid("fox"): 2 * 2.2 / (2 + 1.2 * (1 - 0.75 + 0.75 * 4 / 256)),
            tid("jump"): 1 * 2.2 / (1 + 1.2 * (1 - 0.75 + 0.75 * 4 / 256)),
            tid("dog"): 1 * 2.2 / (1 + 1.2 * (1 - 0.75 + 0.75 * 4 / 256)),
        },
    )


def test_values_are_float32_like_qdrant(runner: Bm25Runner) -> None:
    for value in sparse(embed(runner, "fox fox dog cat cat cat")).values:
        assert struct.unpack("f", struct.pack("f", value))[0] == value


def test_duplicate_tokens_count_in_tf(runner: Bm25Runner) -> None:
    assert_weights(
        embed(runner, "fox fox fox", stemmer=NO_STEM),
        {tid("fox"): 3 * 2.2 / (3 + 1.2 * (0.25 + 0.75 * 3 / 256))},
    )
    assert_weights(embed(runner, "fox", stemmer=NO_STEM), {tid("fox"): 2.2 / (1 + 1.2 * (0.25 + 0.75 / 256))})


def test_query_side_is_unique_sorted_ids_with_ones(runner: Bm25Runner) -> None:
    result = embed(runner, "Fox fox jumps the FOX", kind=Kind.QUERY)
    assert result.tokens == 5
    vector = sparse(result)
    assert vector.indices == sorted([tid("fox"), tid("jump")])
    assert vector.values == [1.0, 1.0]


def test_custom_k_b_avg_len(runner: Bm25Runner) -> None:
    result = embed(runner, "fox fox dog", stemmer=NO_STEM, k=2.0, b=0.5, avg_len=10)
    assert_weights(
        result,
        {
            tid("fox"): 2 * 3.0 / (2 + 2.0 * (1 - 0.5 + 0.5 * 3 / 10)),
            tid("dog"): 1 * 3.0 / (1 + 2.0 * (1 - 0.5 + 0.5 * 3 / 10)),
        },
    )
    # b = 0: no length normalisation, so a longer document gives the same weight.
    short = as_dict(embed(runner, "fox", stemmer=NO_STEM, b=0))
    long = as_dict(embed(runner, "fox dog cat owl", stemmer=NO_STEM, b=0))
    assert short[tid("fox")] == long[tid("fox")] == pytest.approx(2.2 / (1 + 1.2), rel=1e-6)
    # k = 0: every present token weighs exactly 1.
    assert set(as_dict(embed(runner, "fox fox dog", k=0)).values()) == {1.0}


def test_integer_parameters_are_accepted_as_floats(runner: Bm25Runner) -> None:
    assert as_dict(embed(runner, "fox dog", k=2, avg_len=100)) == as_dict(
        embed(runner, "fox dog", k=2.0, avg_len=100.0)
    )
    assert as_dict(embed(runner, "fox dog", k=2)) != as_dict(embed(runner, "fox dog"))  # k is applied


def test_empty_text_gives_an_empty_vector(runner: Bm25Runner) -> None:
    for kind in Kind:
        assert embed(runner, "", kind=kind) == EmbedResult(SparseVector([], []), 0)
        assert embed(runner, " ,;  !? ", kind=kind) == EmbedResult(SparseVector([], []), 0)
        # Only stopwords: nothing left, but the text still had two words.
        assert embed(runner, "the and", kind=kind) == EmbedResult(SparseVector([], []), 2)


def test_tokens_count_words_whatever_the_options(runner: Bm25Runner) -> None:
    text = "snake_case e-mail x² the Häuser"
    assert count_words(text) == 6  # snake_case, e, mail, x², the, Häuser
    assert embed(runner, text).tokens == 6
    assert embed(runner, text, kind=Kind.QUERY, tokenizer="whitespace", min_token_len=5).tokens == 6


# ---- the token pipeline ---------------------------------------------------------------------------------


def test_builtin_english_stopwords(runner: Bm25Runner) -> None:
    assert ids(embed(runner, "the fox is over the dog and a cat")) == sorted(
        [tid("fox"), tid("dog"), tid("cat")]
    )
    assert ids(embed(runner, "the fox", language="en")) == [tid("fox")]  # serde alias of english


def test_language_selects_stopwords_and_stemmer(runner: Bm25Runner) -> None:
    # German: Qdrant's German list drops der/und/die, German Snowball stems Häuser -> haus; "the" stays.
    result = embed(runner, "der Hund und die Häuser the", language="german")
    assert ids(result) == sorted([tid("hund"), tid("haus"), tid("the")])
    # The English default keeps German stopwords.
    assert tid("der") in as_dict(embed(runner, "der Hund"))


def test_language_none_disables_stopwords_and_stemming(runner: Bm25Runner) -> None:
    # Qdrant documents `"language": "none"` for language-neutral text.
    assert ids(embed(runner, "the running dogs", language="none")) == sorted(
        [tid("the"), tid("running"), tid("dogs")]
    )


def test_stemming_maps_running_and_runs_to_one_id(runner: Bm25Runner) -> None:
    assert ids(embed(runner, "running")) == [tid("run")]
    assert ids(embed(runner, "runs")) == [tid("run")]
    # Both in one document: one id, counted twice.
    assert_weights(embed(runner, "running runs"), {tid("run"): tf(2, 2)})


def test_stemmer_none_keeps_words_whole(runner: Bm25Runner) -> None:
    assert ids(embed(runner, "running runs", stemmer=NO_STEM)) == sorted([tid("running"), tid("runs")])


def test_explicit_snowball_stemmer_language(runner: Bm25Runner) -> None:
    # German stemming with the English stopword list still applied (language is english by default).
    result = embed(runner, "the Häuser Katzen", stemmer={"type": "snowball", "language": "german"})
    assert ids(result) == sorted([tid("haus"), tid("katz")])
    # Codes are accepted too, including stemmer-only languages such as Armenian.
    assert ids(embed(runner, "Häuser", stemmer={"type": "snowball", "language": "de"})) == [tid("haus")]
    assert len(ids(embed(runner, "բառ", stemmer={"type": "snowball", "language": "hy"}))) == 1


def test_lowercase_false_keeps_case_and_matches_stopwords_exactly(runner: Bm25Runner) -> None:
    result = embed(runner, "Fox fox The the", lowercase=False, stemmer=NO_STEM)
    assert_weights(result, {tid("Fox"): tf(1, 3), tid("fox"): tf(1, 3), tid("The"): tf(1, 3)})


def test_ascii_folding(runner: Bm25Runner) -> None:
    assert ids(embed(runner, "Café", ascii_folding=True, stemmer=NO_STEM)) == [tid("cafe")]
    assert ids(embed(runner, "Café", stemmer=NO_STEM)) == [tid("café")]
    # Folding happens before lowercasing: "Æ" -> "AE" -> "ae"; "ß" -> "ss".
    folded = embed(runner, "Ærø straße", ascii_folding=True, stemmer=NO_STEM)
    assert ids(folded) == sorted([tid("aero"), tid("strasse")])


def test_min_and_max_token_len(runner: Bm25Runner) -> None:
    result = embed(runner, "a bb ccc dddd", stopwords={}, stemmer=NO_STEM, min_token_len=2, max_token_len=3)
    assert result.tokens == 4
    assert_weights(result, {tid("bb"): tf(1, 2), tid("ccc"): tf(1, 2)})


def test_custom_stopwords(runner: Bm25Runner) -> None:
    # A custom set replaces the language list: "the" stays, "Fox" (lowercased) goes.
    result = embed(runner, "the fox dog", stemmer=NO_STEM, stopwords={"custom": ["Fox"]})
    assert ids(result) == sorted([tid("the"), tid("dog")])
    # Languages and custom words combine.
    combined = {"languages": ["english"], "custom": ["dog"]}
    assert ids(embed(runner, "the fox dog", stemmer=NO_STEM, stopwords=combined)) == [tid("fox")]
    # A language name as the whole value; an empty set disables stopwords.
    assert ids(embed(runner, "der fox", stopwords="german")) == [tid("fox")]
    assert ids(embed(runner, "the fox", stopwords={})) == sorted([tid("the"), tid("fox")])


def test_unknown_options_are_ignored_like_qdrant(runner: Bm25Runner) -> None:
    # Qdrant's Bm25Config has no `deny_unknown_fields`: it ignores keys it does not know.
    assert embed(runner, "fox dog", foo=1, avg_length=3) == embed(runner, "fox dog")


def test_word_tokenizer_splits_on_non_alphanumerics(runner: Bm25Runner) -> None:
    result = embed(runner, "snake_case e-mail x²", stemmer=NO_STEM)
    assert ids(result) == sorted(tid(t) for t in ["snake", "case", "e", "mail", "x²"])


def test_whitespace_tokenizer(runner: Bm25Runner) -> None:
    result = embed(runner, "Hello, world!\u00a0e-mail", tokenizer="whitespace", stemmer=NO_STEM)
    assert ids(result) == sorted([tid("hello,"), tid("world!"), tid("e-mail")])


def test_prefix_tokenizer(runner: Bm25Runner) -> None:
    options: dict[str, Any] = {"tokenizer": "prefix", "stemmer": NO_STEM, "max_token_len": 3}
    # Documents index every prefix up to max_token_len (a shorter word is emitted whole): |d| = 5.
    document = embed(runner, "hello hi", **options)
    assert ids(document) == sorted(tid(t) for t in ["h", "he", "hel", "hi"])
    assert as_dict(document)[tid("h")] == pytest.approx(tf(2, 5), rel=1e-6)
    # Queries keep only the longest prefix, and keep stopwords (a typed prefix may start a longer word).
    query = embed(runner, "hello the", kind=Kind.QUERY, **options)
    assert sparse(query).indices == sorted([tid("hel"), tid("the")])


def test_multilingual_tokenizer_drops_pure_numbers(runner: Bm25Runner) -> None:
    result = embed(runner, "Qdrant 2024 search", tokenizer="multilingual", stemmer=NO_STEM)
    assert ids(result) == sorted([tid("qdrant"), tid("search")])


# ---- caching and threads --------------------------------------------------------------------------------


def test_models_are_cached_per_distinct_options() -> None:
    assert bm25_model({"k": 1.1, "b": 0.5}) is bm25_model({"b": 0.5, "k": 1.1})  # key order is irrelevant
    assert bm25_model(None) is bm25_model({})
    assert bm25_model({"k": 1.1}) is not bm25_model({"k": 1.3})


def test_concurrent_embeds_agree_with_serial_ones(runner: Bm25Runner) -> None:
    requests = [
        EmbedRequest(MODEL, kind, InputType.TEXT, f"fox {i} running dogs {i % 7}", {"k": 1.0 + i % 5 / 10})
        for i in range(200)
        for kind in Kind
    ]
    serial = runner.embed(requests)
    with ThreadPoolExecutor(8) as pool:
        parallel = [
            result for results in pool.map(runner.embed, [[r] for r in requests]) for result in results
        ]
    assert parallel == serial


# ---- errors ---------------------------------------------------------------------------------------------


def test_parameter_range_errors_use_qdrant_texts(runner: Bm25Runner) -> None:
    # lib/bm25's Bm25Error, as a Qdrant server answers them (Rust prints -1.0 as "-1").
    assert error_of(runner, b=1.5) == "BM25 b must be finite and in [0.0, 1.0], got 1.5"
    assert error_of(runner, b=-0.25) == "BM25 b must be finite and in [0.0, 1.0], got -0.25"
    assert error_of(runner, k=-1) == "BM25 k1 must be finite and >= 0, got -1"
    assert error_of(runner, avg_len=0) == "BM25 avg_doc_len must be finite and > 0, got 0"
    assert error_of(runner, avg_len=-2.5) == "BM25 avg_doc_len must be finite and > 0, got -2.5"
    assert error_of(runner, k=float("inf")) == "BM25 k1 must be finite and >= 0, got inf"
    # Checked in that order: k first.
    assert error_of(runner, b=2, k=-1) == "BM25 k1 must be finite and >= 0, got -1"
    assert error_of(runner, k=float("nan")) == "Invalid BM25 config: k must not be NaN"


def test_wrong_types_are_refused(runner: Bm25Runner) -> None:
    prefix = "Invalid BM25 config: "
    assert error_of(runner, k="high") == prefix + 'k must be a number, got "high"'
    assert error_of(runner, k=None) == prefix + "k must be a number, got null"
    assert error_of(runner, b=True) == prefix + "b must be a number, got true"
    assert error_of(runner, avg_len=[1]) == prefix + "avg_len must be a number, got an array"
    assert error_of(runner, k=10**400).startswith(prefix + "k is out of range")
    assert error_of(runner, lowercase="yes") == prefix + 'lowercase must be true or false, got "yes"'
    assert error_of(runner, ascii_folding=1) == prefix + "ascii_folding must be true or false, got 1"
    assert error_of(runner, language=5) == prefix + "language must be a string, got 5"
    assert (
        error_of(runner, min_token_len=-1) == prefix + "min_token_len must be a non-negative integer, got -1"
    )
    assert (
        error_of(runner, max_token_len=2.5)
        == prefix + "max_token_len must be a non-negative integer, got 2.5"
    )
    assert (
        error_of(runner, min_token_len={})
        == prefix + "min_token_len must be a non-negative integer, got an object"
    )
    # Optional fields accept an explicit null as "not given", as Qdrant's Option fields do.
    assert embed(runner, "fox", lowercase=None, language=None, stemmer=None) == embed(runner, "fox")


def test_tokenizer_errors(runner: Bm25Runner) -> None:
    expected = 'tokenizer must be one of "prefix", "whitespace", "word", "multilingual"'
    assert error_of(runner, tokenizer="trigram") == f'Invalid BM25 config: {expected}, got "trigram"'
    assert (
        error_of(runner, tokenizer="Word") == f'Invalid BM25 config: {expected}, got "Word"'
    )  # case matters
    assert error_of(runner, tokenizer=3) == f"Invalid BM25 config: {expected}, got 3"


def test_unknown_languages(runner: Bm25Runner) -> None:
    assert error_of(runner, language="klingon") == 'Invalid BM25 config: unsupported language: "klingon"'
    assert error_of(runner, language="English") == 'Invalid BM25 config: unsupported language: "English"'
    stopwords_error = 'Invalid BM25 config: unknown stopwords language "klingon"'
    assert error_of(runner, stopwords="klingon") == stopwords_error
    assert error_of(runner, stopwords={"languages": ["english", "klingon"]}) == stopwords_error
    stemmer_error = 'Invalid BM25 config: unknown stemmer language "klingon"'
    assert error_of(runner, stemmer={"type": "snowball", "language": "klingon"}) == stemmer_error


def test_malformed_stopwords_and_stemmer(runner: Bm25Runner) -> None:
    prefix = "Invalid BM25 config: "
    assert error_of(runner, stopwords={"languages": "english"}) == (
        prefix + 'stopwords.languages must be an array of strings, got "english"'
    )
    assert error_of(runner, stopwords={"custom": [1]}) == (
        prefix + "stopwords.custom must be an array of strings, got an array"
    )
    assert error_of(runner, stopwords=3) == (
        prefix + 'stopwords must be a language name or {"languages": [...], "custom": [...]}, got 3'
    )
    assert (
        error_of(runner, stemmer={"type": "snowball"})
        == prefix + "stemmer language must be a string, got null"
    )
    assert error_of(runner, stemmer={"type": "porter"}) == (
        prefix + 'stemmer type must be "snowball" or "none", got "porter"'
    )
    assert error_of(runner, stemmer="english") == (
        prefix + 'stemmer must be {"type": "snowball", "language": ...} or {"type": "none"}, got "english"'
    )


def test_non_text_input_is_refused(runner: Bm25Runner) -> None:
    for input_type in (InputType.IMAGE, InputType.OBJECT):
        request = EmbedRequest("Qdrant/BM25", Kind.DOCUMENT, input_type, "https://example.com/a.png")
        with pytest.raises(InvalidInput, match=r"^Only text input is supported for Qdrant/BM25\.$"):
            runner.check(request)
        with pytest.raises(InvalidInput, match=r"^Only text input is supported for Qdrant/BM25\.$"):
            runner.embed([request])


def test_unpaired_surrogate_is_refused(runner: Bm25Runner) -> None:
    with pytest.raises(InvalidInput, match="unpaired Unicode surrogate"):
        embed(runner, "fox \ud800 dog")


def test_check_refuses_what_embed_would(runner: Bm25Runner) -> None:
    request = EmbedRequest(MODEL, Kind.QUERY, InputType.TEXT, "fox", {"b": 1.5})
    with pytest.raises(InvalidInput, match=r"got 1\.5$"):
        runner.check(request)


# ---- agreement with fastembed ---------------------------------------------------------------------------


def test_agrees_with_fastembed_bm25(
    runner: Bm25Runner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """fastembed's Bm25 (Qdrant's client-side model) on text both tokenize alike, same inline stopwords.

    Runs offline: inline stopwords mean fastembed reads no file, and an empty model path skips downloads."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from fastembed.sparse.bm25 import Bm25

    stopwords = ["the", "a", "is", "and", "over"]
    model = Bm25(
        "Qdrant/bm25", specific_model_path=str(tmp_path), language="english", stopwords=set(stopwords)
    )
    options: dict[str, Any] = {"stopwords": {"custom": stopwords}}
    texts = [
        "The quick brown foxes are running over the lazy dogs",
        "Qdrant is a vector database and a vector search engine",
        "Cats chase mice; the mice run, the cats follow the mice",
    ]
    for text in texts:
        expected_doc = next(iter(model.embed([text])))
        got_doc = as_dict(embed(runner, text, **options))
        assert sorted(got_doc) == sorted(int(i) for i in expected_doc.indices)
        for index, value in zip(expected_doc.indices, expected_doc.values, strict=True):
            assert got_doc[int(index)] == pytest.approx(float(value), rel=1e-6)
        expected_query = next(iter(model.query_embed(text)))
        got_query = sparse(embed(runner, text, kind=Kind.QUERY, **options))
        assert got_query.indices == sorted(int(i) for i in expected_query.indices)
        assert got_query.values == [1.0] * len(got_query.indices)
