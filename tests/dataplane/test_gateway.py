"""The inference gateway's rules hold for every entry point (REST data plane and `POST /inference`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from billing.services import cluster_limit_set
from console.clusters.models import Cluster
from console.clusters.services import CreatedCluster
from inference.usage import UsageEvent
from tests.conftest import MINILM
from tests.helpers import DataPlaneClient, cluster_update

pytestmark = pytest.mark.django_db(transaction=True)


def inference_service(cluster: CreatedCluster) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = {
        "inputs": [{"data": "Mars", "data_type": "text", "model": MINILM, "options": None}],
        "inference": "search",
        "token": cluster.inference_token,
    }
    response = Client().post("/inference", data=json.dumps(body), content_type="application/json")
    return response.status_code, response.json(), dict(response.headers)


def test_inference_service_answers_503_while_its_cluster_restarts(
    cluster: CreatedCluster, usage_events: list[UsageEvent]
) -> None:
    cluster_update(cluster.cluster.pk, status=Cluster.Status.RESTARTING)
    status, body, headers = inference_service(cluster)
    assert status == 503, body
    assert "restarting" in body["error"]
    assert int(headers["Retry-After"]) > 0
    assert usage_events == []  # nothing ran, nothing billed

    cluster_update(cluster.cluster.pk, status=Cluster.Status.RUNNING)
    status, body, _ = inference_service(cluster)
    assert status == 200 and len(body["embeddings"]) == 1


def test_the_token_limit_refuses_only_requests_that_run_a_model(
    cluster: CreatedCluster, usage_events: list[UsageEvent]
) -> None:
    api = DataPlaneClient(cluster.cluster.id, cluster.api_key)
    status, _ = api.call("put", "/collections/c", {"vectors": {"size": 384, "distance": "Cosine"}})
    assert status == 200
    # One Document fills the cluster's one-token-per-minute budget ...
    cluster_limit_set(cluster_id=cluster.cluster.id, tokens_per_minute=1)
    doc = {"text": "the first request runs", "model": MINILM}
    status, _ = api.call("put", "/collections/c/points", {"points": [{"id": 1, "vector": doc}]})
    assert status == 200
    # ... so the next request that would run a model is refused before it runs ...
    doc = {"text": "this one is refused", "model": MINILM}
    status, body = api.call("put", "/collections/c/points", {"points": [{"id": 2, "vector": doc}]})
    assert status == 429, body
    # ... while raw vectors, which run no model, are still written, and reads still answer.
    status, body = api.call("put", "/collections/c/points", {"points": [{"id": 3, "vector": [0.1] * 384}]})
    assert status == 200, body
    status, body = api.call("post", "/collections/c/points/query", {"query": [0.1] * 384, "limit": 5})
    assert status == 200 and {p["id"] for p in body["result"]["points"]} == {1, 3}
    status, _, _ = inference_service(cluster)
    assert status == 429
    assert sum(e.tokens for e in usage_events) > 0 and all(e.model == MINILM for e in usage_events)
