"""The tokens-per-minute limit, held before models run so that concurrent requests cannot overshoot it.

A request that is about to run a model reserves an upper bound of its tokens in the cluster's counter for
the current UTC minute, atomically: if the counter already reached the limit the request is refused (429)
before anything runs; otherwise the bound is added, and replaced by the tokens actually processed once the
models ran. Since every admitted request saw the counter under the limit, concurrent requests overshoot it
by at most one request's tokens.

The counters live in Redis when LIMITS_REDIS_URL is set, shared by every web process (what several
replicas need), and otherwise in this process's memory, seeded on first use each minute from the ledger
(the embedded default has one web process). A cluster's limit itself is read from the database at most
every LIMIT_CACHE_SECONDS; a change applies at once in the process that made it and, with a shared Redis
(`CACHE_REDIS_URL`), on the next request of every other process too (`console.clusters.sharedcache`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from billing.models import ClusterLimit
from billing.selectors import usage_tokens_between
from console.clusters.sharedcache import SharedCache, changed
from inference.errors import TooManyRequests
from inference.providers import PROVIDERS

if TYPE_CHECKING:
    from redis import Redis


class RateLimited(TooManyRequests):
    """The cluster already spent its tokens for the current UTC minute; retry after `retry_after_seconds`."""

    def __init__(self, *, retry_after_seconds: int, limit: int, used: int) -> None:
        self.retry_after_seconds = retry_after_seconds
        self.limit = limit
        self.used = used
        super().__init__(
            f"Rate limit exceeded: {used} of {limit} tokens per minute already used; "
            f"retry after {retry_after_seconds} s",
            retry_after=retry_after_seconds,
        )


@dataclass
class Reservation:
    """Tokens held in one cluster's counter of one minute, until settled with the tokens actually used."""

    cluster_id: str
    minute: int  # unix seconds of the minute's start
    held: int
    settled: bool = False

    def settle(self, tokens: int) -> None:
        """Replace the held bound by `tokens` (0 when no model ran after all); once."""
        if self.settled or self.held == 0:
            self.settled = True
            return
        self.settled = True
        _counters().add(self.cluster_id, self.minute, tokens - self.held)


def reserve(cluster_id: str, tokens: int) -> Reservation:
    """Hold `tokens` against the cluster's limit this minute, or raise RateLimited."""
    limit = _limit_of(cluster_id)
    now = timezone.now()
    start = now.replace(second=0, microsecond=0)
    minute = int(start.timestamp())
    if limit is None:
        return Reservation(cluster_id, minute, held=0)
    before = _counters().add(cluster_id, minute, tokens) - tokens
    if before >= limit:
        _counters().add(cluster_id, minute, -tokens)
        wait = (start + timedelta(minutes=1) - now).total_seconds()
        raise RateLimited(retry_after_seconds=max(1, math.ceil(wait)), limit=limit, used=before)
    return Reservation(cluster_id, minute, held=tokens)


def forget_limit(cluster_id: str) -> None:
    """Drop this process's cached limit of a cluster (after a change), so it applies on the next request."""
    _limits.drop(cluster_id)


def _on_limit_change(sender: Any, instance: ClusterLimit, **kwargs: Any) -> None:
    changed(lambda: forget_limit(instance.cluster_id))


def connect_invalidation() -> None:
    """Drop cached limits when they change, in this process and, through the shared generation, in every
    other (called by the app config)."""
    post_save.connect(_on_limit_change, sender=ClusterLimit, dispatch_uid="billing.limit.save")
    post_delete.connect(_on_limit_change, sender=ClusterLimit, dispatch_uid="billing.limit.delete")


_limits: SharedCache[int | None] = SharedCache(lambda: float(settings.LIMIT_CACHE_SECONDS))  # by cluster id


def _limit_of(cluster_id: str) -> int | None:
    def load() -> int | None:
        return (
            ClusterLimit.objects.filter(cluster_id=cluster_id)
            .values_list("tokens_per_minute", flat=True)
            .first()
        )

    return _limits.get(cluster_id, load)


class _MemoryCounters:
    """Counters of this process, seeded from the ledger the first time a cluster's minute is touched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}

    def add(self, cluster_id: str, minute: int, tokens: int) -> int:
        key = (cluster_id, minute)
        if key not in self._counts:
            start = datetime.fromtimestamp(minute, tz=UTC)
            seed = usage_tokens_between(
                cluster_id=cluster_id,
                start=start,
                end=start + timedelta(minutes=1),
                exclude_prefixes=[f"{prefix}/" for prefix in PROVIDERS],  # the provider bills those tokens
            )
            with self._lock:
                self._counts.setdefault(key, seed)
                for old in [k for k in self._counts if k[1] < minute - 120]:  # keep memory bounded
                    del self._counts[old]
        with self._lock:
            self._counts[key] += tokens
            return self._counts[key]


class _RedisCounters:
    """Counters shared by every process through Redis (INCRBY is atomic); each expires after its minute."""

    def __init__(self, client: Redis) -> None:
        self._redis = client

    def add(self, cluster_id: str, minute: int, tokens: int) -> int:
        key = f"billing:tpm:{cluster_id}:{minute}"
        pipe = self._redis.pipeline()
        pipe.incrby(key, tokens)
        pipe.expire(key, 180)
        value: Any = pipe.execute()[0]
        return int(value)


@cache
def _counters() -> _MemoryCounters | _RedisCounters:
    url = str(settings.LIMITS_REDIS_URL)
    if not url:
        return _MemoryCounters()
    import redis

    return _RedisCounters(redis.Redis.from_url(url))
