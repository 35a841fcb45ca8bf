"""Idempotency-Key as Stripe defines it: replay the same request, refuse another, run nothing twice."""

from __future__ import annotations

import pytest

from billing.models import UsageRecord
from console.clusters.services import CreatedCluster, api_key_create, cluster_create
from inference.usage import UsageEvent
from tests.conftest import MINILM
from tests.helpers import DataPlaneClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api(cluster: CreatedCluster) -> DataPlaneClient:
    client = DataPlaneClient(cluster.cluster.id, cluster.api_key)
    assert client.call("put", "/collections/c", {"vectors": {"size": 384, "distance": "Cosine"}})[0] == 200
    return client


def doc(text: str) -> dict[str, str]:
    return {"text": text, "model": MINILM}


def query(text: str) -> dict[str, object]:
    return {"query": doc(text), "limit": 3}


def test_a_key_reused_with_other_requests_runs_and_bills_only_the_first(
    api: DataPlaneClient, cluster: CreatedCluster, usage_events: list[UsageEvent]
) -> None:
    _, read_only_secret = None, api_key_create(cluster=cluster.cluster, name="ro", read_only=True)[0]
    reader = DataPlaneClient(cluster.cluster.id, read_only_secret)
    status, first = reader.call(
        "post", "/collections/c/points/query", query("text 0"), **{"Idempotency-Key": "k"}
    )
    assert status == 200
    tokens = first["usage"]["inference"]["models"][MINILM]["tokens"]
    for i in range(1, 10):
        status, body = reader.call(
            "post", "/collections/c/points/query", query(f"text {i}"), **{"Idempotency-Key": "k"}
        )
        assert status == 400, body
        assert "different request" in body["status"]["error"] and "usage" not in body
    assert [e.tokens for e in usage_events] == [tokens]
    assert sum(UsageRecord.objects.values_list("tokens", flat=True)) == tokens


def test_the_same_request_is_replayed_without_running_or_writing_again(
    api: DataPlaneClient, usage_events: list[UsageEvent]
) -> None:
    body = {"points": [{"id": 1, "vector": doc("Mars"), "payload": {"v": "first"}}]}
    status, first = api.call("put", "/collections/c/points", body, **{"Idempotency-Key": "upsert-1"})
    assert status == 200
    # Changed meanwhile by another request: a replay must not write the point again.
    assert (
        api.call("post", "/collections/c/points/payload", {"payload": {"v": "later"}, "points": [1]})[0]
        == 200
    )
    status, again = api.call("put", "/collections/c/points", body, **{"Idempotency-Key": "upsert-1"})
    assert status == 200
    assert again["result"] == first["result"] and again["usage"] == first["usage"]
    assert len(usage_events) == 1
    status, point = api.call("get", "/collections/c/points/1")
    assert point["result"]["payload"] == {"v": "later"}


def test_a_failed_request_frees_its_key_and_keys_are_per_cluster(
    api: DataPlaneClient, usage_events: list[UsageEvent]
) -> None:
    bad = {"points": [{"id": 1, "vector": {"text": "x", "model": "sentence-transformers/nope"}}]}
    assert api.call("put", "/collections/c/points", bad, **{"Idempotency-Key": "k"})[0] == 400
    good = {"points": [{"id": 1, "vector": doc("x")}]}
    assert api.call("put", "/collections/c/points", good, **{"Idempotency-Key": "k"})[0] == 200

    other = cluster_create(name="other", region="us-east-1", tier="paid")
    other_api = DataPlaneClient(other.cluster.id, other.api_key)
    assert other_api.call("put", "/collections/c", {"vectors": {"size": 384, "distance": "Cosine"}})[0] == 200
    assert other_api.call("put", "/collections/c/points", good, **{"Idempotency-Key": "k"})[0] == 200
    assert len(usage_events) == 2  # one run on each cluster


def test_keys_have_a_length_limit(api: DataPlaneClient) -> None:
    status, body = api.call(
        "post", "/collections/c/points/query", query("x"), **{"Idempotency-Key": "k" * 256}
    )
    assert status == 400 and "Idempotency-Key" in body["status"]["error"]
    assert (
        api.call("post", "/collections/c/points/query", query("x"), **{"Idempotency-Key": "k" * 255})[0]
        == 200
    )
