"""Qdrant's server-side BM25 (`qdrant/bm25`): vectors checked by hand against the formula, Qdrant's option
handling and error texts, and agreement with fastembed's Bm25 and with Qdrant's own pipeline (qdrant-edge).

Pure unit tests: no Django, no installed models (stopword lists are written to a tmp dir).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import mmh3
import pytest

from inference.engine import bm25 as bm25_module
from inference.engine.bm25 import Bm25Runner
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
ENGLISH_STOPWORDS = ["the", "a", "is", "are", "of", "and", "over"]
NO_STEM = {"type": "none"}


def tid(token: str) -> int:
    """The expected index of a token, straight from mmh3 (murmur3_32, seed 0, as i32, absolute value)."""
    return abs(mmh3.hash(token, seed=0, signed=True))


def tf(n: int, doc_len: int, k: float = 1.2, b: float = 0.75, avg_len: float = 256.0) -> float:
    """BM25 document weight: n(k+1) / (n + k(1 - b + b|d|/avg_len))."""
    return n * (k + 1) / (n + k * (1 - b + b * doc_len / avg_len))


@pytest.fixture
def stopword_dir(tmp_path: Path) -> Path:
    """A model dir like the installed one, with a short English list only (no german.txt on purpose)."""
    (tmp_path / "english.txt").write_text("\n".join(ENGLISH_STOPWORDS) + "\n", encoding="utf-8")
    return tmp_path


@pytest.fixture
def runner(stopword_dir: Path) -> Bm25Runner:
    return Bm25Runner(SPEC, stopword_dir)


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


def assert_weights(result: EmbedResult, expected: dict[int, float]) -> None:
    got = as_dict(result)
    assert sorted(got) == sorted(expected)
    for index, value in expected.items():
        assert got[index] == pytest.approx(value, rel=1e-6), index


def error_of(runner: Bm25Runner, **options: Any) -> str:
    with pytest.raises(InvalidInput) as info:
        embed(runner, "some text", **options)
    return str(info.value)


def serde_error(message: str) -> str:
    """Qdrant's wrapping of a serde_json error: format!("Invalid BM25 config: {err:#?}")."""
    return f"Invalid BM25 config: Error({message}, line: 0, column: 0)"


# ---- the document and query vectors, by hand ----------------------------------------------------------


def test_document_weights_follow_the_formula_with_default_options(runner: Bm25Runner) -> None:
    # Defaults: lowercase, English stopwords (the, over, and), English Snowball stemmer (jumps -> jump).
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
    assert tf(2, 3, k=2.0, b=0.5, avg_len=10) == pytest.approx(as_dict(result)[tid("fox")], rel=1e-6)
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


def test_option_order_does_not_matter(runner: Bm25Runner) -> None:
    a = embed(runner, "fox fox dog", k=1.5, b=0.3, stemmer=NO_STEM)
    b = embed(runner, "fox fox dog", stemmer=NO_STEM, b=0.3, k=1.5)
    assert a == b


def test_empty_text_gives_an_empty_vector(runner: Bm25Runner) -> None:
    for kind in Kind:
        assert embed(runner, "", kind=kind) == EmbedResult(SparseVector([], []), 0)
        assert embed(runner, " ,;  !? ", kind=kind) == EmbedResult(SparseVector([], []), 0)
        # Only stopwords: nothing left, but the tokenizer still read two words.
        assert embed(runner, "the and", kind=kind) == EmbedResult(SparseVector([], []), 2)


# ---- the token pipeline ---------------------------------------------------------------------------------


def test_stopwords_come_from_the_language_file(runner: Bm25Runner) -> None:
    assert sorted(as_dict(embed(runner, "the fox is over the dog"))) == sorted([tid("fox"), tid("dog")])
    assert sorted(as_dict(embed(runner, "the fox", language="en"))) == [tid("fox")]  # alias of english


def test_stemming_maps_running_and_runs_to_one_id(runner: Bm25Runner) -> None:
    assert sorted(as_dict(embed(runner, "running"))) == [tid("run")]
    assert sorted(as_dict(embed(runner, "runs"))) == [tid("run")]
    # Both in one document: one id, counted twice.
    assert_weights(embed(runner, "running runs"), {tid("run"): tf(2, 2)})


