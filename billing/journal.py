"""The usage journal: a request's usage made durable by one local append, folded into the ledger in batches.

Why: recording usage in the database before answering (`billing.group_commit`) made every request that ran
a model wait for a transaction (an INSERT, a roll-up upsert and a commit, shared with one or two other
requests at best), the largest cost of the serving path outside the model. With the journal, a request's
events are one line appended to a file of its own process under `USAGE_JOURNAL_DIR`: once write(2) returns,
the line is in the kernel's page cache and survives the process being SIGKILLed, as a committed SQLite
transaction in WAL mode does (a power loss is another matter for both). A background thread folds the lines
into the ledger with `usage_record`, every request waiting at that moment in one transaction.

Exactness: a request's entries are held until it ends. One that answered settles them (they are folded);
one that failed cancels them (a cancel line is appended and they are never folded), so a failed request
bills nothing, as the refund of a recorded request did. `usage_record` inserts with ON CONFLICT DO NOTHING
on (cluster, request id, model), so an entry folded twice (a replay after a crash) is billed once.

Recovery: each process appends to segments of its own, each held under flock(2) while the process lives.
A process starting its journal (and its flusher, every `RECOVER_SECONDS`) replays every segment no living
process holds, that is one its writer left by dying: every record without a cancel is billed (a request
killed in flight may have written its points, so its usage stands, as it did when the database came first)
and the segment is deleted.

Reads: usage reaches the ledger once folded, normally within milliseconds of the answer; a graceful stop
folds everything settled before the process exits. Lines hold counts and ids, never inputs or keys.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from django.db import OperationalError, connection

from billing.group_commit import MAX_BATCH_EVENTS, record_with_retries
from inference.usage import UsageEvent

logger = logging.getLogger(__name__)

SUFFIX = ".journal"
REJECTED = "rejected.log"  # entries the ledger refused for good (their cluster deleted), for an operator
SEGMENT_BYTES = 4 * 1024 * 1024  # a new segment after this much, so that folded ones can be deleted
# The flusher folds at most this often: what settles meanwhile shares the transaction (at 200 requests/s,
# ~20 per commit instead of one or two), and usage still reaches the ledger well within a second.
FOLD_SECONDS = 0.1
RETRY_SECONDS = 1.0  # before folding again after the database was unavailable
RECOVER_SECONDS = 30.0  # how often the flusher looks for segments that dead processes left

Record = Callable[[Sequence[UsageEvent]], object]


class _Segment:
    """One append-only journal file of this process, and how many of its entries are not folded yet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # held while this process lives: recovery leaves it alone
        self.size = 0
        self.open_entries = 0  # appended, neither folded nor cancelled
        self.sealed = False  # no more appends: deleted once its last entry is folded or cancelled
        self.closed = False

    def write(self, line: bytes) -> None:
        if self.closed:  # never write through a descriptor number the process may have reused
            raise OSError(f"journal segment {self.path.name} is closed")
        view = memoryview(line)
        while view:  # a regular file takes it in one call; a short write is continued, never dropped
            view = view[os.write(self.fd, view) :]
        self.size += len(line)

    def delete(self) -> None:
        if not self.closed:
            os.unlink(self.path)  # while still locked, so no recovery reads it half-deleted
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


@dataclass(eq=False)
class _Entry:
    """One appended line of usage events, and the segment holding it."""

    segment: _Segment
    events: list[UsageEvent]
    line: bytes
    settled: float = 0.0  # time.monotonic() when its request answered


def _record_line(attempt: str, events: Sequence[UsageEvent]) -> bytes:
    rows = [[e.cluster_id, e.model, e.tokens, e.request_id, e.time.isoformat()] for e in events]
    return orjson.dumps({"a": attempt, "e": rows}) + b"\n"


def _cancel_line(attempt: str) -> bytes:
    return orjson.dumps({"c": attempt}) + b"\n"


