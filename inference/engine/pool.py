"""Worker pools: where model runners are loaded and batches are run.

Callers never touch a runner directly; they hand :class:`BatchJob` lists to a :class:`WorkerPool`. The
in-process pool below queues the requests of every job and runs them on worker threads (onnxruntime
releases the GIL while it computes, so threads use every core), merging requests for the same model from
concurrent calls into one batch: dynamic batching, as TEI and infinity do. A distributed pool (Celery
workers on an ``inference`` queue) implements the same methods and needs no change in callers.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .images import FetchPolicy
from .runner import ModelRunner
from .types import EmbedRequest, EmbedResult, EngineOverloaded, EngineUnavailable, ModelSpec, Runtime


@dataclass(frozen=True)
class BatchJob:
    """One batch of deduplicated requests for one model, with where that model's files are."""

    spec: ModelSpec
    model_dir: Path
    requests: tuple[EmbedRequest, ...]


class WorkerPool(Protocol):
    """Runs batches of embedding work; implementations decide where models live and run."""

    def check(self, spec: ModelSpec, model_dir: Path, requests: Sequence[EmbedRequest]) -> None:
        """Raise InvalidInput for the first request the model can never accept (before any work)."""
        ...

    def run(self, jobs: Sequence[BatchJob]) -> list[list[EmbedResult]]:
        """Run every job (in parallel where possible); results per job, in order."""
        ...

    def warm(self, spec: ModelSpec, model_dir: Path) -> None:
        """Load a model now so that the first real request does not pay for it."""
        ...


@dataclass(frozen=True)
class RunnerSettings:
    """How runners are built: ONNX threads per session, its memory arena and the image fetch policy."""

    onnx_threads: int = 1
    solo_threads: int = 0  # intra-op threads for a text batch run while the rest of the pool idles; 0: off
    memory_arena: bool = True
    packing: bool = True  # padding-free text batches where the model's graph allows them (packing.py)
    fetch_policy: FetchPolicy = field(default_factory=FetchPolicy)


class RunnerRegistry:
    """Loads each model once per process (thread-safe) and keeps it for the life of the process."""

    def __init__(self, settings: RunnerSettings) -> None:
        self.settings = settings
        self._runners: dict[tuple[str, Path], ModelRunner] = {}
        self._locks: dict[tuple[str, Path], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, spec: ModelSpec, model_dir: Path) -> ModelRunner:
        """The runner for a model, loading it on first use."""
        key = (spec.name, model_dir)
        runner = self._runners.get(key)
        if runner is not None:
            return runner
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one load per model even when many threads ask at once
            runner = self._runners.get(key)
            if runner is None:
                runner = self._load(spec, model_dir)
                self._runners[key] = runner
            return runner

    def _load(self, spec: ModelSpec, model_dir: Path) -> ModelRunner:
        # Imported here, not at module level: importing the web app must not load onnxruntime.
        if spec.runtime is Runtime.ONNX_TEXT:
            from .text import OnnxTextRunner

            return OnnxTextRunner(
                spec,
                model_dir,
                threads=self.settings.onnx_threads,
                memory_arena=self.settings.memory_arena,
                solo_threads=self.settings.solo_threads,
                packing=self.settings.packing,
            )
        if spec.runtime is Runtime.ONNX_IMAGE:
            from .clip import OnnxImageRunner

            return OnnxImageRunner(
                spec, model_dir, threads=self.settings.onnx_threads, fetch_policy=self.settings.fetch_policy
            )
        if spec.runtime is Runtime.BM25:
            from .bm25 import Bm25Runner

            return Bm25Runner(spec, model_dir)
        raise EngineUnavailable(f"Model {spec.name} needs a {spec.runtime.value} runtime this server lacks.")


@dataclass(frozen=True)
class BatchSettings:
    """How the in-process pool merges requests into batches (settings: INFERENCE_BATCH_*).

    - `max_batch`: inputs per model run;
    - `token_budget`: padded tokens per run (inputs x the longest input's estimated tokens), which bounds the
      largest tensor a run allocates; a single input always runs, even alone over the budget;
    - `max_wait_ms`: how long a worker holds a partial batch open for more requests to join (0: run what is
      queued at once; requests still merge whenever they arrive while the workers are busy);
    - `max_queue`: inputs waiting at most; a call that would go over is refused at once with
      :class:`EngineOverloaded` (a call larger than the whole queue is admitted only into an empty queue).
    """

    max_batch: int = 32
    token_budget: int = 1024
    max_wait_ms: float = 0.0
    max_queue: int = 1024
    retry_after: int = 1  # seconds a refused caller is told to wait


