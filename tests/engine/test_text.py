"""Real dense text embeddings through the engine: MiniLM-L6 and MiniLM-L3 from the installed files."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from inference import catalog
from inference.engine.engine import Engine
from inference.engine.pool import BatchJob, InProcessPool
from inference.engine.text import (
    HEAD_CHARS_PER_TOKEN,
    MAX_CHARS_PER_TOKEN,
    OnnxTextRunner,
    head_tokens,
    with_prefix,
)
from inference.engine.types import (
    EmbedRequest,
    EmbedResult,
    InputType,
    InvalidInput,
    Kind,
    ModelNotFound,
    ModelNotInstalled,
)
from tests.conftest import MINILM, MINILM_L3


def doc(text: str, model: str = MINILM, options: dict[str, object] | None = None) -> EmbedRequest:
    return EmbedRequest(model, Kind.DOCUMENT, InputType.TEXT, text, options)


def vec(result: EmbedResult) -> np.ndarray:
    assert isinstance(result.vector, list)
    return np.asarray(result.vector, dtype=np.float64)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("model", [MINILM, MINILM_L3])
def test_dimension_norm_and_semantics(engine: Engine, model: str) -> None:
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply."]
    out = engine.embed([doc(t, model) for t in texts])
    a, b, c = (vec(r) for r in out.results)
    assert a.shape == (384,)
    for v in (a, b, c):
        assert abs(np.linalg.norm(v) - 1.0) < 1e-5
    assert cos(a, b) > cos(a, c) + 0.3  # a paraphrase is far closer than an unrelated sentence


def test_vectors_equal_fastembed_for_the_same_files(engine: Engine, minilm_dir: Path) -> None:
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = "local/all-minilm-l6-v2-int8"
    if name not in {m["model"] for m in TextEmbedding.list_supported_models()}:
        TextEmbedding.add_custom_model(
            model=name,
            pooling=PoolingType.MEAN,
            normalization=True,
            sources=ModelSource(hf=name),
            dim=384,
            model_file="model.onnx",
        )
    fastembed = TextEmbedding(name, specific_model_path=str(minilm_dir), threads=1)
    texts = ["hello world", "Qdrant is a vector database written in Rust.", "short", "x " * 100]
    expected = list(fastembed.embed(texts))
    ours = engine.embed([doc(t) for t in texts]).results
    for e, r in zip(expected, ours, strict=True):
        assert cos(np.asarray(e), vec(r)) >= 0.9999


def test_token_count_is_the_tokenizers_count(engine: Engine, minilm_dir: Path) -> None:
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    reference.no_padding()  # the shipped file pads and truncates to 128: count the bare tokens
    reference.no_truncation()
    texts = ["hello world", "Tokenization of unbelievably long words: antidisestablishmentarianism!"]
    out = engine.embed([doc(t) for t in texts])
    for text, result in zip(texts, out.results, strict=True):
        assert result.tokens == len(reference.encode(text).ids)  # includes [CLS] and [SEP]
    assert out.usage == {MINILM: sum(len(reference.encode(t).ids) for t in texts)}


def test_long_text_is_truncated_to_the_context_window(engine: Engine) -> None:
    long = engine.embed([doc("word " * 1000)]).results[0]
    assert long.tokens == 256  # the catalog's context window, not the tokenizer's 512
    # Exactly what fits: 254 word tokens + [CLS] + [SEP]; the rest must have had no effect.
    fitted = engine.embed([doc("word " * 254)]).results[0]
    shorter = engine.embed([doc("word " * 100 + "different ending entirely")]).results[0]
    assert fitted.tokens == 256
    assert cos(vec(long), vec(fitted)) > 0.99999
    assert cos(vec(long), vec(shorter)) < 0.999


LONG_TEXTS = {
    "prose": "The red planet has two small moons, Phobos and Deimos; both were found in 1877. " * 400,
    "one token a char": "火星有两个卫星" * 3000,
    "lines and tabs": "\n".join(f"row {i}\tvalue {i * 3.5}\tnaïve café" for i in range(3000)),
    "thin": "supercalifragilisticexpialidocious " * 2000,  # ~6 tokens in 35 characters
    "no whitespace": "ab" * 20_000,
}


@pytest.mark.parametrize("name", sorted(LONG_TEXTS))
def test_a_long_text_reads_the_same_from_its_head(minilm_dir: Path, name: str) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=256)
    text = LONG_TEXTS[name]
    assert len(text) > 256 * HEAD_CHARS_PER_TOKEN
    head, whole = head_tokens(tokenizer, text, 256), tokenizer.encode(text)
    assert (head.ids, head.attention_mask) == (whole.ids, whole.attention_mask)


def test_a_huge_text_is_not_tokenized_past_what_the_window_can_hold(minilm_dir: Path) -> None:
    """10 MiB took 9 s of CPU to tokenize, holding the GIL, for 256 tokens; only its head is read."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=256)
    read: list[int] = []

    class Recording:
        def encode(self, text: str) -> object:
            read.append(len(text))
            return tokenizer.encode(text)

    huge = ("the red planet has two moons " * 400_000)[: 10 * 1024 * 1024]
    spaces = " " * 1_000_000 + "word " * 100
    assert len(head_tokens(Recording(), huge, 256).ids) == 256  # type: ignore[arg-type]
    assert read == [huge[: 256 * HEAD_CHARS_PER_TOKEN].rfind(" ")]  # the head, cut back to the last space
    read.clear()
    head_tokens(Recording(), spaces, 256)  # type: ignore[arg-type]
    assert max(read) <= 256 * MAX_CHARS_PER_TOKEN


