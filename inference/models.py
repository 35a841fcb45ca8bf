"""What the inference app stores: requests made with an `Idempotency-Key` (never their inputs)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

IDEMPOTENCY_KEY_LENGTH = 255  # as Stripe's


class IdempotentRequest(models.Model):
    """A request made with an Idempotency-Key: a fingerprint of it and, once it succeeded, its answer.

    The fingerprint is a SHA-256 of the method, path and body, so the inputs themselves are never kept. The
    answer (the operation's result and usage) is replayed to a repeat of the same request without running
    anything again. `answer` is null while the first request runs.
    """

    cluster_id = models.CharField(max_length=16)  # a cluster's id (clusters live in another app)
    key = models.CharField(max_length=IDEMPOTENCY_KEY_LENGTH)
    fingerprint = models.CharField(max_length=64)
    answer = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["cluster_id", "key"], name="idempotent_request_one_per_key"),
        ]

    def __str__(self) -> str:
        return f"{self.cluster_id}: {self.key[:16]}…"