@dataclass(eq=False)
class _Call:
    """One `run` call: its result slots and the event its thread waits on."""

    results: list[list[EmbedResult | None]]
    remaining: int
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass(eq=False)
class _Item:
    """One queued input: where its result goes (call, job, position) and its estimated token length."""

    call: _Call
    job: int
    position: int
    request: EmbedRequest
    tokens: int
    queued_at: float


class InProcessPool:
    """Runs jobs on worker threads in this process (INFERENCE_WORKERS), batching across concurrent calls.

    Every input of a call is queued per model; each worker takes the oldest waiting input of a model plus
    the waiting inputs closest to it in length (little padding), up to `max_batch` inputs and the token
    budget, and runs them as one batch. While other workers are idle a worker takes only its share of the
    queue, so one big request is split over every core. Each result goes back to the slot of the call that
    queued it: a batch mixes calls, results never do. If a merged batch fails, each call's inputs are run
    again on their own, so one caller's bad input (an image URL that cannot be fetched) fails only that
    caller.
    """

    def __init__(
        self,
        workers: int,
        settings: RunnerSettings | None = None,
        batching: BatchSettings | None = None,
        *,
        nice: int = 0,
        on_run: Callable[[str, int, bool], None] | None = None,
    ) -> None:
        self.registry = RunnerRegistry(settings or RunnerSettings())
        self.workers = workers
        self.nice = nice  # of the worker threads: below the threads that hold the GIL to serve requests
        self.on_run = on_run  # told (model, inputs, alone) of every batch run, merged across calls
        self.batching = batching or BatchSettings()
        self._cond = threading.Condition()
        self._queues: dict[tuple[str, Path], tuple[BatchJob, list[_Item]]] = {}
        self._queued = 0
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def check(self, spec: ModelSpec, model_dir: Path, requests: Sequence[EmbedRequest]) -> None:
        """Check requests against the loaded runner (loading it here is no waste: it runs next)."""
        runner = self.registry.get(spec, model_dir)
        for request in requests:
            runner.check(request)

    def run(self, jobs: Sequence[BatchJob]) -> list[list[EmbedResult]]:
        """Queue every input of every job, wait for all of them; results per job, in order.

        Raises :class:`EngineOverloaded` at once, queuing nothing, when the queue has no room for the call.
        """
        call = _Call(results=[[None] * len(job.requests) for job in jobs], remaining=0)
        now = time.monotonic()
        items = [
            _Item(call, j, k, request, _estimate_tokens(request, job.spec), now)
            for j, job in enumerate(jobs)
            for k, request in enumerate(job.requests)
        ]
        if not items:
            return [[] for _ in jobs]
        call.remaining = len(items)
        with self._cond:
            if self._stopping:
                raise EngineUnavailable("The inference workers are shut down.")
            if self._queued and self._queued + len(items) > self.batching.max_queue:
                raise EngineOverloaded(
                    "Too many inference requests are waiting; retry shortly.",
                    retry_after=self.batching.retry_after,
                )
            self._start_workers_locked()
            for item in items:
                job = jobs[item.job]
                key = (job.spec.name, job.model_dir)
                self._queues.setdefault(key, (job, []))[1].append(item)
            self._queued += len(items)
            if self._idle:
                # One worker is enough: it wakes the next if work is left (every wake-up costs GIL time).
                self._cond.notify()
        call.done.wait()
        if call.error is not None:
            raise call.error
        return [[r for r in job if r is not None] for job in call.results]

    def warm(self, spec: ModelSpec, model_dir: Path) -> None:
        """Load the model now."""
        self.registry.get(spec, model_dir)

    def shutdown(self) -> None:
        """Stop the workers once the queue is empty (tests and benchmarks create pools of their own)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            threads = list(self._threads)
        for thread in threads:
            thread.join()

    def _start_workers_locked(self) -> None:
        # Started on first use, not in __init__: a pool built only to check or warm needs no threads.
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work, name=f"onnx-worker-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        if self.nice > 0:
            _lower_this_thread(self.nice)
        while True:
            with self._cond:
                self._idle += 1
                try:
                    while True:
                        taken = self._take_locked(time.monotonic())
                        if isinstance(taken, tuple):
                            if self._queues and self._idle > 1:  # work left and another worker idle
                                self._cond.notify()
                            break
                        if self._stopping and not self._queued:
                            return
                        self._cond.wait(taken)
                finally:
                    self._idle -= 1
            job, batch, alone = taken
            self._run_batch(job, batch, alone=alone)

    def _take_locked(self, now: float) -> tuple[BatchJob, list[_Item], bool] | float | None:
        """The next batch to run, or how long to wait before looking again (None: until notified)."""
        # Inputs of calls that already failed need no run.
        for key, (job, queue) in list(self._queues.items()):
            live = [item for item in queue if item.call.error is None]
            self._queued -= len(queue) - len(live)
            if live:
                self._queues[key] = (job, live)
            else:
                del self._queues[key]
        if not self._queues:
            return None
        key = min(self._queues, key=lambda k: self._queues[k][1][0].queued_at)  # the longest waiting
        job, queue = self._queues[key]
        settings = self.batching
        waited = now - queue[0].queued_at
        if len(queue) < settings.max_batch and not self._stopping:
            remaining = settings.max_wait_ms / 1000.0 - waited
            if remaining > 0:
                return remaining
        # Share the queue with the other idle workers: one big call runs on every core.
        share = -(-len(queue) // max(1, self._idle))
        limit = max(1, min(settings.max_batch, share))
        batch = _closest_in_length(queue, limit, settings.token_budget)
        chosen = {id(item) for item in batch}
        rest = [item for item in queue if id(item) not in chosen]
        if rest:
            self._queues[key] = (job, rest)
        else:
            del self._queues[key]
        self._queued -= len(batch)
        # Alone: nothing else queued and every worker idle but this one (which still counts itself idle).
        alone = not self._queues and self._idle == len(self._threads)
        return job, batch, alone

    def _run_batch(self, job: BatchJob, batch: list[_Item], *, alone: bool = False) -> None:
        if self.on_run is not None:
            self.on_run(job.spec.name, len(batch), alone)
        try:
            results = self._embed(job, [item.request for item in batch], alone=alone)
        except BaseException as exc:  # handed to the waiting caller, never lost in this thread
            calls = {id(item.call): item.call for item in batch}
            if len(calls) == 1:
                self._fail(batch[0].call, exc)
                return
            for call in calls.values():  # a merged batch failed: whose input was it?
                self._run_batch(job, [item for item in batch if item.call is call])
            return
        with self._cond:
            for item, result in zip(batch, results, strict=True):
                call = item.call
                call.results[item.job][item.position] = result
                call.remaining -= 1
                if call.remaining == 0 and call.error is None:
                    call.done.set()

    def _fail(self, call: _Call, exc: BaseException) -> None:
        with self._cond:
            if call.error is None:
                call.error = exc
                call.done.set()

    def _embed(
        self, job: BatchJob, requests: list[EmbedRequest], *, alone: bool = False
    ) -> list[EmbedResult]:
        results = self.registry.get(job.spec, job.model_dir).embed(requests, alone=alone)
        if len(results) != len(requests):  # a runner bug must not shift vectors onto other points
            raise EngineUnavailable(
                f"Model {job.spec.name} returned {len(results)} vectors for {len(requests)}"
            )
        return results


def _lower_this_thread(nice: int) -> None:
    """Give the calling thread a lower CPU priority (Linux: a nice value per thread; elsewhere nothing)."""
    with contextlib.suppress(AttributeError, OSError):  # no per-thread priorities: the process's it is
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _estimate_tokens(request: EmbedRequest, spec: ModelSpec) -> int:
    """Tokens an input will take, from its UTF-8 bytes (3 per token errs on the high side for English,
    about right for CJK), plus the special tokens; capped at the model's context window (truncation)."""
    if spec.runtime is Runtime.BM25:
        return 1  # no tensors: the budget bounds ONNX memory only
    if not isinstance(request.data, str):
        return max(1, spec.tokens_per_image)
    estimate = len(request.data.encode("utf-8", "surrogatepass")) // 3 + 2
    return min(estimate, spec.context_window) if spec.context_window else estimate


def _closest_in_length(queue: list[_Item], limit: int, budget: int) -> list[_Item]:
    """The oldest item and the items closest to it in length, up to `limit` items and the padded budget."""
    first = queue[0]
    others = sorted(queue[1:], key=lambda item: abs(item.tokens - first.tokens))
    batch = [first]
    longest = first.tokens
    for item in others:
        if len(batch) >= limit:
            break
        longest_with = max(longest, item.tokens)
        if longest_with * (len(batch) + 1) > budget:
            continue
        batch.append(item)
        longest = longest_with
    batch.sort(key=lambda item: item.tokens)
    return batch
