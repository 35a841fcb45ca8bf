"""Reads about accounts, clusters, credentials, console roles, restart jobs and live web processes (replicas).

What a console user may see is decided here: `clusters_visible(user=...)` is the one place that scopes
clusters to the user's accounts (staff and superusers see all); every console read of a cluster or job by id
goes through it, so a cluster of another account is indistinguishable from one that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from console.clusters.models import (
    DEFAULT_ACCOUNT_NAME,
    Account,
    ApiKey,
    Cluster,
    Eligibility,
    InferenceToggle,
    Membership,
    Replica,
    RestartJob,
    hash_secret,
    inference_eligibility,
)

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser


def api_key_for_secret(secret: str) -> ApiKey | None:
    """The active API key with this clear secret (looked up by hash)."""
    if not secret:
        return None
    return ApiKey.objects.filter(key_hash=hash_secret(secret), revoked_at__isnull=True).first()


def cluster_for_inference_token(token: str) -> Cluster | None:
    """The cluster an inference-service token belongs to."""
    if not token:
        return None
    return Cluster.objects.filter(inference_token_hash=hash_secret(token)).first()


# --- accounts and console roles -------------------------------------------------------------------------


def _is_operator(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Staff and superusers: admins of every account, without membership rows."""
    return bool(getattr(user, "is_staff", False) or getattr(user, "is_superuser", False))


def account_get(*, name: str) -> Account | None:
    """An account by name, or None."""
    return Account.objects.filter(name=name).first()


def account_default() -> Account | None:
    """The default account (where clusters and users go when no account is named), if it exists yet."""
    return account_get(name=DEFAULT_ACCOUNT_NAME)


def user_has_console_access(*, user: AbstractBaseUser | AnonymousUser) -> bool:
    """Signed in and either an operator or a member of at least one account."""
    if not user.is_authenticated:
        return False
    return _is_operator(user) or Membership.objects.filter(user_id=user.pk).exists()


def user_role(*, user: AbstractBaseUser | AnonymousUser, account_id: int) -> str | None:
    """The user's role in one account: operators are admins everywhere; None means no access to it."""
    if not user.is_authenticated:
        return None
    if _is_operator(user):
        return Membership.Role.ADMIN
    return (
        Membership.objects.filter(user_id=user.pk, account_id=account_id)
        .values_list("role", flat=True)
        .first()
    )


def user_cluster_role(*, user: AbstractBaseUser | AnonymousUser, cluster: Cluster) -> str | None:
    """The user's role on a cluster: the role in the cluster's account."""
    return user_role(user=user, account_id=cluster.account_id)


def user_is_admin(*, user: AbstractBaseUser | AnonymousUser, cluster: Cluster) -> bool:
    """Whether the user may manage the cluster (toggle inference, retry restart jobs, manage API keys)."""
    return user_cluster_role(user=user, cluster=cluster) == Membership.Role.ADMIN


