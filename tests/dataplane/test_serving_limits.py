"""Serving under pressure: a revoked key fails at once despite the cache, a full queue answers 429."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from django.conf import LazySettings
from django.test import Client

from billing.models import UsageRecord
from console.clusters.models import ApiKey
from console.clusters.services import CreatedCluster, api_key_revoke
from inference import embedding
from tests.conftest import MINILM
from tests.helpers import DataPlaneClient

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_revoked_key_fails_on_the_very_next_request(
    cluster: CreatedCluster, settings: LazySettings
) -> None:
    settings.DIRECTORY_CACHE_SECONDS = 300.0  # cached for long: only the revocation can drop it
    api = DataPlaneClient(cluster.cluster.id, cluster.api_key)
    assert api.call("get", "/collections")[0] == 200
    assert api.call("get", "/collections")[0] == 200  # served from the cache
    api_key_revoke(api_key=ApiKey.objects.get(cluster=cluster.cluster))
    status, body = api.call("get", "/collections")
    assert status == 401, body


def test_trace_and_unknown_methods_answer_405_in_qdrants_shape(cluster: CreatedCluster) -> None:
    for method in ("TRACE", "PATCH"):
        response = Client().generic(
            method, f"/clusters/{cluster.cluster.id}/collections", headers={"api-key": cluster.api_key}
        )
        assert response.status_code == 405
        assert set(response.json()) == {"status", "time"}


@pytest.fixture
def small_queue(settings: LazySettings) -> Iterator[None]:
    """An engine whose queue holds two inputs, built for this test (and the shared one restored after)."""
    settings.INFERENCE_QUEUE_MAX = 2
    settings.INFERENCE_TOKEN_BUDGET = 256
    settings.INFERENCE_BATCH_SIZE = 1
    shared, embedding._engine = embedding._engine, None
    yield
    built, embedding._engine = embedding._engine, shared
    if built is not None:
        built.pool.shutdown()


def test_a_full_queue_answers_429_at_once_and_writes_and_bills_nothing(
    live_server: Any, cluster: CreatedCluster, small_queue: None
) -> None:
    base = f"{live_server.url}/clusters/{cluster.cluster.id}"
    headers = {"api-key": cluster.api_key}
    collection = {"vectors": {"size": 384, "distance": "Cosine"}}
    assert httpx.put(f"{base}/collections/c", json=collection, headers=headers).status_code == 200
    long_text = " ".join(f"word{i}" for i in range(300))

    def send(i: int) -> tuple[int, int, dict[str, Any], dict[str, str]]:
        points = [
            {"id": 2 * i + j, "vector": {"text": f"{i} {j} {long_text}", "model": MINILM}} for j in (0, 1)
        ]
        response = httpx.put(
            f"{base}/collections/c/points", json={"points": points}, headers=headers, timeout=120
        )
        return i, response.status_code, response.json(), dict(response.headers)

    answers: list[tuple[int, int, dict[str, Any], dict[str, str]]] = []
    for round_number in range(5):  # until the queue overflows at least once
        with ThreadPoolExecutor(16) as pool:
            answers += pool.map(send, range(round_number * 16, (round_number + 1) * 16))
        if any(status == 429 for _, status, _, _ in answers):
            break
    assert {status for _, status, _, _ in answers} == {200, 429}
    for _, status, body, response_headers in answers:
        if status == 429:
            assert int(response_headers["retry-after"]) >= 1 and "usage" not in body
    served = [i for i, status, _, _ in answers if status == 200]
    billed = sum(UsageRecord.objects.values_list("tokens", flat=True))
    assert billed == sum(
        body["usage"]["inference"]["models"][MINILM]["tokens"] for _, s, body, _ in answers if s == 200
    )
    count = httpx.post(f"{base}/collections/c/points/count", json={"exact": True}, headers=headers).json()
    assert count["result"]["count"] == 2 * len(served)  # the refused requests wrote nothing