def test_stemmer_none_keeps_words_whole(runner: Bm25Runner) -> None:
    assert sorted(as_dict(embed(runner, "running runs", stemmer=NO_STEM))) == sorted(
        [tid("running"), tid("runs")]
    )


def test_explicit_snowball_stemmer_language(runner: Bm25Runner) -> None:
    # German stemming with the English stopword list still applied (language is english by default).
    result = embed(runner, "the Häuser Katzen", stemmer={"type": "snowball", "language": "german"})
    assert sorted(as_dict(result)) == sorted([tid("haus"), tid("katz")])


def test_lowercase_false_keeps_case_and_matches_stopwords_exactly(runner: Bm25Runner) -> None:
    result = embed(runner, "Fox fox The the", lowercase=False, stemmer=NO_STEM)
    assert_weights(result, {tid("Fox"): tf(1, 3), tid("fox"): tf(1, 3), tid("The"): tf(1, 3)})


def test_ascii_folding(runner: Bm25Runner) -> None:
    assert sorted(as_dict(embed(runner, "Café", ascii_folding=True, stemmer=NO_STEM))) == [tid("cafe")]
    assert sorted(as_dict(embed(runner, "Café", stemmer=NO_STEM))) == [tid("café")]
    # Folding happens before lowercasing: "Æ" -> "AE" -> "ae"; "ß" -> "ss".
    folded = embed(runner, "Ærø straße", ascii_folding=True, stemmer=NO_STEM)
    assert sorted(as_dict(folded)) == sorted([tid("aero"), tid("strasse")])


def test_min_and_max_token_len(runner: Bm25Runner) -> None:
    result = embed(runner, "a bb ccc dddd", stopwords={}, stemmer=NO_STEM, min_token_len=2, max_token_len=3)
    assert result.tokens == 4
    assert_weights(result, {tid("bb"): tf(1, 2), tid("ccc"): tf(1, 2)})


def test_custom_stopwords(runner: Bm25Runner) -> None:
    # A custom set replaces the language list: "the" stays, "Fox" (lowercased) goes.
    result = embed(runner, "the fox dog", stemmer=NO_STEM, stopwords={"custom": ["Fox"]})
    assert sorted(as_dict(result)) == sorted([tid("the"), tid("dog")])
    # Languages and custom words combine.
    combined = {"languages": ["english"], "custom": ["dog"]}
    assert sorted(as_dict(embed(runner, "the fox dog", stemmer=NO_STEM, stopwords=combined))) == [tid("fox")]
    # A language name as the whole value; an empty set disables stopwords.
    assert sorted(as_dict(embed(runner, "the fox", stopwords="english"))) == [tid("fox")]
    assert sorted(as_dict(embed(runner, "the fox", stopwords={}))) == sorted([tid("the"), tid("fox")])


def test_language_without_a_stopword_file_has_no_stopwords(runner: Bm25Runner) -> None:
    # There is no german.txt: no stopwords, but German stemming applies.
    result = embed(runner, "der Hund und die Häuser", language="german")
    assert sorted(as_dict(result)) == sorted([tid("der"), tid("hund"), tid("und"), tid("die"), tid("haus")])


def test_unrecognised_language_disables_stopwords_and_stemming_like_qdrant(runner: Bm25Runner) -> None:
    # Qdrant documents `"language": "none"` for language-neutral text (any unknown name does the same).
    result = embed(runner, "the running dogs", language="none")
    assert sorted(as_dict(result)) == sorted([tid("the"), tid("running"), tid("dogs")])


def test_unknown_options_are_ignored_like_qdrant(runner: Bm25Runner) -> None:
    # Qdrant's Bm25Config has no `deny_unknown_fields`: it ignores keys it does not know.
    assert embed(runner, "fox dog", foo=1, avg_length=3) == embed(runner, "fox dog")


