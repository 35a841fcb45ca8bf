"""Caches of database rows kept in each process, invalidated in every process at once through Redis.

The data plane keeps API keys, cluster states (`console.clusters.directory`) and tokens-per-minute limits
(`billing.limits`) in each process for a second or two, to stay off the database on the hot path. A
change drops the changed entry in the process that made it once its transaction commits; with a shared
Redis (`CACHE_REDIS_URL`, which defaults to `INFLIGHT_REDIS_URL`, i.e. `LIMITS_REDIS_URL`) the same
on-commit hook also increments one counter there, the *generation*, whichever process made the change
(a web process, the Celery worker flipping a cluster's state, a `manage.py` command).

Every entry is stamped with the generation read *before* its row was loaded, and is used only while Redis
still holds that generation. Since the increment follows the commit and precedes the changing request's
answer, any request that starts after that answer, on any process or replica, reads a newer generation
and loads the row fresh: a revoked key fails on the very next request everywhere. Stamping before loading
(rather than clearing on change) also covers a read that loaded the old row just before the commit and
stored it just after the increment: its stamp is already out of date.

Cost: one Redis GET per request (measured at 60-110 us with a local Redis; a cache hit after it costs
under 1 us). The generation is read once per request (between Django's `request_started` and
`request_finished`, in the serving thread; gRPC calls send the same signals) and shared by every cache read
of that request: the key, the cluster and the limit. Outside requests (the worker, commands) each cache
read asks Redis.
A memo shared by requests for some milliseconds would save little and break the guarantee above.

Redis unreachable: no entry is used or kept (every read goes to the database) and Redis is tried again
after `BACKOFF`; nothing fails and nothing stale is served. An increment that could not reach Redis is
retried on this process's next read, and meanwhile the other processes see the change when their entries
expire (the cache lifetime), as without Redis; both are logged. Without Redis the generation is a
constant: entries live for their lifetime or until a change in this process drops them.

Generic: it knows nothing of keys, clusters or limits, so billing (a layer above) uses it as well.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import transaction

if TYPE_CHECKING:
    from redis import Redis

logger = logging.getLogger(__name__)

KEY = "cache:generation"
TIMEOUT = 0.5  # seconds: a Redis that has not answered by then counts as down (reads go to the database)
BACKOFF = 1.0  # seconds before a Redis found down is tried again (so an outage costs no timeout per request)

V = TypeVar("V")


class Generation:
    """The shared counter: read before cached reads, incremented after every committed change."""

    def __init__(self, client: Redis | None, *, key: str = KEY, backoff: float = BACKOFF) -> None:
        self._redis = client
        self._key = key
        self._backoff = backoff
        self._down_until = 0.0
        self._owed = False  # an increment that did not reach Redis, paid by the next successful read
        self._warned = False

    def current(self) -> int | None:
        """The generation now: 0 without Redis (entries live their lifetime), None when Redis cannot be read
        (then no entry may be used)."""
        if self._redis is None:
            return 0
        if time.monotonic() < self._down_until:
            return None
        try:
            value: Any = self._redis.incr(self._key) if self._owed else self._redis.get(self._key)
        except Exception:
            self._failed("reading")
            return None
        self._owed = False
        if self._warned:
            self._warned = False
            logger.warning("cache generation: Redis answers again")
        return int(value or 0)

    def bump(self) -> None:
        """Make every process's entries out of date (called once a change committed)."""
        if self._redis is None:
            return
        try:
            self._redis.incr(self._key)
        except Exception:
            self._owed = True
            self._failed("incrementing")

    def _failed(self, what: str) -> None:
        self._down_until = time.monotonic() + self._backoff
        if not self._warned:  # once per outage, not once per request
            self._warned = True
            logger.warning(
                "cache generation: %s Redis failed; reading from the database until it answers, and other "
                "processes may see changes only when their entries expire",
                what,
                exc_info=True,
            )


@cache
def _generation_for(url: str) -> Generation:
    if not url:
        return Generation(None)
    import redis

    return Generation(redis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT))


def generation() -> Generation:
    """This process's generation counter, in the Redis of `CACHE_REDIS_URL` (settings read per call)."""
    return _generation_for(str(settings.CACHE_REDIS_URL))


# --- one read per HTTP request -----------------------------------------------------------------------------
_UNREAD: Any = object()


class _Request(threading.local):
    """The generation read by the HTTP request this thread serves, if it serves one."""

    active = False
    generation: Any = _UNREAD


_request = _Request()


def _on_request_started(**kwargs: Any) -> None:
    _request.active, _request.generation = True, _UNREAD


def _on_request_finished(**kwargs: Any) -> None:
    _request.active, _request.generation = False, _UNREAD


request_started.connect(_on_request_started, dispatch_uid="console.clusters.sharedcache.started")
request_finished.connect(_on_request_finished, dispatch_uid="console.clusters.sharedcache.finished")


def current() -> int | None:
    """The generation for a cached read: read once per HTTP request, else on every call."""
    if not _request.active:
        return generation().current()
    if _request.generation is _UNREAD:
        _request.generation = generation().current()
    value: int | None = _request.generation
    return value


def changed(drop: Callable[[], None]) -> None:
    """Once the current transaction commits (at once outside one): run `drop` (this process's entry), then
    make every process's entries out of date."""

    def apply() -> None:
        drop()
        generation().bump()
        _request.generation = _UNREAD  # the rest of this request reads the new generation too

    transaction.on_commit(apply)


# --- the cache ----------------------------------------------------------------------------------------------
class SharedCache(Generic[V]):
    """A thread-safe map whose entries live for `lifetime()` seconds, and only while the generation they were
    loaded in is current."""

    def __init__(self, lifetime: Callable[[], float], *, max_entries: int = 10_000) -> None:
        self._lifetime = lifetime
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, int, V]] = {}

    def get(self, key: str, load: Callable[[], V]) -> V:
        """The cached value of `key`, or `load()`'s (kept for next time)."""
        stamp = current()  # before loading: a change committed during the load makes the entry out of date
        if stamp is None:
            return load()  # Redis cannot say whether an entry is current: read fresh, keep nothing
        entry = self._entries.get(key)
        if entry is not None and entry[1] == stamp and entry[0] > time.monotonic():
            return entry[2]
        value = load()
        with self._lock:
            if len(self._entries) >= self._max_entries:  # bounded, whatever keys callers send
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self._lifetime(), stamp, value)
        return value

    def drop(self, key: str) -> None:
        """Forget `key` in this process."""
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything in this process."""
        with self._lock:
            self._entries.clear()
