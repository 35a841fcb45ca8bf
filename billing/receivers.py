"""Signal receivers of billing: the data plane's usage events become ledger rows."""

from __future__ import annotations

from typing import Any

from django.db import connection

from billing.group_commit import GroupCommit, record_with_retries
from billing.services import usage_refund
from inference.usage import UsageEvent

_group = GroupCommit()


def on_usage_recorded(sender: Any, events: list[UsageEvent], **kwargs: Any) -> frozenset[str]:
    """Persist one request's usage events before it answers; the models newly recorded.

    Concurrent requests share a transaction (`billing.group_commit`). A caller already inside a transaction
    records in it, alone: its events must commit or roll back with the rest of that transaction.
    """
    if connection.in_atomic_block:
        keys = record_with_retries(events)
        return frozenset(model for _, _, model in keys)
    return _group.record(events)


def on_usage_refunded(
    sender: Any, cluster_id: str, request_id: str, models: frozenset[str], **kwargs: Any
) -> None:
    """Withdraw what a failed request recorded (its rows and their roll-ups, in one transaction)."""
    usage_refund(cluster_id=cluster_id, request_id=request_id, models=models)
