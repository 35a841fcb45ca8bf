"""Worker pools: where model runners are loaded and batches are run.

Callers never touch a runner directly; they hand :class:`BatchJob` lists to a :class:`WorkerPool`. The
in-process pool below runs jobs on a thread pool (onnxruntime releases the GIL while it computes, so
threads use every core). A distributed pool (Celery workers on an ``inference`` queue) implements the same
two methods and needs no change in callers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .images import FetchPolicy
from .runner import ModelRunner
from .types import EmbedRequest, EmbedResult, EngineUnavailable, ModelSpec, Runtime


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
    """How runners are built: ONNX threads per session and the image fetch policy."""

    onnx_threads: int = 1
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

            return OnnxTextRunner(spec, model_dir, threads=self.settings.onnx_threads)
        if spec.runtime is Runtime.ONNX_IMAGE:
            from .clip import OnnxImageRunner

            return OnnxImageRunner(
                spec, model_dir, threads=self.settings.onnx_threads, fetch_policy=self.settings.fetch_policy
            )
        if spec.runtime is Runtime.BM25:
            from .bm25 import Bm25Runner

            return Bm25Runner(spec, model_dir)
        raise EngineUnavailable(f"Model {spec.name} needs a {spec.runtime.value} runtime this server lacks.")


class InProcessPool:
    """Runs jobs on a pool of threads in this process; sized by the INFERENCE_WORKERS setting."""

    def __init__(self, workers: int, settings: RunnerSettings | None = None) -> None:
        self.registry = RunnerRegistry(settings or RunnerSettings())
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnx-worker")

    def check(self, spec: ModelSpec, model_dir: Path, requests: Sequence[EmbedRequest]) -> None:
        """Check requests against the loaded runner (loading it here is no waste: it runs next)."""
        runner = self.registry.get(spec, model_dir)
        for request in requests:
            runner.check(request)

    def run(self, jobs: Sequence[BatchJob]) -> list[list[EmbedResult]]:
        """Run jobs side by side; a single job runs in the calling thread (no hand-off cost)."""
        if len(jobs) == 1:
            return [self._run_one(jobs[0])]
        futures = [self._executor.submit(self._run_one, job) for job in jobs]
        return [future.result() for future in futures]

    def warm(self, spec: ModelSpec, model_dir: Path) -> None:
        """Load the model now."""
        self.registry.get(spec, model_dir)

    def shutdown(self) -> None:
        """Stop the worker threads (tests and benchmarks create pools of their own)."""
        self._executor.shutdown(wait=True)

    def _run_one(self, job: BatchJob) -> list[EmbedResult]:
        results = self.registry.get(job.spec, job.model_dir).embed(job.requests)
        if len(results) != len(job.requests):  # a runner bug must not shift vectors onto other points
            raise EngineUnavailable(
                f"Model {job.spec.name} returned {len(results)} vectors for {len(job.requests)}"
            )
        return results
