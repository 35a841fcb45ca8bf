"""Idempotency keys as Stripe defines them, for every entry point of the gateway.

A client sends `Idempotency-Key: <k>` (gRPC: `idempotency-key` metadata) to make retries safe:

- the first request with a key runs, and its answer is kept for IDEMPOTENCY_TTL_HOURS;
- the same key with the same request (method, path and body) replays that answer: no model runs, nothing
  is written or billed again;
- the same key with a different request is refused (400), and while the first request still runs a
  repeat is told to retry (409, `Retry-After`);
- a request that fails frees its key, so a corrected retry can use it; a key whose request never finished
  (its process died) is free again after IDEMPOTENCY_IN_PROGRESS_SECONDS.

Keys are scoped to a cluster and at most 255 characters. The ledger bills a key's tokens once whatever
happens (`billing` records usage by request id), which is what keeps a crashed-and-retried request exact.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from inference.errors import BadRequest, Conflict
from inference.models import IDEMPOTENCY_KEY_LENGTH, IdempotentRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Replay:
    """The answer of the request that first used a key: its result and usage."""

    result: Any
    usage: dict[str, int]


def fingerprint(*parts: bytes | str) -> str:
    """A digest of what identifies a request (e.g. method, path and body); the inputs are never kept."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def claim(*, cluster_id: str, key: str, fingerprint: str) -> Replay | None:
    """Claim `key` for a request about to run (None), or return the answer to replay; refusals raise."""
    if not key or len(key) > IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise BadRequest(f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LENGTH} printable characters")
    now = timezone.now()
    try:
        with transaction.atomic():
            IdempotentRequest.objects.create(cluster_id=cluster_id, key=key, fingerprint=fingerprint)
        return None
    except IntegrityError:
        pass  # the key was used before: look at what it was used for
    row = IdempotentRequest.objects.filter(cluster_id=cluster_id, key=key).first()
    if row is None:  # freed meanwhile (its request failed): try once more
        return claim(cluster_id=cluster_id, key=key, fingerprint=fingerprint)
    expired = row.created_at < now - timedelta(hours=float(settings.IDEMPOTENCY_TTL_HOURS))
    abandoned = row.answer is None and row.created_at < now - timedelta(
        seconds=float(settings.IDEMPOTENCY_IN_PROGRESS_SECONDS)
    )
    if expired or abandoned:
        # Conditional on what we read, so of two retries racing for it exactly one takes the key over.
        taken = IdempotentRequest.objects.filter(pk=row.pk, created_at=row.created_at).update(
            fingerprint=fingerprint, answer=None, created_at=now
        )
        if taken:
            return None
        raise Conflict("a request with this Idempotency-Key is in progress; retry later", retry_after=1)
    if row.fingerprint != fingerprint:
        raise BadRequest(
            "this Idempotency-Key was already used with a different request; use a new key for a new request"
        )
    if row.answer is None:
        raise Conflict("a request with this Idempotency-Key is in progress; retry later", retry_after=1)
    return Replay(result=row.answer["result"], usage=dict(row.answer["usage"]))


def complete(*, cluster_id: str, key: str, result: Any, usage: dict[str, int]) -> None:
    """Keep the answer of the request that claimed `key`, for repeats to replay.

    The request already succeeded: if its answer cannot be kept (say, a stored non-finite number that JSON
    cannot hold), the key is freed instead, so a repeat runs again (and is billed once, by its request id).
    """
    rows = IdempotentRequest.objects.filter(cluster_id=cluster_id, key=key, answer__isnull=True)
    try:
        with transaction.atomic():
            rows.update(answer={"result": result, "usage": usage})
    except (DatabaseError, TypeError, ValueError):
        logger.warning("idempotency: could not keep the answer for a key of %s; freeing it", cluster_id)
        rows.delete()


def release(*, cluster_id: str, key: str) -> None:
    """Free the key of a request that failed, so that a retry runs."""
    IdempotentRequest.objects.filter(cluster_id=cluster_id, key=key, answer__isnull=True).delete()


def purge() -> int:
    """Forget keys older than the TTL; how many were deleted."""
    before = timezone.now() - timedelta(hours=float(settings.IDEMPOTENCY_TTL_HOURS))
    deleted, _ = IdempotentRequest.objects.filter(created_at__lt=before).delete()
    return deleted
