"""Requests in flight per cluster, so a restart can drain them before closing storage.

Without Redis the counts live in this process (one web process: `make run` on embedded storage). With
`INFLIGHT_REDIS_URL` (default: `LIMITS_REDIS_URL`) every web process (replica) also publishes its own
counts to Redis, as a hash `inflight:<replica>` that expires `INFLIGHT_TTL` seconds after the replica last
refreshed it, and a drain waits for the sum over every live replica. A replica killed mid-request stops
refreshing its hash, which then expires: it can delay a drain by at most the TTL, never wedge it.
A Redis failure never fails a request: the process falls back to its own counts and says so in the log.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)


class Counts:
    """In-flight counts of one process, optionally shared with the other replicas through Redis."""

    def __init__(self, redis: Any = None, *, ttl: float = 15.0, prefix: str = "inflight:") -> None:
        self._counts: Counter[str] = Counter()
        self._changed = threading.Condition()
        self._redis = redis
        self._ttl = ttl
        self._prefix = prefix
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._key = f"{prefix}{self.replica}"
        self._heartbeat: threading.Thread | None = None
        self._stopped = threading.Event()
        self._warned = False

    # --- this process ------------------------------------------------------------------------------------

    @contextmanager
    def track(self, cluster_id: str) -> Iterator[None]:
        """Count a data-plane request of a cluster while it runs."""
        self._add(cluster_id, 1)
        try:
            yield
        finally:
            self._add(cluster_id, -1)

    def _add(self, cluster_id: str, delta: int) -> None:
        with self._changed:
            self._counts[cluster_id] += delta
            if self._counts[cluster_id] <= 0:
                del self._counts[cluster_id]
            self._changed.notify_all()
        if self._redis is not None:
            self._publish(cluster_id, delta)

    def local(self, cluster_id: str) -> int:
        """This process's requests of the cluster running now."""
        with self._changed:
            return self._counts.get(cluster_id, 0)

    # --- every replica ------------------------------------------------------------------------------------

    def in_flight(self, cluster_id: str) -> int:
        """Requests of the cluster running now in every live replica (this process alone without Redis)."""
        if self._redis is None:
            return self.local(cluster_id)
        try:
            total = 0
            for key in self._redis.scan_iter(match=f"{self._prefix}*", count=100):
                value = self._redis.hget(key, cluster_id)
                total += max(0, int(value or 0))
            return total
        except Exception:  # Redis down: what this process knows is still true for this process
            self._warn("reading")
            return self.local(cluster_id)

    def drain(self, cluster_id: str, timeout: float) -> bool:
        """Wait until no request of the cluster runs anywhere (new ones are refused); False on timeout.

        Polled when shared (another replica cannot notify this one); woken on change otherwise.
        """
        deadline = time.monotonic() + timeout
        if self._redis is None:
            with self._changed:
                while self._counts.get(cluster_id, 0) > 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._changed.wait(remaining)
                return True
        while self.in_flight(cluster_id) > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    # --- publishing ---------------------------------------------------------------------------------------

    def _publish(self, cluster_id: str, delta: int) -> None:
        try:
            pipe = self._redis.pipeline()
            pipe.hincrby(self._key, cluster_id, delta)
            pipe.pexpire(self._key, int(self._ttl * 1000))
            pipe.execute()
        except Exception:
            self._warn("publishing")
            return
        if self._heartbeat is None:
            # Requests may outlive the TTL: refresh the hash while this process lives.
            self._heartbeat = threading.Thread(target=self._beat, name="inflight-heartbeat", daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stopped.wait(self._ttl / 3):
            try:
                self._redis.pexpire(self._key, int(self._ttl * 1000))
            except Exception:
                self._warn("refreshing")

    def stop(self) -> None:
        """Stop refreshing (tests: a replica that dies), leaving the hash to expire."""
        self._stopped.set()

    def _warn(self, what: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "in-flight counts: %s Redis failed; using this process's counts", what, exc_info=True
            )


_default: Counts | None = None
_default_lock = threading.Lock()


def counts() -> Counts:
    """This process's counts, shared through Redis when `INFLIGHT_REDIS_URL` is set (built on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = _build()
    return _default


def _build() -> Counts:
    from django.conf import settings

    url = getattr(settings, "INFLIGHT_REDIS_URL", "")
    if not url:
        return Counts()
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return Counts(client, ttl=float(getattr(settings, "INFLIGHT_TTL", 15.0)))


@contextmanager
def track(cluster_id: str) -> Iterator[None]:
    """Count a data-plane request of a cluster while it runs."""
    with counts().track(cluster_id):
        yield


def in_flight(cluster_id: str) -> int:
    """How many requests of the cluster are running now (in every live replica when shared)."""
    return counts().in_flight(cluster_id)


def drain(cluster_id: str, timeout: float) -> bool:
    """Wait until no request of the cluster runs (new ones are refused by then); False on timeout."""
    return counts().drain(cluster_id, timeout)
