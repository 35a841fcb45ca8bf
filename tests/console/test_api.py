"""The inference toggle's JSON API without a worker: eligibility matrix, permissions, validation, users."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from console.clusters.models import Cluster, InferenceToggle, Membership, RestartJob
from console.clusters.services import CreatedCluster, CreatedUser, user_create
from tests.fixtures import AP, EU, NEW, OLD, US, memory_queue_messages
from tests.helpers import cluster_update

pytestmark = pytest.mark.django_db


def url(cluster: CreatedCluster) -> str:
    return f"/api/v1/clusters/{cluster.cluster.id}/inference"


@pytest.mark.parametrize(
    ("tier", "region", "created_at", "eligible", "reason", "starts_on"),
    [
        ("paid", US, NEW, True, "", True),
        ("paid", US, OLD, True, "", False),
        ("paid", "us-east-1", datetime.fromisoformat("2025-07-07T23:59:00+00:00"), True, "", False),
        ("paid", "us-east-1", datetime.fromisoformat("2025-07-08T00:00:00+00:00"), True, "", True),
        ("paid", EU, NEW, False, "US regions", False),
        ("paid", AP, OLD, False, "US regions", False),
        ("free", US, NEW, False, "paid clusters", False),
        ("free", US, OLD, False, "paid clusters", False),
        ("free", EU, NEW, False, "paid clusters", False),
        ("free", AP, OLD, False, "paid clusters", False),
    ],
)
def test_eligibility_matrix_through_the_api(
    make_cluster: Callable[..., CreatedCluster],
    admin_api: APIClient,
    tier: str,
    region: str,
    created_at: datetime,
    eligible: bool,
    reason: str,
    starts_on: bool,
) -> None:
    cluster = make_cluster(tier=tier, region=region, created_at=created_at)
    body = admin_api.get(url(cluster)).json()
    assert body["eligibility"]["eligible"] is eligible
    assert reason in body["eligibility"]["reason"]
    assert (body["enabled"], body["desired"], body["status"], body["job"]) == (
        starts_on,
        starts_on,
        "running",
        None,
    )

    response = admin_api.patch(url(cluster), {"enabled": True}, format="json")
    if not eligible:
        assert response.status_code == 409
        assert reason in response.json()["detail"]
        assert response.json()["eligibility"] == {"eligible": False, "reason": body["eligibility"]["reason"]}
        assert not RestartJob.objects.exists() and not InferenceToggle.objects.exists()
    elif starts_on:
        assert response.status_code == 200  # already on: nothing to restart
        assert response.json()["job"] is None
    else:
        assert response.status_code == 202
        job = response.json()["job"]
        assert (job["state"], job["target_enabled"], job["previous_enabled"]) == ("queued", True, False)
        assert response.json()["status"] == "restarting"
        assert response.json()["enabled"] is False and response.json()["desired"] is True


def test_turning_off_is_allowed_on_an_ineligible_cluster(
    make_cluster: Callable[..., CreatedCluster], admin_api: APIClient
) -> None:
    # A cluster that somehow has inference on (e.g. moved to the free tier) can always be turned off.
    cluster = make_cluster(tier="free", region=EU)
    cluster_update(cluster.cluster.pk, inference_enabled=True)
    response = admin_api.patch(url(cluster), {"enabled": False}, format="json")
    assert response.status_code == 202
    assert response.json()["job"]["target_enabled"] is False


def test_viewer_reads_but_cannot_toggle(
    make_cluster: Callable[..., CreatedCluster], viewer_api: APIClient
) -> None:
    cluster = make_cluster()
    assert viewer_api.get(url(cluster)).status_code == 200
    response = viewer_api.patch(url(cluster), {"enabled": True}, format="json")
    assert response.status_code == 403
    assert not RestartJob.objects.exists()
    assert Cluster.objects.get(pk=cluster.cluster.pk).status == Cluster.Status.RUNNING


def test_anonymous_and_bad_tokens_are_refused(make_cluster: Callable[..., CreatedCluster]) -> None:
    cluster = make_cluster()
    anonymous = APIClient()
    response = anonymous.get(url(cluster))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"
    assert anonymous.patch(url(cluster), {"enabled": True}, format="json").status_code == 401
    assert anonymous.get("/api/v1/jobs/1").status_code == 401
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert bad.get(url(cluster)).status_code == 401


def test_user_without_a_role_gets_nothing_and_staff_count_as_admins(
    make_cluster: Callable[..., CreatedCluster], django_user_model: type
) -> None:
    cluster = make_cluster()
    plain = django_user_model.objects.create_user("nobody", password="x")
    client = APIClient()
    client.force_authenticate(plain)
    assert client.get(url(cluster)).status_code == 403
    staff = django_user_model.objects.create_user("sam", password="x", is_staff=True)
    client.force_authenticate(staff)
    assert client.patch(url(cluster), {"enabled": True}, format="json").status_code == 202
    toggle = InferenceToggle.objects.get()
    assert (toggle.actor, toggle.actor_username, toggle.from_state, toggle.to_state) == (
        staff,
        "sam",
        False,
        True,
    )


def test_session_auth_works_and_needs_csrf(
    make_cluster: Callable[..., CreatedCluster], admin: CreatedUser
) -> None:
    cluster = make_cluster()
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="ada", password="pw-admin-1")
    assert client.get(url(cluster)).status_code == 200
    body = json.dumps({"enabled": True})
    refused = client.patch(url(cluster), body, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    client.get("/admin/login/")  # any page that sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    accepted = client.patch(
        url(cluster), body, content_type="application/json", headers={"X-CSRFToken": token}
    )
    assert accepted.status_code == 202, accepted.json()


def test_patch_validates_its_body(make_cluster: Callable[..., CreatedCluster], admin_api: APIClient) -> None:
    cluster = make_cluster()
    for body in ({}, {"enabled": "yes"}, {"enabled": 1}, {"enabled": None}):
        response = admin_api.patch(url(cluster), body, format="json")
        assert response.status_code == 400, body
        assert "enabled" in response.json()
    assert not RestartJob.objects.exists()


def test_unknown_cluster_and_job_are_404(admin_api: APIClient) -> None:
    assert admin_api.get("/api/v1/clusters/nope/inference").status_code == 404
    assert (
        admin_api.patch("/api/v1/clusters/nope/inference", {"enabled": True}, format="json").status_code
        == 404
    )
    assert admin_api.get("/api/v1/jobs/999999").status_code == 404


def test_toggle_queues_the_task_on_commit_only(
    make_cluster: Callable[..., CreatedCluster],
    admin_api: APIClient,
    django_capture_on_commit_callbacks: Callable[..., object],
) -> None:
    cluster = make_cluster()
    memory_queue_messages()  # start from an empty queue
    with django_capture_on_commit_callbacks(execute=False) as callbacks:  # type: ignore[attr-defined]
        job_id = admin_api.patch(url(cluster), {"enabled": True}, format="json").json()["job"]["id"]
    assert memory_queue_messages() == []  # nothing is sent before the transaction commits
    for callback in callbacks:
        callback()
    assert memory_queue_messages() == [("console.clusters.tasks.restart_cluster", [job_id])]
    job = admin_api.get(f"/api/v1/jobs/{job_id}").json()
    assert (job["cluster_id"], job["state"], job["requested_by"], job["progress"]) == (
        cluster.cluster.id,
        "queued",
        "ada",
        0,
    )


def test_create_user_command(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("create_user", username="ops", role="viewer", password="s3cret-pw", json=True)
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"username", "account", "role", "token"}
    assert (data["username"], data["account"], data["role"]) == ("ops", "default", "viewer")
    assert Token.objects.get(key=data["token"]).user.username == "ops"
    assert Client().login(username="ops", password="s3cret-pw")
    # Re-running changes the role and keeps the token.
    call_command("create_user", username="ops", role="admin", json=True)
    again = json.loads(capsys.readouterr().out)
    assert (again["role"], again["token"]) == ("admin", data["token"])
    assert Membership.objects.get(user__username="ops").role == "admin"
    # --account gives a role in another account (created on first use); the default-account role stays.
    call_command("create_user", username="ops", role="viewer", account="acme", json=True)
    other = json.loads(capsys.readouterr().out)
    assert (other["account"], other["role"], other["token"]) == ("acme", "viewer", data["token"])
    roles = dict(Membership.objects.filter(user__username="ops").values_list("account__name", "role"))
    assert roles == {"default": "admin", "acme": "viewer"}


def test_created_token_authenticates_the_api(make_cluster: Callable[..., CreatedCluster]) -> None:
    cluster = make_cluster()
    created = user_create(username="tok", role="viewer")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {created.token}")
    assert client.get(url(cluster)).json()["cluster_id"] == cluster.cluster.id
    assert not Client().login(username="tok", password="")  # token only: no usable password
