"""Signal receivers of billing: the data plane's usage events become ledger rows.

A serving process with a usage journal (`billing.journal`, started by `console.wsgi.served_application`)
appends each request's events to it and folds them into the ledger in the background; any other process
(tests' live servers, `USAGE_JOURNAL=false`) records them in the database before the request answers,
concurrent requests sharing a transaction (`billing.group_commit`).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connection

from billing import journal
from billing.group_commit import GroupCommit, record_with_retries
from billing.services import usage_refund
from inference.usage import UsageEvent

logger = logging.getLogger(__name__)

_group = GroupCommit()


def on_usage_recorded(
    sender: Any, events: list[UsageEvent], attempt: str = "", **kwargs: Any
) -> frozenset[str]:
    """Make one request's usage events durable before it answers; the models recorded.

    A caller already inside a transaction records in it, alone: its events must commit or roll back with the
    rest of that transaction.
    """
    if connection.in_atomic_block:
        keys = record_with_retries(events)
        return frozenset(model for _, _, model in keys)
    usage_journal = journal.active()
    if usage_journal is not None and attempt:
        try:
            usage_journal.append(attempt, events)
            return frozenset(event.model for event in events)
        except OSError:  # a full or failing disk: the database is still there
            logger.exception("billing: the usage journal cannot be written; recording in the database")
    return _group.record(events)


def on_usage_refunded(
    sender: Any, cluster_id: str, request_id: str, models: frozenset[str], attempt: str = "", **kwargs: Any
) -> None:
    """Withdraw what a failed request recorded: its journal entries, or its ledger rows and their roll-ups."""
    usage_journal = journal.active()
    if usage_journal is not None and attempt:
        models = models - usage_journal.cancel(attempt)
    if models:
        usage_refund(cluster_id=cluster_id, request_id=request_id, models=models)


def on_usage_settled(sender: Any, attempt: str, **kwargs: Any) -> None:
    """The request answered: its journal entries go to the ledger (ones in the database already are)."""
    usage_journal = journal.active()
    if usage_journal is not None:
        usage_journal.settle(attempt)
