"""The usage journal: durable appends, held until the request ends, folded once into the ledger, replayed
after a crash. (The served process killed right after its answers: tests/test_sigkill_metering.py.)"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError
from django.db.models import Sum

from billing import journal
from billing.group_commit import record_with_retries
from billing.journal import REJECTED, SUFFIX, UsageJournal, recover
from billing.models import UsageRecord
from billing.services import rollups_verify
from inference.usage import UsageEvent
from tests.billing.conftest import new_cluster, two_model_events
from tests.conftest import BM25, MINILM

pytestmark = pytest.mark.django_db(transaction=True)


def billed() -> dict[tuple[str, str], int]:
    """(request id, model) -> tokens in the ledger."""
    return {(r.request_id, r.model): r.tokens for r in UsageRecord.objects.all()}


class CountingRecord:
    """`record_with_retries`, counting calls (events per call); `fail_first` calls raise OperationalError."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[int] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self, batch: Sequence[UsageEvent]) -> object:
        with self.lock:
            self.calls.append(len(batch))
            failing = len(self.calls) <= self.fail_first
        if failing:
            raise OperationalError("database is locked")
        return record_with_retries(batch)


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / "journal"


@pytest.fixture
def started(journal_dir: Path) -> Iterator[tuple[UsageJournal, CountingRecord]]:
    record = CountingRecord()
    usage_journal = UsageJournal(journal_dir, record)
    usage_journal.start()
    yield usage_journal, record
    usage_journal.stop()


def test_settled_usage_is_folded_once_in_shared_transactions(
    started: tuple[UsageJournal, CountingRecord],
) -> None:
    usage_journal, record = started
    cluster = new_cluster().cluster
    attempts = {f"req-{i}": uuid.uuid4().hex for i in range(30)}
    for request_id, attempt in attempts.items():
        usage_journal.append(attempt, two_model_events(cluster.id, request_id, 5))
    assert usage_journal.drain(5)
    assert billed() == {}  # held: no request has answered yet
    for attempt in attempts.values():
        usage_journal.settle(attempt)
    assert usage_journal.drain(10)

    assert billed() == {(r, m): 5 for r in attempts for m in (MINILM, BM25)}
    assert sum(record.calls) == 60 and len(record.calls) < 30  # requests shared transactions
    assert rollups_verify().equal


def test_a_cancelled_request_bills_nothing_and_its_segment_goes(
    started: tuple[UsageJournal, CountingRecord], journal_dir: Path
) -> None:
    usage_journal, _ = started
    cluster = new_cluster().cluster
    usage_journal.append("failed", two_model_events(cluster.id, "r1", 7))
    usage_journal.append("answered", two_model_events(cluster.id, "r2", 3))
    assert usage_journal.cancel("failed") == frozenset({MINILM, BM25})
    assert usage_journal.cancel("unknown") == frozenset()
    usage_journal.settle("answered")
    assert usage_journal.drain(5)
    assert billed() == {("r2", MINILM): 3, ("r2", BM25): 3}

    usage_journal.stop()  # everything folded or cancelled: nothing is left to replay
    assert list(journal_dir.glob(f"*{SUFFIX}")) == []


def test_a_retry_with_the_same_request_id_is_billed_once(
    started: tuple[UsageJournal, CountingRecord],
) -> None:
    usage_journal, _ = started
    cluster = new_cluster().cluster
    for attempt in ("first", "retry"):  # an Idempotency-Key names both attempts alike
        usage_journal.append(attempt, two_model_events(cluster.id, "key-1", 4))
        usage_journal.settle(attempt)
        assert usage_journal.drain(5)
    assert billed() == {("key-1", MINILM): 4, ("key-1", BM25): 4}


