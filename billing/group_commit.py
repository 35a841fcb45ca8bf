"""Group commit of usage: the requests recording usage at the same moment share one transaction.

(A serving web process records through its usage journal instead, `billing.journal`; this is the path of
every other process, and of a request whose journal cannot be written.)

Every request that ran a model records its tokens before it answers (durable: a process killed after
answering has lost nothing). One transaction per request made concurrent requests queue behind SQLite's
single writer (or PostgreSQL's commit) one by one, each paying its own BEGIN, INSERT, roll-up upsert and
COMMIT. Here the first request to arrive becomes the leader and records the events of every request that
queued meanwhile in one `usage_record` call (one multi-row INSERT, one roll-up upsert, one commit); the
others wait on their ticket and return once the transaction holding their events has committed, so each
request still answers only after its own usage is durable, exactly as before. The leader flushes one batch
(its own ticket is first) and hands the lead to the next waiting ticket, so no request keeps serving
others' flushes.

A batch that fails is retried while the database is momentarily unavailable, then recorded ticket by
ticket, so a bad event fails only its own request. A request id seen twice in one batch (a client reusing a
key concurrently) is billed once and credited to the first ticket, as two sequential recordings would.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.db import OperationalError, connection

from billing.services import RecordKey, normalize_request_id, usage_record
from inference.usage import UsageEvent

logger = logging.getLogger(__name__)

RECORD_ATTEMPTS = 3
MAX_BATCH_EVENTS = 500  # events per transaction, at most (a statement's parameters stay well bounded)


@dataclass(eq=False)
class _Ticket:
    """One request's events, and what became of them."""

    events: Sequence[UsageEvent]
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # this ticket's thread flushes the next batch
    done: bool = False
    models: frozenset[str] = frozenset()  # models newly recorded for this request
    error: BaseException | None = None


def record_with_retries(events: Sequence[UsageEvent]) -> frozenset[RecordKey]:
    """`usage_record`, tried again while the database is momentarily unavailable; the inserted keys.

    A failure that persists is raised, not swallowed: the request then fails and the client retries it
    (billed once, by its Idempotency-Key), where swallowing would silently lose the tokens.
    """
    for attempt in range(1, RECORD_ATTEMPTS + 1):
        try:
            return usage_record(events=events).inserted_keys
        except OperationalError:
            # Inside a caller's transaction a retry cannot help: that transaction is already broken.
            if attempt == RECORD_ATTEMPTS or connection.in_atomic_block:
                logger.exception("billing: could not record %d usage event(s)", len(events))
                raise
            logger.warning("billing: recording usage failed (attempt %d), retrying", attempt, exc_info=True)
            connection.close_if_unusable_or_obsolete()
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


class GroupCommit:
    """Records the usage of concurrent requests in shared transactions (see the module docstring)."""

    def __init__(
        self, record: Callable[[Sequence[UsageEvent]], frozenset[RecordKey]] = record_with_retries
    ) -> None:
        self._record = record
        self._lock = threading.Lock()
        self._queue: list[_Ticket] = []
        self._leading = False  # invariant: False only while the queue is empty

    def record(self, events: Sequence[UsageEvent]) -> frozenset[str]:
        """Record one request's events (durably, before returning); the models newly recorded."""
        ticket = _Ticket(events)
        with self._lock:
            self._queue.append(ticket)
            if not self._leading:
                self._leading = ticket.lead = True
        while not ticket.done:
            if ticket.lead:
                self._lead()
            else:
                ticket.wake.wait()
                ticket.wake.clear()
        if ticket.error is not None:
            raise ticket.error
        return ticket.models

    def _lead(self) -> None:
        """Flush one batch (the leader's own ticket is first in the queue), then pass the lead on."""
        with self._lock:
            batch: list[_Ticket] = []
            size = 0
            while self._queue and (not batch or size + len(self._queue[0].events) <= MAX_BATCH_EVENTS):
                ticket = self._queue.pop(0)
                batch.append(ticket)
                size += len(ticket.events)
        try:
            self._flush(batch)
        finally:
            with self._lock:
                for ticket in batch:
                    ticket.lead = False
                    ticket.done = True
                if self._queue:
                    self._queue[0].lead = True
                else:
                    self._leading = False
                woken = [*batch, *self._queue[:1]]
            for ticket in woken:
                ticket.wake.set()

    def _flush(self, batch: list[_Ticket]) -> None:
        try:
            inserted = self._record([event for ticket in batch for event in ticket.events])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            # Whose event was it? Each request alone, so only the bad one fails.
            for ticket in batch:
                self._flush([ticket])
            return
        credited: set[RecordKey] = set()
        for ticket in batch:
            keys = {(e.cluster_id, normalize_request_id(e.request_id), e.model) for e in ticket.events}
            mine = (keys & inserted) - credited
            credited |= mine
            ticket.models = frozenset(model for _, _, model in mine)
