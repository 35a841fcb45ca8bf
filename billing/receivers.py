"""Signal receivers of billing: the data plane's usage events become ledger rows."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import OperationalError, connection

from billing.services import usage_record, usage_refund
from inference.usage import UsageEvent

logger = logging.getLogger(__name__)

RECORD_ATTEMPTS = 3


def on_usage_recorded(sender: Any, events: list[UsageEvent], **kwargs: Any) -> frozenset[str]:
    """Persist one request's usage events; transient database errors are retried (recording is idempotent).

    A failure that persists is raised, not swallowed: the request then fails and the client retries it
    (billed once, by its Idempotency-Key), where swallowing would silently lose the tokens.
    """
    for attempt in range(1, RECORD_ATTEMPTS + 1):
        try:
            return usage_record(events=events).inserted_models
        except OperationalError:
            # Inside a caller's transaction a retry cannot help: that transaction is already broken.
            if attempt == RECORD_ATTEMPTS or connection.in_atomic_block:
                logger.exception("billing: could not record %d usage event(s)", len(events))
                raise
            logger.warning("billing: recording usage failed (attempt %d), retrying", attempt, exc_info=True)
            connection.close_if_unusable_or_obsolete()
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def on_usage_refunded(
    sender: Any, cluster_id: str, request_id: str, models: frozenset[str], **kwargs: Any
) -> None:
    """Withdraw what a failed request recorded (its rows and their roll-ups, in one transaction)."""
    usage_refund(cluster_id=cluster_id, request_id=request_id, models=models)
