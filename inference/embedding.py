"""The process-wide engine, built lazily from settings: the app's only door to the ONNX workers.

Nothing here imports onnxruntime at import time; the engine and its pool are created on the first call
to :func:`get_engine` (and models load on their first use).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from inference import catalog
from inference.engine.types import EmbedRequest, InputType, ModelSpec
from inference.providers import ProviderConfig

if TYPE_CHECKING:
    from collections.abc import Sequence

    from inference.engine.engine import Engine
    from inference.engine.fetch import FetchGate, FetchPolicy
    from inference.engine.pool import BatchJob, InProcessPool
    from inference.engine.types import EmbedResult

_engine: Engine | None = None
_lock = threading.Lock()

# (model, inputs in the batch, whether it ran alone on the solo session)
BatchObserver = Callable[[str, int, bool], None]
_batch_observers: list[BatchObserver] = []
StateObserver = Callable[["PoolState"], None]
_state_observers: list[StateObserver] = []


@dataclass(frozen=True)
class PoolState:
    """A snapshot of the ONNX worker pool of this process (for metrics)."""

    workers: int  # worker threads
    jobs_in_flight: int  # batches handed to the pool and not finished
    queue_depth: int  # of those, batches waiting for a free worker


def on_batch(observer: BatchObserver) -> None:
    """Call `observer(model, size, alone)` for every batch the workers run: inputs of concurrent requests
    merged into one run count as one batch (metrics register one)."""
    if observer not in _batch_observers:
        _batch_observers.append(observer)


def on_state(observer: StateObserver) -> None:
    """Call `observer(state)` whenever batches are handed to the pool or finish, in the order the changes
    happened (metrics keep gauges with it: another process cannot ask this one at scrape time)."""
    if observer not in _state_observers:
        _state_observers.append(observer)


def pool_state() -> PoolState | None:
    """The pool's state, or None before the engine was first used (nothing is built to answer)."""
    engine = _engine
    if engine is None or not isinstance(engine.pool, _ObservedPool):
        return None
    return engine.pool.state()


class _ObservedPool:
    """Wraps the engine's pool to count batches in flight and report batch sizes; changes nothing else.

    Lives here, not in the engine, so the engine stays free of metrics: the pool exposes no counters.
    """

    def __init__(self, pool: InProcessPool, workers: int) -> None:
        self._pool = pool
        self._workers = workers
        self._in_flight = 0
        self._guard = threading.Lock()

    def state(self) -> PoolState:
        with self._guard:
            return self._snapshot()

    def _snapshot(self) -> PoolState:
        return PoolState(self._workers, self._in_flight, max(0, self._in_flight - self._workers))

    def _change(self, delta: int) -> None:
        with self._guard:
            self._in_flight += delta
            state = self._snapshot()
            for observer in _state_observers:  # under the guard: observers see the changes in order
                observer(state)

    def check(self, spec: ModelSpec, model_dir: Path, requests: Sequence[EmbedRequest]) -> None:
        self._pool.check(spec, model_dir, requests)

    def run(self, jobs: Sequence[BatchJob]) -> list[list[EmbedResult]]:
        self._change(len(jobs))
        try:
            return self._pool.run(jobs)
        finally:
            self._change(-len(jobs))

    def warm(self, spec: ModelSpec, model_dir: Path) -> None:
        self._pool.warm(spec, model_dir)

    def shutdown(self) -> None:
        """Stop the wrapped pool's workers."""
        self._pool.shutdown()


# Installed models, as found on disk, for RESOLVE_CACHE_SECONDS: resolving reads the model's marker file and
# checks its directory, a file read on every request that names a model (~14% of a request thread's samples
# under load). Only successes are kept (so the keys are catalog names): a model installed meanwhile is seen
# on its next request, one removed within the lifetime (its runner stays loaded anyway).
RESOLVE_CACHE_SECONDS = 10.0
_resolved: dict[tuple[str, str], tuple[float, tuple[ModelSpec, Path]]] = {}


def resolve_model(name: str) -> tuple[ModelSpec, Path]:
    """The spec and files of a model installed under MODELS_DIR (see `catalog.resolve`)."""
    key = (str(settings.MODELS_DIR), name.lower())
    now = time.monotonic()
    cached = _resolved.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    found = catalog.resolve(settings.MODELS_DIR, name)
    if len(_resolved) > 1000:  # bounded whatever the case variants of names callers send
        _resolved.clear()
    _resolved[key] = (now + RESOLVE_CACHE_SECONDS, found)
    return found


