"""200 concurrent inference requests to the live server: the ledger equals what the responses reported."""

from __future__ import annotations

import io
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from billing.models import UsageRecord, UsageRollup
from billing.periods import Month
from billing.selectors import statement_get
from billing.services import cluster_limit_set, rollups_verify
from tests.billing.conftest import needs_postgresql, new_cluster, response_usage
from tests.conftest import BM25, MINILM

REQUESTS = 200
RETRIES = 20  # of the 200, this many repeat an earlier request's Idempotency-Key and body
CLIENT_THREADS = 32  # bounded so the server's per-request connections stay well under max_connections

pytestmark = [needs_postgresql, pytest.mark.slow]


def build_requests(rng: random.Random) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(idempotency key, method, path, body): upserts and queries over distinct and repeated texts."""
    pool = [
        f"Document {i}: " + " ".join(rng.choices(["vector", "search", "paris", "café", "token"], k=i % 17))
        for i in range(40)
    ]
    requests = []
    for i in range(REQUESTS - RETRIES):
        texts = rng.choices(pool, k=rng.randint(1, 4))  # repeats inside a request are billed once
        if i % 2 == 0:
            body = {
                "points": [
                    {
                        "id": i * 10 + j,
                        "vector": {"dense": {"text": t, "model": MINILM}, "bm25": {"text": t, "model": BM25}},
                    }
                    for j, t in enumerate(texts)
                ]
            }
            requests.append((f"req-{i}", "PUT", "/collections/c/points?wait=true", body))
        else:
            body = {"query": {"text": texts[0], "model": MINILM}, "using": "dense", "limit": 3}
            requests.append((f"req-{i}", "POST", "/collections/c/points/query", body))
    requests += rng.sample(requests, RETRIES)  # client retries: same key, same body
    rng.shuffle(requests)  # so retries race their originals
    return requests


def test_concurrent_requests_bill_exactly_what_the_responses_report(
    live_server: Any, models_dir: Path
) -> None:
    created = new_cluster()
    base = f"{live_server.url}/clusters/{created.cluster.id}"
    headers = {"api-key": created.api_key}
    collection = {
        "vectors": {"dense": {"size": 384, "distance": "Cosine"}},
        "sparse_vectors": {"bm25": {"modifier": "idf"}},
    }
    assert httpx.put(f"{base}/collections/c", json=collection, headers=headers, timeout=60).status_code == 200

    def send(request: tuple[str, str, str, dict[str, Any]]) -> tuple[str, int, dict[str, Any]]:
        key, method, path, body = request
        for _ in range(600):
            response = httpx.request(
                method, base + path, json=body, headers={**headers, "Idempotency-Key": key}, timeout=120
            )
            if response.status_code != 409:  # 409: the original with this key still runs; retry, as told
                break
            time.sleep(0.05)
        return key, response.status_code, response.json()

    with ThreadPoolExecutor(CLIENT_THREADS) as executor:
        answers = list(executor.map(send, build_requests(random.Random(7))))

    assert [a for a in answers if a[1] != 200] == []
    by_key: dict[str, dict[str, int]] = {}
    for key, _, body in answers:
        usage = response_usage(body)
        assert usage, body
        assert by_key.setdefault(key, usage) == usage  # a retry reports the same usage...
    assert len(by_key) == REQUESTS - RETRIES
    reported: Counter[str] = Counter()
    for usage in by_key.values():  # ...and is billed once
        reported.update(usage)

    billed = dict(UsageRecord.objects.values_list("model").annotate(tokens=Sum("tokens")).order_by())
    assert billed == dict(reported)
    assert UsageRecord.objects.count() == sum(len(u) for u in by_key.values())

    comparison = rollups_verify()
    assert comparison.equal, comparison.differences[:5]
    assert comparison.ledger_tokens == sum(reported.values())
    hourly = UsageRollup.objects.filter(granularity="hour").aggregate(t=Sum("tokens"))["t"]
    assert hourly == sum(reported.values())
    out = io.StringIO()
    call_command("billing_rebuild_rollups", "--check", stdout=out)
    assert "OK: every roll-up equals the sum of its ledger records." in out.getvalue()

    statement = statement_get(cluster_id=created.cluster.id, month=Month.of(timezone.now()))
    # Right at a month's turn some requests may fall in the next month; otherwise the statement has them all.
    if all(r.time >= Month.of(timezone.now()).start for r in UsageRecord.objects.only("time")):
        assert statement.used_tokens == sum(reported.values())


def test_the_token_limit_holds_under_concurrent_pressure(live_server: Any, models_dir: Path) -> None:
    created = new_cluster()
    base = f"{live_server.url}/clusters/{created.cluster.id}"
    headers = {"api-key": created.api_key}
    collection = {"vectors": {"size": 384, "distance": "Cosine"}}
    assert httpx.put(f"{base}/collections/c", json=collection, headers=headers, timeout=60).status_code == 200
    limit = 300
    cluster_limit_set(cluster_id=created.cluster.id, tokens_per_minute=limit)

    def send(i: int) -> tuple[int, dict[str, Any]]:
        body = {"points": [{"id": i, "vector": {"text": f"pressure test number {i}", "model": MINILM}}]}
        response = httpx.put(f"{base}/collections/c/points", json=body, headers=headers, timeout=120)
        return response.status_code, response.json()

    # Load the model first (on another cluster), so the timed part below fits in one minute.
    other = new_cluster("warm-up")
    warm = {"points": [{"id": 1, "vector": {"text": "warm", "model": MINILM}}]}
    other_url = f"{live_server.url}/clusters/{other.cluster.id}/collections/c"
    assert (
        httpx.put(other_url, json=collection, headers={"api-key": other.api_key}, timeout=60).status_code
        == 200
    )
    httpx.put(f"{other_url}/points", json=warm, headers={"api-key": other.api_key}, timeout=120)
    if timezone.now().second > 30:  # the limit's window is the UTC minute: start at the top of one
        time.sleep(60.5 - timezone.now().second - timezone.now().microsecond / 1e6)
    minute = timezone.now().minute
    with ThreadPoolExecutor(CLIENT_THREADS) as executor:
        answers = list(executor.map(send, range(64)))
    if timezone.now().minute != minute:
        pytest.skip("the run crossed a minute boundary: the limit's window restarted")
    assert {status for status, _ in answers} <= {200, 429}
    served = [response_usage(body)[MINILM] for status, body in answers if status == 200]
    assert any(status == 429 for status, _ in answers)
    # Concurrent requests hold an upper bound of their tokens while they run, so some are refused before the
    # limit is reached; once they settled, requests one after another fill the rest of the minute.
    for i in range(64, 200):
        status, body = send(i)
        if status == 429:
            break
        served.append(response_usage(body)[MINILM])
    if timezone.now().minute != minute:
        pytest.skip("the run crossed a minute boundary: the limit's window restarted")
    billed = UsageRecord.objects.filter(cluster=created.cluster).aggregate(t=Sum("tokens"))["t"]
    assert billed == sum(served)
    assert limit <= billed < limit + max(served)  # the overshoot is at most one request's tokens