class UsageJournal:
    """Appends usage durably, holds it until its request ends, and folds what was settled into the ledger."""

    def __init__(self, directory: Path, record: Record = record_with_retries) -> None:
        self.directory = directory
        self._record = record
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._segment: _Segment | None = None
        self._held: dict[str, list[_Entry]] = {}  # by attempt: appended, its request still running
        self._ready: list[_Entry] = []  # settled, not folded yet
        self._folding = 0  # entries the flusher took and has not finished with
        self._folding_since: float | None = None  # when the oldest of them was settled
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- the request side ---------------------------------------------------------------------------------

    def append(self, attempt: str, events: Sequence[UsageEvent]) -> None:
        """Make one request's events durable (OSError if the file cannot be written); held until it ends."""
        line = _record_line(attempt, events)
        with self._lock:
            segment = self._writable(len(line))
            segment.write(line)
            segment.open_entries += 1
            self._held.setdefault(attempt, []).append(_Entry(segment, list(events), line))

    def settle(self, attempt: str) -> None:
        """The request answered: what it appended is folded into the ledger."""
        with self._lock:
            entries = self._held.pop(attempt, None)
            if entries:
                now = time.monotonic()
                for entry in entries:
                    entry.settled = now
                self._ready.extend(entries)
                self._changed.notify_all()

    def cancel(self, attempt: str) -> frozenset[str]:
        """The request failed: what it appended is never billed; the models withdrawn."""
        with self._lock:
            entries = self._held.pop(attempt, [])
            line = _cancel_line(attempt)
            # Into every segment that holds one of its records: recovery reads each segment on its own.
            for segment in {id(e.segment): e.segment for e in entries}.values():
                try:
                    segment.write(line)
                except OSError:  # only a crash now would bill it; this process will not
                    logger.exception("usage journal: could not write a cancel to %s", segment.path.name)
            for entry in entries:
                self._done(entry.segment)
        return frozenset(e.model for entry in entries for e in entry.events)

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> int:
        """Replay what dead processes left, open this process's segment and start folding; events replayed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        replayed = recover(self.directory, self._record)
        with self._lock:
            self._segment = self._new_segment()
        self._thread = threading.Thread(target=self._run, name="usage-journal", daemon=True)
        self._thread.start()
        return replayed

    def drain(self, timeout: float) -> bool:
        """Wait until everything settled is in the ledger; False if `timeout` seconds passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._ready or self._folding:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Fold what is settled, then stop; what is left (a request still running) stays for recovery."""
        self.drain(timeout)
        with self._lock:
            self._stopping = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            segments = {id(e.segment): e.segment for e in self._entries()}
            if self._segment is not None:
                segments.setdefault(id(self._segment), self._segment)
            for segment in segments.values():
                if segment.open_entries == 0:
                    segment.delete()
                else:
                    segment.close()  # unlocked: the next process to start replays it
            self._segment = None

    def lag(self) -> float:
        """Seconds since the oldest answered request whose usage is not in the ledger yet (0: none)."""
        with self._lock:
            oldest = [e.settled for e in self._ready[:1]]
            if self._folding_since is not None:
                oldest.append(self._folding_since)
        return max(0.0, time.monotonic() - min(oldest)) if oldest else 0.0

    def _entries(self) -> list[_Entry]:
        return [*self._ready, *(e for entries in self._held.values() for e in entries)]

    # --- segments (called with the lock held) --------------------------------------------------------------

    def _new_segment(self) -> _Segment:
        return _Segment(self.directory / f"{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}")

    def _writable(self, size: int) -> _Segment:
        segment = self._segment
        if segment is None:
            raise OSError("the usage journal is not open")
        if segment.size and segment.size + size > SEGMENT_BYTES:
            segment.sealed = True
            if segment.open_entries == 0:
                segment.delete()
            segment = self._segment = self._new_segment()
        return segment

    def _done(self, segment: _Segment) -> None:
        segment.open_entries -= 1
        if segment.sealed and segment.open_entries == 0:
            segment.delete()

    # --- the flusher ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_recovery = time.monotonic() + RECOVER_SECONDS
        next_fold = 0.0
        while True:
            pause = next_fold - time.monotonic()
            if pause > 0 and not self._stopping:
                time.sleep(pause)
            with self._lock:
                while not self._ready and not self._stopping:
                    if not self._changed.wait(max(0.0, next_recovery - time.monotonic())):
                        break  # timed out: time to look for dead processes' segments
                if self._stopping and not self._ready:
                    return
                batch = self._take()
            next_fold = time.monotonic() + FOLD_SECONDS
            if batch:
                self._fold(batch)
            if time.monotonic() >= next_recovery:
                next_recovery = time.monotonic() + RECOVER_SECONDS
                try:
                    recover(self.directory, self._record)
                except Exception:  # never let the flusher die: it would stop folding this process's usage
                    logger.exception("usage journal: recovery failed")

    def _take(self) -> list[_Entry]:
        batch: list[_Entry] = []
        size = 0
        while self._ready and (not batch or size + len(self._ready[0].events) <= MAX_BATCH_EVENTS):
            entry = self._ready.pop(0)
            batch.append(entry)
            size += len(entry.events)
        self._folding += len(batch)
        if batch:
            self._folding_since = min(e.settled for e in batch)
        return batch

    def _fold(self, batch: list[_Entry]) -> None:
        """Record a batch in one transaction (`_record_or_set_aside`), retried while the database is down."""
        try:
            _record_or_set_aside(self.directory, self._record, [(e.line, e.events) for e in batch])
        except OperationalError:
            # The database is unavailable (record_with_retries already retried): the entries stay journaled
            # and are tried again shortly, in order.
            logger.warning("usage journal: database unavailable; %d entries wait", len(batch))
            connection.close_if_unusable_or_obsolete()
            time.sleep(RETRY_SECONDS)
            with self._lock:
                self._ready[:0] = batch
                self._folding -= len(batch)
                self._changed.notify_all()
            return
        with self._lock:
            for entry in batch:
                self._done(entry.segment)
            self._folding -= len(batch)
            if not self._folding:
                self._folding_since = None
            self._changed.notify_all()


def _reject(directory: Path, line: bytes) -> None:
    with (directory / REJECTED).open("ab") as rejected:
        rejected.write(line)


def _record_or_set_aside(
    directory: Path, record: Record, entries: Sequence[tuple[bytes, list[UsageEvent]]]
) -> int:
    """Record journal entries (line, events), `MAX_BATCH_EVENTS` per transaction; the events recorded.

    OperationalError (the database is unavailable) propagates: the caller keeps the entries for a later try.
    A batch the ledger refuses for another reason is recorded entry by entry, and an entry refused alone
    (its cluster deleted since) is set aside in REJECTED for an operator: retried forever, it would never
    let the rest go. Entries of the refused batch that are recorded again are billed once (the ledger is
    unique per request id and model).
    """
    events = [event for _, batch in entries for event in batch]
    try:
        for offset in range(0, len(events), MAX_BATCH_EVENTS):
            record(events[offset : offset + MAX_BATCH_EVENTS])
        return len(events)
    except OperationalError:
        raise
    except Exception:
        if len(entries) == 1:
            logger.exception(
                "usage journal: the ledger refused %d event(s); kept in %s", len(events), REJECTED
            )
            _reject(directory, entries[0][0])
            return 0
        logger.warning("usage journal: the ledger refused a batch; recording it entry by entry")
    return sum(_record_or_set_aside(directory, record, [entry]) for entry in entries)


def _parse_events(rows: list[list[Any]]) -> list[UsageEvent]:
    return [
        UsageEvent(cluster_id=c, model=m, tokens=int(t), request_id=r, time=datetime.fromisoformat(at))
        for c, m, t, r, at in rows
    ]


def unfolded(data: bytes) -> dict[str, list[UsageEvent]]:
    """The events of a segment's content to bill, by attempt: every record whose attempt was not cancelled.

    A last line without its newline was cut short by a crash in write(2): its request had not gone on to
    write anything, so it is left out, as is (with a warning) any line that does not parse.
    """
    records: dict[str, list[UsageEvent]] = {}
    cancelled: set[str] = set()
    for line in data.split(b"\n")[:-1]:
        try:
            item = orjson.loads(line)
            if "c" in item:
                cancelled.add(str(item["c"]))
            else:
                records.setdefault(str(item["a"]), []).extend(_parse_events(item["e"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.warning("usage journal: skipped a line that does not parse")
    return {attempt: events for attempt, events in records.items() if attempt not in cancelled}


def recover(directory: Path, record: Record = record_with_retries) -> int:
    """Bill and delete every segment in `directory` that no living process holds; the events replayed.

    A segment the database cannot take now is left for the next try. Safe to run in several processes at
    once: each segment is replayed under its lock, and one already deleted is skipped.
    """
    replayed = 0
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive and folds it itself
            if os.fstat(fd).st_nlink == 0:
                continue  # another process replayed and deleted it meanwhile
            try:
                entries = [
                    (_record_line(a, events), events) for a, events in unfolded(path.read_bytes()).items()
                ]
                count = _record_or_set_aside(directory, record, entries)
            except OperationalError:
                logger.warning("usage journal: database unavailable; %s is kept for the next try", path.name)
                continue
            os.unlink(path)
            replayed += count
            logger.info("usage journal: replayed %d event(s) a stopped process left", count)
        finally:
            os.close(fd)
    return replayed


_active: UsageJournal | None = None


def active() -> UsageJournal | None:
    """This process's journal, if it serves with one (`start`); None: usage is recorded in the database."""
    return _active


def start(directory: Path) -> UsageJournal:
    """Give this (serving) process a journal in `directory`, after replaying what dead processes left."""
    global _active
    journal = UsageJournal(directory)
    journal.start()
    _active = journal
    return journal


def stop() -> None:
    """Fold what is settled and close this process's journal (at a graceful stop)."""
    global _active
    journal, _active = _active, None
    if journal is not None:
        journal.stop()
