"""The whole toggle through a real Celery worker on the local Redis, seen through the API and the data plane.

The worker runs in a thread of this process (solo pool) and calls the control endpoint of the live test
server over HTTP, as `make run`'s worker calls the web server.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from celery.signals import task_postrun
from django.conf import LazySettings
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from console.clusters.models import Cluster, RestartJob
from console.clusters.services import CreatedCluster
from console.clusters.tasks import restart_cluster
from inference import inflight
from tests.conftest import MINILM
from tests.fixtures import TEST_REDIS_URL, settled, token_client, wait_for

pytestmark = [
    pytest.mark.skipif(
        not TEST_REDIS_URL,
        reason="TEST_REDIS_URL is not set (make test sets it when Redis answers on 127.0.0.1:6379)",
    ),
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
]


class DataPlane:
    """The cluster's Qdrant-compatible REST API on the live server, as an application calls it."""

    def __init__(self, base_url: str, created: CreatedCluster) -> None:
        self.client = httpx.Client(
            base_url=f"{base_url}/clusters/{created.cluster.id}",
            headers={"api-key": created.api_key},
            timeout=60,
        )

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.client.request(method, path, json=body)


def inference_url(created: CreatedCluster) -> str:
    return f"/api/v1/clusters/{created.cluster.id}/inference"


def job_of(api: APIClient, job_id: int) -> dict[str, Any]:
    return dict(api.get(f"/api/v1/jobs/{job_id}").json())


def finished(api: APIClient, job_id: int) -> dict[str, Any] | None:
    job = job_of(api, job_id)
    return job if job["state"] in ("succeeded", "failed") else None


def test_toggle_on_restarts_the_cluster_through_the_worker(
    redis_worker: None,
    control: str,
    admin_api: APIClient,
    make_cluster: Callable[..., CreatedCluster],
    models_dir: object,
) -> None:
    created = make_cluster()  # paid, US, created before 2025-07-07: inference off
    dataplane = DataPlane(control, created)
    assert dataplane.call(
        "PUT", "/collections/docs", {"vectors": {"size": 384, "distance": "Cosine"}}
    ).is_success
    point = {"points": [{"id": 1, "vector": {"text": "The Eiffel Tower is in Paris.", "model": MINILM}}]}
    refused = dataplane.call("PUT", "/collections/docs/points", point)
    assert refused.status_code == 400 and "not enabled" in refused.text.lower()

    with inflight.track(created.cluster.id):  # a data-plane request in flight: the restart waits for it
        response = admin_api.patch(inference_url(created), {"enabled": True}, format="json")
        assert response.status_code == 202, response.json()
        job_id = response.json()["job"]["id"]
        assert response.json()["status"] == "restarting"

        busy = dataplane.call("GET", "/collections")
        assert busy.status_code == 503
        assert int(busy.headers["Retry-After"]) > 0
        assert "restarting" in busy.json()["status"]["error"]

        draining = wait_for(
            lambda: (job := job_of(admin_api, job_id))["step"] == "drain" and job, what="drain"
        )
        assert (draining["state"], draining["progress"], draining["attempts"]) == ("running", 10, 1)
        state = admin_api.get(inference_url(created)).json()
        assert (state["enabled"], state["desired"], state["status"]) == (False, True, "restarting")
        assert dataplane.call("PUT", "/collections/docs/points", point).status_code == 503

    done = wait_for(lambda: finished(admin_api, job_id), timeout=90, what="the job to finish")
    assert done["state"] == "succeeded", done["error"]
    assert (done["progress"], done["step"], done["requested_by"]) == (100, "done", "ada")

    state = admin_api.get(inference_url(created)).json()
    assert (state["enabled"], state["desired"], state["status"]) == (True, True, "running")
    assert state["job"]["id"] == job_id
    stored = dataplane.call("PUT", "/collections/docs/points", point)
    assert stored.status_code == 200, stored.text
    assert stored.json()["usage"]["inference"]["models"][MINILM]["tokens"] > 0
    found = dataplane.call(
        "POST", "/collections/docs/points/query", {"query": {"text": "Paris landmark", "model": MINILM}}
    )
    assert found.status_code == 200 and found.json()["result"]["points"][0]["id"] == 1


def _job_intervals(cluster_id: str) -> list[RestartJob]:
    return list(RestartJob.objects.filter(cluster_id=cluster_id).order_by("created_at", "id"))