def test_word_tokenizer_splits_like_rust(runner: Bm25Runner) -> None:
    # "_" and "-" separate words (fastembed's \w regex keeps "_"); "x²" is one alphanumeric word; the
    # Devanagari vowel signs in "हिंदी" are alphabetic for Rust though str.isalnum() rejects them, while
    # the virama in "हिन्दी" is not alphabetic for either, so that word splits in two.
    result = embed(runner, "snake_case e-mail x² हिंदी हिन्दी", stemmer=NO_STEM)
    assert result.tokens == 8
    expected = ["snake", "case", "e", "mail", "x²", "हिंदी", "हिन", "दी"]
    assert sorted(as_dict(result)) == sorted(tid(t) for t in expected)


def test_whitespace_tokenizer(runner: Bm25Runner) -> None:
    result = embed(runner, "Hello, world!\u00a0e-mail", tokenizer="whitespace", stemmer=NO_STEM)
    assert result.tokens == 3
    assert sorted(as_dict(result)) == sorted([tid("hello,"), tid("world!"), tid("e-mail")])


def test_prefix_tokenizer(runner: Bm25Runner) -> None:
    options: dict[str, Any] = {"tokenizer": "prefix", "stemmer": NO_STEM, "max_token_len": 3}
    # Documents index every prefix up to max_token_len (a shorter word is emitted whole).
    document = embed(runner, "hello hi", **options)
    assert document.tokens == 2
    assert sorted(as_dict(document)) == sorted(tid(t) for t in ["h", "he", "hel", "hi"])
    assert as_dict(document)[tid("h")] == pytest.approx(tf(2, 5), rel=1e-6)
    # Queries keep only the longest prefix, and keep stopwords (a typed prefix may start a longer word).
    query = embed(runner, "hello the", kind=Kind.QUERY, **options)
    assert sparse(query).indices == sorted([tid("hel"), tid("the")])


def test_multilingual_falls_back_to_words_without_pure_numbers(runner: Bm25Runner) -> None:
    result = embed(runner, "Qdrant 2024 search", tokenizer="multilingual", stemmer=NO_STEM)
    assert sorted(as_dict(result)) == sorted([tid("qdrant"), tid("search")])


# ---- errors, with Qdrant's texts ------------------------------------------------------------------------


def test_parameter_errors_use_qdrant_texts(runner: Bm25Runner) -> None:
    # lib/bm25/src/lib.rs, Bm25Error's Display (Rust prints -1.0 as "-1").
    assert error_of(runner, b=1.5) == "BM25 b must be finite and in [0.0, 1.0], got 1.5"
    assert error_of(runner, b=-0.25) == "BM25 b must be finite and in [0.0, 1.0], got -0.25"
    assert error_of(runner, k=-1) == "BM25 k1 must be finite and >= 0, got -1"
    assert error_of(runner, avg_len=0) == "BM25 avg_doc_len must be finite and > 0, got 0"
    assert error_of(runner, avg_len=-2.5) == "BM25 avg_doc_len must be finite and > 0, got -2.5"
    assert error_of(runner, k=float("inf")) == "BM25 k1 must be finite and >= 0, got inf"
    # Checked in that order: k first.
    assert error_of(runner, b=2, k=-1) == "BM25 k1 must be finite and >= 0, got -1"


def test_wrong_types_use_serde_texts(runner: Bm25Runner) -> None:
    assert error_of(runner, k="high") == serde_error(r'"invalid type: string \"high\", expected f64"')
    assert error_of(runner, k=None) == serde_error('"invalid type: null, expected f64"')
    assert error_of(runner, b=True) == serde_error('"invalid type: boolean `true`, expected f64"')
    assert error_of(runner, avg_len=[1]) == serde_error('"invalid type: sequence, expected f64"')
    assert error_of(runner, lowercase="yes") == serde_error(
        r'"invalid type: string \"yes\", expected a boolean"'
    )
    assert error_of(runner, ascii_folding=1) == serde_error('"invalid type: integer `1`, expected a boolean"')
    assert error_of(runner, language=5) == serde_error('"invalid type: integer `5`, expected a string"')
    assert error_of(runner, min_token_len=-1) == serde_error('"invalid value: integer `-1`, expected usize"')
    assert error_of(runner, max_token_len=2.5) == serde_error(
        '"invalid type: floating point `2.5`, expected usize"'
    )
    assert error_of(runner, max_token_len=3.0) == serde_error(
        '"invalid type: floating point `3.0`, expected usize"'
    )
    assert error_of(runner, min_token_len={}) == serde_error('"invalid type: map, expected usize"')


