"""Writes about accounts, clusters, their credentials, console users, the inference toggle with its
restart jobs, and the registry of live web processes (replicas) those jobs run their steps on.

Console actions take the acting user (`actor`) and check its role on the cluster's account here, whatever
the caller checked before: only an admin of the cluster's account (or an operator) may toggle inference,
retry a job or create and revoke API keys. System callers (commands, cluster creation) pass no actor.

The toggle and its restart job
------------------------------
Toggling inference never flips the effective state directly: `cluster_inference_toggle` records the desired
state and, in the same transaction (with the cluster row locked), creates a queued `RestartJob`, writes the
audit row and marks the cluster RESTARTING (the data plane answers 503 + Retry-After from then on). The
Celery task is queued with `transaction.on_commit`, so a worker never sees a job that was rolled back.

While a job is queued or running, further toggles only record the desired state; when the job finishes,
`restart_job_complete` flips the effective state to the job's target and, if the desired state has changed
meanwhile, chains exactly one more job. A partial unique constraint allows one active job per cluster, so
on-off-on ends at the last request without two restarts ever running at once.

Workers claim a job with a conditional UPDATE (queued -> running, or running with a stale heartbeat ->
running again with attempts + 1). The attempt number is the worker's lease: every later write is
conditional on it, so a duplicate delivery or a worker presumed dead cannot write over the live run. The
worker beats the heartbeat every RESTART_HEARTBEAT_INTERVAL while it holds the job, so a heartbeat older
than RESTART_STALE_AFTER (seconds, not the length of a step) means the worker is gone. The reaper
(`restart_jobs_reap`, every RESTART_REAP_INTERVAL) re-queues jobs whose worker stopped beating and fails them
after RESTART_MAX_ATTEMPTS, so a killed worker's cluster is back within a minute, never restarting forever.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from rest_framework.authtoken.models import Token

from console.clusters.models import (
    DEFAULT_ACCOUNT_NAME,
    REGIONS,
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
from console.clusters.selectors import (
    restart_job_active,
    restart_job_latest,
    restart_jobs_stale,
    restart_jobs_unclaimed,
    user_is_admin,
)
from inference.errors import ApiError, Forbidden

logger = logging.getLogger(__name__)

RESTART_TASK = "console.clusters.tasks.restart_cluster"  # the Celery task that runs a restart job

# Clusters created after this day start with inference on (when eligible), as in the cloud.
INFERENCE_DEFAULT_ON_AFTER = date(2025, 7, 7)


Actor = AbstractBaseUser | AnonymousUser  # the console user acting


class ClusterError(ApiError):
    """A cluster operation was refused (400 unless a subclass says otherwise); the message says why."""

    status = 400


@dataclass(frozen=True)
class CreatedCluster:
    """A new cluster with the secrets that are shown only once."""

    cluster: Cluster
    api_key: str
    inference_token: str


def new_secret(prefix: str) -> str:
    """A 256-bit random token with a readable prefix."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


@transaction.atomic
def cluster_create(
    *,
    name: str,
    region: str,
    tier: str,
    created_at: datetime | None = None,
    storage_backend: str = Cluster.Backend.EMBEDDED,
    remote_url: str = "",
    remote_api_key: str = "",
    account: Account | None = None,
) -> CreatedCluster:
    """Create a cluster of `account` (default: the default account) with a read-write API key and an
    inference-service token."""
    if region not in REGIONS:
        raise ClusterError(f"Unknown region {region!r}; choose one of: {', '.join(REGIONS)}")
    if tier not in Cluster.Tier.values:
        raise ClusterError(f"Unknown tier {tier!r}; choose free or paid")
    if storage_backend == Cluster.Backend.REMOTE and not remote_url:
        raise ClusterError("A remote cluster needs the URL of its Qdrant server")
    created_at = created_at or timezone.now()
    default_on = created_at.date() > INFERENCE_DEFAULT_ON_AFTER
    token = new_secret("qit")
    cluster = Cluster.objects.create(
        account=account or account_default_get_or_create(),
        name=name,
        region=region,
        tier=tier,
        created_at=created_at,
        inference_enabled=default_on and inference_eligibility(tier=tier, region=region).eligible,
        storage_backend=storage_backend,
        remote_url=remote_url,
        remote_api_key=remote_api_key,
        inference_token_hash=hash_secret(token),
    )
    api_key, _ = api_key_create(cluster=cluster, name="default", read_only=False)
    return CreatedCluster(cluster=cluster, api_key=api_key, inference_token=token)


