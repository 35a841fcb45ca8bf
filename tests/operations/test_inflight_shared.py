"""In-flight counts shared by replicas through Redis: a drain on one replica waits for requests on another,
and a replica that dies mid-request delays a drain by at most the TTL (real Redis; skipped without it)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from inference.inflight import Counts

REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="TEST_REDIS_URL is not set (needs a real Redis)")


@pytest.fixture
def redis_client() -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: Any) -> Iterator[str]:
    """A key prefix of this test's own, so tests sharing the Redis never see each other's replicas."""
    value = f"test-inflight-{uuid.uuid4().hex[:8]}:"
    yield value
    for key in redis_client.scan_iter(match=f"{value}*"):
        redis_client.delete(key)


def test_a_drain_on_one_replica_waits_for_requests_on_another(redis_client: Any, prefix: str) -> None:
    one, two = Counts(redis_client, prefix=prefix), Counts(redis_client, prefix=prefix)
    release = threading.Event()
    started = threading.Event()

    def request() -> None:
        with one.track("c1"):
            started.set()
            release.wait(10)

    worker = threading.Thread(target=request)
    worker.start()
    started.wait(5)
    try:
        assert one.local("c1") == 1 and two.local("c1") == 0
        assert two.in_flight("c1") == 1 and two.in_flight("other") == 0
        assert two.drain("c1", timeout=0.3) is False  # still running on the other replica
        threading.Timer(0.3, release.set).start()
        began = time.monotonic()
        assert two.drain("c1", timeout=5) is True
        assert 0.2 < time.monotonic() - began < 3
    finally:
        release.set()
        worker.join(5)
        one.stop()
        two.stop()
    assert two.in_flight("c1") == 0


def test_a_replica_killed_mid_request_does_not_wedge_the_drain(redis_client: Any, prefix: str) -> None:
    dead = Counts(redis_client, prefix=prefix, ttl=1.0)
    live = Counts(redis_client, prefix=prefix, ttl=1.0)
    tracked = dead.track("c1")
    tracked.__enter__()  # the request never finishes: its process is gone
    dead.stop()  # ...and so is its heartbeat
    assert live.in_flight("c1") == 1
    began = time.monotonic()
    assert live.drain("c1", timeout=5) is True
    assert time.monotonic() - began < 2.5  # within the TTL (1 s) and a poll
    live.stop()


def test_a_live_replica_keeps_its_requests_counted_past_the_ttl(redis_client: Any, prefix: str) -> None:
    slow = Counts(redis_client, prefix=prefix, ttl=0.6)
    other = Counts(redis_client, prefix=prefix, ttl=0.6)
    with slow.track("c1"):
        time.sleep(1.5)  # longer than the TTL: the heartbeat keeps the hash alive
        assert other.in_flight("c1") == 1
    assert other.in_flight("c1") == 0
    slow.stop()


def test_without_redis_the_counts_are_this_process_s() -> None:
    counts = Counts()
    with counts.track("c1"):
        assert counts.in_flight("c1") == 1
        assert counts.drain("c1", timeout=0.1) is False
    assert counts.drain("c1", timeout=0.1) is True
