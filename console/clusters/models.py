"""Accounts, their clusters, data-plane credentials, console roles per account, and restart jobs.

Every cluster belongs to one account (an organisation); a user sees the clusters of the accounts they are a
member of, with the role of that membership (admin or viewer). Staff and superusers see every account.

Two inference fields live on a cluster: `inference_enabled` is the EFFECTIVE state (what data-plane requests
see) and changes only when a restart job succeeds; `inference_desired` is what the last toggle asked for. They
differ while a job is queued or running, or after a job failed (the console then offers a retry).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

US_REGIONS = ("us-east-1", "us-east-2", "us-west-1", "us-west-2")
REGIONS = (*US_REGIONS, "eu-central-1", "eu-west-1", "ap-southeast-1", "ap-northeast-1")


def new_cluster_id() -> str:
    """A short, URL-safe, lower-case id (8 base32 characters)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(secrets.choice(alphabet) for _ in range(8))


def hash_secret(secret: str) -> str:
    """SHA-256 of a secret. Secrets are 256-bit random tokens, so a fast hash is enough (no brute force)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Eligibility:
    """Whether inference may run on a cluster, and if not, why (shown next to the disabled toggle)."""

    eligible: bool
    reason: str = ""


def inference_eligibility(*, tier: str, region: str) -> Eligibility:
    """Inference is for paid clusters in US regions only."""
    if tier != "paid":
        return Eligibility(False, "Inference is only available for paid clusters.")
    if not region.startswith("us-"):
        return Eligibility(False, "Inference is currently only available in US regions.")
    return Eligibility(True)


DEFAULT_ACCOUNT_NAME = "default"  # where clusters and users go when no account is named


class Account(models.Model):
    """An organisation: it owns clusters, and its members have a role on all of them."""

    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class Cluster(models.Model):
    """A vector-database cluster: where it runs, its tier, its storage and its inference state."""

    class Tier(models.TextChoices):
        FREE = "free", "Free"
        PAID = "paid", "Paid"

    class Backend(models.TextChoices):
        EMBEDDED = "embedded", "Embedded (Qdrant Edge)"
        REMOTE = "remote", "Remote Qdrant server"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        RESTARTING = "restarting", "Restarting"

    id = models.CharField(primary_key=True, max_length=16, default=new_cluster_id, editable=False)
    # PROTECT: an account with clusters cannot be deleted (their usage ledger is billing history).
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="clusters")
    name = models.CharField(max_length=100)
    region = models.CharField(max_length=32, choices=[(r, r) for r in REGIONS])
    tier = models.CharField(max_length=8, choices=Tier.choices)
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    # The state requests see. A toggle changes it only when the cluster's restart job succeeds.
    inference_enabled = models.BooleanField(default=False)
    # What the last toggle asked for; null until the first toggle (the effective state is what's wanted).
    inference_desired = models.BooleanField(null=True, blank=True)
    storage_backend = models.CharField(max_length=16, choices=Backend.choices, default=Backend.EMBEDDED)
    remote_url = models.URLField(blank=True)
    # Needed in clear to call the remote server; never rendered, logged or put in repr().
    remote_api_key = models.CharField(max_length=255, blank=True)
    inference_token_hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ("name", "id")

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    def __repr__(self) -> str:
        return f"<Cluster {self.id} {self.name!r} {self.region} {self.tier}>"

    @property
    def is_us_region(self) -> bool:
        """Inference is offered in US regions only."""
        return self.region.startswith("us-")

    @property
    def inference_wanted(self) -> bool:
        """The state the cluster converges to: the last toggle's, or the effective one if never toggled."""
        return self.inference_enabled if self.inference_desired is None else self.inference_desired


