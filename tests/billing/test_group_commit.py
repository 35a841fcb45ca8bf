"""Group commit of usage: concurrent requests share a transaction, each still durable before it returns."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence

import pytest
from django.db import connection
from django.db.models import Sum

from billing.group_commit import GroupCommit, record_with_retries
from billing.models import UsageRecord
from billing.services import RecordKey, rollups_verify
from inference.usage import UsageEvent
from tests.billing.conftest import new_cluster, two_model_events
from tests.conftest import BM25, MINILM

pytestmark = pytest.mark.django_db(transaction=True)


class SlowFirstFlush:
    """`record_with_retries`, counting calls; the first holds on so that the other requests queue up."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # events per call

    def __call__(self, batch: Sequence[UsageEvent]) -> frozenset[RecordKey]:
        self.calls.append(len(batch))
        if len(self.calls) == 1:
            time.sleep(0.3)
        return record_with_retries(batch)


def in_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """Run work(i) in `count` threads started together; each result or exception, in order."""
    out: list[object] = [None] * count
    start = threading.Barrier(count)

    def one(index: int) -> None:
        start.wait()
        try:
            out[index] = work(index)
        except Exception as exc:
            out[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return out


def test_concurrent_requests_share_transactions_and_each_is_billed_exactly() -> None:
    cluster = new_cluster().cluster
    flush = SlowFirstFlush()
    group = GroupCommit(flush)
    results = in_threads(30, lambda i: group.record(two_model_events(cluster.pk, f"req-{i}", i + 1)))

    assert results == [frozenset({MINILM, BM25})] * 30  # each request learns its own models were recorded
    assert sum(flush.calls) == 60 and len(flush.calls) < 30  # merged: far fewer transactions than requests
    assert UsageRecord.objects.count() == 60
    per_request = dict(UsageRecord.objects.values_list("request_id").annotate(t=Sum("tokens")).order_by())
    assert per_request == {f"req-{i}": 2 * (i + 1) for i in range(30)}
    assert rollups_verify().equal


def test_a_request_id_twice_in_one_batch_is_billed_and_credited_once() -> None:
    cluster = new_cluster().cluster
    flush = SlowFirstFlush()
    group = GroupCommit(flush)
    # Thread 0 leads and holds its flush; threads 1-4 queue together, all with the same request id.
    results = in_threads(
        5, lambda i: group.record(two_model_events(cluster.pk, "first" if i == 0 else "same", 7))
    )

    credited = [r for r in results[1:] if r]
    assert credited == [frozenset({MINILM, BM25})]  # exactly one of the repeats recorded the tokens
    assert UsageRecord.objects.filter(request_id="same").count() == 2
    assert UsageRecord.objects.aggregate(t=Sum("tokens"))["t"] == 4 * 7


def test_a_bad_event_fails_only_its_own_request() -> None:
    cluster = new_cluster().cluster
    flush = SlowFirstFlush()
    group = GroupCommit(flush)
    missing = "no-such-cluster-" + uuid.uuid4().hex[:6]  # the ledger's foreign key refuses it

    def work(i: int) -> frozenset[str]:
        return group.record(two_model_events(missing if i == 3 else cluster.pk, f"req-{i}", 5))

    results = in_threads(6, work)

    assert isinstance(results[3], Exception)
    assert [r for i, r in enumerate(results) if i != 3] == [frozenset({MINILM, BM25})] * 5
    assert sorted(set(UsageRecord.objects.values_list("request_id", flat=True))) == [
        f"req-{i}" for i in range(6) if i != 3
    ]
    assert rollups_verify().equal