def test_an_unavailable_database_delays_folding_and_loses_nothing(journal_dir: Path) -> None:
    record = CountingRecord(fail_first=2)
    usage_journal = UsageJournal(journal_dir, record)
    usage_journal.start()
    try:
        cluster = new_cluster().cluster
        usage_journal.append("a", two_model_events(cluster.id, "r1", 2))
        usage_journal.settle("a")
        assert usage_journal.drain(10)
    finally:
        usage_journal.stop()
    assert len(record.calls) == 3
    assert billed() == {("r1", MINILM): 2, ("r1", BM25): 2}


def test_an_entry_the_ledger_refuses_is_set_aside_and_the_rest_is_billed(
    started: tuple[UsageJournal, CountingRecord], journal_dir: Path
) -> None:
    usage_journal, _ = started
    cluster = new_cluster().cluster
    # Its cluster was deleted meanwhile:
    usage_journal.append("gone", two_model_events("no-such-cluster", "r1", 2))
    usage_journal.append("fine", two_model_events(cluster.id, "r2", 3))
    usage_journal.settle("gone")
    usage_journal.settle("fine")
    assert usage_journal.drain(10)
    assert billed() == {("r2", MINILM): 3, ("r2", BM25): 3}
    rejected = (journal_dir / REJECTED).read_text()
    assert "no-such-cluster" in rejected and "r2" not in rejected


