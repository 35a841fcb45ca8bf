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
from billing.services import rollups_verify
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
