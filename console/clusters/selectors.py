"""Reads about clusters, credentials, console roles and restart jobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from django.db.models import QuerySet

from console.clusters.models import (
    ApiKey,
    Cluster,
    Eligibility,
    InferenceToggle,
    Membership,
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


# --- console roles, inference state and restart jobs ---------------------------------------------------


def user_role(*, user: AbstractBaseUser | AnonymousUser) -> str | None:
    """The console role of a user: staff and superusers count as admins; None means no console access."""
    if not user.is_authenticated:
        return None
    if getattr(user, "is_staff", False) or getattr(user, "is_superuser", False):
        return Membership.Role.ADMIN
    membership = Membership.objects.filter(user_id=user.pk).only("role").first()
    return membership.role if membership else None


def user_is_admin(*, user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether the user may toggle inference and retry restart jobs."""
    return user_role(user=user) == Membership.Role.ADMIN


def cluster_get(*, cluster_id: str) -> Cluster | None:
    """A cluster by id, or None."""
    return Cluster.objects.filter(pk=cluster_id).first()


def restart_job_get(*, job_id: int) -> RestartJob | None:
    """A restart job by id, or None."""
    return RestartJob.objects.filter(pk=job_id).first()


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