def dead_segment(directory: Path, lines: Sequence[bytes]) -> Path:
    """A segment as a killed process leaves it: its lines, and no process holding its lock."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"99999-dead{SUFFIX}"
    path.write_bytes(b"".join(lines))
    return path


def record_line(attempt: str, batch: Sequence[UsageEvent]) -> bytes:
    return journal._record_line(attempt, batch)


def test_recovery_bills_what_a_killed_process_left_once(journal_dir: Path) -> None:
    cluster = new_cluster().cluster
    lines = [
        record_line("answered", two_model_events(cluster.id, "r1", 5)),
        # Killed mid-request: it may have written.
        record_line("in-flight", two_model_events(cluster.id, "r2", 6)),
        record_line("failed", two_model_events(cluster.id, "r3", 7)),
        journal._cancel_line("failed"),
    ]
    torn = record_line("torn", two_model_events(cluster.id, "r4", 8))[:-10]  # write(2) cut short by the kill
    path = dead_segment(journal_dir, [*lines, torn])

    assert recover(journal_dir) == 4
    assert billed() == {("r1", MINILM): 5, ("r1", BM25): 5, ("r2", MINILM): 6, ("r2", BM25): 6}
    assert not path.exists()

    dead_segment(journal_dir, lines)  # replayed again (a crash during recovery): billed once
    assert recover(journal_dir) == 4
    assert sum(UsageRecord.objects.values_list("tokens", flat=True)) == 22
    assert rollups_verify().equal


def test_recovery_sets_aside_what_the_ledger_refuses_and_bills_the_rest(journal_dir: Path) -> None:
    cluster = new_cluster().cluster
    lines = [
        record_line("gone", two_model_events("deleted-cluster", "r1", 5)),
        record_line("ok", two_model_events(cluster.id, "r2", 6)),
    ]
    path = dead_segment(journal_dir, lines)
    assert recover(journal_dir) == 2
    assert billed() == {("r2", MINILM): 6, ("r2", BM25): 6}
    assert "deleted-cluster" in (journal_dir / REJECTED).read_text()
    assert not path.exists()  # not retried for ever


def test_recovery_keeps_a_segment_while_the_database_is_unavailable(journal_dir: Path) -> None:
    cluster = new_cluster().cluster
    path = dead_segment(journal_dir, [record_line("a", two_model_events(cluster.id, "r1", 5))])
    assert recover(journal_dir, CountingRecord(fail_first=1)) == 0
    assert path.exists() and billed() == {}
    assert recover(journal_dir) == 2
    assert not path.exists() and len(billed()) == 2


def test_a_starting_journal_replays_dead_segments_and_leaves_live_ones(journal_dir: Path) -> None:
    cluster = new_cluster().cluster
    living = UsageJournal(journal_dir)
    living.start()
    try:
        # A request still running in a living process:
        living.append("held", two_model_events(cluster.id, "live", 1))
        dead_segment(journal_dir, [record_line("x", two_model_events(cluster.id, "dead", 2))])
        starting = UsageJournal(journal_dir)
        assert starting.start() == 2  # the dead process's events only
        starting.stop()
        assert billed() == {("dead", MINILM): 2, ("dead", BM25): 2}
        assert len(list(journal_dir.glob(f"*{SUFFIX}"))) == 1  # the living one's
    finally:
        living.settle("held")
        living.stop()
    assert billed()[("live", MINILM)] == 1


def test_a_full_segment_is_sealed_and_deleted_once_folded(
    started: tuple[UsageJournal, CountingRecord], journal_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage_journal, _ = started
    monkeypatch.setattr(journal, "SEGMENT_BYTES", 600)
    cluster = new_cluster().cluster
    for i in range(12):
        usage_journal.append(f"a{i}", two_model_events(cluster.id, f"r{i}", 1))
    assert len(list(journal_dir.glob(f"*{SUFFIX}"))) > 2  # rotated, all still held
    for i in range(12):
        usage_journal.settle(f"a{i}")
    assert usage_journal.drain(10)
    assert len(list(journal_dir.glob(f"*{SUFFIX}"))) == 1  # only the one being appended to
    assert UsageRecord.objects.aggregate(t=Sum("tokens"))["t"] == 24


def test_the_data_plane_journals_usage_and_bills_only_requests_that_answered(
    client: Any, journal_dir: Path, models_dir: Path
) -> None:
    created = new_cluster()
    base = f"/clusters/{created.cluster.id}/collections/c"
    headers: dict[str, Any] = {"HTTP_API_KEY": created.api_key}
    collection = {"vectors": {"size": 384, "distance": "Cosine"}}
    assert client.put(base, collection, content_type="application/json", **headers).status_code == 200
    journal.start(journal_dir)
    try:
        document = {"text": "the red planet", "model": MINILM}
        ok = client.put(
            f"{base}/points?wait=true",
            {"points": [{"id": 1, "vector": document}]},
            content_type="application/json",
            **headers,
        )
        assert ok.status_code == 200, ok.content
        # The model ran, then the write failed (the id is not a valid point id): nothing may be billed.
        bad = client.put(
            f"{base}/points?wait=true",
            {"points": [{"id": "not-a-uuid", "vector": {"text": "other words", "model": MINILM}}]},
            content_type="application/json",
            **headers,
        )
        assert bad.status_code == 400, bad.content
        active = journal.active()
        assert active is not None and active.drain(10)
        written = b"".join(path.read_bytes() for path in journal_dir.glob(f"*{SUFFIX}"))
        assert written.count(b'{"a":') == 2 and written.count(b'{"c":') == 1  # it ran, then was cancelled
        # Counts and ids only, never inputs or keys.
        assert b"red planet" not in written and created.api_key.encode() not in written
    finally:
        journal.stop()
    tokens = ok.json()["usage"]["inference"]["models"][MINILM]["tokens"]
    assert list(UsageRecord.objects.values_list("model", "tokens")) == [(MINILM, tokens)]
    assert list(journal_dir.glob(f"*{SUFFIX}")) == []


def test_the_flush_lag_says_how_long_answered_usage_has_waited(journal_dir: Path) -> None:
    release = threading.Event()

    def slow_record(batch: Sequence[UsageEvent]) -> object:
        release.wait(10)
        return record_with_retries(batch)

    usage_journal = UsageJournal(journal_dir, slow_record)
    usage_journal.start()
    try:
        cluster = new_cluster().cluster
        assert usage_journal.lag() == 0
        usage_journal.append("a", two_model_events(cluster.id, "r1", 1))
        assert usage_journal.lag() == 0  # held, not answered yet
        usage_journal.settle("a")
        time.sleep(0.2)
        assert usage_journal.lag() >= 0.2  # answered, its fold held up
        release.set()
        assert usage_journal.drain(10)
        assert usage_journal.lag() == 0
    finally:
        release.set()
        usage_journal.stop()
