"""QDRANT_URL: every cluster stores its vectors in a namespace of its own on one shared Qdrant-compatible
server (a second instance of this project's data plane, started by the test), through real HTTP."""

from __future__ import annotations

import httpx
import pytest
from django.conf import LazySettings

from console.clusters.services import CreatedCluster
from inference import stores
from tests.conftest import MINILM
from tests.helpers import DataPlaneClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

VECTORS = {"size": 4, "distance": "Cosine"}


@pytest.fixture
def shared(qdrant_server: tuple[str, str], settings: LazySettings) -> tuple[str, str]:
    settings.QDRANT_URL, settings.QDRANT_API_KEY = qdrant_server
    return qdrant_server


def on_server(shared: tuple[str, str]) -> list[str]:
    """The collections the shared server really holds."""
    url, key = shared
    answer = httpx.get(f"{url}/collections", headers={"api-key": key}, timeout=10).json()
    return sorted(c["name"] for c in answer["result"]["collections"])


def test_clusters_share_the_server_in_separate_namespaces(
    shared: tuple[str, str], make_cluster: object
) -> None:
    one, two = make_cluster(), make_cluster()  # type: ignore[operator]
    a, b = DataPlaneClient(one.cluster.id, one.api_key), DataPlaneClient(two.cluster.id, two.api_key)
    assert a.call("put", "/collections/docs", {"vectors": VECTORS})[0] == 200
    assert b.call("put", "/collections/docs", {"vectors": VECTORS})[0] == 200  # same name, no clash
    assert a.call("put", "/collections/only-a", {"vectors": VECTORS})[0] == 200
    point = {"id": 1, "vector": [0.1, 0.2, 0.3, 0.4], "payload": {"owner": "a"}}
    assert a.call("put", "/collections/docs/points?wait=true", {"points": [point]})[0] == 200

    # Stored on the server under each cluster's prefix...
    names = on_server(shared)
    assert {f"{one.cluster.id}__docs", f"{one.cluster.id}__only-a", f"{two.cluster.id}__docs"} <= set(names)
    # ...and each cluster sees only its own, under the names it chose.
    assert [c["name"] for c in a.call("get", "/collections")[1]["result"]["collections"]] == [
        "docs",
        "only-a",
    ]
    assert [c["name"] for c in b.call("get", "/collections")[1]["result"]["collections"]] == ["docs"]
    assert b.call("post", "/collections/docs/points/count", {})[1]["result"]["count"] == 0
    assert a.call("post", "/collections/docs/points/count", {})[1]["result"]["count"] == 1

    # Another cluster's collection does not exist for b, and errors name only what the client sent.
    status, body = b.call("get", "/collections/only-a")
    assert status == 404
    assert body["status"]["error"] == "Not found: Collection `only-a` doesn't exist!"
    status, body = b.call("put", "/collections/docs", {"vectors": VECTORS})
    assert status == 400 and body["status"]["error"] == "Wrong input: Collection `docs` already exists!"
    assert two.cluster.id not in str(body) and one.cluster.id not in str(b.call("get", "/collections")[1])
    # A name that cannot be prefixed within Qdrant's 255 characters is refused, not truncated.
    status, body = a.call("put", "/collections/" + "x" * 250, {"vectors": VECTORS})
    assert status == 422 and "characters" in body["status"]["error"]

    assert a.call("delete", "/collections/docs")[0] == 200
    assert f"{one.cluster.id}__docs" not in on_server(shared) and f"{two.cluster.id}__docs" in on_server(
        shared
    )


def test_documents_are_embedded_here_and_stored_remotely(
    shared: tuple[str, str], cluster: CreatedCluster
) -> None:
    created = cluster  # inference on
    api = DataPlaneClient(created.cluster.id, created.api_key)
    assert api.call("put", "/collections/docs", {"vectors": {"size": 384, "distance": "Cosine"}})[0] == 200
    points = [
        {"id": i, "vector": {"text": t, "model": MINILM}} for i, t in enumerate(["Mars", "Venus", "cake"])
    ]
    status, body = api.call("put", "/collections/docs/points?wait=true", {"points": points})
    assert status == 200, body
    assert body["usage"]["inference"]["models"][MINILM]["tokens"] > 0
    status, body = api.call(
        "post", "/collections/docs/points/query", {"query": {"text": "planet", "model": MINILM}}
    )
    assert status == 200 and {p["id"] for p in body["result"]["points"][:2]} == {0, 1}
    # The server holds the vectors (it never saw a Document): read them back from it directly.
    url, key = shared
    stored = httpx.post(
        f"{url}/collections/{created.cluster.id}__docs/points", headers={"api-key": key},
        json={"ids": [0], "with_vector": True}, timeout=10,
    ).json()  # fmt: skip
    assert len(stored["result"][0]["vector"]) == 384
    assert stores.backend(stores_info(created)) == "shared"


def stores_info(created: CreatedCluster) -> object:
    from inference.hooks import ClusterInfo

    return ClusterInfo(id=created.cluster.id, restarting=False, inference_enabled=True)


def test_a_wrong_api_key_or_a_dead_server_is_a_clear_error(
    shared: tuple[str, str], make_cluster: object, settings: LazySettings
) -> None:
    created: CreatedCluster = make_cluster()  # type: ignore[operator]
    api = DataPlaneClient(created.cluster.id, created.api_key)
    settings.QDRANT_API_KEY = "not-the-key"
    status, body = api.call("get", "/collections")
    assert status in (401, 403) and "not-the-key" not in str(body)
    stores.store_close(created.cluster.id)
    settings.QDRANT_URL = "http://127.0.0.1:9/clusters/x"
    status, body = api.call("get", "/collections")
    assert status == 502 and "did not answer" in body["status"]["error"]