def user_is_admin_anywhere(*, user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether the user is an admin of at least one account (the clusters list shows that role)."""
    if not user.is_authenticated:
        return False
    return (
        _is_operator(user) or Membership.objects.filter(user_id=user.pk, role=Membership.Role.ADMIN).exists()
    )


def clusters_visible(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Cluster]:
    """The clusters a console user may see: those of the user's accounts (every cluster for operators)."""
    if not user.is_authenticated:
        return Cluster.objects.none()
    clusters = Cluster.objects.select_related("account")
    if _is_operator(user):
        return clusters.all()
    return clusters.filter(account__memberships__user_id=user.pk)


def cluster_get(*, cluster_id: str) -> Cluster | None:
    """A cluster by id, or None (whoever asks: for the system, not for console users)."""
    return Cluster.objects.filter(pk=cluster_id).first()


def cluster_get_for_user(*, user: AbstractBaseUser | AnonymousUser, cluster_id: str) -> Cluster | None:
    """A cluster by id if the user may see it, else None (the caller answers 404 either way)."""
    return clusters_visible(user=user).filter(pk=cluster_id).first()


def restart_job_get(*, job_id: int) -> RestartJob | None:
    """A restart job by id, or None."""
    return RestartJob.objects.filter(pk=job_id).first()


def restart_job_get_for_user(*, user: AbstractBaseUser | AnonymousUser, job_id: int) -> RestartJob | None:
    """A restart job by id if the user may see its cluster, else None."""
    visible = clusters_visible(user=user).values("pk")
    return RestartJob.objects.filter(pk=job_id, cluster_id__in=visible).select_related("cluster").first()


def restart_job_active(*, cluster_id: str) -> RestartJob | None:
    """The cluster's queued or running job (there is at most one)."""
    return RestartJob.objects.filter(cluster_id=cluster_id, state__in=RestartJob.ACTIVE_STATES).first()


def restart_job_latest(*, cluster_id: str) -> RestartJob | None:
    """The cluster's most recent job in any state."""
    return RestartJob.objects.filter(cluster_id=cluster_id).order_by("-created_at", "-id").first()


@dataclass(frozen=True)
class InferenceState:
    """What the console shows for a cluster's inference toggle."""

    cluster: Cluster
    enabled: bool  # effective: what data-plane requests see
    desired: bool  # what the last toggle asked for
    eligibility: Eligibility
    job: RestartJob | None  # the active job, else the latest one (a failed one can be retried)


def cluster_inference_state(*, cluster: Cluster) -> InferenceState:
    """The effective and desired inference state of a cluster, its eligibility and its current job."""
    job = restart_job_active(cluster_id=cluster.pk) or restart_job_latest(cluster_id=cluster.pk)
    return InferenceState(
        cluster=cluster,
        enabled=cluster.inference_enabled,
        desired=cluster.inference_wanted,
        eligibility=inference_eligibility(tier=cluster.tier, region=cluster.region),
        job=job,
    )


def restart_jobs_stale(*, stale_before: datetime) -> QuerySet[RestartJob]:
    """Running jobs whose worker stopped beating before `stale_before` (presumed dead)."""
    return RestartJob.objects.filter(state=RestartJob.State.RUNNING, heartbeat_at__lt=stale_before)


def restart_jobs_unclaimed(*, queued_before: datetime) -> QuerySet[RestartJob]:
    """Jobs queued before `queued_before` that no worker claimed (their message may have been lost)."""
    return RestartJob.objects.filter(state=RestartJob.State.QUEUED, created_at__lt=queued_before)


def inference_toggles(*, cluster_id: str) -> QuerySet[InferenceToggle]:
    """The toggle audit trail of a cluster, newest first."""
    return InferenceToggle.objects.filter(cluster_id=cluster_id).select_related("job")


# --- replicas (live web processes) ------------------------------------------------------------------------


def _seen_since(now: datetime | None) -> datetime:
    """The oldest `seen_at` a live replica may have."""
    return (now or timezone.now()) - timedelta(seconds=float(settings.REPLICA_STALE_AFTER))


def replicas_live(*, now: datetime | None = None) -> list[Replica]:
    """The web processes that beat within REPLICA_STALE_AFTER: those a restart asks to drain and warm."""
    return list(Replica.objects.filter(seen_at__gte=_seen_since(now)))


def replica_ids_live(*, ids: Iterable[str], now: datetime | None = None) -> set[str]:
    """Which of these replicas are still live (a deleted row or a stale beat means gone)."""
    wanted = list(ids)
    if not wanted:
        return set()
    live = Replica.objects.filter(pk__in=wanted, seen_at__gte=_seen_since(now)).values_list("pk", flat=True)
    return {str(pk) for pk in live}


@dataclass(frozen=True)
class ReplicaStepReport:
    """One replica's answer to one restart step, as the console shows it."""

    step: str
    label: str
    status: str  # "ok", "failed" or "gone"
    text: str  # the error or the "gone" note; a short summary of the detail when ok


@dataclass(frozen=True)
class ReplicaReport:
    """What one web process (or the single CONTROL_URL) reported during a restart job."""

    key: str
    host: str
    pid: int | None
    steps: list[ReplicaStepReport]

    @property
    def gone(self) -> bool:
        """The replica died (or was cut off) during the job and the job went on without it."""
        return any(s.status == "gone" for s in self.steps)


def _summary(detail: Any) -> str:
    """A short, readable line of a step's detail: numbers and names only (details hold no secrets)."""
    if not isinstance(detail, dict):
        return ""
    parts = []
    for key, value in detail.items():
        if key == "models" and isinstance(value, dict):  # the warm step: milliseconds per model
            parts.append("loaded: " + (", ".join(f"{k} ({v} ms)" for k, v in value.items()) or "none"))
            continue
        if key.endswith("_ms"):
            parts.append(f"{key[:-3].replace('_', ' ')} {value} ms")
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "none"
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts)


def restart_job_replica_reports(*, job: RestartJob) -> list[ReplicaReport]:
    """The job's per-replica step results (`RestartJob.replicas`), in step order, for the console."""
    labels = dict(RestartJob.Step.choices)
    order = {step: index for index, step in enumerate(RestartJob.CONTROL_STEPS)}
    reports = []
    raw = job.replicas if isinstance(job.replicas, dict) else {}
    for key, entry in raw.items():
        if not isinstance(entry, dict):
            continue
        steps = []
        recorded = entry.get("steps")
        if not isinstance(recorded, dict):
            recorded = {}
        for step, result in sorted(recorded.items(), key=lambda item: order.get(item[0], len(order))):
            if not isinstance(result, dict):
                continue
            if result.get("gone"):
                status, text = "gone", str(result.get("error") or "gone")
            elif result.get("ok"):
                status, text = "ok", _summary(result.get("detail"))
            else:
                status, text = "failed", str(result.get("error") or "")
            steps.append(ReplicaStepReport(step=step, label=labels.get(step, step), status=status, text=text))
        pid = entry.get("pid")
        reports.append(
            ReplicaReport(
                key=str(key),
                host=str(entry.get("host") or key),
                pid=pid if isinstance(pid, int) else None,
                steps=steps,
            )
        )
    return sorted(reports, key=lambda r: (r.host, r.pid or 0, r.key))
