"""The usage ledger: exactly-once recording, roll-ups kept equal to it, and the rebuild command's proof."""

from __future__ import annotations

import io
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.models import Sum

from billing import services
from billing.models import LIST_PRICE_EPOCH, ModelPrice, UsageRecord, UsageRollup
from billing.selectors import rollup_comparison
from billing.services import normalize_request_id, usage_record
from console.clusters.models import Cluster
from inference.catalog import find
from inference.usage import UsageEvent, emit_usage
from tests.billing.conftest import MXBAI, needs_postgresql, new_cluster, record
from tests.conftest import BM25, MINILM

T0 = datetime(2025, 3, 10, 10, 59, 59, 999_000, tzinfo=UTC)


def rollup(cluster: Cluster, model: str, granularity: str, start: datetime) -> tuple[int, int] | None:
    row = UsageRollup.objects.filter(
        cluster=cluster, model=model, granularity=granularity, period_start=start
    ).first()
    return None if row is None else (row.tokens, row.records)


def ledger_tokens(cluster: Cluster) -> int:
    return int(UsageRecord.objects.filter(cluster=cluster).aggregate(t=Sum("tokens"))["t"] or 0)


def test_the_same_request_is_billed_once(cluster: Cluster) -> None:
    first = record(cluster.id, MINILM, 42, T0, request_id="key-1")
    again = record(cluster.id, MINILM, 42, T0, request_id="key-1")
    assert (first.inserted, first.tokens) == (1, 42)
    assert (again.inserted, again.duplicates, again.tokens) == (0, 1, 0)
    assert UsageRecord.objects.filter(cluster=cluster).count() == 1
    assert rollup(cluster, MINILM, "hour", T0.replace(minute=0, second=0, microsecond=0)) == (42, 1)
    assert rollup(cluster, MINILM, "day", datetime(2025, 3, 10, tzinfo=UTC)) == (42, 1)


def test_a_redelivered_batch_inserts_and_counts_only_new_rows(cluster: Cluster) -> None:
    events = [
        UsageEvent(cluster.id, MINILM, 10, "r1", T0),
        UsageEvent(cluster.id, BM25, 3, "r1", T0),
    ]
    usage_record(events=events[:1])
    result = usage_record(events=[*events, events[1], events[0]])  # redelivered, with duplicates inside
    assert (result.received, result.inserted, result.tokens) == (4, 1, 3)
    assert ledger_tokens(cluster) == 13
    assert rollup_comparison().equal


def test_the_same_key_on_another_cluster_or_model_is_another_record(cluster: Cluster) -> None:
    other = new_cluster("other").cluster
    record(cluster.id, MINILM, 5, T0, request_id="shared")
    record(cluster.id, BM25, 6, T0, request_id="shared")
    record(other.id, MINILM, 7, T0, request_id="shared")
    assert UsageRecord.objects.count() == 3


def test_long_idempotency_keys_are_hashed_not_truncated(cluster: Cluster) -> None:
    long_a, long_b = "k" * 300 + "a", "k" * 300 + "b"
    record(cluster.id, MINILM, 1, T0, request_id=long_a)
    record(cluster.id, MINILM, 1, T0, request_id=long_b)
    record(cluster.id, MINILM, 1, T0, request_id=long_a)
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == sorted(
        [normalize_request_id(long_a), normalize_request_id(long_b)]
    )
    assert normalize_request_id("short") == "short"