def test_rapid_toggling_ends_at_the_last_request_with_one_job_at_a_time(
    redis_worker: None, control: str, admin_api: APIClient, make_cluster: Callable[..., CreatedCluster]
) -> None:
    created = make_cluster()
    most_active = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal most_active
        try:
            while not stop.wait(0.02):
                try:
                    active = RestartJob.objects.filter(
                        cluster_id=created.cluster.id, state__in=RestartJob.ACTIVE_STATES
                    ).count()
                except OperationalError:  # in-memory SQLite's table locks; a sample more or less is fine
                    continue
                most_active = max(most_active, active)
        finally:
            connection.close()

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for enabled in (True, False, True, False, True):  # on-off-on-off-on, as fast as the API answers
            assert admin_api.patch(
                inference_url(created), {"enabled": enabled}, format="json"
            ).status_code in (
                200,
                202,
            )
        wait_for(lambda: settled(created.cluster.id), timeout=90, what="the cluster to settle")
    finally:
        stop.set()
        sampler.join()

    state = admin_api.get(inference_url(created)).json()
    assert (state["enabled"], state["desired"], state["status"]) == (True, True, "running")
    jobs = _job_intervals(created.cluster.id)
    assert jobs and all(job.state == "succeeded" for job in jobs)
    assert most_active == 1
    for earlier, later in itertools.pairwise(jobs):  # one after the other, never overlapping
        assert earlier.finished_at and later.started_at and earlier.finished_at <= later.started_at


def test_a_toggle_during_the_restart_chains_exactly_one_more(
    redis_worker: None, control: str, admin_api: APIClient, make_cluster: Callable[..., CreatedCluster]
) -> None:
    created = make_cluster()
    with inflight.track(created.cluster.id):
        first = admin_api.patch(inference_url(created), {"enabled": True}, format="json").json()["job"]["id"]
        wait_for(lambda: job_of(admin_api, first)["step"] == "drain", what="drain")
        # Off then on then off while it drains: the running job is answered, no second job starts.
        for enabled in (False, True, False):
            answer = admin_api.patch(inference_url(created), {"enabled": enabled}, format="json").json()
            assert answer["job"]["id"] == first and answer["desired"] is enabled
        assert RestartJob.objects.filter(cluster_id=created.cluster.id).count() == 1
    wait_for(lambda: settled(created.cluster.id), timeout=90, what="the cluster to settle")
    one, two = _job_intervals(created.cluster.id)
    assert (one.target_enabled, one.state) == (True, "succeeded")
    assert (two.target_enabled, two.state, two.chained_from_id) == (False, "succeeded", one.pk)
    assert Cluster.objects.get(pk=created.cluster.id).inference_enabled is False


def test_duplicate_deliveries_through_the_broker_run_the_job_once(
    redis_worker: None, control: str, admin_api: APIClient, make_cluster: Callable[..., CreatedCluster]
) -> None:
    created = make_cluster()
    outcomes: list[str] = []

    def record(sender: Any = None, retval: Any = None, **kwargs: Any) -> None:
        if getattr(sender, "name", "") == "console.clusters.tasks.restart_cluster":
            outcomes.append(retval)

    task_postrun.connect(record, weak=False)
    try:
        with inflight.track(created.cluster.id):
            job_id = admin_api.patch(inference_url(created), {"enabled": True}, format="json").json()["job"][
                "id"
            ]
            restart_cluster.delay(job_id)  # the same job, delivered twice more
            restart_cluster.delay(job_id)
            wait_for(lambda: job_of(admin_api, job_id)["step"] == "drain", what="drain")
        wait_for(lambda: len(outcomes) == 3, timeout=90, what="three deliveries to be handled")
    finally:
        task_postrun.disconnect(record)
    assert sorted(outcomes) == ["skipped", "skipped", "succeeded"]
    job = job_of(admin_api, job_id)
    assert (job["state"], job["attempts"]) == ("succeeded", 1)


def test_failure_keeps_the_previous_state_and_the_api_retries(
    redis_worker: None,
    control: str,
    admin_api: APIClient,
    viewer: Any,
    make_cluster: Callable[..., CreatedCluster],
    settings: LazySettings,
) -> None:
    created = make_cluster()
    settings.CONTROL_URL = "http://127.0.0.1:9"  # the web process cannot be reached
    job_id = admin_api.patch(inference_url(created), {"enabled": True}, format="json").json()["job"]["id"]
    failed = wait_for(lambda: finished(admin_api, job_id), timeout=60, what="the job to fail")
    assert failed["state"] == "failed" and "unreachable" in failed["error"]
    state = admin_api.get(inference_url(created)).json()
    assert (state["enabled"], state["desired"], state["status"]) == (False, True, "running")
    assert state["job"]["id"] == job_id and state["job"]["state"] == "failed"  # the console offers a retry

    assert token_client(viewer).post(f"/api/v1/jobs/{job_id}/retry").status_code == 403
    settings.CONTROL_URL = control
    retried = admin_api.post(f"/api/v1/jobs/{job_id}/retry")
    assert retried.status_code == 202, retried.json()
    retry_id = retried.json()["id"]
    assert retried.json()["retry_of"] == job_id
    assert admin_api.post(f"/api/v1/jobs/{job_id}/retry").status_code == 409  # one at a time
    done = wait_for(lambda: finished(admin_api, retry_id), timeout=90, what="the retry to finish")
    assert done["state"] == "succeeded", done["error"]
    state = admin_api.get(inference_url(created)).json()
    assert (state["enabled"], state["status"], state["job"]["id"]) == (True, "running", retry_id)
