"""Every route of Qdrant's REST API, with every method: JSON in Qdrant's shape, never a 5xx, never HTML.

The route list is read from the installed qdrant-client's generated REST API (generated from Qdrant's
OpenAPI document), plus the legacy search / recommend / discover paths Qdrant still serves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import qdrant_client.http.api as generated_api
from django.test import Client

from console.clusters.services import CreatedCluster
from tests.helpers import DataPlaneClient

pytestmark = pytest.mark.django_db(transaction=True)

LEGACY = [
    ("POST", "/collections/{collection_name}/points/search"),
    ("POST", "/collections/{collection_name}/points/search/batch"),
    ("POST", "/collections/{collection_name}/points/search/groups"),
    ("POST", "/collections/{collection_name}/points/recommend"),
    ("POST", "/collections/{collection_name}/points/recommend/batch"),
    ("POST", "/collections/{collection_name}/points/recommend/groups"),
    ("POST", "/collections/{collection_name}/points/discover"),
    ("POST", "/collections/{collection_name}/points/discover/batch"),
]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
PLAIN_TEXT = {"/healthz", "/livez", "/readyz"}


def openapi_routes() -> list[tuple[str, str]]:
    """(method, path template) of every operation of qdrant-client's generated REST API."""
    routes = set(LEGACY)
    for source in Path(generated_api.__file__).parent.glob("*_api.py"):
        text = source.read_text()
        for method, url in re.findall(r'method="([A-Z]+)",\s*url="([^"]+)"', text):
            routes.add((method, url))
    return sorted(routes, key=lambda r: (r[1], r[0]))


ROUTES = openapi_routes()
PATHS = sorted({p for _, p in ROUTES})


def fill(template: str) -> str:
    return (
        template.replace("{collection_name}", "c")
        .replace("{vector_name}", "v")
        .replace("{field_name}", "f")
        .replace("{id}", "1")
        .replace("{shard_id}", "0")
        .replace("{snapshot_name}", "s.snapshot")
        .replace("{peer_id}", "7")
    )


@pytest.fixture
def api(cluster: CreatedCluster) -> DataPlaneClient:
    api = DataPlaneClient(cluster.cluster.id, cluster.api_key)
    status, _ = api.call("put", "/collections/c", {"vectors": {"size": 3, "distance": "Cosine"}})
    assert status == 200
    status, _ = api.call("put", "/collections/c/points", {"points": [{"id": 1, "vector": [1, 0, 0]}]})
    assert status == 200
    return api


def test_the_route_list_is_complete() -> None:
    assert len(ROUTES) > 60
    assert ("PATCH", "/collections/{collection_name}") in ROUTES
    assert ("POST", "/collections/{collection_name}/points/search/matrix/pairs") in ROUTES


def send(api: DataPlaneClient, method: str, path: str, body: Any = None, **extra: Any) -> Any:
    data = json.dumps({} if body is None else body) if method not in ("GET", "HEAD") else None
    return api.client.generic(
        method,
        api.base + path,
        data=data or "",
        content_type=extra.pop("content_type", "application/json"),
        headers={**api.headers, **extra.pop("headers", {})},
    )


def assert_qdrant_shape(response: Any, method: str, path: str) -> None:
    where = f"{method} {path}"
    # 501 is the one 5xx allowed: a Qdrant feature this data plane says plainly it does not have.
    assert response.status_code < 500 or response.status_code == 501, (where, response.content[:300])
    content_type = response.headers.get("Content-Type", "")
    assert "html" not in content_type, (where, content_type)
    if path in PLAIN_TEXT and response.status_code == 200 and method in ("GET", "HEAD"):
        assert content_type.startswith("text/plain"), where
        return
    assert content_type.startswith("application/json"), (where, content_type)
    if method == "HEAD":
        return
    body = response.json()
    assert "time" in body or "result" in body or method == "OPTIONS" or path == "/", (where, body)
    if response.status_code >= 400:
        assert set(body) == {"status", "time"}, (where, body)
        assert isinstance(body["status"]["error"], str) and body["status"]["error"], where


@pytest.mark.parametrize("template", PATHS)
def test_every_route_with_every_method_answers_json_and_no_5xx(api: DataPlaneClient, template: str) -> None:
    path = fill(template)
    known = {m for m, p in ROUTES if p == template}
    for method in METHODS:
        response = send(api, method, path)
        assert_qdrant_shape(response, method, path)
        if method not in known and method not in ("HEAD", "OPTIONS"):
            assert response.status_code == 405, (method, path, response.status_code, response.content)
        if method in known:
            assert response.status_code != 405, (method, path, response.content)
            assert response.status_code != 404 or b"Not found: no route" not in response.content, (
                method,
                path,
            )


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/collections/c/nope",
        "/collections/c/points/search/nope",
        "/collections/c/points/1/x",
        "/a/b/c/d",
    ],
)
def test_unknown_paths_are_json_404_for_every_method(api: DataPlaneClient, path: str) -> None:
    for method in METHODS:
        response = send(api, method, path)
        assert response.status_code == 404, (method, path)
        assert response.headers["Content-Type"].startswith("application/json")
        if method != "HEAD":
            body = response.json()
            assert set(body) == {"status", "time"}
            assert "Not found" in body["status"]["error"]


