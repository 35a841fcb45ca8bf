"""Denormal floats flushed to zero in the threads that run models (inference/engine/denormals.py): per
thread, and without changing any vector beyond float rounding."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from inference import catalog
from inference.engine import denormals, text
from inference.engine.denormals import DAZ, FTZ
from inference.engine.text import OnnxTextRunner
from inference.engine.types import EmbedRequest, InputType, Kind
from tests.conftest import MINILM

pytestmark = pytest.mark.skipif(denormals.mxcsr() is None, reason="MXCSR exists on x86-64 (Linux) only")
T = TypeVar("T")
DENORMAL = 1e-40  # below float32's smallest normal number (~1.2e-38)


def in_thread(fn: Callable[[], T]) -> T:
    """fn's result, computed in a new thread (whose control register starts as this thread's)."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(fn())
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def test_flushing_is_per_thread_and_can_be_undone() -> None:
    flushed, other_saw = threading.Event(), []

    def other() -> None:
        denormals.flush_denormals(False)
        flushed.wait(timeout=10)
        other_saw.append(float(np.float32(DENORMAL)))

    thread = threading.Thread(target=other)
    thread.start()

    def flush() -> tuple[float, float, int, float]:
        assert denormals.flush_denormals(False)
        before = float(np.float32(DENORMAL))
        assert denormals.flush_denormals(True)
        after = float(np.float32(DENORMAL))
        bits = (denormals.mxcsr() or 0) & (FTZ | DAZ)
        flushed.set()
        assert denormals.flush_denormals(False)
        return before, after, bits, float(np.float32(DENORMAL))

    before, after, bits, undone = in_thread(flush)
    thread.join()
    assert before != 0.0 and undone != 0.0  # a denormal float32 exists unless flushed
    assert after == 0.0 and bits == FTZ | DAZ
    assert other_saw[0] != 0.0  # the other thread, running meanwhile, was not touched


def test_runners_flush_in_their_thread_and_vectors_do_not_change(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = catalog.installed_path(models_dir, MINILM)
    assert path is not None
    runner = OnnxTextRunner(catalog.find(MINILM).spec, path, packing=True)  # type: ignore[union-attr]
    assert runner.packed
    # Mixed lengths share rows, so most attention scores are masked: the denormals' source.
    texts = ["a", "vector search", *(f"sentence {i} " * (1 + i % 5) for i in range(14))]
    batch = [EmbedRequest(MINILM, Kind.DOCUMENT, InputType.TEXT, t) for t in texts]

    def embed_and_bits() -> tuple[list[list[float]], list[int], int]:
        denormals.flush_denormals(False)  # a thread that never flushed
        results = runner.embed(batch)
        return [r.vector for r in results], [r.tokens for r in results], (denormals.mxcsr() or 0) & FTZ

    flushed, tokens, bits = in_thread(embed_and_bits)
    assert bits == FTZ  # embed flushed in the calling thread
    monkeypatch.setattr(text, "flush_denormals", lambda: True)  # a runner that does not flush
    plain, plain_tokens, plain_bits = in_thread(embed_and_bits)
    assert plain_bits == 0 and plain_tokens == tokens
    for a, b in zip(np.asarray(flushed), np.asarray(plain), strict=True):
        assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) >= 0.99999