def api_key_create(
    *, cluster: Cluster, name: str, read_only: bool, actor: Actor | None = None
) -> tuple[str, ApiKey]:
    """Create an API key; the clear key is returned here and never again. A console `actor` must be an admin
    of the cluster's account (None: the system, e.g. at cluster creation)."""
    if actor is not None:
        _require_admin(actor, cluster)
    key = new_secret("qk")
    record = ApiKey.objects.create(
        cluster=cluster, name=name, prefix=key[:10], key_hash=hash_secret(key), read_only=read_only
    )
    return key, record


def api_key_revoke(*, api_key: ApiKey, actor: Actor | None = None) -> None:
    """Revoke a key: it stops authenticating at once. A console `actor` must be an admin of the key's
    cluster's account (None: an operator in the Django admin, already checked by the admin site)."""
    if actor is not None:
        _require_admin(actor, api_key.cluster)
    api_key.revoke()


# --- accounts -------------------------------------------------------------------------------------------


def account_get_or_create(*, name: str) -> Account:
    """The account with this name, created if missing."""
    name = name.strip()
    if not name:
        raise ClusterError("An account name is required")
    account, _ = Account.objects.get_or_create(name=name)
    return account


def account_default_get_or_create() -> Account:
    """The default account, where clusters and users go when no account is named."""
    return account_get_or_create(name=DEFAULT_ACCOUNT_NAME)


# --- console users ------------------------------------------------------------------------------------


class ConsolePermissionDenied(Forbidden):
    """The user's console role does not allow this action."""


def _require_admin(actor: Actor, cluster: Cluster) -> None:
    """Only an admin of the cluster's account (or an operator) may change it."""
    if not user_is_admin(user=actor, cluster=cluster):
        raise ConsolePermissionDenied("Only admins of the cluster's account may change it")


@dataclass(frozen=True)
class CreatedUser:
    """A console user with the API token they authenticate with (`Authorization: Token <token>`)."""

    user: User
    role: str
    token: str
    account: Account


@transaction.atomic
def user_create(
    *, username: str, role: str, password: str | None = None, account: Account | None = None
) -> CreatedUser:
    """Create a console user with a role in `account` (default: the default account) and an API token; an
    existing user gets that role in that account (and the password), keeping roles in other accounts.

    Re-running it is harmless, so provisioning scripts can call it every time; the token is kept.
    """
    if role not in Membership.Role.values:
        raise ClusterError(f"Unknown role {role!r}; choose one of: {', '.join(Membership.Role.values)}")
    if not username:
        raise ClusterError("A username is required")
    user, created = User.objects.get_or_create(username=username)
    if password:
        user.set_password(password)
        user.save(update_fields=["password"])
    elif created:
        user.set_unusable_password()  # API-token only until a password is set
        user.save(update_fields=["password"])
    account = account or account_default_get_or_create()
    Membership.objects.update_or_create(user=user, account=account, defaults={"role": role})
    token, _ = Token.objects.get_or_create(user=user)
    return CreatedUser(user=user, role=role, token=token.key, account=account)


# --- the inference toggle -------------------------------------------------------------------------------


class InferenceNotEligible(ClusterError):
    """Inference cannot be enabled on this cluster; the eligibility says why."""

    status = 409

    def __init__(self, eligibility: Eligibility) -> None:
        super().__init__(eligibility.reason)
        self.eligibility = eligibility


class RestartJobConflict(ClusterError):
    """The job cannot be retried in its current state."""

    status = 409


def _enqueue_restart(job_id: int) -> None:
    """Send the job to a worker, by task name: the task module imports these services, not the reverse."""
    current_app.send_task(RESTART_TASK, args=[job_id])


def _enqueue_on_commit(job_id: int) -> None:
    # robust: if the broker is down after the commit, the toggle still succeeded; the job stays queued and
    # the reaper sends it again (restart_jobs_unclaimed), rather than the request failing after the fact.
    transaction.on_commit(lambda: _enqueue_restart(job_id), robust=True)


