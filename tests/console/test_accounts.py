"""Accounts: clusters belong to an account, roles are per account, other accounts' clusters are 404.

Two accounts, A (acme) and B (globex), each with a cluster and a failed restart job; users are a viewer and
an admin of A. Every console page and API route that takes a cluster or job id is tried on B's cluster: it
answers 404 (as for a missing cluster) and changes nothing. On A's cluster the viewer reads and gets 403 for
every write; the admin acts. Also: the data migration into the default account, and `--account`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from console.clusters.models import DEFAULT_ACCOUNT_NAME, Account, ApiKey, Cluster, RestartJob
from console.clusters.selectors import clusters_visible
from console.clusters.services import (
    ConsolePermissionDenied,
    CreatedUser,
    account_get_or_create,
    api_key_create,
    api_key_revoke,
    cluster_create,
    cluster_inference_toggle,
    restart_job_fail,
    restart_job_retry,
    user_create,
)
from tests.fixtures import OLD, token_client

pytestmark = pytest.mark.django_db


@dataclass
class Side:
    """One account with a cluster (inference off), its API key and a failed restart job."""

    account: Account
    cluster: Cluster
    key: ApiKey
    job: RestartJob


def _side(name: str, operator: User) -> Side:
    account = account_get_or_create(name=name)
    cluster = cluster_create(
        name=f"{name}-c", region="us-east-1", tier="paid", created_at=OLD, account=account
    ).cluster
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=operator)
    assert job is not None
    assert restart_job_fail(job_id=job.pk, error="boom")
    return Side(account=account, cluster=cluster, key=ApiKey.objects.get(cluster=cluster), job=job)


@pytest.fixture
def world() -> dict[str, Any]:
    operator = User.objects.create_user("root", is_staff=True)
    a, b = _side("acme", operator), _side("globex", operator)
    viewer = user_create(username="va", role="viewer", account=a.account)
    admin = user_create(username="aa", role="admin", account=a.account)
    return {"a": a, "b": b, "viewer": viewer, "admin": admin, "operator": operator}


def _snapshot(side: Side) -> tuple[Any, ...]:
    """What a write on the side's cluster could change."""
    cluster = Cluster.objects.get(pk=side.cluster.pk)
    return (
        cluster.inference_enabled,
        cluster.inference_desired,
        cluster.status,
        RestartJob.objects.filter(cluster=cluster).count(),
        sorted(ApiKey.objects.filter(cluster=cluster).values_list("pk", "revoked_at")),
    )


def _console_routes(side: Side) -> list[tuple[str, str, dict[str, str]]]:
    """(method, url, form) of every console page and form that takes a cluster (or key, job) id."""
    cid = side.cluster.pk

    def url(name: str, *args: Any) -> str:
        return reverse(f"console:{name}", args=[cid, *args])

    return [
        ("get", url("cluster-overview"), {}),
        ("get", url("cluster-keys"), {}),
        ("get", url("cluster-inference"), {}),
        ("post", url("api-key-create"), {"name": "x"}),
        ("post", url("api-key-revoke", side.key.pk), {}),
        ("post", url("inference-toggle"), {"enabled": "true", "confirm": "1"}),
        ("post", url("restart-retry", side.job.pk), {}),
    ]


