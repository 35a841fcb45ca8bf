"""The console's pages and permissions through Django's test client (CSRF enforced, as in a browser)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.services import usage_record
from console.clusters.models import ApiKey, Cluster, RestartJob
from console.clusters.selectors import api_key_for_secret
from console.clusters.services import CreatedCluster, CreatedUser, restart_job_fail
from inference import catalog
from inference.usage import UsageEvent
from tests.conftest import BM25, MINILM
from tests.ui.conftest import ADMIN_PASSWORD, csrf_token, post_form, snippets

pytestmark = pytest.mark.django_db

MXBAI = "mixedbread-ai/mxbai-embed-large-v1"  # a paid model: 0.10 per 1M tokens


def url(name: str, *args: Any) -> str:
    return reverse(f"console:{name}", args=args)


def text(response: Any) -> str:
    return str(response.content.decode())


def record(cluster: Cluster, model: str, tokens: int, when: datetime | None = None) -> None:
    """Usage as the data plane records it."""
    event = UsageEvent(
        cluster_id=cluster.pk,
        model=model,
        tokens=tokens,
        request_id=f"req-{model}-{tokens}-{when}",
        time=when or timezone.now(),
    )
    usage_record(events=[event])


# --- sign-in and access ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cluster-list", "cluster-overview", "cluster-keys", "cluster-inference"])
def test_pages_send_anonymous_users_to_sign_in(
    name: str, make_cluster: Callable[..., CreatedCluster]
) -> None:
    args = [] if name == "cluster-list" else [make_cluster().cluster.pk]
    response = Client().get(url(name, *args))
    assert response.status_code == 302
    assert response["Location"].startswith(url("login") + "?next=")


def test_root_leads_to_the_console(signed_in_admin: Client) -> None:
    response = signed_in_admin.get("/")
    assert response.status_code == 302 and response["Location"] == url("cluster-list")


def test_sign_in_and_out(admin: CreatedUser) -> None:
    client = Client(enforce_csrf_checks=True)
    page = client.get(url("login"))
    assert page.status_code == 200 and 'name="csrfmiddlewaretoken"' in text(page)
    wrong = post_form(client, url("login"), url("login"), {"username": "ada", "password": "nope"})
    assert wrong.status_code == 200 and "Please enter a correct username and password" in text(wrong)
    signed_in = post_form(client, url("login"), url("login"), {"username": "ada", "password": ADMIN_PASSWORD})
    assert signed_in.status_code == 302 and signed_in["Location"] == url("cluster-list")
    listed = client.get(url("cluster-list"))
    assert listed.status_code == 200 and 'data-role="admin"' in text(listed)
    signed_out = post_form(client, url("cluster-list"), url("logout"))
    assert signed_out.status_code == 302 and signed_out["Location"] == url("login")
    assert client.get(url("cluster-list")).status_code == 302


def test_a_user_without_a_console_role_gets_403(make_cluster: Callable[..., CreatedCluster]) -> None:
    cluster = make_cluster().cluster
    client = Client()
    client.force_login(User.objects.create_user("nobody", password="pw"))
    assert client.get(url("cluster-list")).status_code == 403
    response = client.get(url("cluster-inference", cluster.pk))
    assert response.status_code == 403 and "no console role" in text(response)


def test_unknown_cluster_is_404(signed_in_admin: Client) -> None:
    assert signed_in_admin.get(url("cluster-inference", "nosuchid")).status_code == 404


# --- clusters list and overview -------------------------------------------------------------------------


def test_cluster_list_shows_region_tier_inference_and_cost(
    signed_in_viewer: Client, make_cluster: Callable[..., CreatedCluster]
) -> None:
    on = make_cluster(created_at=timezone.now()).cluster  # paid, US, new: inference on
    off = make_cluster(tier="free", region="eu-central-1").cluster
    record(on, MXBAI, 5_000_000 + 2_500_000)  # 2.5M billable at 0.10 per 1M: $0.25
    html = text(signed_in_viewer.get(url("cluster-list")))
    row_on = re.search(rf'<tr data-cluster="{on.pk}">(.*?)</tr>', html, re.DOTALL)
    row_off = re.search(rf'<tr data-cluster="{off.pk}">(.*?)</tr>', html, re.DOTALL)
    assert row_on and row_off
    assert "us-east-1" in row_on.group(1) and "Paid" in row_on.group(1)
    assert ">on<" in row_on.group(1) and "$0.25" in row_on.group(1)
    assert "eu-central-1" in row_off.group(1) and "Free" in row_off.group(1)
    assert ">off<" in row_off.group(1) and "$0.00" in row_off.group(1) and "not eligible" in row_off.group(1)


def test_overview_shows_url_region_tier_backend_status(
    signed_in_viewer: Client, make_cluster: Callable[..., CreatedCluster], public_url: str
) -> None:
    cluster = make_cluster(region="us-west-2").cluster
    html = text(signed_in_viewer.get(url("cluster-overview", cluster.pk)))
    assert f"{public_url}/clusters/{cluster.pk}" in html
    assert f'<code id="grpc-url">{settings.GRPC_PUBLIC_URL}</code>' in html  # one port for all clusters
    for fact in ("us-west-2", "Paid", "Embedded (Qdrant Edge)", "Running"):
        assert fact in html
    assert 'aria-current="page">Overview' in html


# --- API keys -------------------------------------------------------------------------------------------


def test_admin_creates_a_key_that_is_shown_once_and_works(
    signed_in_admin: Client, make_cluster: Callable[..., CreatedCluster]
) -> None:
    cluster = make_cluster().cluster
    keys = url("cluster-keys", cluster.pk)
    page = text(signed_in_admin.get(keys))
    assert 'id="create-key"' in page and "Revoke" in page
    created = post_form(
        signed_in_admin, keys, url("api-key-create", cluster.pk), {"name": "ci", "read_only": "on"}
    )
    assert created.status_code == 201
    secret = re.search(r'<code class="secret" id="new-key-value">([^<]+)</code>', text(created))
    assert secret, "the new key is shown"
    key = api_key_for_secret(secret.group(1))
    assert key is not None and key.cluster_id == cluster.pk and key.name == "ci" and key.read_only
    later = text(signed_in_admin.get(keys))
    assert secret.group(1) not in later and key.prefix in later  # listed by prefix, never again in full


def test_admin_revokes_a_key(signed_in_admin: Client, make_cluster: Callable[..., CreatedCluster]) -> None:
    created = make_cluster()
    key = api_key_for_secret(created.api_key)
    assert key is not None
    keys = url("cluster-keys", created.cluster.pk)
    response = post_form(signed_in_admin, keys, url("api-key-revoke", created.cluster.pk, key.pk))
    assert response.status_code == 302
    assert api_key_for_secret(created.api_key) is None
    assert "revoked" in text(signed_in_admin.get(keys))


def test_a_key_of_another_cluster_cannot_be_revoked_through_this_one(
    signed_in_admin: Client, make_cluster: Callable[..., CreatedCluster]
) -> None:
    one, other = make_cluster(), make_cluster()
    key = api_key_for_secret(other.api_key)
    assert key is not None
    page = url("cluster-keys", one.cluster.pk)
    response = post_form(signed_in_admin, page, url("api-key-revoke", one.cluster.pk, key.pk))
    assert response.status_code == 404 and api_key_for_secret(other.api_key) is not None


def test_viewer_sees_keys_but_cannot_manage_them(
    signed_in_viewer: Client, make_cluster: Callable[..., CreatedCluster]
) -> None:
    created = make_cluster()
    key = api_key_for_secret(created.api_key)
    assert key is not None
    keys = url("cluster-keys", created.cluster.pk)
    page = text(signed_in_viewer.get(keys))
    assert key.prefix in page and 'id="create-key"' not in page and "Revoke" not in page
    token = csrf_token(signed_in_viewer, url("cluster-list"))  # the sign-out form's token is a valid one
    create = signed_in_viewer.post(
        url("api-key-create", created.cluster.pk), {"csrfmiddlewaretoken": token, "name": "x"}
    )
    revoke = signed_in_viewer.post(
        url("api-key-revoke", created.cluster.pk, key.pk), {"csrfmiddlewaretoken": token}
    )
    assert (create.status_code, revoke.status_code) == (403, 403)
    assert ApiKey.objects.filter(cluster=created.cluster).count() == 1 and key.is_active


def test_forms_without_a_csrf_token_are_refused(
    signed_in_admin: Client, make_cluster: Callable[..., CreatedCluster]
) -> None:
    cluster = make_cluster().cluster
    assert signed_in_admin.post(url("api-key-create", cluster.pk), {"name": "x"}).status_code == 403
    refused = signed_in_admin.post(url("inference-toggle", cluster.pk), {"enabled": "true", "confirm": "on"})
    assert refused.status_code == 403
    assert not RestartJob.objects.exists() and ApiKey.objects.filter(cluster=cluster).count() == 1


# --- the Inference tab ----------------------------------------------------------------------------------


def test_inference_tab_lists_every_model_with_price_output_context_and_installed(
    signed_in_viewer: Client, make_cluster: Callable[..., CreatedCluster], models_dir: object
) -> None:
    cluster = make_cluster(created_at=timezone.now()).cluster
    html = text(signed_in_viewer.get(url("cluster-inference", cluster.pk)))
    for entry in catalog.CATALOG:
        row = re.search(rf'<tr data-model="{re.escape(entry.name)}"[^>]*>(.*?)</tr>', html, re.DOTALL)
        assert row, entry.name
        cells = row.group(1)
        assert str(entry.modality) in cells
        installed = catalog.is_installed(models_dir, entry.name)  # type: ignore[arg-type]
        assert ("not installed" not in cells) is installed, entry.name
        if entry.spec.output == "dense":
            assert f"dense · {entry.spec.dim} dims" in cells
        if entry.spec.context_window:
            assert f"{entry.spec.context_window:,} tokens" in cells
    mxbai = re.search(rf'<tr data-model="{MXBAI}"[^>]*>(.*?)</tr>', html, re.DOTALL)
    assert mxbai and "$0.10" in mxbai.group(1)
    bm25 = re.search(rf'<tr data-model="{BM25}"[^>]*>(.*?)</tr>', html, re.DOTALL)
    assert bm25 and "sparse" in bm25.group(1) and "no limit" in bm25.group(1) and "free" in bm25.group(1)


def test_inference_tab_shows_this_months_usage_chart_and_statement_links(
    signed_in_viewer: Client, make_cluster: Callable[..., CreatedCluster], models_dir: object
) -> None:
    cluster = make_cluster(created_at=timezone.now()).cluster
    now = timezone.now()
    record(cluster, MINILM, 1234, now)
    record(cluster, MINILM, 66, now - timedelta(days=3))
    record(cluster, MXBAI, 5_000_000 + 1_000_000, now)  # 1M billable: $0.10
    html = text(signed_in_viewer.get(url("cluster-inference", cluster.pk)))

    minilm = re.search(rf'<tr data-model="{MINILM}"[^>]*>(.*?)</tr>', html, re.DOTALL)
    assert minilm
    month_tokens = 1234 + (66 if (now - timedelta(days=3)).month == now.month else 0)
    assert f'data-col="tokens">{month_tokens:,}<' in minilm.group(1)
    assert f'data-col="free">{5_000_000 - month_tokens:,}<' in minilm.group(1)
    mxbai = re.search(rf'<tr data-model="{MXBAI}"[^>]*>(.*?)</tr>', html, re.DOTALL)
    assert mxbai and 'data-col="cost">$0.10<' in mxbai.group(1) and 'data-col="free">0<' in mxbai.group(1)
    assert 'id="month-cost">$0.10<' in html

    # One chart per model used or installed; the 30-day totals include the day three days ago.
    chart = re.search(rf'<svg class="chart"[^>]*data-model="{MINILM}" data-total="(\d+)"', html)
    assert chart and int(chart.group(1)) == 1300
    assert html.count('<rect class="bar') >= 30 * 3  # MiniLM, mxbai and the other installed models
    assert "1,234 tokens in 1 request" in html  # today's bar's tooltip
    month = now.strftime("%Y-%m")
    statement = reverse("cluster-statement", args=[cluster.pk, month])
    assert f'href="{statement}"' in html and f'href="{statement}.csv"' in html
    assert signed_in_viewer.get(statement).json()["cost"] == "0.10"


def test_admin_sees_the_toggle_with_a_restart_warning(
    signed_in_admin: Client, make_cluster: Callable[..., CreatedCluster]
) -> None:
    cluster = make_cluster().cluster  # paid, US, created before 2025-07-07: off
    html = text(signed_in_admin.get(url("cluster-inference", cluster.pk)))
    assert 'id="inference-switch"' in html and 'aria-checked="false"' in html
    assert "will trigger a restart of your cluster" in html
    assert 'name="enabled" value="true"' in html


@pytest.mark.parametrize(
    ("tier", "region", "reason"),
    [
        ("free", "us-east-1", "only available for paid clusters"),
        ("paid", "eu-central-1", "only available in US regions"),
    ],
)
def test_ineligible_clusters_show_the_toggle_disabled_with_the_reason(
    signed_in_admin: Client,
    make_cluster: Callable[..., CreatedCluster],
    tier: str,
    region: str,
    reason: str,
) -> None:
    cluster = make_cluster(tier=tier, region=region).cluster
    html = text(signed_in_admin.get(url("cluster-inference", cluster.pk)))
    assert 'id="inference-toggle-disabled"' in html and 'id="inference-switch"' not in html
    assert re.search(r'role="switch" aria-checked="false" disabled', html)
    assert reason in html
    # And by URL: the service refuses, the page says why, nothing restarts.
    response = post_form(
        signed_in_admin,
        url("cluster-inference", cluster.pk),
        url("inference-toggle", cluster.pk),
        {"enabled": "true", "confirm": "on"},
    )
    assert response.status_code == 302
    assert reason in text(signed_in_admin.get(response["Location"]))
    assert not RestartJob.objects.filter(cluster=cluster).exists()


def test_toggle_asks_for_confirmation_then_starts_a_restart(
    signed_in_admin: Client, admin: CreatedUser, make_cluster: Callable[..., CreatedCluster]
) -> None:
    cluster = make_cluster().cluster
    tab = url("cluster-inference", cluster.pk)
    unconfirmed = post_form(signed_in_admin, tab, url("inference-toggle", cluster.pk), {"enabled": "true"})
    assert unconfirmed.status_code == 200 and "restart of your cluster" in text(unconfirmed)
    assert 'name="confirm" value="on"' in text(unconfirmed)
    assert not RestartJob.objects.filter(cluster=cluster).exists()

    confirmed = post_form(
        signed_in_admin, tab, url("inference-toggle", cluster.pk), {"enabled": "true", "confirm": "on"}
    )
    assert confirmed.status_code == 302 and confirmed["Location"] == tab
    job = RestartJob.objects.get(cluster=cluster)
    assert (job.state, job.target_enabled, job.requested_by_id) == ("queued", True, admin.user.pk)
    html = text(signed_in_admin.get(tab))
    assert f'data-job="{job.pk}"' in html and 'data-state="queued"' in html
    assert f'data-poll-url="{reverse("cluster-inference", args=[cluster.pk])}"' in html
    assert "Restarting to turn inference on" in html and "Waiting for a worker" in html
    assert re.search(r'id="inference-switch"\s+disabled', html)  # no second toggle while it restarts


def test_a_failed_restart_shows_the_reason_and_a_retry(
    signed_in_admin: Client, make_cluster: Callable[..., CreatedCluster]
) -> None:
    cluster = make_cluster().cluster
    tab = url("cluster-inference", cluster.pk)
    post_form(signed_in_admin, tab, url("inference-toggle", cluster.pk), {"enabled": "true", "confirm": "on"})
    job = RestartJob.objects.get(cluster=cluster)
    assert restart_job_fail(job_id=job.pk, error="Health check failed: storage did not answer")
    html = text(signed_in_admin.get(tab))
    assert 'data-state="failed"' in html and "storage did not answer" in html and 'id="retry-job"' in html
    retried = post_form(signed_in_admin, tab, url("restart-retry", cluster.pk, job.pk))
    assert retried.status_code == 302
    retry = RestartJob.objects.filter(cluster=cluster).exclude(pk=job.pk).get()
    assert (retry.retry_of_id, retry.state) == (job.pk, "queued")


def test_viewer_sees_usage_pricing_and_examples_but_no_toggle(
    signed_in_viewer: Client, make_cluster: Callable[..., CreatedCluster], models_dir: object
) -> None:
    cluster = make_cluster().cluster
    html = text(signed_in_viewer.get(url("cluster-inference", cluster.pk)))
    assert 'id="inference-switch"' not in html and 'id="inference-toggle"' not in html
    assert "Only admins can change it" in html
    assert 'id="models"' in html and "$0.10" in html and 'class="chart"' in html
    assert set(snippets(html, "python")) == {MINILM, "sentence-transformers/paraphrase-minilm-l3-v2", BM25}


def test_viewer_gets_403_from_toggle_and_retry_by_url(
    signed_in_viewer: Client, make_cluster: Callable[..., CreatedCluster]
) -> None:
    cluster = make_cluster().cluster
    job = RestartJob.objects.create(
        cluster=cluster, target_enabled=True, previous_enabled=False, state="failed", error="x"
    )
    token = csrf_token(signed_in_viewer, url("cluster-list"))
    toggle = signed_in_viewer.post(
        url("inference-toggle", cluster.pk),
        {"csrfmiddlewaretoken": token, "enabled": "true", "confirm": "on"},
    )
    retry = signed_in_viewer.post(url("restart-retry", cluster.pk, job.pk), {"csrfmiddlewaretoken": token})
    assert (toggle.status_code, retry.status_code) == (403, 403)
    assert RestartJob.objects.filter(cluster=cluster).count() == 1


def test_examples_fit_each_installed_model(
    signed_in_viewer: Client,
    make_cluster: Callable[..., CreatedCluster],
    models_dir: object,
    public_url: str,
) -> None:
    cluster = make_cluster(created_at=timezone.now()).cluster
    html = text(signed_in_viewer.get(url("cluster-inference", cluster.pk)))
    base = f"{public_url}/clusters/{cluster.pk}"
    python, http, ts = snippets(html, "python"), snippets(html, "http"), snippets(html, "typescript")
    assert (
        set(python) == set(http) == set(ts) == {MINILM, "sentence-transformers/paraphrase-minilm-l3-v2", BM25}
    )

    assert f'url="{base}"' in python[MINILM] and "cloud_inference=True" in python[MINILM]
    assert "VectorParams(size=384, distance=models.Distance.COSINE)" in python[MINILM]
    assert f'model="{MINILM}"' in python[MINILM] and "models.Document(" in python[MINILM]
    assert '"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)' in python[BM25]
    assert 'using="bm25"' in python[BM25]

    assert f'curl -X PUT "{base}/collections/docs-all-minilm-l6-v2"' in http[MINILM]
    assert '"size": 384' in http[MINILM] and '"modifier": "idf"' in http[BM25]
    assert '"using": "bm25"' in http[BM25]

    assert 'from "@qdrant/js-client-rest"' in ts[MINILM]
    assert (
        'url: "http://console.test:8000"' in ts[MINILM] and f'prefix: "/clusters/{cluster.pk}"' in ts[MINILM]
    )
    assert 'vectors: { size: 384, distance: "Cosine" }' in ts[MINILM]
    assert 'sparse_vectors: { bm25: { modifier: "idf" } }' in ts[BM25] and 'using: "bm25"' in ts[BM25]


def test_month_cost_uses_the_price_in_force(
    signed_in_viewer: Client, make_cluster: Callable[..., CreatedCluster]
) -> None:
    from billing.models import ModelPrice

    cluster = make_cluster().cluster
    ModelPrice.objects.create(
        model=MXBAI, effective_from=datetime(2000, 1, 1, tzinfo=UTC), price_per_million=Decimal("0.25")
    )
    html = text(signed_in_viewer.get(url("cluster-inference", cluster.pk)))
    row = re.search(rf'<tr data-model="{MXBAI}"[^>]*>(.*?)</tr>', html, re.DOTALL)
    assert row and "$0.25" in row.group(1)
