"""Operators change prices, allowances and limits in Django's admin, within the services' rules."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from billing.models import ClusterLimit, ModelAllowance, ModelPrice, UsageRecord
from console.clusters.models import Account, ApiKey, Membership, RestartJob
from console.clusters.services import cluster_create
from tests.conftest import MINILM

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(settings: object) -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def local(when: timezone.datetime) -> str:
    return timezone.localtime(when).strftime("%Y-%m-%d %H:%M:%S")


def test_a_price_change_is_added_for_the_future_and_a_retroactive_one_is_refused(operator: Client) -> None:
    before = ModelPrice.objects.count()
    past = timezone.now() - timedelta(days=1)
    refused = operator.post(
        "/admin/billing/modelprice/add/",
        {
            "model": MINILM,
            "price_per_million": "0.5",
            "effective_from_0": local(past)[:10],
            "effective_from_1": local(past)[11:],
        },
    )
    assert refused.status_code == 200 and "past usage keeps the price" in refused.content.decode()
    assert ModelPrice.objects.count() == before

    future = timezone.now() + timedelta(days=2)
    added = operator.post(
        "/admin/billing/modelprice/add/",
        {
            "model": MINILM,
            "price_per_million": "0.5",
            "effective_from_0": local(future)[:10],
            "effective_from_1": local(future)[11:],
        },
    )
    assert added.status_code == 302, added.content.decode()[:2000]
    price = ModelPrice.objects.get(model=MINILM, price_per_million=Decimal("0.5"))
    assert abs((price.effective_from - future).total_seconds()) < 1
    # History is append-only: no change or delete.
    assert operator.post(f"/admin/billing/modelprice/{price.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ModelPrice.objects.filter(pk=price.pk).exists()


def test_an_allowance_is_set_from_this_month_on(operator: Client) -> None:
    month = timezone.now().date().replace(day=1)
    response = operator.post(
        "/admin/billing/modelallowance/add/",
        {"model": MINILM, "free_tokens_per_month": "1000", "effective_month": month.isoformat()},
    )
    assert response.status_code == 302
    assert ModelAllowance.objects.get(model=MINILM, effective_month=month).free_tokens_per_month == 1000
    closed = (month - timedelta(days=1)).replace(day=1)
    refused = operator.post(
        "/admin/billing/modelallowance/add/",
        {"model": MINILM, "free_tokens_per_month": "5", "effective_month": closed.isoformat()},
    )
    assert refused.status_code == 200 and "is closed" in refused.content.decode()
    assert not ModelAllowance.objects.filter(effective_month=closed).exists()


def test_a_cluster_limit_is_set_changed_and_removed(operator: Client) -> None:
    cluster = cluster_create(name="c", region="us-east-1", tier="paid").cluster
    add = operator.post(
        "/admin/billing/clusterlimit/add/", {"cluster": cluster.pk, "tokens_per_minute": "1000"}
    )
    assert add.status_code == 302
    assert ClusterLimit.objects.get(cluster=cluster).tokens_per_minute == 1000
    refused = operator.post(f"/admin/billing/clusterlimit/{cluster.pk}/change/", {"tokens_per_minute": "0"})
    assert refused.status_code == 200 and ClusterLimit.objects.get(cluster=cluster).tokens_per_minute == 1000
    change = operator.post(f"/admin/billing/clusterlimit/{cluster.pk}/change/", {"tokens_per_minute": "50"})
    assert change.status_code == 302 and ClusterLimit.objects.get(cluster=cluster).tokens_per_minute == 50
    delete = operator.post(f"/admin/billing/clusterlimit/{cluster.pk}/delete/", {"post": "yes"})
    assert delete.status_code == 302 and not ClusterLimit.objects.filter(cluster=cluster).exists()


def test_keys_are_never_shown_and_can_be_revoked(operator: Client) -> None:
    created = cluster_create(name="c", region="us-east-1", tier="paid")
    key = ApiKey.objects.get(cluster=created.cluster)
    pages = [
        operator.get("/admin/console/apikey/").content.decode(),
        operator.get(f"/admin/console/apikey/{key.pk}/change/").content.decode(),
        operator.get(f"/admin/console/cluster/{created.cluster.pk}/change/").content.decode(),
    ]
    for page in pages:
        assert key.key_hash not in page and created.api_key not in page
        assert created.cluster.inference_token_hash not in page
    response = operator.post(
        "/admin/console/apikey/", {"action": "revoke", "_selected_action": [key.pk]}, follow=True
    )
    assert response.status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_the_ledger_and_restart_jobs_are_read_only(operator: Client) -> None:
    assert operator.get("/admin/billing/usagerecord/").status_code == 200
    assert operator.get("/admin/billing/usagerecord/add/").status_code == 403
    assert operator.get("/admin/console/restartjob/").status_code == 200
    assert operator.get("/admin/console/restartjob/add/").status_code == 403
    assert UsageRecord.objects.count() == 0 and RestartJob.objects.count() == 0


def test_operators_manage_accounts_members_and_which_account_owns_a_cluster(operator: Client) -> None:
    cluster = cluster_create(name="c", region="us-east-1", tier="paid").cluster
    vic = User.objects.create_user("vic")
    added = operator.post(
        "/admin/console/account/add/",
        {
            "name": "acme",
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
            "memberships-0-user": str(vic.pk),
            "memberships-0-role": "viewer",
        },
    )
    assert added.status_code == 302, added.content.decode()[:3000]
    acme = Account.objects.get(name="acme")
    assert list(Membership.objects.filter(account=acme).values_list("user__username", "role")) == [
        ("vic", "viewer")
    ]
    moved = operator.post(f"/admin/console/cluster/{cluster.pk}/change/", {"name": "c", "account": acme.pk})
    assert moved.status_code == 302, moved.content.decode()[:3000]
    cluster.refresh_from_db()
    assert cluster.account == acme
    listing = operator.get("/admin/console/cluster/").content.decode()
    assert "acme" in listing
    assert "acme" in operator.get("/admin/console/membership/").content.decode()
    # An account that owns clusters cannot be deleted (their usage is billing history).
    assert operator.post(f"/admin/console/account/{acme.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Account.objects.filter(pk=acme.pk).exists()
