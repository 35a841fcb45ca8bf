"""The caches of keys, cluster states and limits, invalidated across processes through a generation counter
in Redis (console/clusters/sharedcache.py): bumped once a change commits (never on rollback), read once per
request, and never trusted while Redis is unreachable."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import LazySettings
from django.db import transaction
from django.utils import timezone

from billing import limits
from billing.models import ClusterLimit
from billing.services import cluster_limit_set
from console.clusters import sharedcache
from console.clusters.directory import ClusterDirectory
from console.clusters.models import ApiKey, Cluster
from console.clusters.services import CreatedCluster, api_key_revoke
from console.clusters.sharedcache import Generation, SharedCache
from tests.conftest import MINILM
from tests.helpers import DataPlaneClient
from tests.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_client() -> redis.Redis:
    url = os.environ.get("TEST_REDIS_URL", "")
    if not url:
        pytest.skip("needs Redis (TEST_REDIS_URL; make test sets it when Redis answers)")
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(f"Redis at {url} does not answer")
    return client


@pytest.fixture
def generation_key(redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process's generation in Redis, under a key of this test's own (xdist workers share the Redis)."""
    key = f"test:cache-generation:{uuid.uuid4().hex}"
    mine = Generation(redis_client, key=key)
    monkeypatch.setattr(sharedcache, "generation", lambda: mine)
    yield key
    redis_client.delete(key)


def another_process(redis_client: redis.Redis, key: str) -> Generation:
    """The generation as another process (replica, worker) holds it: same Redis key, its own state."""
    return Generation(redis_client, key=key)


def test_a_change_bumps_the_generation_once_committed_never_on_rollback(
    cluster: CreatedCluster, redis_client: redis.Redis, generation_key: str
) -> None:
    other = another_process(redis_client, generation_key)
    start = other.current()
    assert start is not None
    key = ApiKey.objects.get(cluster=cluster.cluster)
    with transaction.atomic():
        api_key_revoke(api_key=key)
        # Not before the commit: another process would reload the row and cache it as it still is.
        assert other.current() == start
    assert other.current() == start + 1

    with pytest.raises(RuntimeError), transaction.atomic():
        cluster_limit_set(cluster_id=cluster.cluster.id, tokens_per_minute=10)
        raise RuntimeError("rolled back")
    assert other.current() == start + 1  # nothing changed, nothing announced

    cluster_limit_set(cluster_id=cluster.cluster.id, tokens_per_minute=10)
    assert other.current() == start + 2
    cluster_limit_set(cluster_id=cluster.cluster.id, tokens_per_minute=None)  # a deletion too
    assert other.current() == start + 3
    cluster.cluster.status = Cluster.Status.RESTARTING
    cluster.cluster.save(update_fields=["status"])
    assert other.current() == start + 4


def test_another_processs_change_reaches_this_processs_caches_through_the_generation(
    cluster: CreatedCluster, settings: LazySettings, redis_client: redis.Redis, generation_key: str
) -> None:
    settings.DIRECTORY_CACHE_SECONDS = settings.LIMIT_CACHE_SECONDS = 300.0  # only invalidation can drop them
    cluster_id, directory = cluster.cluster.id, ClusterDirectory()
    assert directory.key_for_secret(cluster.api_key) is not None
    assert limits._limit_of(cluster_id) is None
    info = directory.cluster(cluster_id)
    assert info is not None and not info.restarting

    # Another process changes the rows; queryset writes send no signal, so this process is not told.
    ApiKey.objects.filter(cluster_id=cluster_id).update(revoked_at=timezone.now())
    ClusterLimit.objects.bulk_create([ClusterLimit(cluster_id=cluster_id, tokens_per_minute=5)])
    Cluster.objects.filter(pk=cluster_id).update(status=Cluster.Status.RESTARTING)
    assert directory.key_for_secret(cluster.api_key) is not None  # still the cached copies
    assert limits._limit_of(cluster_id) is None

    another_process(redis_client, generation_key).bump()  # what that process does once it committed
    assert directory.key_for_secret(cluster.api_key) is None
    assert limits._limit_of(cluster_id) == 5
    info = directory.cluster(cluster_id)
    assert info is not None and info.restarting


