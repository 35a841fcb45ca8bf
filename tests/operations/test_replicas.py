"""Two web replicas (two web servers, started as `make run` starts them) sharing PostgreSQL, Redis
and a Qdrant-compatible server, behind a round-robin client: usage is exact across both and the
tokens-per-minute limit is shared; a change made anywhere (a revoked key, a new limit, a cluster restarting)
applies to the very next request on every replica; an inference toggle's restart drains and warms both, each
reporting, and a replica SIGKILLed in the middle of it does not wedge the job.

The restart task runs in the test thread (as a Celery worker's thread would run it) against the test
database the replicas share; it reaches each replica's own control listener from the registry."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
from django.conf import LazySettings
from django.db import connection
from django.db.models import Sum
from rest_framework.test import APIClient

from billing.models import UsageRecord
from billing.services import cluster_limit_set
from console.clusters.models import ApiKey, Replica, RestartJob
from console.clusters.selectors import replicas_live
from console.clusters.services import (
    CreatedCluster,
    CreatedUser,
    api_key_revoke,
    cluster_inference_toggle,
    restart_job_claim,
    restart_job_complete,
    user_create,
)
from console.clusters.tasks import restart_cluster
from inference import inflight
from tests.conftest import MINILM
from tests.fixtures import job_state, wait_for
from tests.helpers import restart_in_thread
from tests.processes import free_port, kill_group, start_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
CONTROL_TOKEN = "control-token-shared-by-replicas-and-the-worker"


@dataclass
class ReplicaServer:
    """One replica: the web server (main process and one worker) as `make run` starts it, and its base URL."""

    base: str
    process: subprocess.Popen[bytes]


@pytest.fixture
def start_replicas(
    qdrant_server: tuple[str, str],
    transactional_db: None,
    tmp_path: Path,
    models_dir: Path,
    settings: LazySettings,
) -> Iterator[Callable[..., list[ReplicaServer]]]:
    """Start two replicas (`start(**extra_environment)`) serving `console.wsgi.served_application`: each
    worker registers itself and its control listener.

    They share the control token with this process, which runs the restart task as a worker would, and
    their Redis for this process's own changes too (CACHE_REDIS_URL), as the worker and any `manage.py`
    command of the deployment do: what it changes through the ORM is announced to the replicas.
    """
    db = connection.settings_dict
    if connection.vendor != "postgresql" or not REDIS_URL:
        pytest.skip("replicas share PostgreSQL and Redis: set DATABASE_URL (PostgreSQL) and TEST_REDIS_URL")
    settings.CONTROL_TOKEN = CONTROL_TOKEN
    settings.CACHE_REDIS_URL = REDIS_URL
    database_url = (
        f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    started: list[ReplicaServer] = []

    def start(**extra: str) -> list[ReplicaServer]:
        servers = []
        for index in range(2):
            env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL",)}
            env.update(
                DATA_DIR=str(tmp_path / f"replica-{index}"), MODELS_DIR=str(models_dir),
                PORT=str(free_port()),
                GRPC_PORT="0", HF_HUB_OFFLINE="1", DJANGO_SETTINGS_MODULE="console.settings",
                RUN_SETTINGS_FILE="/dev/null", DATABASE_URL=database_url, SECRET_KEY="shared-by-replicas",
                QDRANT_URL=qdrant_server[0], QDRANT_API_KEY=qdrant_server[1], LIMITS_REDIS_URL=REDIS_URL,
                REPLICA_HEARTBEAT_SECONDS="0.5", CONTROL_TOKEN=CONTROL_TOKEN,
                **extra,
            )  # fmt: skip
            process = start_server(env, as_make_run=True)
            servers.append(ReplicaServer(base=f"http://127.0.0.1:{env['PORT']}", process=process))
            started.append(servers[-1])
        return servers

    try:
        yield start
    finally:
        for server in started:
            kill_group(server.process)


@pytest.fixture
def replica_servers(start_replicas: Callable[..., list[ReplicaServer]]) -> list[ReplicaServer]:
    """Two replicas with the default cache lifetimes."""
    return start_replicas()


@pytest.fixture
def replicas(replica_servers: list[ReplicaServer], cluster: CreatedCluster) -> list[str]:
    """The cluster's URL on each of two replicas."""
    return [f"{server.base}/clusters/{cluster.cluster.id}" for server in replica_servers]


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
    # Each replica folds its usage journal into the ledger in the background, within moments of answering.
    deadline = time.monotonic() + 10
    while True:
        ledger = UsageRecord.objects.filter(cluster_id=cluster.cluster.id).aggregate(t=Sum("tokens"))["t"]
        if ledger == reported or time.monotonic() > deadline:
            break
        time.sleep(0.05)
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
    start_replicas: Callable[..., list[ReplicaServer]], cluster: CreatedCluster
) -> None:
    # Cached for 5 minutes: only the shared invalidation, not an expiry, can explain a changed answer.
    servers = start_replicas(DIRECTORY_CACHE_SECONDS="300", LIMIT_CACHE_SECONDS="300")
    cluster_id = cluster.cluster.id
    a, b = (f"{server.base}/clusters/{cluster_id}" for server in servers)
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