class ApiKey(models.Model):
    """A data-plane API key of one cluster, stored hashed; the clear key is shown once, at creation."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=12)  # first characters, to recognise a key in the console
    key_hash = models.CharField(max_length=64, unique=True)
    read_only = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        """Revoked keys stay listed (for audit) but no longer authenticate."""
        return self.revoked_at is None

    def revoke(self, when: datetime | None = None) -> None:
        """Mark the key revoked (idempotent)."""
        if self.revoked_at is None:
            self.revoked_at = when or timezone.now()
            self.save(update_fields=["revoked_at"])


class Membership(models.Model):
    """A user's role in one account: admins manage its clusters (inference, restart jobs, API keys), viewers
    only read them. One row per (user, account).

    Staff users count as admins of every account without a membership row; a user with neither has no
    console access.
    """

    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        VIEWER = "viewer", "Viewer"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "account"], name="membership_one_per_user_and_account")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role} of {self.account})"


class RestartJob(models.Model):
    """One restart of a cluster that applies an inference state; the console shows its step and progress.

    At most one job per cluster is queued or running (a partial unique constraint enforces it, so two racing
    toggles cannot both start one). `attempts` counts claims by a worker and doubles as the lease: a worker
    writes only while the row still carries the attempt it claimed, so a worker presumed dead (stale
    `heartbeat_at`) cannot overwrite the run that replaced it.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    class Step(models.TextChoices):
        """Where a job is, in order; the label is what the console shows. The one list of restart steps."""

        QUEUED = "queued", "Waiting for a worker"
        CLAIMED = "claimed", "Starting"
        DRAIN = "drain", "Draining in-flight requests"
        STORAGE = "storage", "Reopening storage"
        WARM = "warm", "Warming the ONNX workers"
        HEALTH = "health", "Health check"
        FLIP = "flip", "Applying the new configuration"
        DONE = "done", "Done"

    # The steps the web process runs for a job (over its control endpoint), and the progress shown as each
    # starts. WARM runs only when a job turns inference on (there is nothing to warm otherwise).
    CONTROL_STEPS = (Step.DRAIN, Step.STORAGE, Step.WARM, Step.HEALTH)
    PROGRESS = {
        Step.DRAIN: 10,
        Step.STORAGE: 30,
        Step.WARM: 50,
        Step.HEALTH: 80,
        Step.FLIP: 95,
        Step.DONE: 100,
    }

    ACTIVE_STATES = (State.QUEUED, State.RUNNING)

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="restart_jobs")
    target_enabled = models.BooleanField()  # the inference state this restart applies
    previous_enabled = models.BooleanField()  # the effective state when the job was created (kept on failure)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    step = models.CharField(max_length=32, choices=Step.choices, default=Step.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Set when this job was started by a finishing one because a toggle arrived while that one ran.
    chained_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # What each web process (replica) answered, step by step: replica id -> {host, pid, step, ok, gone,
    # detail or error, at, steps: {step: {...}}}. Written by the worker as answers arrive
    # (console/clusters/tasks.py); holds timings and counts, never a secret.
    replicas = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=["cluster"],
                condition=Q(state__in=["queued", "running"]),
                name="restart_job_one_active_per_cluster",
            ),
            models.CheckConstraint(condition=Q(progress__lte=100), name="restart_job_progress_lte_100"),
        ]
        indexes = [models.Index(fields=["state", "heartbeat_at"], name="restart_job_state_heartbeat")]

    def __str__(self) -> str:
        return f"restart #{self.pk} of {self.cluster_id} ({self.state})"

    @property
    def is_active(self) -> bool:
        """Queued or running: the cluster is restarting."""
        return self.state in self.ACTIVE_STATES


class Replica(models.Model):
    """A live web process (a web worker process of any replica) and where its control listener answers.

    Each web process registers when it starts serving, beats `seen_at` every REPLICA_HEARTBEAT_SECONDS and
    deletes its row on a clean exit (`console/clusters/replicas.py`). A row whose `seen_at` is older than
    REPLICA_STALE_AFTER belongs to a dead process (killed, frozen or cut off): the restart job stops waiting
    for it. Every process compares its own clock with the others' timestamps, so hosts must keep time (NTP).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The process's own control listener, e.g. http://10.0.0.5:40123: one per process, unlike the public
    # port that the web server's workers share.
    control_url = models.CharField(max_length=255)
    host = models.CharField(max_length=255)  # for people: which machine or container
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("host", "pid")
        indexes = [models.Index(fields=["seen_at"], name="replica_seen_at")]

    def __str__(self) -> str:
        return f"{self.host} pid {self.pid}"


class InferenceToggle(models.Model):
    """Audit row of one toggle: who asked, when, from which state to which, and the job that applies it."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="inference_toggles")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_username = models.CharField(max_length=150)  # kept readable after the user is deleted
    from_state = models.BooleanField()  # the state the toggle showed before (the last desired state)
    to_state = models.BooleanField()
    # The job that applies it: a new one, the one already running (it chains), or none (nothing to change).
    job = models.ForeignKey(
        RestartJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="toggles"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.actor_username}: {self.from_state} -> {self.to_state} on {self.cluster_id}"