def test_an_entry_loaded_across_a_change_is_out_of_date_at_once(
    redis_client: redis.Redis, generation_key: str
) -> None:
    cache: SharedCache[str] = SharedCache(lambda: 300.0)

    def load_then_another_process_commits() -> str:
        another_process(redis_client, generation_key).bump()  # after the old row was read, before it is kept
        return "old"

    assert cache.get("k", load_then_another_process_commits) == "old"
    assert cache.get("k", lambda: "new") == "new"  # stamped before loading: the old one is never served
    assert cache.get("k", lambda: "unused") == "new"


def test_one_redis_read_per_request_for_key_cluster_and_limit(
    cluster: CreatedCluster, redis_client: redis.Redis, generation_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    class Counting:
        def get(self, key: str) -> Any:
            calls.append("get")
            return redis_client.get(key)

        def incr(self, key: str) -> Any:
            calls.append("incr")
            return redis_client.incr(key)

    counted = Generation(Counting(), key=generation_key)  # type: ignore[arg-type]
    monkeypatch.setattr(sharedcache, "generation", lambda: counted)
    cluster_limit_set(cluster_id=cluster.cluster.id, tokens_per_minute=10_000)
    assert calls == ["incr"]
    api = DataPlaneClient(cluster.cluster.id, cluster.api_key)
    assert api.call("put", "/collections/docs", {"vectors": {"size": 384, "distance": "Cosine"}})[0] == 200
    calls.clear()
    points = [{"id": 1, "vector": {"text": "one read", "model": MINILM}}]
    status, body = api.call("put", "/collections/docs/points?wait=true", {"points": points})
    assert status == 200, body
    assert calls == ["get"]  # the key, the cluster and the limit were all read through the cache


def test_redis_down_means_fresh_reads_and_no_failure(
    cluster: CreatedCluster, settings: LazySettings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.DIRECTORY_CACHE_SECONDS = 300.0
    settings.CACHE_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    api = DataPlaneClient(cluster.cluster.id, cluster.api_key)
    with caplog.at_level(logging.WARNING, logger="console.clusters.sharedcache"):
        assert api.call("get", "/collections")[0] == 200
        ApiKey.objects.filter(cluster=cluster.cluster).update(revoked_at=timezone.now())  # no signal
        assert api.call("get", "/collections")[0] == 401  # nothing was kept: read fresh
        api_key_revoke(api_key=ApiKey.objects.get(cluster=cluster.cluster))  # the bump fails, quietly
    warnings = [r for r in caplog.records if r.name == "console.clusters.sharedcache"]
    assert len(warnings) == 1 and "Redis failed" in warnings[0].getMessage()  # once per outage


def test_redis_down_is_retried_after_the_backoff_and_owed_bumps_are_paid() -> None:
    class Flaky:
        def __init__(self) -> None:
            self.up, self.value, self.calls = False, 0, 0

        def get(self, key: str) -> int:
            self.calls += 1
            if not self.up:
                raise redis.ConnectionError("down")
            return self.value

        def incr(self, key: str) -> int:
            self.calls += 1
            if not self.up:
                raise redis.ConnectionError("down")
            self.value += 1
            return self.value

    flaky = Flaky()
    waiting = Generation(flaky, backoff=3600)  # type: ignore[arg-type]
    assert waiting.current() is None and flaky.calls == 1
    assert waiting.current() is None and flaky.calls == 1  # within the backoff: not tried, no timeout paid

    retrying = Generation(flaky, backoff=0)  # type: ignore[arg-type]
    retrying.bump()  # a change committed while Redis was down
    assert retrying.current() is None
    flaky.up = True
    assert retrying.current() == 1  # the owed increment, made by the first read that reaches Redis
    assert retrying.current() == 1


def test_without_redis_the_generation_is_constant() -> None:
    local = Generation(None)
    local.bump()
    assert local.current() == 0
