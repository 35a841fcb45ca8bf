"""Periodic upkeep of the inference app (run by Celery beat)."""

from __future__ import annotations

from celery import shared_task

from inference import idempotency


@shared_task(ignore_result=True)
def purge_idempotency_keys() -> int:
    """Forget Idempotency-Keys older than IDEMPOTENCY_TTL_HOURS."""
    return idempotency.purge()
