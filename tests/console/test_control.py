"""The web process's control endpoint, and the restart task driving it over real HTTP (live server).

The task runs in the test thread here (no broker): what it does and how it fails. The same task through a
real Celery worker is in test_worker_redis.py / test_worker_embedded_broker.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.conf import LazySettings
from django.test import Client

from console.clusters import control
from console.clusters.models import Cluster, RestartJob
from console.clusters.services import CreatedCluster, CreatedUser, cluster_create, cluster_inference_toggle
from console.clusters.tasks import restart_cluster
from inference import inflight, stores
from tests.fixtures import NEW, job_state, wait_for
from tests.helpers import cluster_update


def signed_post(client: Client, cluster_id: str, step: str, job_id: int, token: str | None = None) -> Any:
    if token is None:
        token = control.sign(cluster_id=cluster_id, step=step, job_id=job_id)
    return client.post(
        f"/internal/clusters/{cluster_id}/restart/{step}",
        json.dumps({"token": token}),
        content_type="application/json",
    )


@pytest.mark.django_db
class TestControlEndpoint:
    """Authentication and refusals of `POST /internal/clusters/<id>/restart/<step>`."""

    @pytest.fixture
    def running_job(self, make_cluster: Callable[..., CreatedCluster], admin: CreatedUser) -> RestartJob:
        job = cluster_inference_toggle(cluster=make_cluster().cluster, enabled=True, actor=admin.user)
        assert job is not None
        RestartJob.objects.filter(pk=job.pk).update(state="running", attempts=1)
        return job

    def test_unsigned_forged_and_expired_calls_are_refused(self, running_job: RestartJob) -> None:
        client = Client()
        cluster_id, job_id = running_job.cluster_id, running_job.pk
        path = f"/internal/clusters/{cluster_id}/restart/drain"
        assert client.post(path, b"{}", content_type="application/json").status_code == 403
        forged = control.sign(cluster_id=cluster_id, step="drain", job_id=job_id)[:-4] + "AAAA"
        assert signed_post(client, cluster_id, "drain", job_id, token=forged).status_code == 403
        with mock.patch("django.core.signing.time.time", return_value=time.time() - 3600):
            old = control.sign(cluster_id=cluster_id, step="drain", job_id=job_id)
        assert signed_post(client, cluster_id, "drain", job_id, token=old).status_code == 403
        # Signed for another step or cluster: refused too.
        warm = control.sign(cluster_id=cluster_id, step="warm", job_id=job_id)
        assert signed_post(client, cluster_id, "drain", job_id, token=warm).status_code == 403
        elsewhere = control.sign(cluster_id="other", step="drain", job_id=job_id)
        assert signed_post(client, cluster_id, "drain", job_id, token=elsewhere).status_code == 403
        # A fresh token for this step and cluster is accepted (the drain finds nothing in flight).
        assert signed_post(client, cluster_id, "drain", job_id).status_code == 200
        # The GET of a browser is not a control call at all.
        assert client.get(path).status_code == 405

    def test_refusals_say_why(self, running_job: RestartJob) -> None:
        client = Client()
        cid, job_id = running_job.cluster_id, running_job.pk
        answers = {
            "unknown step": signed_post(client, cid, "reboot", job_id),
            "bad body": client.post(f"/internal/clusters/{cid}/restart/drain", b"[]", "application/json"),
            "unknown cluster": signed_post(client, "nope", "drain", job_id),
        }
        assert {k: v.status_code for k, v in answers.items()} == {
            "unknown step": 404,
            "bad body": 403,
            "unknown cluster": 404,
        }
        RestartJob.objects.filter(pk=running_job.pk).update(state="failed")
        gone = signed_post(client, cid, "drain", job_id)
        assert gone.status_code == 409
        assert "not running" in gone.json()["error"]

    def test_a_drain_on_a_serving_cluster_is_refused(self, running_job: RestartJob) -> None:
        cluster_update(running_job.cluster_id, status="running")
        assert signed_post(Client(), running_job.cluster_id, "drain", running_job.pk).status_code == 409


@pytest.mark.django_db(transaction=True)
class TestRestartOverHttp:
    """The task in this thread, the control endpoint on the live server: real HTTP, storage and models."""

    def test_enable_runs_every_step_and_a_duplicate_delivery_is_a_no_op(
        self,
        make_cluster: Callable[..., CreatedCluster],
        admin: CreatedUser,
        control: str,
        models_dir: object,
    ) -> None:
        cluster = make_cluster().cluster
        store_before = stores.store_for(cluster)  # open, so the restart has something to close and reopen
        job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
        assert job is not None
        assert restart_cluster.run(job.pk) == "succeeded"
        assert restart_cluster.run(job.pk) == "skipped"  # the same message delivered again
        done = job_state(job.pk)
        assert (done.state, done.step, done.progress, done.attempts, done.error) == (
            "succeeded",
            "done",
            100,
            1,
            "",
        )
        assert done.started_at and done.finished_at and done.started_at <= done.finished_at
        stored = Cluster.objects.get(pk=cluster.pk)
        assert (stored.inference_enabled, stored.status) == (True, "running")
        assert stores.store_for(cluster) is not store_before  # reopened in the web process
        from inference.embedding import get_engine

        get_engine().warm("sentence-transformers/all-minilm-l6-v2")  # already loaded: returns at once

    def test_disable_skips_warming(
        self, admin: CreatedUser, control: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        cluster = cluster_create(name="on", region="us-east-1", tier="paid", created_at=NEW).cluster
        assert cluster.inference_enabled
        job = cluster_inference_toggle(cluster=cluster, enabled=False, actor=admin.user)
        assert job is not None
        with caplog.at_level(logging.INFO, logger="console.clusters.tasks"):
            assert restart_cluster.run(job.pk) == "succeeded"
        steps = [r.args[1] for r in caplog.records if r.getMessage().startswith(f"restart job {job.pk}: ")
                 and " done " in r.getMessage()]  # fmt: skip
        assert steps == ["drain", "storage", "health"]
        assert Cluster.objects.get(pk=cluster.pk).inference_enabled is False

    def test_a_4xx_fails_at_once_without_retrying(
        self,
        make_cluster: Callable[..., CreatedCluster],
        admin: CreatedUser,
        control: str,
        settings: LazySettings,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        settings.CONTROL_URL = f"{control}/not-the-control-endpoint"  # 404 from the web app
        cluster = make_cluster().cluster
        job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
        assert job is not None
        with caplog.at_level(logging.WARNING, logger="console.clusters.tasks"):
            assert restart_cluster.run(job.pk) == "failed"
        assert not [r for r in caplog.records if "retrying" in r.getMessage()]
        failed = job_state(job.pk)
        assert failed.state == "failed" and "HTTP 404" in failed.error and "not retried" in failed.error
        stored = Cluster.objects.get(pk=cluster.pk)
        assert (stored.status, stored.inference_enabled) == ("running", False)

    def test_requests_that_do_not_drain_fail_the_job_after_retries(
        self,
        make_cluster: Callable[..., CreatedCluster],
        admin: CreatedUser,
        control: str,
        settings: LazySettings,
    ) -> None:
        settings.RESTART_DRAIN_TIMEOUT = 0.2
        cluster = make_cluster().cluster
        job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
        assert job is not None
        with inflight.track(cluster.pk):  # a data-plane request that never finishes
            assert restart_cluster.run(job.pk) == "failed"
        failed = job_state(job.pk)
        assert failed.error.startswith("Draining in-flight requests failed: 1 request(s) still running")
        assert Cluster.objects.get(pk=cluster.pk).status == "running"

    def test_drain_waits_for_requests_in_flight(
        self, make_cluster: Callable[..., CreatedCluster], admin: CreatedUser, control: str
    ) -> None:
        cluster = make_cluster().cluster
        job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
        assert job is not None
        results: list[str] = []
        with inflight.track(cluster.pk):
            runner = threading.Thread(target=lambda: results.append(restart_cluster.run(job.pk)))
            runner.start()
            wait_for(lambda: job_state(job.pk).step == "drain", what="the drain step")
            time.sleep(0.3)
            assert job_state(job.pk).state == "running" and not results  # still waiting for our request
        runner.join(60)
        assert results == ["succeeded"]

    def test_a_remote_backend_that_does_not_answer_fails_its_health_check(
        self, admin: CreatedUser, control: str
    ) -> None:
        cluster = cluster_create(
            name="remote",
            region="us-east-1",
            tier="paid",
            created_at=NEW,
            storage_backend=Cluster.Backend.REMOTE,
            remote_url="http://127.0.0.1:9",
        ).cluster
        job = cluster_inference_toggle(cluster=cluster, enabled=False, actor=admin.user)
        assert job is not None
        assert restart_cluster.run(job.pk) == "failed"
        failed = job_state(job.pk)
        assert failed.step == "storage" and failed.error.startswith(
            "Reopening storage failed: storage did not reopen"
        )
        assert Cluster.objects.get(pk=cluster.pk).inference_enabled is True  # previous state kept
