"""Dynamic batching in the in-process pool: concurrent calls merge, results never mix, a full queue refuses.

Real models from the installed files. The pool is the real one; subclasses only record (or, for the queue
test, hold back) what reaches the model, which is the thing under test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from inference import catalog
from inference.engine.engine import Engine
from inference.engine.pool import BatchJob, BatchSettings, InProcessPool, RunnerSettings
from inference.engine.types import (
    EmbedRequest,
    EmbedResult,
    EngineOverloaded,
    InputType,
    InvalidInput,
    Kind,
)
from tests.conftest import MINILM

TEXTS = [
    "The cat sat on the mat.",
    "Quarterly revenue grew by twelve percent, beating the analysts' forecasts.",
    "Mars is the fourth planet from the sun.",
    "How do I reset my password?",
    "A recipe for sourdough bread with a long cold fermentation and a very crisp crust.",
    "Vector databases index embeddings.",
    "ok",
    "The orchestra played Beethoven's ninth symphony to a full hall on a rainy night in Vienna.",
]


class RecordingPool(InProcessPool):
    """The real pool, recording the size of every batch that reached a model."""

    def __init__(self, workers: int, batching: BatchSettings, settings: RunnerSettings | None = None) -> None:
        super().__init__(workers=workers, batching=batching, settings=settings)
        self.batches: list[list[str]] = []
        self.alone: list[bool] = []  # per batch: did it run alone (on the solo session, if any)?
        self._record = threading.Lock()

    def _embed(
        self, job: BatchJob, requests: list[EmbedRequest], *, alone: bool = False
    ) -> list[EmbedResult]:
        with self._record:
            self.batches.append([str(r.data) for r in requests])
            self.alone.append(alone)
        return super()._embed(job, requests, alone=alone)


def doc(text: str) -> EmbedRequest:
    return EmbedRequest(MINILM, Kind.DOCUMENT, InputType.TEXT, text)


def engine_over(pool: InProcessPool, models_dir: Path) -> Engine:
    return Engine(resolve=lambda name: catalog.resolve(models_dir, name), pool=pool, batch_size=32)


@pytest.fixture(scope="module")
def alone(models_dir: Path) -> Iterator[dict[str, EmbedResult]]:
    """Each text embedded on its own, one call at a time: what batching must reproduce."""
    pool = InProcessPool(workers=1)
    engine = engine_over(pool, models_dir)
    try:
        yield {text: engine.embed([doc(text)]).results[0] for text in [*TEXTS, *(t.upper() for t in TEXTS)]}
    finally:
        pool.shutdown()


def cos(a: EmbedResult, b: EmbedResult) -> float:
    x, y = np.asarray(a.vector), np.asarray(b.vector)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def run_concurrently(engine: Engine, calls: Sequence[list[str]]) -> list[list[EmbedResult] | BaseException]:
    """Start one thread per call at the same moment; each call's results (or its error), in call order."""
    out: list[list[EmbedResult] | BaseException] = [[] for _ in calls]
    start = threading.Barrier(len(calls))

    def one(index: int) -> None:
        start.wait()
        try:
            out[index] = engine.embed([doc(t) for t in calls[index]]).results
        except Exception as exc:
            out[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return out


def test_concurrent_calls_merge_into_few_model_runs_and_never_mix_results(
    models_dir: Path, alone: dict[str, EmbedResult]
) -> None:
    # One worker holding a partial batch open long enough for every caller to join it.
    pool = RecordingPool(workers=1, batching=BatchSettings(max_wait_ms=500))
    reported: list[int] = []
    pool.on_run = lambda model, size, alone: reported.append(size)  # what /metrics observes
    engine = engine_over(pool, models_dir)
    try:
        engine.embed([doc("warm up")])
        pool.batches.clear()
        reported.clear()
        calls = [[text] for text in TEXTS]
        calls[0] = [TEXTS[0], TEXTS[0].upper()]  # a call with two inputs keeps its own order
        results = run_concurrently(engine, calls)
    finally:
        pool.shutdown()
    sizes = [len(batch) for batch in pool.batches]
    assert sum(sizes) == len(TEXTS) + 1  # every input ran exactly once
    assert len(sizes) < len(TEXTS) and max(sizes) > 1  # merged across calls
    assert reported == sizes  # the merged runs are reported, not the calls
    for call, got in zip(calls, results, strict=True):
        assert isinstance(got, list) and len(got) == len(call)
        for text, result in zip(call, got, strict=True):
            assert cos(result, alone[text]) >= 0.9999  # this call's own text, not a neighbour's
            assert result.tokens == alone[text].tokens


def test_a_lone_query_runs_on_the_solo_session_and_concurrent_ones_do_not(
    models_dir: Path, alone: dict[str, EmbedResult]
) -> None:
    pool = RecordingPool(workers=2, batching=BatchSettings(), settings=RunnerSettings(solo_threads=2))
    engine = engine_over(pool, models_dir)
    try:
        engine.embed([doc("warm up")])
        time.sleep(0.2)  # both workers started and idle
        pool.batches.clear()
        pool.alone.clear()
        lone = engine.embed([doc(TEXTS[1])]).results[0]
        assert pool.alone == [True]  # the only input, every other worker idle: spread over both cores
        assert cos(lone, alone[TEXTS[1]]) >= 0.9999 and lone.tokens == alone[TEXTS[1]].tokens
        pool.alone.clear()
        split = engine.embed([doc(t) for t in TEXTS]).results  # split over both workers: neither alone
    finally:
        pool.shutdown()
    assert pool.alone and not any(pool.alone)
    for text, result in zip(TEXTS, split, strict=True):
        assert cos(result, alone[text]) >= 0.9999


def test_batches_are_length_sorted_and_within_the_token_budget(models_dir: Path) -> None:
    long_texts = [f"{i} " + "a long sentence about vector search and embeddings " * 30 for i in range(4)]
    short_texts = [f"short text {i}" for i in range(4)]
    pool = RecordingPool(workers=1, batching=BatchSettings(max_wait_ms=300, token_budget=600))
    engine = engine_over(pool, models_dir)
    try:
        engine.embed([doc("warm up")])
        pool.batches.clear()
        run_concurrently(engine, [[t] for t in long_texts + short_texts])
    finally:
        pool.shutdown()
    for batch in pool.batches:
        assert [len(t) for t in batch] == sorted(len(t) for t in batch)
        # each long text is capped at the 256-token window: two of them fit in 600 padded tokens, three do not
        assert sum(t in long_texts for t in batch) <= 2
    shorts_together = [batch for batch in pool.batches if set(short_texts) <= set(batch)]
    assert shorts_together  # similar lengths are batched together, away from the long ones


def test_one_big_call_is_split_over_the_idle_workers(models_dir: Path, alone: dict[str, EmbedResult]) -> None:
    pool = RecordingPool(workers=2, batching=BatchSettings())
    engine = engine_over(pool, models_dir)
    texts = [*TEXTS, *(t.upper() for t in TEXTS)]
    try:
        engine.embed([doc("warm up")])  # both workers started and idle
        time.sleep(0.2)
        pool.batches.clear()
        results = engine.embed([doc(t) for t in texts]).results
    finally:
        pool.shutdown()
    assert sorted(len(batch) for batch in pool.batches) == [8, 8]
    for text, result in zip(texts, results, strict=True):
        assert cos(result, alone[text]) >= 0.9999


class GatedPool(RecordingPool):
    """Holds every model run until the test opens the gate: the queue fills up meanwhile."""

    def __init__(self, batching: BatchSettings) -> None:
        super().__init__(workers=1, batching=batching)
        self.gate = threading.Event()
        self.running = threading.Event()

    def _embed(
        self, job: BatchJob, requests: list[EmbedRequest], *, alone: bool = False
    ) -> list[EmbedResult]:
        self.running.set()
        assert self.gate.wait(timeout=30)
        return super()._embed(job, requests, alone=alone)


def test_a_full_queue_refuses_at_once_and_queues_nothing(models_dir: Path) -> None:
    pool = GatedPool(BatchSettings(max_queue=4, max_batch=2))
    engine = engine_over(pool, models_dir)
    first = threading.Thread(target=lambda: engine.embed([doc("one"), doc("two")]))
    second = threading.Thread(target=lambda: engine.embed([doc(f"queued {i}") for i in range(4)]))
    try:
        first.start()
        assert pool.running.wait(timeout=30)  # the worker holds the first call; the queue is empty
        second.start()  # four inputs: the queue is full now
        deadline = time.monotonic() + 10
        while pool._queued < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool._queued == 4
        started = time.monotonic()
        with pytest.raises(EngineOverloaded) as refused:
            engine.embed([doc("one too many")])
        assert time.monotonic() - started < 1.0  # at once, not after a wait
        assert refused.value.status_code == 429 and refused.value.retry_after >= 1
    finally:
        pool.gate.set()
        first.join(timeout=30)
        second.join(timeout=30)
        pool.shutdown()
    ran = [text for batch in pool.batches for text in batch]
    assert sorted(ran) == sorted(["one", "two", *(f"queued {i}" for i in range(4))])  # never "one too many"


def test_a_call_larger_than_the_queue_runs_when_the_queue_is_empty(models_dir: Path) -> None:
    pool = InProcessPool(workers=2, batching=BatchSettings(max_queue=4))
    engine = engine_over(pool, models_dir)
    try:
        out = engine.embed([doc(f"text {i}") for i in range(10)])
    finally:
        pool.shutdown()
    assert len(out.results) == 10


class PoisonPool(RecordingPool):
    """Fails any model run that contains the text "poison", as a runner does for an unusable input."""

    def _embed(
        self, job: BatchJob, requests: list[EmbedRequest], *, alone: bool = False
    ) -> list[EmbedResult]:
        if any(r.data == "poison" for r in requests):
            with self._record:
                self.batches.append([str(r.data) for r in requests])
            raise InvalidInput("this input cannot be embedded")
        return super()._embed(job, requests, alone=alone)


def test_a_failing_input_fails_only_its_own_call(models_dir: Path, alone: dict[str, EmbedResult]) -> None:
    pool = PoisonPool(workers=1, batching=BatchSettings(max_wait_ms=500))
    engine = engine_over(pool, models_dir)
    try:
        engine.embed([doc("warm up")])
        pool.batches.clear()
        results = run_concurrently(engine, [[TEXTS[0]], ["poison"], [TEXTS[2], TEXTS[3]]])
    finally:
        pool.shutdown()
    assert any(len(batch) > 1 and "poison" in batch for batch in pool.batches)  # it was merged, then
    assert isinstance(results[1], InvalidInput)
    for call, got in ((TEXTS[:1], results[0]), (TEXTS[2:4], results[2])):
        assert isinstance(got, list)
        for text, result in zip(call, got, strict=True):
            assert cos(result, alone[text]) >= 0.9999


def test_the_overload_error_is_answered_as_429_with_retry_after() -> None:
    from inference import errors

    answer = errors.from_exception(EngineOverloaded("Too many inference requests are waiting", retry_after=2))
    assert answer.status == 429 and answer.retry_after == 2


def thread_nice(native_id: int) -> int:
    """A thread's nice value, from /proc (field 19 of its stat line)."""
    stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


def test_workers_run_below_the_request_threads_priority(models_dir: Path) -> None:
    pool = InProcessPool(workers=2, nice=7)
    engine = engine_over(pool, models_dir)
    try:
        engine.embed([doc("warm up")])
        nice = [thread_nice(t.native_id) for t in pool._threads if t.native_id is not None]
    finally:
        pool.shutdown()
    assert nice == [7, 7]
    assert thread_nice(threading.get_native_id()) == 0  # the caller (a request's thread) keeps its priority