def _audit(
    *, cluster: Cluster, actor: Actor, from_state: bool, to_state: bool, job: RestartJob | None
) -> None:
    InferenceToggle.objects.create(
        cluster=cluster,
        actor=actor if isinstance(actor, User) else None,
        actor_username=actor.get_username() if isinstance(actor, AbstractBaseUser) else "",
        from_state=from_state,
        to_state=to_state,
        job=job,
    )


def cluster_inference_toggle(*, cluster: Cluster, enabled: bool, actor: Actor) -> RestartJob | None:
    """Ask for inference on or off; returns the job that will apply it, or None if nothing needs to change.

    Only admins may toggle, and enabling needs an eligible cluster. If a job is already queued or running it
    is returned: it chains one more restart when it finishes if the state it applies is no longer wanted.
    """
    _require_admin(actor, cluster)
    if enabled:
        eligibility = inference_eligibility(tier=cluster.tier, region=cluster.region)
        if not eligibility.eligible:
            raise InferenceNotEligible(eligibility)
    with transaction.atomic():
        # The lock serialises toggles of one cluster and the finishing job's check of the desired state.
        locked = Cluster.objects.select_for_update().get(pk=cluster.pk)
        from_state = locked.inference_wanted
        locked.inference_desired = enabled
        active = restart_job_active(cluster_id=locked.pk)
        if active is not None:
            job: RestartJob | None = active
        elif enabled == locked.inference_enabled:
            job = None  # already in effect: a restart would change nothing
        else:
            job = RestartJob.objects.create(
                cluster=locked,
                target_enabled=enabled,
                previous_enabled=locked.inference_enabled,
                requested_by=actor if isinstance(actor, User) else None,
            )
            locked.status = Cluster.Status.RESTARTING
            _enqueue_on_commit(job.pk)
        locked.save(update_fields=["inference_desired", "status"])
        _audit(cluster=locked, actor=actor, from_state=from_state, to_state=enabled, job=job)
    cluster.inference_desired, cluster.status = locked.inference_desired, locked.status
    cluster.inference_enabled = locked.inference_enabled
    return job


def restart_job_retry(*, job: RestartJob, actor: Actor) -> RestartJob:
    """Run a failed job's restart again, as a new job; only the cluster's latest job can be retried."""
    _require_admin(actor, job.cluster)
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=job.cluster_id)
        job = RestartJob.objects.get(pk=job.pk)
        if job.state != RestartJob.State.FAILED:
            raise RestartJobConflict(f"Only a failed job can be retried; this one is {job.state}")
        if restart_job_active(cluster_id=cluster.pk) is not None:
            raise RestartJobConflict("A restart of this cluster is already in progress")
        latest = restart_job_latest(cluster_id=cluster.pk)
        if latest is not None and latest.pk != job.pk:
            # Re-applying an older target would undo what later toggles asked for.
            raise RestartJobConflict("A newer restart of this cluster exists; toggle inference instead")
        if job.target_enabled:
            eligibility = inference_eligibility(tier=cluster.tier, region=cluster.region)
            if not eligibility.eligible:
                raise InferenceNotEligible(eligibility)
        from_state = cluster.inference_wanted
        retry = RestartJob.objects.create(
            cluster=cluster,
            target_enabled=job.target_enabled,
            previous_enabled=cluster.inference_enabled,
            requested_by=actor if isinstance(actor, User) else None,
            retry_of=job,
        )
        cluster.inference_desired = job.target_enabled
        cluster.status = Cluster.Status.RESTARTING
        cluster.save(update_fields=["inference_desired", "status"])
        _audit(cluster=cluster, actor=actor, from_state=from_state, to_state=job.target_enabled, job=retry)
        _enqueue_on_commit(retry.pk)
    return retry


# --- restart job state, written by the worker (console/tasks.py) ---------------------------------------


def _stale_before(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.RESTART_STALE_AFTER)


