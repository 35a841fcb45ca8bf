"""Requests in flight per cluster in this process, so a restart can drain them before closing storage."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

_counts: Counter[str] = Counter()
_changed = threading.Condition()


@contextmanager
def track(cluster_id: str) -> Iterator[None]:
    """Count a data-plane request of a cluster while it runs."""
    with _changed:
        _counts[cluster_id] += 1
    try:
        yield
    finally:
        with _changed:
            _counts[cluster_id] -= 1
            if _counts[cluster_id] <= 0:
                del _counts[cluster_id]
            _changed.notify_all()


def in_flight(cluster_id: str) -> int:
    """How many requests of the cluster are running now."""
    with _changed:
        return _counts.get(cluster_id, 0)


def drain(cluster_id: str, timeout: float) -> bool:
    """Wait until no request of the cluster runs (new ones are refused by then); False on timeout."""
    deadline = time.monotonic() + timeout
    with _changed:
        while _counts.get(cluster_id, 0) > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            _changed.wait(remaining)
        return True
