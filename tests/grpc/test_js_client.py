"""The official JavaScript gRPC client (`@qdrant/js-client-grpc`, installed by `make js`) against the server.

A small node script (tests/js/qdrant_grpc.mjs) creates a collection, upserts Documents, queries by a Document
and counts; its answers are compared with the REST answers for the same data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from console.clusters.services import CreatedCluster
from tests.conftest import MINILM

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

JS_DIR = Path(__file__).resolve().parent.parent / "js"


def test_the_js_grpc_client_upserts_and_queries_documents(
    grpc_port: int, cluster: CreatedCluster, rest_client: QdrantClient
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JavaScript gRPC client cannot run")
    if not (JS_DIR / "node_modules" / "@qdrant" / "js-client-grpc").is_dir():
        pytest.skip("@qdrant/js-client-grpc is not installed: run `make js` (npm install --prefix tests/js)")
    env = {
        **os.environ,
        "GRPC_URL": f"http://127.0.0.1:{grpc_port}",
        "API_KEY": cluster.api_key,
        "MODEL": MINILM,
    }
    result = subprocess.run(
        [node, str(JS_DIR / "qdrant_grpc.mjs")],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["version"].count(".") == 2
    assert seen["upsert"]["status"] == 2  # UpdateStatus.Completed
    assert seen["upsert"]["usage"][MINILM] > 0
    assert seen["count"] == rest_client.count("js-docs").count == 3
    over_rest = rest_client.query_points(
        "js-docs", query=models.Document(text="fruit", model=MINILM), limit=3
    )
    assert [p[0] for p in seen["query"]] == [p.id for p in over_rest.points]
    assert seen["query"][0][0] == 2
    assert [round(p[1], 4) for p in seen["query"]] == [round(p.score, 4) for p in over_rest.points]
    assert list(seen["queryUsage"]) == [MINILM] and seen["queryUsage"][MINILM] > 0
    assert seen["denied"]["code"] == 16  # Code.Unauthenticated
    assert "Invalid API key" in seen["denied"]["message"]