def test_tokenizer_errors(runner: Bm25Runner) -> None:
    assert error_of(runner, tokenizer="trigram") == serde_error(
        '"unknown variant `trigram`, expected one of `prefix`, `whitespace`, `word`, `multilingual`"'
    )
    assert error_of(runner, tokenizer="Word") == serde_error(
        '"unknown variant `Word`, expected one of `prefix`, `whitespace`, `word`, `multilingual`"'
    )
    assert error_of(runner, tokenizer=3) == serde_error('"invalid type: integer `3`, expected string or map"')


def test_unknown_languages_in_stopwords_and_stemmer(runner: Bm25Runner) -> None:
    stopwords_error = serde_error('"data did not match any variant of untagged enum StopwordsInterface"')
    assert error_of(runner, stopwords="klingon") == stopwords_error
    assert error_of(runner, stopwords={"languages": ["english", "klingon"]}) == stopwords_error
    assert error_of(runner, stopwords={"languages": "english"}) == stopwords_error
    assert error_of(runner, stopwords={"custom": [1]}) == stopwords_error
    stemmer_error = serde_error('"data did not match any variant of untagged enum StemmingAlgorithm"')
    assert error_of(runner, stemmer={"type": "snowball", "language": "klingon"}) == stemmer_error
    assert error_of(runner, stemmer={"type": "snowball"}) == stemmer_error
    assert error_of(runner, stemmer="english") == stemmer_error
    assert error_of(runner, stemmer={"type": "porter"}) == stemmer_error


def test_stemmer_that_py_rust_stemmers_lacks_is_refused(runner: Bm25Runner) -> None:
    # Qdrant has an Armenian Snowball stemmer; py_rust_stemmers has not. Our own message (no Qdrant text).
    message = "BM25 stemmer for language armenian is not supported by this server."
    assert error_of(runner, stemmer={"type": "snowball", "language": "hy"}) == message
    assert error_of(runner, language="armenian") == message


def test_non_text_input_is_refused(runner: Bm25Runner) -> None:
    for input_type in (InputType.IMAGE, InputType.OBJECT):
        request = EmbedRequest("Qdrant/BM25", Kind.DOCUMENT, input_type, "https://example.com/a.png")
        with pytest.raises(InvalidInput, match=r"^Only text input is supported for Qdrant/BM25\.$"):
            runner.check(request)
        with pytest.raises(InvalidInput):
            runner.embed([request])


def test_check_refuses_what_embed_would(runner: Bm25Runner) -> None:
    request = EmbedRequest(MODEL, Kind.QUERY, InputType.TEXT, "fox", {"b": 1.5})
    with pytest.raises(InvalidInput, match=r"got 1\.5$"):
        runner.check(request)


