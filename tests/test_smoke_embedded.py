"""Smoke test of the embedded default, as `make run` serves it: gunicorn over SQLite and Qdrant Edge.

The server runs as a real process in a fresh DATA_DIR with no DATABASE_URL / CELERY_BROKER_URL, is driven
with the official qdrant-client, then SIGKILLed right after an acknowledged upsert and started again:
the acknowledged points must still be there.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from qdrant_client import QdrantClient, models

from tests.conftest import MINILM

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def embedded_env(tmp_path: Path, models_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    port = free_port()
    env.update(
        DATA_DIR=str(tmp_path / "data"),
        MODELS_DIR=str(settings.MODELS_DIR),
        PORT=str(port),
        HF_HUB_OFFLINE="1",
        DJANGO_SETTINGS_MODULE="console.settings",
    )
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    return env


def start_server(env: dict[str, str]) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "console.wsgi:application", "--bind", f"127.0.0.1:{env['PORT']}",
         "--workers", "1", "--threads", "4"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    kill_group(server)
    raise AssertionError("server did not start")


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL gunicorn's master and its worker at once (killing the master alone leaves the worker)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@pytest.fixture
def server_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        kill_group(process)


def test_embedded_default_serves_and_survives_sigkill(
    embedded_env: dict[str, str], server_processes: list[subprocess.Popen[bytes]]
) -> None:
    out = subprocess.run(
        [sys.executable, "manage.py", "create_cluster", "--name", "smoke", "--region", "us-east-1",
         "--tier", "paid", "--json"],
        cwd=ROOT, env=embedded_env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["url"] == f"http://127.0.0.1:{embedded_env['PORT']}/clusters/{created['id']}"
    assert (Path(embedded_env["DATA_DIR"]) / "db.sqlite3").exists()

    server_processes.append(start_server(embedded_env))
    client = QdrantClient(url=created["url"], api_key=created["api_key"], cloud_inference=True, timeout=60)
    client.create_collection(
        "s", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
    )
    client.upsert(
        "s",
        points=[
            models.PointStruct(id=i, vector=models.Document(text=f"note {i}", model=MINILM))
            for i in range(50)
        ],
        wait=True,
    )
    # Acknowledged: kill the server without any chance to flush or close.
    kill_group(server_processes[0])

    client.close()  # its pooled connection died with the server

    server_processes.append(start_server(embedded_env))
    client = QdrantClient(url=created["url"], api_key=created["api_key"], cloud_inference=True, timeout=60)
    assert client.count("s").count == 50
    hits = client.query_points("s", query=models.Document(text="note 7", model=MINILM), limit=1).points
    assert hits[0].id == 7
    client.close()
