"""Two web replicas (two gunicorn processes) sharing PostgreSQL, Redis and a Qdrant-compatible server,
behind a round-robin client: usage is exact across both, the tokens-per-minute limit is shared, and a
change made anywhere (a revoked key, a new limit, a cluster restarting) applies to the very next request
on every replica."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from django.conf import LazySettings
from django.db import connection
from django.db.models import Sum

from billing.models import UsageRecord
from billing.services import cluster_limit_set
from console.clusters.models import ApiKey, RestartJob
from console.clusters.services import (
    CreatedCluster,
    api_key_revoke,
    restart_job_claim,
    restart_job_complete,
    user_create,
)
from tests.conftest import MINILM
from tests.processes import free_port, kill_group, start_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "")


@pytest.fixture
def start_replicas(
    qdrant_server: tuple[str, str],
    cluster: CreatedCluster,
    tmp_path: Path,
    models_dir: Path,
    settings: LazySettings,
) -> Iterator[Callable[..., list[str]]]:
    """Start two replicas (`start(**extra_environment)`), answering the cluster's URL on each.

    This process shares their Redis for its own changes too (CACHE_REDIS_URL), as the worker and any
    `manage.py` command of the deployment do: what it changes through the ORM is announced to the replicas.
    """
    db = connection.settings_dict
    if connection.vendor != "postgresql" or not REDIS_URL:
        pytest.skip("replicas share PostgreSQL and Redis: set DATABASE_URL (PostgreSQL) and TEST_REDIS_URL")
    settings.CACHE_REDIS_URL = REDIS_URL
    database_url = (
        f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    started = []

    def start(**extra: str) -> list[str]:
        urls = []
        for index in range(2):
            env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL",)}
            env.update(
                DATA_DIR=str(tmp_path / f"replica-{index}"), MODELS_DIR=str(models_dir),
                PORT=str(free_port()),
                GRPC_PORT="0", HF_HUB_OFFLINE="1", DJANGO_SETTINGS_MODULE="console.settings",
                RUN_SETTINGS_FILE="/dev/null", DATABASE_URL=database_url, SECRET_KEY="shared-by-replicas",
                QDRANT_URL=qdrant_server[0], QDRANT_API_KEY=qdrant_server[1], LIMITS_REDIS_URL=REDIS_URL,
                **extra,
            )  # fmt: skip
            started.append(start_server(env))
            urls.append(f"http://127.0.0.1:{env['PORT']}/clusters/{cluster.cluster.id}")
        return urls

    try:
        yield start
    finally:
        for server in started:
            kill_group(server)


@pytest.fixture
def replicas(start_replicas: Callable[..., list[str]]) -> list[str]:
    """The cluster's URL on each of two replicas, with the default cache lifetimes."""
    return start_replicas()


def _wait_for_a_whole_minute_ahead() -> None:
    """The tokens-per-minute budget is per UTC minute: do not straddle two."""
    if datetime.now(UTC).second > 45:
        time.sleep(61 - datetime.now(UTC).second)


