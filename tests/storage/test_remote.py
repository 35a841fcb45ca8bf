"""RemoteStore: the real qdrant-client talking to a tiny local HTTP server with canned Qdrant answers.

No Qdrant server is available here, so only what does not need one is checked: the API key stays out
of repr / error messages, and server errors keep their status code and Qdrant message.
"""

from __future__ import annotations

import json
import socket
import threading
import traceback
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from qdrant_client.http import models

from inference.storage import (
    BadRequest,
    CollectionExists,
    CollectionNotFound,
    RemoteStore,
    StorageError,
    VectorStore,
)

SECRET = "sk-test-very-secret-key-1234"

# path -> (status, body) for every method; the bodies are what Qdrant answers.
CANNED: dict[str, tuple[int, Any]] = {
    "/collections/missing": (
        404,
        {"status": {"error": "Not found: Collection `missing` doesn't exist!"}, "time": 0.000012},
    ),
    "/collections/dup": (
        400,
        {"status": {"error": "Wrong input: Collection `dup` already exists!"}, "time": 0.000021},
    ),
    "/collections/docs/points/query": (
        400,
        {
            "status": {"error": "Wrong input: Vector dimension error: expected dim: 384, got 3"},
            "time": 0.0001,
        },
    ),
    "/collections/broken": (500, "upstream exploded"),
    "/collections/ok": (
        200,
        {
            "result": {
                "status": "green",
                "optimizer_status": "ok",
                "indexed_vectors_count": 0,
                "points_count": 3,
                "segments_count": 2,
                "config": {
                    "params": {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 1},
                    "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
                    "optimizer_config": {"default_segment_number": 0, "flush_interval_sec": 5},
                    "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
                },
                "payload_schema": {},
            },
            "status": "ok",
            "time": 0.0001,
        },
    ),
}


class _Handler(BaseHTTPRequestHandler):
    seen_keys: list[str | None] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        type(self).seen_keys.append(self.headers.get("api-key"))
        path = self.path.split("?", 1)[0]
        status, body = CANNED.get(path, (404, {"status": {"error": "no such canned path"}, "time": 0}))
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json" if not isinstance(body, str) else "text/plain")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.seen_keys = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def remote(server: str) -> Iterator[RemoteStore]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qdrant-client warns about an API key over plain http
        store = RemoteStore(server, api_key=SECRET, timeout=5)
    yield store
    store.close()


def _assert_no_secret(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)
    assert SECRET not in text


def test_repr_hides_the_api_key(remote: RemoteStore, server: str) -> None:
    assert isinstance(remote, VectorStore)
    assert SECRET not in repr(remote)
    assert "***" in repr(remote)
    assert server in repr(remote)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_credentials = RemoteStore(f"http://user:{SECRET}@127.0.0.1:1/?api_key={SECRET}", api_key=None)
    assert SECRET not in repr(with_credentials)
    with_credentials.close()


def test_not_found_keeps_status_and_message(remote: RemoteStore) -> None:
    with pytest.raises(CollectionNotFound) as exc:
        remote.get_collection("missing")
    assert exc.value.status_code == 404
    assert exc.value.message == "Not found: Collection `missing` doesn't exist!"
    _assert_no_secret(exc.value)
    # It really went over the socket, with the key in qdrant-client's header.
    assert _Handler.seen_keys == [SECRET]


def test_bad_request_keeps_status_and_message(remote: RemoteStore) -> None:
    with pytest.raises(CollectionExists) as exists:
        remote.create_collection(
            "dup", models.CreateCollection(vectors=models.VectorParams(size=4, distance=models.Distance.DOT))
        )
    assert exists.value.status_code == 400
    assert exists.value.message == "Wrong input: Collection `dup` already exists!"

    with pytest.raises(BadRequest) as bad:
        remote.query("docs", models.QueryRequest(query=[0.1, 0.2, 0.3]))
    assert bad.value.status_code == 400
    assert bad.value.message == "Wrong input: Vector dimension error: expected dim: 384, got 3"
    _assert_no_secret(bad.value)


def test_non_json_server_error_and_success(remote: RemoteStore) -> None:
    with pytest.raises(StorageError) as exc:
        remote.get_collection("broken")
    assert exc.value.status_code == 500
    assert exc.value.message == "upstream exploded"

    info = remote.get_collection("ok")
    assert info["points_count"] == 3
    assert info["config"]["params"]["vectors"]["size"] == 4
    assert info["config"]["params"]["vectors"]["distance"] == "Cosine"
    models.CollectionInfo.model_validate(info)
    assert remote.vector_config("ok").dense[""].size == 4


def test_unreachable_server_is_502_without_secret() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = RemoteStore(f"http://127.0.0.1:{port}", api_key=SECRET, timeout=2)
    with pytest.raises(StorageError) as exc:
        store.list_collections()
    assert exc.value.status_code == 502
    _assert_no_secret(exc.value)
    store.close()
