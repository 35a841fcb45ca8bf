"""The process-wide engine, built lazily from settings: the app's only door to the ONNX workers.

Nothing here imports onnxruntime at import time; the engine and its pool are created on the first call
to :func:`get_engine` (and models load on their first use).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from inference import catalog
from inference.engine.types import ModelSpec

if TYPE_CHECKING:
    from inference.engine.engine import Engine

_engine: Engine | None = None
_lock = threading.Lock()


def resolve_model(name: str) -> tuple[ModelSpec, Path]:
    """The spec and files of a model installed under MODELS_DIR (see `catalog.resolve`)."""
    return catalog.resolve(settings.MODELS_DIR, name)


def get_engine() -> Engine:
    """The shared engine, created on first use with the pool configured in settings."""
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                _engine = _build_engine()
    return _engine


def _build_engine() -> Engine:
    from inference.engine.engine import Engine
    from inference.engine.images import FetchPolicy
    from inference.engine.pool import BatchSettings, InProcessPool, RunnerSettings

    policy = FetchPolicy(
        allow_hosts=frozenset(settings.IMAGE_FETCH_ALLOW_HOSTS),
        connect_timeout=settings.IMAGE_FETCH_CONNECT_TIMEOUT,
        read_timeout=settings.IMAGE_FETCH_READ_TIMEOUT,
        max_bytes=settings.IMAGE_FETCH_MAX_BYTES,
        max_pixels=settings.IMAGE_MAX_PIXELS,
    )
    pool = InProcessPool(
        workers=settings.INFERENCE_WORKERS,
        settings=RunnerSettings(
            onnx_threads=settings.INFERENCE_ONNX_THREADS,
            memory_arena=settings.INFERENCE_ONNX_ARENA,
            fetch_policy=policy,
        ),
        batching=BatchSettings(
            max_batch=settings.INFERENCE_BATCH_SIZE,
            token_budget=settings.INFERENCE_TOKEN_BUDGET,
            max_wait_ms=settings.INFERENCE_BATCH_WAIT_MS,
            max_queue=settings.INFERENCE_QUEUE_MAX,
        ),
    )
    return Engine(resolve=resolve_model, pool=pool, batch_size=settings.INFERENCE_BATCH_SIZE)