def restart_job_claim(*, job_id: int, now: datetime | None = None) -> int | None:
    """Claim a job for this worker; returns the attempt number (the lease), or None if it is not claimable.

    Claimable: queued, or running with a heartbeat older than RESTART_STALE_AFTER (its worker is presumed
    dead), and fewer than RESTART_MAX_ATTEMPTS claims so far. A duplicate delivery finds nothing to claim.
    """
    now = now or timezone.now()
    claimable = Q(state=RestartJob.State.QUEUED) | Q(
        state=RestartJob.State.RUNNING, heartbeat_at__lt=_stale_before(now)
    )
    with transaction.atomic():
        # The UPDATE locks the row until commit, so the attempt read back below is the one we wrote.
        claimed = RestartJob.objects.filter(
            claimable, pk=job_id, attempts__lt=settings.RESTART_MAX_ATTEMPTS
        ).update(
            state=RestartJob.State.RUNNING,
            attempts=F("attempts") + 1,
            started_at=Coalesce(F("started_at"), Value(now)),
            heartbeat_at=now,
            step=RestartJob.Step.CLAIMED,
            progress=0,
            replicas={},  # this attempt runs every step again: only its own answers are reported
        )
        if not claimed:
            return None
        attempt: int = RestartJob.objects.values_list("attempts", flat=True).get(pk=job_id)
    return attempt


def restart_job_progress(*, job_id: int, attempt: int, step: str, progress: int) -> bool:
    """Record the current step and beat the heartbeat; False if this worker no longer holds the job."""
    updated = RestartJob.objects.filter(pk=job_id, state=RestartJob.State.RUNNING, attempts=attempt).update(
        step=step, progress=progress, heartbeat_at=timezone.now()
    )
    return updated == 1


def restart_job_report(*, job_id: int, attempt: int, replicas: dict[str, Any]) -> bool:
    """Store what each replica answered so far (the whole report: only the job's worker writes it, from one
    thread); False if this worker no longer holds the job."""
    updated = RestartJob.objects.filter(pk=job_id, state=RestartJob.State.RUNNING, attempts=attempt).update(
        replicas=replicas
    )
    return updated == 1


def restart_job_heartbeat(*, job_id: int, attempt: int) -> bool:
    """Beat the heartbeat only (the worker's heartbeat thread, while a step runs); False if the lease is
    lost."""
    updated = RestartJob.objects.filter(pk=job_id, state=RestartJob.State.RUNNING, attempts=attempt).update(
        heartbeat_at=timezone.now()
    )
    return updated == 1


def _lock_job(job_id: int) -> tuple[Cluster, RestartJob] | None:
    """Lock the job's cluster, then the job (always in that order, as the toggle does, so no deadlock)."""
    cluster_id = RestartJob.objects.filter(pk=job_id).values_list("cluster_id", flat=True).first()
    if cluster_id is None:
        return None
    cluster = Cluster.objects.select_for_update().get(pk=cluster_id)
    job = RestartJob.objects.select_for_update().get(pk=job_id)
    return cluster, job


def restart_job_complete(*, job_id: int, attempt: int) -> RestartJob | None:
    """Flip the effective state to the job's target and finish it; chain one more job if the desired state
    changed while it ran. Returns the chained job, if any. Does nothing if the lease was lost."""
    with transaction.atomic():
        locked = _lock_job(job_id)
        if locked is None:
            return None
        cluster, job = locked
        if job.state != RestartJob.State.RUNNING or job.attempts != attempt:
            logger.warning("restart job %s: lease %s lost before the flip; not flipping", job_id, attempt)
            return None
        now = timezone.now()
        job.state = RestartJob.State.SUCCEEDED
        job.step, job.progress, job.finished_at, job.heartbeat_at = RestartJob.Step.DONE, 100, now, now
        job.save(update_fields=["state", "step", "progress", "finished_at", "heartbeat_at"])
        cluster.inference_enabled = job.target_enabled
        chained: RestartJob | None = None
        if cluster.inference_wanted != job.target_enabled:
            last_toggle = InferenceToggle.objects.filter(cluster=cluster).first()
            chained = RestartJob.objects.create(
                cluster=cluster,
                target_enabled=cluster.inference_wanted,
                previous_enabled=job.target_enabled,
                requested_by=last_toggle.actor if last_toggle else job.requested_by,
                chained_from=job,
            )
            _enqueue_on_commit(chained.pk)  # the cluster stays RESTARTING
        else:
            cluster.status = Cluster.Status.RUNNING
        cluster.save(update_fields=["inference_enabled", "status"])
    return chained


