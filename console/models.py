"""Clusters and their data-plane credentials."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from django.db import models
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
    name = models.CharField(max_length=100)
    region = models.CharField(max_length=32, choices=[(r, r) for r in REGIONS])
    tier = models.CharField(max_length=8, choices=Tier.choices)
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    # The state requests see. A toggle changes it only when the cluster's restart job succeeds.
    inference_enabled = models.BooleanField(default=False)
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