def forget_models() -> None:
    """Resolve models from disk again on their next use (after installing or removing one)."""
    _resolved.clear()


def get_engine() -> Engine:
    """The shared engine, created on first use with the pool configured in settings."""
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                _engine = _build_engine()
    return _engine


def provider_config() -> ProviderConfig:
    """How to reach the external providers, from settings (read per request, so tests can change them).

    The base URLs are the operator's alone: nothing in a request can change where a key is sent. Image URLs
    that a provider only takes inline (Cohere) are fetched under the same policy as the engine's images.
    """

    def fetch_image(url: str) -> bytes:
        (body,) = _fetch_gate().fetch_all([url], _fetch_policy())  # bounded like the engine's fetches
        return body

    return ProviderConfig(
        bases={
            "openai": settings.OPENAI_API_BASE,
            "cohere": settings.COHERE_API_BASE,
            "jinaai": settings.JINA_API_BASE,
            "openrouter": settings.OPENROUTER_API_BASE,
        },
        timeout=settings.PROVIDER_TIMEOUT,
        deadline=settings.PROVIDER_DEADLINE,
        attempts=settings.PROVIDER_ATTEMPTS,
        backoff=settings.PROVIDER_RETRY_BACKOFF,
        fetch_image=fetch_image,
    )


def prefetch_images(requests: Sequence[EmbedRequest]) -> list[EmbedRequest]:
    """The requests with their image URLs fetched (through the bounded fetch gate), ready for the workers."""
    if not any(r.input_type == InputType.IMAGE for r in requests):
        return list(requests)
    from inference.engine.images import prefetch_urls

    # A model that is not installed fails in the engine's checks: fetch nothing for it.
    runnable = [r for r in requests if catalog.is_installed(settings.MODELS_DIR, r.model)]
    if len(runnable) < len(requests):
        return list(requests)
    return prefetch_urls(requests, _fetch_gate(), _fetch_policy())


@functools.cache
def _fetch_gate() -> FetchGate:
    from inference.engine.fetch import FetchGate

    return FetchGate(settings.IMAGE_FETCH_CONCURRENCY)


def _fetch_policy() -> FetchPolicy:
    from inference.engine.fetch import FetchPolicy

    options: dict[str, Any] = {
        "allow_hosts": frozenset(settings.IMAGE_FETCH_ALLOW_HOSTS),
        "connect_timeout": settings.IMAGE_FETCH_CONNECT_TIMEOUT,
        "read_timeout": settings.IMAGE_FETCH_READ_TIMEOUT,
        "total_timeout": settings.IMAGE_FETCH_TOTAL_TIMEOUT,
        "max_bytes": settings.IMAGE_FETCH_MAX_BYTES,
        "max_pixels": settings.IMAGE_MAX_PIXELS,
    }
    return FetchPolicy(**options)


def _batch_ran(model: str, size: int, alone: bool) -> None:
    for observer in _batch_observers:
        observer(model, size, alone)


def _build_engine() -> Engine:
    from inference.engine.engine import Engine
    from inference.engine.pool import BatchSettings, InProcessPool, RunnerSettings

    pool = InProcessPool(
        workers=settings.INFERENCE_WORKERS,
        nice=settings.INFERENCE_WORKER_NICE,
        on_run=_batch_ran,
        settings=RunnerSettings(
            onnx_threads=settings.INFERENCE_ONNX_THREADS,
            solo_threads=settings.INFERENCE_SOLO_THREADS,
            memory_arena=settings.INFERENCE_ONNX_ARENA,
            packing=settings.INFERENCE_PACKING,
            fetch_policy=_fetch_policy(),
        ),
        batching=BatchSettings(
            max_batch=settings.INFERENCE_BATCH_SIZE,
            token_budget=settings.INFERENCE_TOKEN_BUDGET,
            max_wait_ms=settings.INFERENCE_BATCH_WAIT_MS,
            max_queue=settings.INFERENCE_QUEUE_MAX,
        ),
    )
    observed = _ObservedPool(pool, settings.INFERENCE_WORKERS)
    return Engine(resolve=resolve_model, pool=observed, batch_size=settings.INFERENCE_BATCH_SIZE)
