"""The optional per-cluster tokens-per-minute limit, held before models run (billing/limits.py)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import LazySettings
from django.utils import timezone

from billing import limits
from billing.limits import RateLimited
from billing.services import BillingError, cluster_limit_set
from console.clusters.models import Cluster
from tests.billing.conftest import record
from tests.conftest import BM25, MINILM

NOW = datetime(2025, 3, 10, 12, 0, 30, 200_000, tzinfo=UTC)  # 29.8 s before the next minute


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Stop the clock at NOW for the limit."""
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    return NOW


@pytest.fixture(params=["memory", "redis"])
def counters(request: pytest.FixtureRequest, settings: LazySettings) -> Iterator[str]:
    """The limit's counters in this process's memory, and in Redis when the local Redis answers."""
    if request.param == "redis":
        url = os.environ.get("TEST_REDIS_URL", "")
        if not url:
            pytest.skip("needs Redis (TEST_REDIS_URL; make test sets it when Redis answers)")
        settings.LIMITS_REDIS_URL = url
    limits._counters.cache_clear()
    yield request.param
    limits._counters.cache_clear()


def test_a_cluster_without_a_limit_always_passes(cluster: Cluster, frozen: datetime, counters: str) -> None:
    record(cluster.id, MINILM, 10**9, frozen)
    limits.reserve(cluster.id, 10**6).settle(10**6)


def test_the_limit_counts_this_utc_minute_across_models(
    cluster: Cluster, frozen: datetime, counters: str
) -> None:
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=100)
    minute = frozen.replace(second=0, microsecond=0)
    record(cluster.id, MINILM, 1_000, minute - timedelta(microseconds=1))  # last minute
    record(cluster.id, MINILM, 60, minute)
    record(cluster.id, BM25, 39, frozen)
    if counters == "memory":  # seeded from the ledger: 99 of 100 used
        limits.reserve(cluster.id, 5).settle(1)
    else:  # Redis counts what went through reservations only
        limits.reserve(cluster.id, 200).settle(100)
    with pytest.raises(RateLimited) as raised:
        limits.reserve(cluster.id, 1)
    assert (raised.value.retry_after_seconds, raised.value.limit, raised.value.used) == (30, 100, 100)
    assert "100 of 100 tokens per minute" in str(raised.value)
    assert raised.value.status == 429 and raised.value.retry_after == 30


def test_the_limit_can_be_changed_and_removed(cluster: Cluster, frozen: datetime, counters: str) -> None:
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=50)
    limits.reserve(cluster.id, 60).settle(50)
    with pytest.raises(RateLimited):
        limits.reserve(cluster.id, 1)
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=51)  # applies at once in this process
    limits.reserve(cluster.id, 1).settle(1)
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=None)
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=None)  # removing twice is fine
    limits.reserve(cluster.id, 1).settle(1)
    with pytest.raises(BillingError):
        cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=0)


def test_retry_after_is_at_least_one_second(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, counters: str
) -> None:
    almost = NOW.replace(second=59, microsecond=999_999)
    monkeypatch.setattr(timezone, "now", lambda: almost)
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=1)
    limits.reserve(cluster.id, 1).settle(1)
    with pytest.raises(RateLimited) as raised:
        limits.reserve(cluster.id, 1)
    assert raised.value.retry_after_seconds == 1


def test_concurrent_reservations_overshoot_by_at_most_one_request(
    cluster: Cluster, frozen: datetime, counters: str
) -> None:
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=100)
    # Read the limit (and seed the counter) here: the threads' own connections cannot see this test's
    # uncommitted transaction.
    limits.reserve(cluster.id, 0).settle(0)
    admitted: list[int] = []
    refused: list[int] = []
    start = threading.Barrier(64)

    def request(tokens: int) -> None:
        start.wait()
        try:
            reservation = limits.reserve(cluster.id, tokens)
        except RateLimited:
            refused.append(tokens)
            return
        admitted.append(tokens)
        reservation.settle(tokens)

    threads = [threading.Thread(target=request, args=(7 + i % 5,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) + len(refused) == 64
    assert 100 <= sum(admitted) < 100 + max(admitted)  # at most one request beyond the limit


def test_a_refused_or_failed_request_gives_its_tokens_back(
    cluster: Cluster, frozen: datetime, counters: str
) -> None:
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=10)
    limits.reserve(cluster.id, 500).settle(0)  # held 500 while running, then no model ran
    limits.reserve(cluster.id, 9).settle(9)
    limits.reserve(cluster.id, 3).settle(3)  # 9 < 10: admitted, and now over
    with pytest.raises(RateLimited):
        limits.reserve(cluster.id, 1)