def test_the_portable_insert_path_is_exactly_once_too(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Backends without INSERT ... RETURNING use one savepoint per row; same guarantees.
    monkeypatch.setattr(services, "_insert_ignoring_duplicates", services._insert_one_by_one)
    events = [UsageEvent(cluster.id, MINILM, 10, "r1", T0), UsageEvent(cluster.id, BM25, 4, "r1", T0)]
    assert usage_record(events=events).inserted == 2
    assert usage_record(events=events).inserted == 0
    assert ledger_tokens(cluster) == 14
    assert rollup_comparison().equal


def test_rollups_are_utc_hours_and_days(cluster: Cluster) -> None:
    record(cluster.id, MINILM, 1, T0)  # 10:59:59.999 UTC
    record(cluster.id, MINILM, 2, T0 + timedelta(milliseconds=1))  # 11:00:00.000
    # 01:30 on the 11th at +02:00 is 23:30 UTC on the 10th: the 10th's day, the 23:00 hour.
    record(cluster.id, MINILM, 4, datetime(2025, 3, 11, 1, 30, tzinfo=timezone(timedelta(hours=2))))
    assert rollup(cluster, MINILM, "hour", datetime(2025, 3, 10, 10, tzinfo=UTC)) == (1, 1)
    assert rollup(cluster, MINILM, "hour", datetime(2025, 3, 10, 11, tzinfo=UTC)) == (2, 1)
    assert rollup(cluster, MINILM, "hour", datetime(2025, 3, 10, 23, tzinfo=UTC)) == (4, 1)
    assert rollup(cluster, MINILM, "day", datetime(2025, 3, 10, tzinfo=UTC)) == (7, 3)
    assert not UsageRollup.objects.filter(period_start__gte=datetime(2025, 3, 11, tzinfo=UTC)).exists()


def test_records_carry_the_price_in_force_and_unpriced_catalog_models_get_their_list_price(
    cluster: Cluster,
) -> None:
    ModelPrice.objects.filter(model=MXBAI).delete()  # as if the model joined the catalog after seeding
    record(cluster.id, MXBAI, 100, T0)
    price = UsageRecord.objects.get(model=MXBAI).price
    assert price is not None
    entry = find(MXBAI)
    assert entry is not None
    assert (price.effective_from, price.price_per_million) == (LIST_PRICE_EPOCH, entry.price_per_million)


def test_emitted_usage_reaches_the_ledger_through_the_signal(cluster: Cluster) -> None:
    emit_usage(cluster_id=cluster.id, request_id="req-9", usage={MINILM: 12, BM25: 3, "zero/model": 0})
    emit_usage(cluster_id=cluster.id, request_id="req-9", usage={MINILM: 12, BM25: 3})  # redelivered
    assert sorted(UsageRecord.objects.values_list("model", "tokens", "request_id")) == [
        (BM25, 3, "req-9"),
        (MINILM, 12, "req-9"),
    ]


def test_rebuild_command_proves_equality_and_repairs_drift(cluster: Cluster) -> None:
    for i in range(5):
        record(cluster.id, MINILM, 10 + i, T0 + timedelta(hours=i * 7))
        record(cluster.id, BM25, 1 + i, T0 + timedelta(hours=i * 7))
    out = io.StringIO()
    call_command("billing_rebuild_rollups", "--check", stdout=out)
    assert "OK: every roll-up equals the sum of its ledger records." in out.getvalue()
    assert "Ledger: 10 record(s), 75 token(s)" in out.getvalue()

    # Drift: one bucket off by a token, one missing, one that the ledger does not justify.
    first = UsageRollup.objects.filter(granularity="hour", model=MINILM).order_by("period_start")[0]
    UsageRollup.objects.filter(pk=first.pk).update(tokens=first.tokens + 1)
    UsageRollup.objects.filter(granularity="day", model=BM25).order_by("period_start")[0].delete()
    UsageRollup.objects.create(
        cluster=cluster,
        model=MXBAI,
        granularity="day",
        period_start=datetime(2024, 1, 1, tzinfo=UTC),
        tokens=5,
    )
    out = io.StringIO()
    with pytest.raises(CommandError, match="differ from the ledger in 3 bucket"):
        call_command("billing_rebuild_rollups", "--check", stdout=out)
    assert out.getvalue().count("DIFFERS") == 3

    out = io.StringIO()
    call_command("billing_rebuild_rollups", stdout=out)
    assert "OK: every roll-up equals" in out.getvalue()
    call_command("billing_rebuild_rollups", "--check", stdout=io.StringIO())
    assert rollup(cluster, MINILM, "hour", first.period_start) == (first.tokens, first.records)


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_racing_deliveries_of_overlapping_events_bill_each_key_once() -> None:
    # 16 threads deliver overlapping batches at once (every key 4 times); PostgreSQL's ON CONFLICT and the
    # F() increments under row locks must leave exactly one row per key and roll-ups equal to the ledger.
    cluster_id = new_cluster().cluster.id
    keys = [uuid.uuid4().hex for _ in range(100)]
    tokens = {key: 1 + i for i, key in enumerate(keys)}
    now = datetime.now(UTC)
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def deliver(worker: int) -> None:
        try:
            mine = [k for i, k in enumerate(keys) if i % 4 == worker % 4]
            events = [UsageEvent(cluster_id, m, tokens[k], k, now) for k in mine for m in (MINILM, BM25)]
            barrier.wait()
            for offset in range(0, len(events), 6):
                usage_record(events=events[offset : offset + 6])
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert UsageRecord.objects.count() == 200
    assert ledger_tokens(Cluster.objects.get(pk=cluster_id)) == 2 * sum(tokens.values())
    comparison = rollup_comparison()
    assert comparison.equal, comparison.differences