def test_parsed_options_are_cached(runner: Bm25Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = bm25_module.parse_bm25_options

    def counting(options: dict[str, Any] | None) -> bm25_module.Bm25Config:
        calls.append(options)
        return real(options)

    monkeypatch.setattr(bm25_module, "parse_bm25_options", counting)
    requests = [
        EmbedRequest(MODEL, Kind.DOCUMENT, InputType.TEXT, f"fox {i}", {"k": 1.1, "b": 0.5}) for i in range(5)
    ]
    requests.append(EmbedRequest(MODEL, Kind.DOCUMENT, InputType.TEXT, "fox", {"b": 0.5, "k": 1.1}))
    runner.embed(requests)
    assert len(calls) == 1


# ---- agreement with other implementations ---------------------------------------------------------------


def test_agrees_with_fastembed_bm25(
    stopword_dir: Path, runner: Bm25Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fastembed's Bm25 (Qdrant's own client-side model) on text where both tokenize alike."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never reach for a model hub
    try:
        from fastembed.sparse.bm25 import Bm25
    except ImportError as exc:  # pragma: no cover - fastembed is a project dependency
        pytest.skip(f"fastembed not importable: {exc}")
    try:
        model = Bm25("Qdrant/bm25", specific_model_path=str(stopword_dir), language="english")
    except Exception as exc:  # pragma: no cover - depends on the fastembed version
        pytest.skip(f"fastembed's Bm25 cannot be built offline from a stopword dir: {exc}")
    texts = [
        "The quick brown foxes are running over the lazy dogs",
        "Qdrant is a vector database and a vector search engine",
        "Cats chase mice; the mice run, the cats follow the mice",
    ]
    for text in texts:
        expected_doc = next(iter(model.embed([text])))
        got_doc = as_dict(embed(runner, text))
        assert sorted(got_doc) == sorted(int(i) for i in expected_doc.indices)
        for index, value in zip(expected_doc.indices, expected_doc.values, strict=True):
            assert got_doc[int(index)] == pytest.approx(float(value), rel=1e-6)
        expected_query = next(iter(model.query_embed(text)))
        got_query = sparse(embed(runner, text, kind=Kind.QUERY))
        assert got_query.indices == sorted(int(i) for i in expected_query.indices)
        assert got_query.values == [1.0] * len(got_query.indices)


EDGE_TEXTS = [
    "The Running runners RAN quickly; runs, runner's café!",
    "Straße, Ærø, naïve résumé — Łódź ① ⒈ x² ﬁsh \uff21\uff22\uff23 (fullwidth ABC)",
    "snake_case e-mail 3.14 2024 don't well-known",
    "Привет, мир! ΣΟΦΟΣ σοφός ιστορία हिन्दी العربية",
    "hello\u00a0world\u3000tab\there  new\nline",
    "",
]
EDGE_CONFIGS: list[dict[str, Any]] = [
    {"stopwords": {}, "stemmer": NO_STEM},
    {"stopwords": {"custom": ["the", "runs", "Мир"]}},
    {"stopwords": {}, "stemmer": {"type": "snowball", "language": "russian"}, "ascii_folding": True},
    {"stopwords": {}, "lowercase": False, "stemmer": NO_STEM, "min_token_len": 2, "max_token_len": 5},
    {"stopwords": {}, "tokenizer": "whitespace", "k": 2.5, "b": 0.3, "avg_len": 7.5},
    {"stopwords": {"custom": ["the"]}, "tokenizer": "prefix", "min_token_len": 2, "max_token_len": 4},
    {"stopwords": {}, "language": "french", "ascii_folding": True},
]


@pytest.mark.parametrize("options", EDGE_CONFIGS)
def test_agrees_with_qdrants_own_pipeline(runner: Bm25Runner, options: dict[str, Any]) -> None:
    """qdrant-edge-py runs Qdrant's Rust tokenizer and BM25 in-process: indices and f32 values must be equal.

    Stopword lists are given inline (edge compiles in Qdrant's lists, we read files)."""
    edge = pytest.importorskip("qdrant_edge")
    stemmer = options.get("stemmer")
    config = edge.Bm25Config(
        k=options.get("k"),
        b=options.get("b"),
        avg_len=options.get("avg_len"),
        tokenizer=getattr(edge.TokenizerType, options.get("tokenizer", "word").capitalize()),
        language=options.get("language"),
        lowercase=options.get("lowercase"),
        ascii_folding=options.get("ascii_folding"),
        stopwords=edge.StopwordsSet(custom=set(options["stopwords"].get("custom", []))),
        stemmer=None
        if stemmer is None
        else edge.DisabledStemmer()
        if stemmer["type"] == "none"
        else edge.SnowballParams(getattr(edge.SnowballLanguage, stemmer["language"].capitalize())),
        min_token_len=options.get("min_token_len"),
        max_token_len=options.get("max_token_len"),
    )
    model = edge.Bm25(config)
    for text in EDGE_TEXTS:
        for kind, expected in (
            (Kind.DOCUMENT, model.embed_document(text)),
            (Kind.QUERY, model.embed_query(text)),
        ):
            got = sparse(embed(runner, text, kind=kind, **options))
            assert got.indices == list(expected.indices), (text, kind)
            assert got.values == [float(v) for v in expected.values], (text, kind)
