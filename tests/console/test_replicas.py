"""The replica registry, each web process's own control listener, and the restart job asking every replica.

The listeners here are real (`console.clusters.replicas.serve`: a stdlib HTTP server on an ephemeral port,
registered in the database, beating from a thread), two of them in this process; the restart task runs in
the test thread and calls them over HTTP. Two real web-server replicas are in
tests/operations/test_replicas.py.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.conf import LazySettings
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from console.clusters import control, replicas
from console.clusters.models import Cluster, Replica, RestartJob
from console.clusters.selectors import replica_ids_live, replicas_live, restart_job_replica_reports
from console.clusters.services import (
    CreatedCluster,
    CreatedUser,
    cluster_inference_toggle,
    replica_beat,
    replica_deregister,
    replica_register,
    replicas_prune,
)
from console.clusters.tasks import reap_stale_restart_jobs, restart_cluster
from inference import inflight
from tests.conftest import MINILM
from tests.fixtures import job_state, wait_for
from tests.helpers import restart_in_thread

STEPS = ["drain", "storage", "warm", "health"]


# --- the registry ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_register_beat_stale_and_prune(settings: LazySettings) -> None:
    settings.REPLICA_STALE_AFTER = 15.0
    settings.REPLICA_PRUNE_AFTER = 60.0
    t0 = timezone.now()
    one, two = uuid.uuid4(), uuid.uuid4()
    replica_register(replica_id=one, control_url="http://10.0.0.1:4001", host="web-1", pid=11, now=t0)
    replica_register(replica_id=two, control_url="http://10.0.0.2:4002", host="web-2", pid=22, now=t0)
    assert {str(r.pk) for r in replicas_live(now=t0)} == {str(one), str(two)}

    # Only `one` beats: 16 s later `two` is stale (dead), `one` is live.
    assert replica_beat(replica_id=one, now=t0 + timedelta(seconds=10))
    later = t0 + timedelta(seconds=16)
    assert [str(r.pk) for r in replicas_live(now=later)] == [str(one)]
    assert replica_ids_live(ids=[str(one), str(two), str(uuid.uuid4())], now=later) == {str(one)}

    # Dead rows stay (the admin lists them) until REPLICA_PRUNE_AFTER past the stale limit.
    assert replicas_prune(now=t0 + timedelta(seconds=15 + 59)) == 0
    assert replicas_prune(now=t0 + timedelta(seconds=15 + 61)) == 1
    assert list(Replica.objects.values_list("pk", flat=True)) == [one]

    # Registering again (after a prune, a restarted listener) updates the row; started_at stays.
    started = Replica.objects.get(pk=one).started_at
    replica_register(replica_id=one, control_url="http://10.0.0.1:4999", host="web-1", pid=11, now=later)
    again = Replica.objects.get(pk=one)
    assert (again.control_url, again.started_at, again.seen_at) == ("http://10.0.0.1:4999", started, later)

    # A beat for a pruned row says so (the process then registers again); a clean exit deletes the row.
    assert not replica_beat(replica_id=two)
    replica_deregister(replica_id=one)
    assert not Replica.objects.exists()


@pytest.mark.django_db
def test_registration_and_the_reaper_prune_long_dead_rows(settings: LazySettings) -> None:
    long_ago = timezone.now() - timedelta(
        seconds=settings.REPLICA_STALE_AFTER + settings.REPLICA_PRUNE_AFTER + 5
    )
    dead = Replica.objects.create(control_url="http://x:1", host="gone", pid=1, seen_at=long_ago)
    replica_register(replica_id=uuid.uuid4(), control_url="http://y:2", host="new", pid=2)
    assert not Replica.objects.filter(pk=dead.pk).exists()
    Replica.objects.create(control_url="http://x:1", host="gone", pid=1, seen_at=long_ago)
    assert reap_stale_restart_jobs() == {"requeued": [], "failed": [], "replicas_pruned": 1}
    assert Replica.objects.count() == 1


def test_the_advertised_host_is_reachable_from_elsewhere() -> None:
    assert replicas.advertised_host(bind="127.0.0.1") == "127.0.0.1"
    assert replicas.advertised_host(bind="0.0.0.0") == socket.gethostname()
    assert replicas.advertised_host(bind="0.0.0.0", configured="web-3") == "web-3"
    assert replicas.advertised_host(bind="::1") == "[::1]"


# --- the listener and the fan-out: threads of this process read the database ------------------------------


@pytest.fixture
def threads_share_the_database(transactional_db: None) -> None:
    if connection.vendor == "sqlite":
        # The in-memory SQLite test database is shared between threads through SQLite's shared cache, which
        # fails with "table is locked" instead of waiting; the listeners answer from threads of their own.
        pytest.skip("listener threads need a PostgreSQL test database (DATABASE_URL; make test sets it)")


@pytest.fixture
def listeners(threads_share_the_database: None) -> Iterator[list[replicas.LocalReplica]]:
    """Two registered replicas (control listeners) in this process, beating every 0.1 s."""
    started = [replicas.serve(bind="127.0.0.1", heartbeat=0.1) for _ in range(2)]
    yield started
    for replica in started:
        replica.stop()


def test_the_listener_serves_only_signed_control_calls(
    listeners: list[replicas.LocalReplica], make_cluster: Callable[..., CreatedCluster], admin: CreatedUser
) -> None:
    replica = listeners[0]
    row = Replica.objects.get(pk=replica.replica_id)
    assert row.control_url == replica.control_url and row.control_url.startswith("http://127.0.0.1:")
    cluster = make_cluster().cluster
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    RestartJob.objects.filter(pk=job.pk).update(state="running", attempts=1)
    path = control.step_path(cluster_id=cluster.pk, step="drain")
    url = f"{replica.control_url}{path}"

    refused = httpx.post(url, json={"token": "forged"})
    assert refused.status_code == 403 and refused.json()["replica"] == str(replica.replica_id)
    assert httpx.get(url).status_code == 405
    assert httpx.post(f"{replica.control_url}/clusters/{cluster.pk}/collections", json={}).status_code == 404
    host, port = replica.server.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as raw:  # a body too large is never read
        raw.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode())
        assert raw.recv(100).startswith(b"HTTP/1.0 413")

    token = control.sign(cluster_id=cluster.pk, step="drain", job_id=job.pk)
    done = httpx.post(url, json={"token": token})
    assert done.status_code == 200, done.text
    assert done.json() == {
        "ok": True, "step": "drain", "detail": done.json()["detail"], "replica": str(replica.replica_id),
    }  # fmt: skip
    # The Django view on the public port answers the same (without a replica id).
    public = Client().post(path, {"token": token}, content_type="application/json")
    assert public.status_code == 200 and "replica" not in public.json()


def test_the_heartbeat_registers_again_after_a_prune_and_a_clean_stop_deregisters(
    listeners: list[replicas.LocalReplica],
) -> None:
    replica = listeners[0]
    Replica.objects.filter(pk=replica.replica_id).delete()  # as a prune during a long stall would
    wait_for(
        lambda: Replica.objects.filter(pk=replica.replica_id).exists(), timeout=5, what="re-registration"
    )
    before = Replica.objects.get(pk=replica.replica_id).seen_at
    wait_for(lambda: Replica.objects.get(pk=replica.replica_id).seen_at > before, timeout=5, what="a beat")

    replica.stop()
    assert not Replica.objects.filter(pk=replica.replica_id).exists()
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{replica.control_url}/internal/clusters/x/restart/drain", json={})


def _steps(job: RestartJob, key: str) -> dict[str, Any]:
    """One replica's step results (unordered: PostgreSQL's jsonb keeps no key order)."""
    return dict(job.replicas[key]["steps"])


def test_a_toggle_drains_and_warms_every_replica_and_each_reports(
    listeners: list[replicas.LocalReplica],
    make_cluster: Callable[..., CreatedCluster],
    admin: CreatedUser,
    admin_api: APIClient,
    models_dir: object,
) -> None:
    cluster = make_cluster().cluster  # inference off
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    assert restart_cluster.run(job.pk) == "succeeded"

    done = job_state(job.pk)
    ids = {str(r.replica_id) for r in listeners}
    assert set(done.replicas) == ids
    for key in ids:
        steps = _steps(done, key)
        assert set(steps) == set(STEPS) and all(s["ok"] for s in steps.values()), steps
        assert MINILM in steps["warm"]["detail"]["models"]
        assert MINILM in steps["health"]["detail"]["models_probed"]
        assert (done.replicas[key]["step"], done.replicas[key]["ok"]) == ("health", True)
    assert Cluster.objects.get(pk=cluster.pk).inference_enabled

    # The API and the console page show each replica's report.
    api = admin_api.get(f"/api/v1/jobs/{job.pk}").json()
    assert set(api["replicas"]) == ids and api["replicas"][next(iter(ids))]["host"]
    client = Client()
    client.force_login(admin.user)
    html = client.get(reverse("console:cluster-inference", args=[cluster.pk])).content.decode()
    assert "2 web processes answered" in html
    for key in ids:
        assert f'data-replica="{key}"' in html
    assert html.count('data-status="ok"') == 8
    assert "loaded: " in html and f"{MINILM} (" in html and "waited " in html  # readable, in the titles


def test_a_replica_stopped_mid_job_is_let_go_and_the_job_succeeds_in_bounded_time(
    listeners: list[replicas.LocalReplica],
    make_cluster: Callable[..., CreatedCluster],
    admin: CreatedUser,
    settings: LazySettings,
    models_dir: object,
) -> None:
    settings.REPLICA_STALE_AFTER = 1.0
    healthy, dying = listeners
    cluster = make_cluster().cluster
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    results: list[str] = []
    with inflight.track(cluster.pk):  # holds the drain on both listeners (one process: one count)
        runner = restart_in_thread(job.pk, results)
        wait_for(lambda: job_state(job.pk).step == "drain", what="the drain step")
        time.sleep(0.2)
        # Dies: stops listening and beating, without deregistering (as SIGKILL leaves it).
        dying.stop(deregister=False)
        stopped = time.monotonic()
    runner.join(60)
    took = time.monotonic() - stopped
    assert results == ["succeeded"], job_state(job.pk).error
    # Bounded: the stale limit, a liveness poll and a few retries; far from the 60 s call timeout.
    assert took < 10, took

    done = job_state(job.pk)
    assert all(s["ok"] for s in _steps(done, str(healthy.replica_id)).values())
    assert set(_steps(done, str(healthy.replica_id))) == set(STEPS)
    gone = done.replicas[str(dying.replica_id)]
    assert gone["gone"] is True and "gone" in gone["error"]
    assert "warm" not in gone["steps"]  # let go before the warm-up: nothing was warmed there
    report = {r.key: r for r in restart_job_replica_reports(job=done)}
    assert report[str(dying.replica_id)].gone and not report[str(healthy.replica_id)].gone


def test_a_replica_that_beats_but_cannot_be_reached_fails_the_step_in_bounded_time(
    threads_share_the_database: None,
    make_cluster: Callable[..., CreatedCluster],
    admin: CreatedUser,
    settings: LazySettings,
) -> None:
    """An advertised address the worker cannot reach must fail the job, not wait for ever nor skip it."""
    settings.REPLICA_STALE_AFTER = 0.5
    unreachable = uuid.uuid4()
    replica_register(replica_id=unreachable, control_url="http://127.0.0.1:9", host="island", pid=7)
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(0.1):
                replica_beat(replica_id=unreachable)
        finally:
            connection.close()

    beating = threading.Thread(target=beat)
    beating.start()
    cluster = make_cluster().cluster
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    started = time.monotonic()
    try:
        assert restart_cluster.run(job.pk) == "failed"
    finally:
        stop.set()
        beating.join()
    assert time.monotonic() - started < 10
    failed = job_state(job.pk)
    assert failed.step == "drain" and "replica island (pid 7)" in failed.error
    assert "still beating but unreachable" in failed.error
    assert failed.replicas[str(unreachable)]["ok"] is False


def test_an_address_answering_as_another_replica_fails_the_step(
    listeners: list[replicas.LocalReplica],
    make_cluster: Callable[..., CreatedCluster],
    admin: CreatedUser,
) -> None:
    # Two processes advertising one address (CONTROL_ADVERTISE_HOST shared by several): the worker would
    # reach one of them twice and never the other, so it refuses to count that as done.
    Replica.objects.filter(pk=listeners[1].replica_id).update(control_url=listeners[0].control_url)
    cluster = make_cluster().cluster
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    assert restart_cluster.run(job.pk) == "failed"
    failed = job_state(job.pk)
    assert f"answered as replica {listeners[0].replica_id}" in failed.error
    assert "CONTROL_ADVERTISE_HOST" in failed.error and "not retried" in failed.error
