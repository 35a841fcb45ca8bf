"""Plain Django views of the console app: the health check and the server-rendered web console.

The console pages are thin: they check the user's console role, call the console, billing and inference
selectors or services, and render templates. A user sees the clusters of the accounts they are a member of;
a cluster of another account answers 404, as a missing one. Writes are POST-only forms with CSRF tokens;
viewers get 403 from every write, whether or not the page showed them the button. The Inference tab's live
progress polls the JSON API (`GET /api/v1/clusters/<id>/inference`) with fetch();
everything else works without JavaScript.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from billing.selectors import UsagePoint
from console.clusters.models import Cluster, Membership, RestartJob
from console.clusters.selectors import (
    cluster_get_for_user,
    cluster_inference_state,
    restart_job_get,
    restart_job_replica_reports,
    user_cluster_role,
    user_has_console_access,
    user_is_admin_anywhere,
)
from console.clusters.services import (
    ClusterError,
    ConsolePermissionDenied,
    api_key_create,
    api_key_revoke,
    cluster_inference_toggle,
    restart_job_retry,
)
from console.web import selectors as console_selectors
from console.web.charts import daily_bar_chart
from console.web.forms import ApiKeyCreateForm, InferenceToggleForm
from console.web.snippets import provider_snippets, usage_snippets


def health(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers and `make run` smoke checks."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = "ok"
    except Exception as exc:  # the point of a health check is to report, not raise
        return JsonResponse({"status": "error", "database": type(exc).__name__}, status=503)
    return JsonResponse({"status": "ok", "database": database})


# --- sign-in ---------------------------------------------------------------------------------------------


class ConsoleLoginView(LoginView):
    """Django's sign-in form; signed-in users go to the clusters list (or to `?next=`)."""

    template_name = "console/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        """The clusters list, not LOGIN_REDIRECT_URL's default profile page the project does not have."""
        return reverse("console:cluster-list")


# --- helpers ---------------------------------------------------------------------------------------------

STEP_LABELS = dict(RestartJob.Step.choices)


def _require_access(request: HttpRequest) -> None:
    """403 for signed-in users who are members of no account (they have no console access)."""
    if not user_has_console_access(user=request.user):
        raise PermissionDenied("This account has no console role. Ask an admin for access.")


def _role(request: HttpRequest, cluster: Cluster) -> str:
    """The signed-in user's role on a cluster they can see (the role in the cluster's account)."""
    role = user_cluster_role(user=request.user, cluster=cluster)
    if role is None:  # the cluster was looked up for this user; only a concurrent change gets here
        raise Http404(f"Cluster {cluster.pk} does not exist.")
    return role


def _require_admin(request: HttpRequest, cluster: Cluster) -> None:
    if _role(request, cluster) != Membership.Role.ADMIN:
        raise PermissionDenied("Only admins of the cluster's account may do this.")


def _cluster_or_404(request: HttpRequest, cluster_id: str) -> Cluster:
    """The cluster if the signed-in user may see it; 404 otherwise, whether it is missing or another
    account's (so ids of other accounts' clusters cannot be probed)."""
    _require_access(request)
    cluster = cluster_get_for_user(user=request.user, cluster_id=cluster_id)
    if cluster is None:
        raise Http404(f"Cluster {cluster_id} does not exist.")
    return cluster


def _tab_context(request: HttpRequest, cluster: Cluster, tab: str) -> dict[str, Any]:
    role = _role(request, cluster)
    return {
        "cluster": cluster,
        "cluster_url": console_selectors.cluster_url(cluster),
        "grpc_url": console_selectors.grpc_url(cluster),
        "role": role,
        "is_admin": role == Membership.Role.ADMIN,
        "tab": tab,
    }


def _inference_tab(cluster_id: str) -> HttpResponseRedirect:
    return redirect("console:cluster-inference", cluster_id=cluster_id)


# --- pages -----------------------------------------------------------------------------------------------


@require_GET
def home(request: HttpRequest) -> HttpResponseRedirect:
    """The site root: the console."""
    return redirect("console:cluster-list")


@login_required
@require_GET
def cluster_list(request: HttpRequest) -> HttpResponse:
    """The clusters of the user's accounts: name, region, tier, inference state and this month's cost."""
    _require_access(request)
    role = Membership.Role.ADMIN if user_is_admin_anywhere(user=request.user) else Membership.Role.VIEWER
    return render(
        request,
        "console/cluster_list.html",
        {"rows": console_selectors.cluster_rows(user=request.user), "role": role, "month": timezone.now()},
    )


@login_required
@require_GET
def cluster_overview(request: HttpRequest, cluster_id: str) -> HttpResponse:
    """The Overview tab: URL, region, tier, storage backend, status."""
    cluster = _cluster_or_404(request, cluster_id)
    context = _tab_context(request, cluster, "overview")
    context["state"] = cluster_inference_state(cluster=cluster)
    return render(request, "console/cluster_overview.html", context)


def _keys_page(
    request: HttpRequest, cluster: Cluster, form: ApiKeyCreateForm, new_key: str = "", status: int = 200
) -> HttpResponse:
    context = _tab_context(request, cluster, "keys")
    context.update(
        {"keys": console_selectors.cluster_api_keys(cluster=cluster), "form": form, "new_key": new_key}
    )
    return render(request, "console/cluster_keys.html", context, status=status)


@login_required
@require_GET
def cluster_keys(request: HttpRequest, cluster_id: str) -> HttpResponse:
    """The API keys tab: the keys (never their secrets) and, for admins, create and revoke."""
    return _keys_page(request, _cluster_or_404(request, cluster_id), ApiKeyCreateForm())