def _api_routes(side: Side) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, url, JSON body) of every API route that takes a cluster or job id."""
    cid = side.cluster.pk
    return [
        ("get", f"/api/v1/clusters/{cid}/inference", None),
        ("patch", f"/api/v1/clusters/{cid}/inference", {"enabled": True}),
        ("get", f"/api/v1/jobs/{side.job.pk}", None),
        ("post", f"/api/v1/jobs/{side.job.pk}/retry", None),
        ("get", reverse("cluster-usage", args=[cid]), None),
        ("get", reverse("cluster-statement", args=[cid, "2025-01"]), None),
        ("get", reverse("cluster-statement-csv", args=[cid, "2025-01"]), None),
    ]


def _signed_in(user: CreatedUser) -> Client:
    client = Client()  # CSRF is not what is tested here (tests/ui covers it)
    client.force_login(user.user)
    return client


@pytest.mark.parametrize("who", ["viewer", "admin"])
def test_console_pages_of_another_accounts_cluster_are_404(world: dict[str, Any], who: str) -> None:
    client, b = _signed_in(world[who]), world["b"]
    before = _snapshot(b)
    for method, url, form in _console_routes(b):
        response = getattr(client, method)(url, form)
        assert response.status_code == 404, (who, method, url, response.status_code)
        assert b.cluster.name not in response.content.decode()
    assert _snapshot(b) == before


@pytest.mark.parametrize("who", ["viewer", "admin"])
def test_api_routes_of_another_accounts_cluster_are_404(world: dict[str, Any], who: str) -> None:
    client, b = token_client(world[who]), world["b"]
    before = _snapshot(b)
    for method, url, body in _api_routes(b):
        response = getattr(client, method)(url, body, format="json")
        assert response.status_code == 404, (who, method, url, response.status_code)
    assert _snapshot(b) == before
    # The same answer as for a cluster that does not exist: nothing tells them apart.
    missing = token_client(world[who]).get("/api/v1/clusters/nosuchid/inference")
    other = token_client(world[who]).get(f"/api/v1/clusters/{b.cluster.pk}/inference")
    assert missing.json()["detail"].replace("nosuchid", b.cluster.pk) == other.json()["detail"]


def test_viewer_reads_its_accounts_cluster_but_cannot_act(world: dict[str, Any]) -> None:
    a, viewer = world["a"], world["viewer"]
    before = _snapshot(a)
    web = _signed_in(viewer)
    api = token_client(viewer)
    for method, url, form in _console_routes(a):
        expected = 200 if method == "get" else 403
        assert getattr(web, method)(url, form).status_code == expected, (method, url)
    for method, url, body in _api_routes(a):
        expected = 200 if method == "get" else 403
        assert getattr(api, method)(url, body, format="json").status_code == expected, (method, url)
    assert _snapshot(a) == before


def test_admin_acts_on_its_accounts_cluster(world: dict[str, Any]) -> None:
    a, admin = world["a"], world["admin"]
    api = token_client(admin)
    retried = api.post(f"/api/v1/jobs/{a.job.pk}/retry")
    assert retried.status_code == 202 and retried.json()["retry_of"] == a.job.pk
    web = _signed_in(admin)
    created = web.post(reverse("console:api-key-create", args=[a.cluster.pk]), {"name": "ci"})
    assert created.status_code == 201
    revoked = web.post(reverse("console:api-key-revoke", args=[a.cluster.pk, a.key.pk]))
    assert revoked.status_code == 302
    assert ApiKey.objects.get(pk=a.key.pk).revoked_at is not None
    assert ApiKey.objects.filter(cluster=a.cluster, name="ci").exists()
    for _, url, _ in _api_routes(a):
        if not url.endswith("/retry"):
            assert api.get(url).status_code == 200, url


def test_cluster_list_shows_only_the_users_accounts(world: dict[str, Any]) -> None:
    a, b = world["a"], world["b"]
    html = _signed_in(world["viewer"]).get(reverse("console:cluster-list")).content.decode()
    assert f'data-cluster="{a.cluster.pk}"' in html and f'data-cluster="{b.cluster.pk}"' not in html
    operator = Client()
    operator.force_login(world["operator"])
    html = operator.get(reverse("console:cluster-list")).content.decode()
    assert f'data-cluster="{a.cluster.pk}"' in html and f'data-cluster="{b.cluster.pk}"' in html
    # Staff see and manage every account's clusters.
    assert token_client_for(world["operator"]).get(f"/api/v1/jobs/{b.job.pk}").status_code == 200


def token_client_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_roles_are_per_account(world: dict[str, Any]) -> None:
    """Admin of A and viewer of B: acts on A, only reads B."""
    a, b = world["a"], world["b"]
    both = user_create(username="ab", role="admin", account=a.account)
    user_create(username="ab", role="viewer", account=b.account)
    assert set(clusters_visible(user=both.user)) == {a.cluster, b.cluster}
    api = token_client(both)
    assert api.get(f"/api/v1/clusters/{b.cluster.pk}/inference").status_code == 200
    refused = api.post(f"/api/v1/jobs/{b.job.pk}/retry")
    assert refused.status_code == 403 and "admins of the cluster's account" in refused.json()["detail"]
    assert api.post(f"/api/v1/jobs/{a.job.pk}/retry").status_code == 202
    web = _signed_in(both)
    assert web.post(reverse("console:api-key-create", args=[b.cluster.pk]), {"name": "x"}).status_code == 403
    assert web.post(reverse("console:api-key-create", args=[a.cluster.pk]), {"name": "x"}).status_code == 201


def test_services_check_the_role_on_the_clusters_account(world: dict[str, Any]) -> None:
    """Whatever the caller checked: the services refuse an admin of A acting on B, and a viewer anywhere."""
    a, b, admin, viewer = world["a"], world["b"], world["admin"].user, world["viewer"].user
    before = _snapshot(b)
    with pytest.raises(ConsolePermissionDenied):
        cluster_inference_toggle(cluster=b.cluster, enabled=True, actor=admin)
    with pytest.raises(ConsolePermissionDenied):
        restart_job_retry(job=b.job, actor=admin)
    with pytest.raises(ConsolePermissionDenied):
        api_key_create(cluster=b.cluster, name="x", read_only=False, actor=admin)
    with pytest.raises(ConsolePermissionDenied):
        api_key_revoke(api_key=b.key, actor=admin)
    with pytest.raises(ConsolePermissionDenied):
        api_key_create(cluster=a.cluster, name="x", read_only=False, actor=viewer)
    with pytest.raises(ConsolePermissionDenied):
        cluster_inference_toggle(cluster=a.cluster, enabled=True, actor=viewer)
    assert _snapshot(b) == before
    assert cluster_inference_toggle(cluster=a.cluster, enabled=False, actor=admin) is None  # allowed


# --- commands ---------------------------------------------------------------------------------------------


def test_create_cluster_and_user_with_account(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("create_cluster", name="n", region="us-east-1", tier="paid", account="acme", json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["account"] == "acme"
    assert Cluster.objects.get(pk=data["id"]).account.name == "acme"
    call_command("create_cluster", name="d", region="us-east-1", tier="paid", json=True)
    default = json.loads(capsys.readouterr().out)
    assert Cluster.objects.get(pk=default["id"]).account.name == DEFAULT_ACCOUNT_NAME
    call_command("create_user", username="u", role="viewer", account="acme", json=True)
    user = json.loads(capsys.readouterr().out)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {user['token']}")
    assert api.get(f"/api/v1/clusters/{data['id']}/inference").status_code == 200
    assert api.get(f"/api/v1/clusters/{default['id']}/inference").status_code == 404


def test_demo_cluster_goes_to_the_default_account(settings: Any, tmp_path: Any) -> None:
    settings.DATA_DIR = tmp_path
    assert not Account.objects.exists()
    call_command("demo_cluster")
    assert Cluster.objects.get().account.name == DEFAULT_ACCOUNT_NAME
