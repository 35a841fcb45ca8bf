"""Two web replicas (two gunicorn processes) sharing PostgreSQL, Redis and a Qdrant-compatible server,
behind a round-robin client: usage is exact across both and the tokens-per-minute limit is shared."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from django.db import connection
from django.db.models import Sum

from billing.models import UsageRecord
from billing.services import cluster_limit_set
from console.clusters.services import CreatedCluster
from tests.conftest import MINILM
from tests.processes import free_port, kill_group, start_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "")


@pytest.fixture
def replicas(
    qdrant_server: tuple[str, str], cluster: CreatedCluster, tmp_path: Path, models_dir: Path
) -> Iterator[list[str]]:
    """The cluster's URL on each of two replicas."""
    db = connection.settings_dict
    if connection.vendor != "postgresql" or not REDIS_URL:
        pytest.skip("replicas share PostgreSQL and Redis: set DATABASE_URL (PostgreSQL) and TEST_REDIS_URL")
    database_url = (
        f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    started = []
    urls = []
    try:
        for index in range(2):
            env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL",)}
            env.update(
                DATA_DIR=str(tmp_path / f"replica-{index}"), MODELS_DIR=str(models_dir),
                PORT=str(free_port()),
                GRPC_PORT="0", HF_HUB_OFFLINE="1", DJANGO_SETTINGS_MODULE="console.settings",
                RUN_SETTINGS_FILE="/dev/null", DATABASE_URL=database_url, SECRET_KEY="shared-by-replicas",
                QDRANT_URL=qdrant_server[0], QDRANT_API_KEY=qdrant_server[1], LIMITS_REDIS_URL=REDIS_URL,
                LIMIT_CACHE_SECONDS="0",
            )  # fmt: skip
            started.append(start_server(env))
            urls.append(f"http://127.0.0.1:{env['PORT']}/clusters/{cluster.cluster.id}")
        yield urls
    finally:
        for server in started:
            kill_group(server)


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
    if datetime.now(UTC).second > 45:  # the budget is per UTC minute: do not straddle two
        time.sleep(61 - datetime.now(UTC).second)
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