def restart_job_fail(
    *, job_id: int, error: str, attempt: int | None = None, stale_before: datetime | None = None
) -> bool:
    """Mark an active job failed: the cluster runs again with its previous effective state.

    `attempt` / `stale_before` make it conditional (the worker's lease; the reaper's staleness), so a
    failure never lands on a job that another run has since taken over. False if nothing was changed.
    """
    with transaction.atomic():
        locked = _lock_job(job_id)
        if locked is None:
            return False
        cluster, job = locked
        if job.state not in RestartJob.ACTIVE_STATES:
            return False
        if attempt is not None and job.attempts != attempt:
            return False
        if stale_before is not None and (job.heartbeat_at is None or job.heartbeat_at >= stale_before):
            return False
        job.state = RestartJob.State.FAILED
        job.error = error[:2000]
        job.finished_at = timezone.now()
        job.save(update_fields=["state", "error", "finished_at"])
        # inference_enabled is untouched: it only ever changes at a successful flip.
        cluster.status = Cluster.Status.RUNNING
        cluster.save(update_fields=["status"])
    return True


@dataclass
class ReapResult:
    """What one reaper pass did."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def restart_jobs_reap(*, now: datetime | None = None) -> ReapResult:
    """Put jobs abandoned by dead workers (or lost messages) back to work, or fail them after max attempts."""
    now = now or timezone.now()
    stale_before = _stale_before(now)
    result = ReapResult()
    for job in restart_jobs_stale(stale_before=stale_before):
        if job.attempts >= settings.RESTART_MAX_ATTEMPTS:
            seen = job.heartbeat_at.isoformat(timespec="seconds") if job.heartbeat_at else "never"
            error = (
                f"The restart worker stopped responding {job.attempts} times (last heartbeat {seen}, during "
                f"step {job.step!r}); the previous state was kept. Retry to try again."
            )
            if restart_job_fail(job_id=job.pk, error=error, stale_before=stale_before):
                result.failed.append(job.pk)
        else:
            result.requeued.append(job.pk)
    result.requeued.extend(restart_jobs_unclaimed(queued_before=stale_before).values_list("pk", flat=True))
    for job_id in result.requeued:
        # Outside any transaction: a duplicate message is harmless (the claim admits one worker).
        _enqueue_restart(job_id)
    if result.requeued or result.failed:
        logger.warning("restart reaper: requeued %s, failed %s", result.requeued, result.failed)
    return result


# --- the registry of live web processes (replicas), written by each of them (console/clusters/replicas.py) --


def replicas_prune(*, now: datetime | None = None) -> int:
    """Delete the rows of replicas dead for longer than REPLICA_PRUNE_AFTER; how many were deleted."""
    now = now or timezone.now()
    dead_since = now - timedelta(seconds=float(settings.REPLICA_STALE_AFTER + settings.REPLICA_PRUNE_AFTER))
    deleted, _ = Replica.objects.filter(seen_at__lt=dead_since).delete()
    return deleted


def replica_register(
    *, replica_id: uuid.UUID, control_url: str, host: str, pid: int, now: datetime | None = None
) -> Replica:
    """Register (or register again) a web process as live at `control_url`; prunes long-dead rows first."""
    now = now or timezone.now()
    replicas_prune(now=now)
    replica, _ = Replica.objects.update_or_create(
        pk=replica_id,
        defaults={"control_url": control_url, "host": host[:255], "pid": pid, "seen_at": now},
        create_defaults={
            "control_url": control_url, "host": host[:255], "pid": pid, "started_at": now, "seen_at": now,
        },
    )  # fmt: skip
    return replica


def replica_beat(*, replica_id: uuid.UUID, now: datetime | None = None) -> bool:
    """Mark a replica seen now; False if its row is gone (pruned while the process was stalled), in which
    case the process registers again."""
    return Replica.objects.filter(pk=replica_id).update(seen_at=now or timezone.now()) == 1


def replica_deregister(*, replica_id: uuid.UUID) -> None:
    """Remove a replica that stops cleanly, so no restart waits for it even for REPLICA_STALE_AFTER."""
    Replica.objects.filter(pk=replica_id).delete()
