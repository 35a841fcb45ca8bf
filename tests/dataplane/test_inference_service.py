"""`POST /inference`: the exact JSON a self-hosted Qdrant server sends to its inference address."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from django.test import Client

from console.clusters.services import CreatedCluster
from inference.embedding import get_engine
from inference.engine.types import EmbedRequest, InputType, Kind
from inference.usage import UsageEvent
from tests.conftest import BM25, MINILM
from tests.helpers import cluster_update

pytestmark = pytest.mark.django_db(transaction=True)


def post(body: Any) -> tuple[int, dict[str, Any]]:
    response = Client().post("/inference", data=json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def test_update_and_search_inputs(cluster: CreatedCluster, usage_events: list[UsageEvent]) -> None:
    # As qdrant v1.19 serialises it (src/common/inference/service.rs): options may be null.
    body = {
        "inputs": [
            {"data": "Mars, the red planet", "data_type": "text", "model": MINILM, "options": None},
            {"data": "Mars, the red planet", "data_type": "text", "model": "Qdrant/bm25", "options": {}},
            {"data": "Mars, the red planet", "data_type": "text", "model": MINILM, "options": None},
        ],
        "inference": "update",
        "token": cluster.inference_token,
    }
    status, answer = post(body)
    assert status == 200, answer
    dense, sparse, dense_again = answer["embeddings"]
    assert len(dense) == 384 and dense == dense_again
    assert abs(np.linalg.norm(dense) - 1) < 1e-5
    assert sorted(sparse) == ["indices", "values"] and sparse["indices"] == sorted(sparse["indices"])
    tokens = answer["usage"]["models"]
    single = get_engine().embed([EmbedRequest(MINILM, Kind.DOCUMENT, InputType.TEXT, "Mars, the red planet")])
    assert tokens[MINILM]["tokens"] == single.usage[MINILM]  # the duplicate input counted once
    assert BM25 in tokens
    assert sum(e.tokens for e in usage_events) == sum(t["tokens"] for t in tokens.values())
    assert {e.cluster_id for e in usage_events} == {cluster.cluster.id}

    status, answer = post({**body, "inference": "search", "inputs": body["inputs"][1:2]})
    assert status == 200
    assert set(answer["embeddings"][0]["values"]) == {1.0}  # BM25 query side: unique tokens, weight 1


@pytest.mark.parametrize(
    ("inputs", "status", "fragment"),
    [
        ([{"data": "x", "data_type": "text", "model": "nope/nope"}], 400, "not supported"),
        ([{"data": "x", "data_type": "image", "model": MINILM}], 400, "Only text input"),
        ([{"data": "x", "data_type": "video", "model": MINILM}], 400, "data_type"),
        ([{"data": "x", "data_type": "text", "model": BM25, "options": {"k": -1}}], 400, "k1 must be finite"),
    ],
)
def test_errors(cluster: CreatedCluster, inputs: list[Any], status: int, fragment: str) -> None:
    got, answer = post({"inputs": inputs, "inference": "update", "token": cluster.inference_token})
    assert got == status
    assert fragment in answer["error"]


def test_token_is_required_and_cluster_must_have_inference(cluster: CreatedCluster) -> None:
    inputs = [{"data": "x", "data_type": "text", "model": MINILM}]
    assert post({"inputs": inputs, "inference": "update", "token": None})[0] == 401
    assert post({"inputs": inputs, "inference": "update", "token": "qit_wrong"})[0] == 401
    cluster_update(cluster.cluster.pk, inference_enabled=False)
    assert post({"inputs": inputs, "inference": "update", "token": cluster.inference_token})[0] == 403