@login_required
@require_POST
def api_key_create_view(request: HttpRequest, cluster_id: str) -> HttpResponse:
    """Create a key and show its secret in this response only (it is stored hashed, never shown again)."""
    cluster = _cluster_or_404(request, cluster_id)
    _require_admin(request, cluster)
    form = ApiKeyCreateForm(request.POST)
    if not form.is_valid():
        return _keys_page(request, cluster, form, status=400)
    # Rendered, not redirected: a redirect would have to park the clear key in the session to show it.
    key, _ = api_key_create(
        cluster=cluster,
        name=form.cleaned_data["name"],
        read_only=form.cleaned_data["read_only"],
        actor=request.user,
    )
    return _keys_page(request, cluster, ApiKeyCreateForm(), new_key=key, status=201)


@login_required
@require_POST
def api_key_revoke_view(request: HttpRequest, cluster_id: str, key_id: int) -> HttpResponse:
    """Revoke a key: it stops authenticating at once."""
    cluster = _cluster_or_404(request, cluster_id)
    _require_admin(request, cluster)
    api_key = console_selectors.cluster_api_key(cluster=cluster, key_id=key_id)
    if api_key is None:
        raise Http404("No such key on this cluster.")
    api_key_revoke(api_key=api_key, actor=request.user)
    messages.success(request, f"Key “{api_key.name}” ({api_key.prefix}…) revoked.")
    return redirect("console:cluster-keys", cluster_id=cluster.pk)


@login_required
@require_GET
def cluster_inference(request: HttpRequest, cluster_id: str) -> HttpResponse:
    """The Inference tab: toggle and restart progress, models with prices and usage, charts, examples."""
    cluster = _cluster_or_404(request, cluster_id)
    context = _tab_context(request, cluster, "inference")
    now = timezone.now()
    state = cluster_inference_state(cluster=cluster)
    usage = console_selectors.inference_usage(cluster=cluster, now=now)
    buckets, series = console_selectors.usage_last_days(cluster=cluster, now=now)
    by_model = {s.model: s for s in series}
    charts = []
    for row in usage.models:
        model_series = by_model.get(row.name)
        if model_series is None and not row.installed:
            continue  # never used and cannot be: a chart of zeros says nothing
        points = model_series.points if model_series else []
        if not points:
            points = [UsagePoint(start=b, tokens=0, requests=0) for b in buckets]
        charts.append((row, daily_bar_chart(points, today=now.date())))
    month = str(usage.month)
    context.update(
        {
            "state": state,
            "job": state.job,
            "job_active": bool(state.job and state.job.is_active),
            "step_labels": STEP_LABELS,
            "job_step_label": STEP_LABELS.get(state.job.step, state.job.step) if state.job else "",
            "replica_reports": restart_job_replica_reports(job=state.job) if state.job else [],
            "usage": usage,
            "charts": charts,
            "chart_days": console_selectors.CHART_DAYS,
            "snippets": [
                usage_snippets(url=context["cluster_url"], entry=row.entry, grpc_url=context["grpc_url"])
                for row in usage.models
                if row.installed
            ],
            "providers": [
                (row, provider_snippets(url=context["cluster_url"], provider=row.provider))
                for row in console_selectors.provider_usage(cluster=cluster, now=now)
            ],
            "statement_json": reverse("cluster-statement", args=[cluster.pk, month]),
            "statement_csv": reverse("cluster-statement-csv", args=[cluster.pk, month]),
            "poll_url": reverse("cluster-inference", args=[cluster.pk]),
            "toggle_form": InferenceToggleForm(initial={"enabled": "false" if state.desired else "true"}),
        }
    )
    return render(request, "console/cluster_inference.html", context)


@login_required
@require_POST
def inference_toggle_view(request: HttpRequest, cluster_id: str) -> HttpResponse:
    """Turn inference on or off (admins); asks for confirmation first, since the cluster restarts."""
    cluster = _cluster_or_404(request, cluster_id)
    _require_admin(request, cluster)
    form = InferenceToggleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose whether inference should be on or off.")
        return _inference_tab(cluster.pk)
    enabled: bool = form.cleaned_data["enabled"]
    if not form.cleaned_data["confirm"]:
        context = _tab_context(request, cluster, "inference")
        context["enabled"] = enabled
        return render(request, "console/inference_confirm.html", context)
    try:
        job = cluster_inference_toggle(cluster=cluster, enabled=enabled, actor=request.user)
    except ConsolePermissionDenied as exc:
        raise PermissionDenied(str(exc)) from exc
    except ClusterError as exc:  # not eligible: the message says why
        messages.error(request, str(exc))
        return _inference_tab(cluster.pk)
    if job is None:
        messages.info(request, f"Inference is already {'on' if enabled else 'off'}; nothing to restart.")
    else:
        messages.info(request, f"Restarting the cluster to turn inference {'on' if enabled else 'off'}.")
    return _inference_tab(cluster.pk)


@login_required
@require_POST
def restart_retry_view(request: HttpRequest, cluster_id: str, job_id: int) -> HttpResponse:
    """Run a failed restart again (admins)."""
    cluster = _cluster_or_404(request, cluster_id)
    _require_admin(request, cluster)
    job: RestartJob | None = restart_job_get(job_id=job_id)
    if job is None or job.cluster_id != cluster.pk:
        raise Http404("No such restart job on this cluster.")
    try:
        restart_job_retry(job=job, actor=request.user)
    except ConsolePermissionDenied as exc:
        raise PermissionDenied(str(exc)) from exc
    except ClusterError as exc:  # not failed, superseded, or no longer eligible
        messages.error(request, str(exc))
    else:
        messages.info(request, "Retrying the restart.")
    return _inference_tab(cluster.pk)