def test_usage_is_exact_and_the_limit_shared_across_two_replicas(
    replicas: list[str], cluster: CreatedCluster
) -> None:
    headers = {"api-key": cluster.api_key}
    round_robin = itertools.cycle(replicas)
    created = httpx.put(
        f"{next(round_robin)}/collections/docs",
        headers=headers,
        json={"vectors": {"size": 384, "distance": "Cosine"}},
    )
    assert created.status_code == 200, created.text

    # Usage: every answer's tokens are in the ledger once, whichever replica served it.
    reported = 0
    served_by = set()
    for i in range(6):
        url = next(round_robin)
        points = [
            {"id": i * 10 + j, "vector": {"text": f"replica text {i} {j}", "model": MINILM}} for j in range(3)
        ]
        answer = httpx.put(
            f"{url}/collections/docs/points?wait=true", headers=headers, json={"points": points}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        reported += answer.json()["usage"]["inference"]["models"][MINILM]["tokens"]
        served_by.add(url)
    assert served_by == set(replicas)
    ledger = UsageRecord.objects.filter(cluster_id=cluster.cluster.id).aggregate(total=Sum("tokens"))["total"]
    assert ledger == reported
    count = httpx.post(f"{replicas[1]}/collections/docs/points/count", headers=headers, json={}).json()
    assert count["result"]["count"] == 18  # both replicas wrote to the same remote collection

    # The limit: one budget for the cluster, not one per replica.
    _wait_for_a_whole_minute_ahead()
    per_request = 12  # about what one request below costs (3 short texts)
    limit = 5 * per_request
    cluster_limit_set(cluster_id=cluster.cluster.id, tokens_per_minute=limit)
    spent, refused = 0, 0
    for i in range(20):
        points = [
            {"id": 1000 + i * 10 + j, "vector": {"text": f"limit {i} {j}", "model": MINILM}} for j in range(3)
        ]
        url = next(round_robin)
        answer = httpx.put(
            f"{url}/collections/docs/points?wait=true", headers=headers, json={"points": points}, timeout=60
        )
        if answer.status_code == 429:
            refused += 1
            assert int(answer.headers["retry-after"]) >= 1
            continue
        assert answer.status_code == 200, answer.text
        spent += answer.json()["usage"]["inference"]["models"][MINILM]["tokens"]
    # Shared: the two replicas together stop near the limit (overshooting by at most one request);
    # two separate budgets would have let through about twice as much.
    assert refused > 0
    assert limit - 2 * per_request <= spent <= limit + 2 * per_request


def test_a_change_anywhere_applies_to_the_very_next_request_on_every_replica(
    start_replicas: Callable[..., list[str]], cluster: CreatedCluster
) -> None:
    # Cached for 5 minutes: only the shared invalidation, not an expiry, can explain a changed answer.
    a, b = start_replicas(DIRECTORY_CACHE_SECONDS="300", LIMIT_CACHE_SECONDS="300")
    cluster_id = cluster.cluster.id
    headers = {"api-key": cluster.api_key}

    def upsert(url: str, point_id: int) -> httpx.Response:
        point = {"id": point_id, "vector": {"text": f"next request {point_id}", "model": MINILM}}
        return httpx.put(
            f"{url}/collections/docs/points?wait=true", headers=headers, json={"points": [point]}, timeout=60
        )

    created = httpx.put(
        f"{a}/collections/docs", headers=headers, json={"vectors": {"size": 384, "distance": "Cosine"}}
    )
    assert created.status_code == 200, created.text

    # A limit lowered below what this minute already spent: refused on B's very next request.
    _wait_for_a_whole_minute_ahead()
    cluster_limit_set(cluster_id=cluster_id, tokens_per_minute=1_000_000)
    for url in (a, b):  # both replicas now hold the key, the cluster and the generous limit
        answer = upsert(url, 1)
        assert answer.status_code == 200, answer.text
    cluster_limit_set(cluster_id=cluster_id, tokens_per_minute=1)  # through the ORM, here
    refused = upsert(b, 2)
    assert refused.status_code == 429, refused.text
    cluster_limit_set(cluster_id=cluster_id, tokens_per_minute=None)
    assert upsert(b, 3).status_code == 200

    # The cluster restarting, asked through replica A's API: B answers 503 at once.
    admin = user_create(username="replica-admin", role="admin")
    toggled = httpx.patch(
        f"{a.split('/clusters/')[0]}/api/v1/clusters/{cluster_id}/inference",
        headers={"Authorization": f"Token {admin.token}"},
        json={"enabled": False},
    )
    assert toggled.status_code == 202, toggled.text
    restarting = httpx.get(f"{b}/collections", headers=headers)
    assert restarting.status_code == 503, restarting.text
    assert int(restarting.headers["retry-after"]) >= 1
    # ...and back to running, inference off, flipped by the worker's services (here, no worker runs):
    job = RestartJob.objects.get(cluster_id=cluster_id)
    attempt = restart_job_claim(job_id=job.pk)
    assert attempt is not None
    restart_job_complete(job_id=job.pk, attempt=attempt)
    assert httpx.get(f"{b}/collections", headers=headers).status_code == 200
    disabled = upsert(b, 4)
    assert disabled.status_code == 400 and "Inference is not enabled" in disabled.text

    # A revoked key: refused on both replicas' very next request.
    api_key_revoke(api_key=ApiKey.objects.get(cluster_id=cluster_id))
    for url in (b, a):
        answer = httpx.get(f"{url}/collections", headers=headers)
        assert answer.status_code == 401, answer.text