# --- the restart job on every replica -------------------------------------------------------------------

STEPS = {"drain", "storage", "warm", "health"}


def two_live_replicas() -> list[Replica]:
    return wait_for(lambda: (live := replicas_live()) and len(live) == 2 and live, what="two live replicas")


def parent_pid(pid: int) -> int:
    """A process's parent (the web server's main process, for a worker's registered pid)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def embeds_through(base: str, created: CreatedCluster) -> None:
    """The replica at `base` embeds a query with the cluster's model and finds the point stored earlier."""
    answer = httpx.post(
        f"{base}/clusters/{created.cluster.id}/collections/docs/points/query",
        headers={"api-key": created.api_key},
        json={"query": {"text": "Which planet is red?", "model": MINILM}, "limit": 1},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["points"][0]["id"] == 1
    assert answer.json()["usage"]["inference"]["models"][MINILM]["tokens"] > 0


def store_a_point(base: str, created: CreatedCluster) -> None:
    url, headers = f"{base}/clusters/{created.cluster.id}", {"api-key": created.api_key}
    made = httpx.put(
        f"{url}/collections/docs", headers=headers, json={"vectors": {"size": 384, "distance": "Cosine"}}
    )
    assert made.status_code == 200, made.text
    point = {"points": [{"id": 1, "vector": {"text": "Mars, the red planet", "model": MINILM}}]}
    stored = httpx.put(f"{url}/collections/docs/points?wait=true", headers=headers, json=point, timeout=60)
    assert stored.status_code == 200, stored.text


def test_a_toggle_drains_and_warms_both_replicas_and_each_reports(
    replica_servers: list[ReplicaServer],
    make_cluster: Callable[..., CreatedCluster],
    admin: CreatedUser,
    admin_api: APIClient,
) -> None:
    live = two_live_replicas()
    assert {parent_pid(r.pid) for r in live} == {s.process.pid for s in replica_servers}  # one per replica
    created = make_cluster()  # inference off
    job = cluster_inference_toggle(cluster=created.cluster, enabled=True, actor=admin.user)
    assert job is not None

    assert restart_cluster.run(job.pk) == "succeeded"

    done = job_state(job.pk)
    assert set(done.replicas) == {str(r.pk) for r in live}
    for replica in live:
        entry = done.replicas[str(replica.pk)]
        assert (entry["host"], entry["pid"]) == (replica.host, replica.pid)
        assert set(entry["steps"]) == STEPS and all(s["ok"] for s in entry["steps"].values()), entry
        # Each process drained and loaded the models itself (its own answer, checked against its id).
        assert "waited_ms" in entry["steps"]["drain"]["detail"]
        assert MINILM in entry["steps"]["warm"]["detail"]["models"]
        assert MINILM in entry["steps"]["health"]["detail"]["models_probed"]
    assert set(admin_api.get(f"/api/v1/jobs/{job.pk}").json()["replicas"]) == set(done.replicas)

    # Both serve the new state: each embeds with the model it warmed.
    store_a_point(replica_servers[0].base, created)
    for server in replica_servers:
        embeds_through(server.base, created)


def test_a_replica_killed_mid_restart_does_not_wedge_the_job(
    replica_servers: list[ReplicaServer],
    make_cluster: Callable[..., CreatedCluster],
    admin: CreatedUser,
    settings: LazySettings,
) -> None:
    settings.REPLICA_STALE_AFTER = 3.0  # this process judges staleness; the replicas beat every 0.5 s
    live = two_live_replicas()
    survivor, victim = replica_servers
    survivor_row = next(r for r in live if parent_pid(r.pid) == survivor.process.pid)
    victim_row = next(r for r in live if r.pk != survivor_row.pk)
    created = make_cluster()
    job = cluster_inference_toggle(cluster=created.cluster, enabled=True, actor=admin.user)
    assert job is not None
    # A request "in flight" on a third process, counted in the Redis the replicas share: both drains wait.
    elsewhere = inflight.Counts(redis.Redis.from_url(REDIS_URL), ttl=15)
    results: list[str] = []
    with elsewhere.track(created.cluster.id):
        runner = restart_in_thread(job.pk, results)
        wait_for(lambda: job_state(job.pk).step == "drain", what="the drain step")
        time.sleep(0.5)  # both drain calls are waiting for that request now
        kill_group(victim.process)  # SIGKILL: no worker_exit, the registration is left to go stale
        killed = time.monotonic()
    elsewhere.stop()
    runner.join(120)
    took = time.monotonic() - killed

    assert results == ["succeeded"], job_state(job.pk).error
    assert took < 45, f"the job took {took:.0f}s after the kill"
    done = job_state(job.pk)
    ok = done.replicas[str(survivor_row.pk)]
    assert set(ok["steps"]) == STEPS and all(s["ok"] for s in ok["steps"].values()), ok
    gone = done.replicas[str(victim_row.pk)]
    assert gone["gone"] is True and gone["steps"]["drain"]["gone"] is True, gone
    assert "warm" not in gone["steps"]  # let go at once: never asked to warm a dead process
    store_a_point(survivor.base, created)
    embeds_through(survivor.base, created)
