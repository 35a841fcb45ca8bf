"""Numbers Qdrant's parser refuses are refused here too, and nothing a collection holds breaks a read."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from qdrant_client.http import models

from console.clusters.services import CreatedCluster
from inference import stores
from inference.hooks import ClusterInfo
from tests.helpers import DataPlaneClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api(cluster: CreatedCluster) -> DataPlaneClient:
    client = DataPlaneClient(cluster.cluster.id, cluster.api_key)
    assert client.call("put", "/collections/c", {"vectors": {"size": 4, "distance": "Cosine"}})[0] == 200
    return client


def raw(api: DataPlaneClient, method: str, path: str, text: str) -> tuple[int, dict[str, object]]:
    response = getattr(Client(), method)(
        api.base + path, data=text, content_type="application/json", headers=api.headers
    )
    return response.status_code, response.json()


def count(api: DataPlaneClient) -> int:
    status, body = api.call("post", "/collections/c/points/count", {"exact": True})
    assert status == 200
    return int(body["result"]["count"])  # type: ignore[index]


@pytest.mark.parametrize(
    "text",
    [
        '{"points":[{"id":3,"vector":[1e999,0.2,0.3,0.4]}]}',
        '{"points":[{"id":3,"vector":[-1e400,0.2,0.3,0.4]}]}',
        '{"points":[{"id":3,"vector":[NaN,0.2,0.3,0.4]}]}',
        '{"points":[{"id":3,"vector":[Infinity,0.2,0.3,0.4]}]}',
    ],
)
def test_overflowing_and_non_finite_numbers_are_refused_and_write_nothing(
    api: DataPlaneClient, text: str
) -> None:
    status, body = raw(api, "put", "/collections/c/points", text)
    assert status == 400, body
    assert "status" in body and "time" in body
    assert count(api) == 0


def test_query_vectors_and_thresholds_are_checked_too(api: DataPlaneClient) -> None:
    assert raw(api, "post", "/collections/c/points/query", '{"query":[1e999,0,0,0]}')[0] == 400
    status, _ = raw(api, "post", "/collections/c/points/query", '{"query":[1,0,0,0],"score_threshold":1e999}')
    assert status == 400


def test_deep_nesting_and_huge_integers_are_client_errors(api: DataPlaneClient) -> None:
    deep = '{"filter":' * 5000 + "{}" + "}" * 5000
    status, body = raw(api, "post", "/collections/c/points/scroll", deep)
    assert status == 400, body
    for limit in (10**20, 2**64):
        status, body = api.call("post", "/collections/c/points/scroll", {"limit": limit})
        assert 400 <= status < 500, body


def test_a_collection_already_holding_infinity_stays_readable(
    api: DataPlaneClient, cluster: CreatedCluster, storage_backend: str
) -> None:
    if storage_backend == "remote":
        pytest.skip("a Qdrant server refuses non-finite numbers itself: only embedded storage can hold them")
    # Written straight into storage, as the data plane accepted it before numbers were checked.
    info = ClusterInfo(id=cluster.cluster.id, restarting=False, inference_enabled=True)
    store = stores.store_for(info)
    store.upsert("c", [models.PointStruct(id=1, vector=[float("inf"), 0.2, 0.3, 0.4], payload={"x": 1})])
    for path, body in (
        ("/collections/c/points/scroll", {"with_vector": True}),
        ("/collections/c/points", {"ids": [1], "with_vector": True}),
        ("/collections/c/points/query", {"query": [0.1, 0.2, 0.3, 0.4], "with_vector": True}),
    ):
        status, answer = api.call("post", path, body)
        assert status == 200, (path, answer)
        assert json.dumps(answer, allow_nan=False)  # strict JSON: nothing non-finite on the wire


def test_a_lone_surrogate_is_refused_and_writes_nothing(api: DataPlaneClient) -> None:
    # serde_json refuses an unpaired UTF-16 escape; stored, it could never be written out as UTF-8 again.
    text = '{"points":[{"id":3,"vector":[0.1,0.2,0.3,0.4],"payload":{"name":"\\ud800"}}]}'
    status, body = raw(api, "put", "/collections/c/points", text)
    assert status == 400, body
    assert "surrogate" in str(body["status"])
    assert count(api) == 0


def test_a_body_in_another_declared_charset_is_read_in_it(api: DataPlaneClient) -> None:
    body = '{"points":[{"id":3,"vector":[0.1,0.2,0.3,0.4],"payload":{"name":"café"}}]}'.encode("latin-1")
    response = Client().put(
        api.base + "/collections/c/points?wait=true",
        data=body,
        content_type="application/json; charset=latin-1",
        headers=api.headers,
    )
    assert response.status_code == 200, response.content
    _, answer = api.call("post", "/collections/c/points/scroll", {"with_payload": True})
    assert answer["result"]["points"][0]["payload"] == {"name": "café"}  # type: ignore[index]
