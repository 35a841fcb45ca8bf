"""Errors, auth and cluster state on the data plane: Qdrant's shapes, nothing written, nothing billed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from console.clusters.models import ApiKey, Cluster
from console.clusters.services import CreatedCluster, api_key_create, cluster_create
from inference.usage import UsageEvent
from tests.conftest import BM25, MINILM
from tests.helpers import DataPlaneClient, cluster_update

pytestmark = pytest.mark.django_db(transaction=True)


Api = DataPlaneClient


@pytest.fixture
def api(cluster: CreatedCluster) -> Api:
    api = Api(cluster.cluster.id, cluster.api_key)
    status, _ = api.call(
        "put",
        "/collections/c",
        {
            "vectors": {"dense": {"size": 384, "distance": "Cosine"}},
            "sparse_vectors": {"bm25": {"modifier": "idf"}},
        },
    )
    assert status == 200
    status, _ = api.call("put", "/collections/small", {"vectors": {"size": 3, "distance": "Cosine"}})
    assert status == 200
    return api


def doc(text: str, model: str = MINILM, **extra: Any) -> dict[str, Any]:
    return {"text": text, "model": model, **extra}


def assert_error(status: int, body: dict[str, Any], expected_status: int, fragment: str) -> None:
    assert status == expected_status, body
    assert set(body) == {"status", "time"}
    assert fragment in body["status"]["error"], body["status"]["error"]


def count(api: Api, collection: str) -> int:
    status, body = api.call("post", f"/collections/{collection}/points/count", {"exact": True})
    assert status == 200
    return int(body["result"]["count"])


BAD_UPSERTS = [
    pytest.param(
        "small",
        {"points": [{"id": 1, "vector": [1, 0, 0]}, {"id": 2, "vector": doc("too many dims")}]},
        "expected dim: 3, got 384",
        id="dimension-mismatch",
    ),
    pytest.param(
        "c",
        {"points": [{"id": 1, "vector": {"dense": doc("x", "no/such-model")}}]},
        "not supported",
        id="unknown",
    ),
    pytest.param(
        "c",
        {"points": [{"id": 1, "vector": {"dense": doc("x", "mixedbread-ai/mxbai-embed-large-v1")}}]},
        "not installed",
        id="not-installed",
    ),
    pytest.param(
        "c",
        {"points": [{"id": 1, "vector": {"dense": {"image": "aGVsbG8=", "model": MINILM}}}]},
        "Only text input is supported",
        id="image-to-text-model",
    ),
    pytest.param(
        "small", {"points": [{"id": 1, "vector": doc("x", BM25)}]}, "should be named", id="sparse-on-unnamed"
    ),
    pytest.param(
        "c",
        {"points": [{"id": 1, "vector": {"bm25": doc("x", BM25, options={"b": 1.5})}}]},
        "BM25 b must be finite and in [0.0, 1.0], got 1.5",
        id="invalid-bm25-options",
    ),
    pytest.param(
        "c",
        {"batch": {"ids": [1], "vectors": [doc("x")]}},
        "Direct Document processing is not supported in top-level batch vectors",
        id="batch-top-level-object",
    ),
    pytest.param(
        "c",
        {"points": [{"id": 1, "vector": {"nope": doc("x")}}]},
        "Not existing vector name",
        id="unknown-name",
    ),
]


@pytest.mark.parametrize(("collection", "body", "message"), BAD_UPSERTS)
def test_bad_upserts_write_nothing_and_bill_nothing(
    api: Api, usage_events: list[UsageEvent], collection: str, body: dict[str, Any], message: str
) -> None:
    status, answer = api.call("put", f"/collections/{collection}/points?wait=true", body)
    assert_error(status, answer, 400, message)
    assert count(api, collection) == 0
    assert usage_events == []


def test_update_vectors_rejects_unnamed_objects(api: Api, usage_events: list[UsageEvent]) -> None:
    api.call("put", "/collections/small/points", {"points": [{"id": 1, "vector": [1, 0, 0]}]})
    status, body = api.call(
        "put", "/collections/small/points/vectors", {"points": [{"id": 1, "vector": doc("x")}]}
    )
    assert_error(status, body, 400, "Direct Document processing not supported for PointVectors")
    assert usage_events == []


def test_malformed_json_and_shapes_are_400(api: Api) -> None:
    response = api.client.put(
        api.base + "/collections/c/points",
        data="{not json",
        content_type="application/json",
        headers=api.headers,
    )
    assert response.status_code == 400
    assert "Format error in JSON body" in response.json()["status"]["error"]
    status, body = api.call("put", "/collections/c/points", {"points": "nope"})
    assert_error(status, body, 400, "Format error in JSON body")
    status, body = api.call("post", "/collections/c/points/query", {"query": {"nearest": {"text": 5}}})
    assert status == 400, body


def test_missing_collection_is_404(api: Api) -> None:
    status, body = api.call("put", "/collections/missing/points", {"points": [{"id": 1, "vector": doc("x")}]})
    assert_error(status, body, 404, "doesn't exist")


def test_query_errors_bill_nothing(api: Api, usage_events: list[UsageEvent]) -> None:
    status, body = api.call("post", "/collections/small/points/query", {"query": doc("three dims wanted")})
    assert_error(status, body, 400, "expected dim: 3, got 384")
    assert usage_events == []


def test_auth_matrix(cluster: CreatedCluster, api: Api) -> None:
    other = cluster_create(name="other", region="us-east-1", tier="paid")
    read_only_key, _ = api_key_create(cluster=cluster.cluster, name="ro", read_only=True)
    revoked_key, revoked = api_key_create(cluster=cluster.cluster, name="old", read_only=False)
    revoked.revoke()
    cid = cluster.cluster.id
    upsert = {"points": [{"id": 1, "vector": [1, 0, 0]}]}

    status, body = Api(cid, None).call("put", "/collections/small/points", upsert)
    assert_error(status, body, 401, "Must provide an API key")
    status, body = Api(cid, other.api_key).call("get", "/collections")
    assert_error(status, body, 403, "another cluster")
    status, body = Api(cid, revoked_key).call("get", "/collections")
    assert_error(status, body, 401, "Invalid API key")
    status, body = Api(cid, read_only_key).call("put", "/collections/small/points", upsert)
    assert_error(status, body, 403, "read-only")
    status, body = Api(cid, read_only_key).call("post", "/collections/small/points/delete", {"points": [1]})
    assert_error(status, body, 403, "read-only")
    status, body = Api(cid, read_only_key).call(
        "post", "/collections/small/points/query", {"query": [1, 0, 0]}
    )
    assert status == 200, body  # reads are fine with a read-only key
    bearer = Api(cid, None)
    status, body = bearer.call("get", "/collections", Authorization=f"Bearer {cluster.api_key}")
    assert status == 200, body
    assert count(api, "small") == 0
    assert ApiKey.objects.filter(cluster=cluster.cluster).count() == 3


def test_inference_off_refuses_objects_but_takes_vectors(
    cluster: CreatedCluster, api: Api, usage_events: list[UsageEvent]
) -> None:
    cluster_update(cluster.cluster.pk, inference_enabled=False)
    status, body = api.call(
        "put", "/collections/c/points", {"points": [{"id": 1, "vector": {"dense": doc("x")}}]}
    )
    assert_error(status, body, 400, "Inference is not enabled")
    status, body = api.call("put", "/collections/small/points", {"points": [{"id": 1, "vector": [1, 0, 0]}]})
    assert status == 200, body
    assert usage_events == []


def test_restarting_cluster_answers_503_with_retry_after(cluster: CreatedCluster, api: Api) -> None:
    cluster_update(cluster.cluster.pk, status=Cluster.Status.RESTARTING)
    response = api.client.get(api.base + "/collections", headers=api.headers)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "restarting" in response.json()["status"]["error"]


def test_root_answers_like_qdrant(cluster: CreatedCluster) -> None:
    response = Client().get(f"/clusters/{cluster.cluster.id}")
    assert response.status_code == 200
    assert response.json()["version"].count(".") == 2
    assert Client().get("/clusters/nope").status_code == 404


def test_usage_in_response_and_idempotency_key_request_id(api: Api, usage_events: list[UsageEvent]) -> None:
    status, body = api.call(
        "post",
        "/collections/c/points/query",
        {"query": doc("hello world"), "using": "dense"},
        **{"Idempotency-Key": "abc-123"},
    )
    assert status == 200, body
    assert body["usage"] == {"inference": {"models": {MINILM: {"tokens": 4}}}}
    assert [(e.model, e.tokens, e.request_id) for e in usage_events] == [(MINILM, 4, "abc-123")]
    status, body = api.call("post", "/collections/c/points/query", {"query": [0.1] * 384, "using": "dense"})
    assert status == 200 and "usage" not in body


def test_oversized_body_is_413_not_500(api: Api, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    status, body = api.call(
        "put", "/collections/small/points", {"points": [{"id": i, "vector": [1, 0, 0]} for i in range(200)]}
    )
    assert_error(status, body, 413, "Payload too large")
    assert count(api, "small") == 0


def test_tokens_per_minute_limit_answers_429_before_any_model_runs(
    cluster: CreatedCluster, api: Api, usage_events: list[UsageEvent]
) -> None:
    from billing.services import cluster_limit_set

    cluster_limit_set(cluster_id=cluster.cluster.id, tokens_per_minute=3)
    query = {"query": doc("hello world"), "using": "dense"}
    status, body = api.call("post", "/collections/c/points/query", query)
    assert status == 200, body  # 4 tokens: the limit is reached only after this request
    response = api.client.post(
        api.base + "/collections/c/points/query", data=json.dumps(query), content_type="application/json",
        headers=api.headers,
    )  # fmt: skip
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert "Too many requests" in response.json()["status"]["error"]
    assert len(usage_events) == 1  # the refused request billed nothing
    status, body = api.call("post", "/collections/c/points/scroll", {})
    assert status == 200, body  # requests that run no model are not limited


def test_points_batch_with_a_bad_later_operation_writes_nothing(api: Api) -> None:
    body = {
        "operations": [
            {"upsert": {"points": [{"id": 1, "vector": [1, 0, 0]}]}},
            {"delete": {"points": ["not-a-uuid"]}},
        ]
    }
    status, answer = api.call("post", "/collections/small/points/batch", body)
    assert_error(status, answer, 400, "is not a valid point ID")
    assert count(api, "small") == 0