def test_unknown_path_without_a_key_is_401_json(api: DataPlaneClient, cluster: CreatedCluster) -> None:
    response = Client().get(f"/clusters/{cluster.cluster.id}/nope")
    assert response.status_code == 401
    assert set(response.json()) == {"status", "time"}


def test_points_search_is_not_captured_by_points_id(api: DataPlaneClient) -> None:
    response = send(api, "POST", "/collections/c/points/search", {"vector": [1, 0, 0], "limit": 1})
    assert response.status_code == 200, response.content
    assert [p["id"] for p in response.json()["result"]] == [1]
    assert send(api, "GET", "/collections/c/points/1").json()["result"]["id"] == 1


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("application/x-www-form-urlencoded", "points=1"),
        (
            "multipart/form-data; boundary=x",
            "--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--\r\n",
        ),
        ("text/plain", '{"points": [{"id": 2, "vector": [0, 1, 0]}]}'),
        ("application/xml", "<points/>"),
    ],
)
def test_non_json_bodies_are_415_and_write_nothing(
    api: DataPlaneClient, content_type: str, data: str
) -> None:
    response = api.client.put(
        api.base + "/collections/c/points", data=data, content_type=content_type, headers=api.headers
    )
    assert response.status_code == 415, response.content
    body = response.json()
    assert set(body) == {"status", "time"} and "application/json" in body["status"]["error"]
    _, count = api.call("post", "/collections/c/points/count", {"exact": True})
    assert count["result"]["count"] == 1


def test_accept_html_still_answers_json(api: DataPlaneClient) -> None:
    for path in ("/collections", "/nope", "/collections/c/points/1"):
        response = api.client.get(api.base + path, headers={**api.headers, "Accept": "text/html"})
        assert response.headers["Content-Type"].startswith("application/json"), path


def test_a_wrong_method_is_405_naming_the_allowed_ones(api: DataPlaneClient) -> None:
    response = api.client.delete(api.base + "/collections/c/points/query", headers=api.headers)
    assert response.status_code == 405
    assert response.headers["Allow"].split(", ") == ["POST", "OPTIONS"]
    assert response.json()["status"]["error"] == 'Method not allowed: Method "DELETE" not allowed.'


@pytest.mark.parametrize("length", ["", "0", "-3", "abc"])
def test_a_body_without_a_valid_length_is_no_body(api: DataPlaneClient, length: str) -> None:
    # As DRF read requests before the data plane parsed bodies itself: an empty query, not a 500.
    response = api.client.post(
        api.base + "/collections/c/points/count",
        data='{"filter": {"must": [{"has_id": [7]}]}}',
        content_type="application/json",
        headers=api.headers,
        CONTENT_LENGTH=length,
    )
    assert response.status_code == 200, response.content
    assert response.json()["result"] == {"count": 1}  # the filter was not read


def test_a_json_body_in_another_charset_is_decoded(api: DataPlaneClient) -> None:
    body = '{"points": [{"id": 3, "vector": [0, 1, 0], "payload": {"name": "café"}}]}'
    response = api.client.put(
        api.base + "/collections/c/points",
        data=body.encode("latin-1"),
        content_type="application/json; charset=latin-1",
        headers=api.headers,
    )
    assert response.status_code == 200, response.content
    _, point = api.call("get", "/collections/c/points/3")
    assert point["result"]["payload"] == {"name": "café"}


def test_options_describes_the_route_as_json(api: DataPlaneClient) -> None:
    response = api.client.options(api.base + "/collections/c/points/query", headers=api.headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["renders"] == ["application/json"]


@pytest.mark.parametrize("body", ["null", '""'])
def test_a_null_or_empty_string_body_is_no_body(api: DataPlaneClient, body: str) -> None:
    response = api.client.post(
        api.base + "/collections/c/points/count",
        data=body,
        content_type="application/json",
        headers=api.headers,
    )
    assert response.status_code == 200, response.content
    assert response.json()["result"] == {"count": 1}


def test_a_body_that_is_not_an_object_is_400(api: DataPlaneClient) -> None:
    response = api.client.post(
        api.base + "/collections/c/points/count",
        data="[1]",
        content_type="application/json",
        headers=api.headers,
    )
    assert response.status_code == 400
    assert "expected a JSON object" in response.json()["status"]["error"]
