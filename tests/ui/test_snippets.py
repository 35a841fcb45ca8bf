"""The usage examples shown on the Inference tab, copied from the page and run against a live server.

Exactly what a person does: open the tab, copy the Python example of a model, put their API key in, run it.
Each example creates its collection, upserts a point with a `Document` and queries it; the check is that it
runs cleanly, prints the point, and that the collection really holds it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import LazySettings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from console.clusters.services import CreatedCluster, CreatedUser
from console.web.snippets import API_KEY_PLACEHOLDER
from tests.conftest import BM25, MINILM, MINILM_L3
from tests.ui.conftest import snippets

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def shown(
    live_server: Any,
    settings: LazySettings,
    admin: CreatedUser,
    make_cluster: Callable[..., CreatedCluster],
    models_dir: Path,
) -> tuple[CreatedCluster, str]:
    """A cluster with inference on, and its Inference tab as the live server renders it."""
    settings.PUBLIC_URL = live_server.url  # the URL the examples point at
    created = make_cluster(created_at=timezone.now())
    client = Client()
    client.force_login(admin.user)
    html = client.get(reverse("console:cluster-inference", args=[created.cluster.pk])).content.decode()
    return created, html


def run(command: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # qdrant-client warns about an API key over http
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("model", [MINILM, MINILM_L3, BM25])
def test_the_python_example_runs_against_the_live_server(
    model: str, shown: tuple[CreatedCluster, str], tmp_path: Path
) -> None:
    created, html = shown
    code = snippets(html, "python")[model]
    assert API_KEY_PLACEHOLDER in code
    script = tmp_path / "example.py"
    script.write_text(code.replace(API_KEY_PLACEHOLDER, created.api_key))

    result = run([sys.executable, str(script)], tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "id=1" in result.stdout and "Qdrant is a vector similarity search engine" in result.stdout
    collection = code.split('collection_name="', 1)[1].split('"', 1)[0]
    points = httpx.post(
        f"{created_url(created)}/collections/{collection}/points/scroll",
        headers={"api-key": created.api_key},
        json={"with_vector": True},
        timeout=30,
    ).json()["result"]["points"]
    assert [p["id"] for p in points] == [1] and points[0]["vector"]


def test_the_python_grpc_example_runs_against_the_live_grpc_server(
    shown_grpc: tuple[CreatedCluster, str], tmp_path: Path
) -> None:
    created, html = shown_grpc
    code = snippets(html, "python-grpc")[MINILM]
    assert "prefer_grpc=True" in code and API_KEY_PLACEHOLDER in code
    script = tmp_path / "example.py"
    script.write_text(code.replace(API_KEY_PLACEHOLDER, created.api_key))

    result = run([sys.executable, str(script)], tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "id=1" in result.stdout and "Qdrant is a vector similarity search engine" in result.stdout
    collection = code.split('collection_name="', 1)[1].split('"', 1)[0]
    points = httpx.post(
        f"{created_url(created)}/collections/{collection}/points/scroll",
        headers={"api-key": created.api_key},
        json={},
        timeout=30,
    ).json()["result"]["points"]
    assert [p["id"] for p in points] == [1]


@pytest.fixture
def shown_grpc(
    live_server: Any,
    settings: LazySettings,
    admin: CreatedUser,
    make_cluster: Callable[..., CreatedCluster],
    models_dir: Path,
) -> Iterator[tuple[CreatedCluster, str]]:
    """As `shown`, with a gRPC server in this process that the page's gRPC URL points at."""
    from inference.grpc.server import build_server

    server, port = build_server(port=0, host="127.0.0.1")
    server.start()
    settings.PUBLIC_URL = live_server.url
    settings.GRPC_PUBLIC_URL = f"http://127.0.0.1:{port}"
    created = make_cluster(created_at=timezone.now())
    client = Client()
    client.force_login(admin.user)
    html = client.get(reverse("console:cluster-inference", args=[created.cluster.pk])).content.decode()
    yield created, html
    server.stop(0).wait()


def created_url(created: CreatedCluster) -> str:
    from django.conf import settings

    return f"{settings.PUBLIC_URL}/clusters/{created.cluster.pk}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_http_example_runs_against_the_live_server(
    shown: tuple[CreatedCluster, str], tmp_path: Path
) -> None:
    created, html = shown
    script = tmp_path / "example.sh"
    script.write_text(
        "set -euo pipefail\n" + snippets(html, "http")[BM25].replace(API_KEY_PLACEHOLDER, created.api_key)
    )
    result = run(["bash", str(script)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # Three JSON answers: created, upserted, and the query that finds the point.
    assert result.stdout.count('"status":"ok"') == 3, result.stdout
    assert '"id":1' in result.stdout
