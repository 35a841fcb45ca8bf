"""The optional per-cluster tokens-per-minute limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from billing.services import BillingError, RateLimited, cluster_limit_set, usage_limit_check
from console.clusters.models import Cluster
from tests.billing.conftest import record
from tests.conftest import BM25, MINILM

NOW = datetime(2025, 3, 10, 12, 0, 30, 200_000, tzinfo=UTC)  # 29.8 s before the next minute


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Stop the clock at NOW for the limit check."""
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    return NOW


def test_a_cluster_without_a_limit_always_passes(cluster: Cluster, frozen: datetime) -> None:
    record(cluster.id, MINILM, 10**9, frozen)
    usage_limit_check(cluster_id=cluster.id)


def test_the_limit_counts_this_utc_minute_across_models(cluster: Cluster, frozen: datetime) -> None:
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=100)
    record(
        cluster.id, MINILM, 1_000, frozen.replace(second=0, microsecond=0) - timedelta(microseconds=1)
    )  # last minute
    record(cluster.id, MINILM, 60, frozen.replace(second=0, microsecond=0))
    record(cluster.id, BM25, 39, frozen)
    usage_limit_check(cluster_id=cluster.id)  # 99 of 100
    record(cluster.id, BM25, 1, frozen)
    with pytest.raises(RateLimited) as raised:
        usage_limit_check(cluster_id=cluster.id)
    assert (raised.value.retry_after_seconds, raised.value.limit, raised.value.used) == (30, 100, 100)
    assert "100 of 100 tokens per minute" in str(raised.value)


def test_the_limit_can_be_changed_and_removed(cluster: Cluster, frozen: datetime) -> None:
    record(cluster.id, MINILM, 50, frozen)
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=50)
    with pytest.raises(RateLimited):
        usage_limit_check(cluster_id=cluster.id)
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=51)
    usage_limit_check(cluster_id=cluster.id)
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=None)
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=None)  # removing twice is fine
    usage_limit_check(cluster_id=cluster.id)
    with pytest.raises(BillingError):
        cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=0)


def test_retry_after_is_at_least_one_second(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    almost = NOW.replace(second=59, microsecond=999_999)
    monkeypatch.setattr(timezone, "now", lambda: almost)
    cluster_limit_set(cluster_id=cluster.id, tokens_per_minute=1)
    record(cluster.id, MINILM, 1, almost)
    with pytest.raises(RateLimited) as raised:
        usage_limit_check(cluster_id=cluster.id)
    assert raised.value.retry_after_seconds == 1