def test_l3_context_window_is_128(engine: Engine) -> None:
    assert engine.embed([doc("word " * 500, MINILM_L3)]).results[0].tokens == 128


def test_query_prefix_is_added_once(minilm_dir: Path) -> None:
    spec = dataclasses.replace(
        catalog.find(MINILM).spec,  # type: ignore[union-attr]
        query_prefix="query: ",
        document_prefix="passage: ",
    )
    runner = OnnxTextRunner(spec, minilm_dir)
    query, query_prefixed, passage = runner.embed(
        [
            EmbedRequest(MINILM, Kind.QUERY, InputType.TEXT, "red apples"),
            EmbedRequest(MINILM, Kind.QUERY, InputType.TEXT, "query: red apples"),
            EmbedRequest(MINILM, Kind.DOCUMENT, InputType.TEXT, "red apples"),
        ]
    )
    assert query.tokens == query_prefixed.tokens  # not doubled
    assert cos(vec(query), vec(query_prefixed)) >= 0.99999  # equal but for rounding (packed in one row)
    assert query.tokens == passage.tokens  # "query" and "passage" are one token each
    assert cos(vec(query), vec(passage)) < 0.9999  # but the prefixes do change the vector
    assert with_prefix("passage: x", "passage: ") == "passage: x"
    assert with_prefix("x", "") == "x"


class CountingPool(InProcessPool):
    """The real in-process pool, recording every request that reached a model."""

    def __init__(self) -> None:
        super().__init__(workers=2)
        self.seen: list[EmbedRequest] = []
        self.jobs: list[BatchJob] = []

    def run(self, jobs: Sequence[BatchJob]) -> list[list[EmbedResult]]:
        self.jobs.extend(jobs)
        for job in jobs:
            self.seen.extend(job.requests)
        return super().run(jobs)


def test_identical_requests_run_once_and_bill_once(models_dir: Path) -> None:
    pool = CountingPool()
    engine = Engine(resolve=lambda name: catalog.resolve(models_dir, name), pool=pool, batch_size=8)
    try:
        text = "The same sentence, fifty times."
        out = engine.embed([doc(text)] * 50 + [doc(text, options=None), doc("another one")])
    finally:
        pool.shutdown()
    assert len(pool.seen) == 2  # two distinct inputs reached the model
    assert len(out.results) == 52
    assert all(r.vector == out.results[0].vector for r in out.results[:51])
    assert out.usage[MINILM] == out.results[0].tokens + out.results[-1].tokens


def test_dedup_distinguishes_kind_model_and_options(models_dir: Path) -> None:
    pool = CountingPool()
    engine = Engine(resolve=lambda name: catalog.resolve(models_dir, name), pool=pool)
    try:
        engine.embed(
            [
                doc("same"),
                EmbedRequest(MINILM, Kind.QUERY, InputType.TEXT, "same"),
                doc("same", MINILM_L3),
                doc("same", "Sentence-Transformers/All-MiniLM-L6-v2"),  # same model, other case: merged
            ]
        )
    finally:
        pool.shutdown()
    assert len(pool.seen) == 3


def test_batches_are_sorted_by_length_and_results_keep_request_order(models_dir: Path) -> None:
    pool = CountingPool()
    engine = Engine(resolve=lambda name: catalog.resolve(models_dir, name), pool=pool, batch_size=4)
    texts = [("word " * n).strip() for n in (50, 1, 30, 2, 40, 3, 20, 4, 10, 5)]
    try:
        batched = engine.embed([doc(t) for t in texts]).results
        single = [engine.embed([doc(t)]).results[0] for t in texts]
    finally:
        pool.shutdown()
    first_jobs = pool.jobs[:3]
    assert [len(j.requests) for j in first_jobs] == [4, 4, 2]
    lengths = [len(r.data) for j in first_jobs for r in j.requests]
    assert lengths == sorted(lengths)
    for b, s in zip(batched, single, strict=True):
        assert cos(vec(b), vec(s)) > 0.9999  # padding inside a batch does not change a vector
        assert b.tokens == s.tokens


def test_model_names_match_case_insensitively(engine: Engine) -> None:
    upper = engine.embed([doc("hi", "Sentence-Transformers/ALL-MiniLM-L6-V2")])
    assert upper.usage == {MINILM: 3}


def test_unknown_and_not_installed_models_give_clear_errors(engine: Engine) -> None:
    with pytest.raises(ModelNotFound, match="'nope/model' is not supported"):
        engine.embed([doc("hi", "nope/model")])
    with pytest.raises(ModelNotInstalled, match="weights are not installed"):
        engine.embed([doc("hi", "mixedbread-ai/mxbai-embed-large-v1")])


def test_bad_input_fails_the_whole_call_before_any_model_runs(models_dir: Path) -> None:
    pool = CountingPool()
    engine = Engine(resolve=lambda name: catalog.resolve(models_dir, name), pool=pool)
    try:
        with pytest.raises(InvalidInput, match="Only text input is supported"):
            engine.embed([doc("fine"), EmbedRequest(MINILM, Kind.DOCUMENT, InputType.IMAGE, "aGk=")])
        with pytest.raises(InvalidInput, match="does not accept options"):
            engine.embed([doc("fine"), doc("x", options={"lazy_load": True})])
    finally:
        pool.shutdown()
    assert pool.seen == []
