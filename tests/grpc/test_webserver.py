"""`make run`'s arrangement: granian serving `console.wsgi.served_application` serves REST and gRPC from
one worker process.

The worker owns the clusters' embedded storage (Qdrant Edge allows one opener per directory), so writes over
gRPC and reads over REST meet the same open store; stopping the web server stops the gRPC port with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from qdrant_client import QdrantClient, models

from console.serve import web_argv
from tests.conftest import MINILM
from tests.processes import BIN, ROOT, create_cluster, free_port, kill_group

pytestmark = pytest.mark.slow


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def web_server(embedded_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    env = {**embedded_env, "GRPC_PORT": str(free_port())}
    argv = web_argv(BIN, host="127.0.0.1", port=env["PORT"], workers=1, threads=4, grace=5)
    server = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        port_open(int(env["GRPC_PORT"])) and port_open(int(env["PORT"]))
    ):
        time.sleep(0.2)  # gRPC opens while the worker starts, HTTP once it has started
    try:
        assert httpx.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=5).status_code == 200
        yield server, env
    finally:
        kill_group(server)


def test_grpc_and_rest_share_the_worker_and_stop_with_it(
    web_server: tuple[subprocess.Popen[bytes], dict[str, str]],
) -> None:
    server, env = web_server
    created = create_cluster(env, "g")
    assert created["grpc_url"] == f"http://127.0.0.1:{env['GRPC_PORT']}"

    over_grpc = QdrantClient(
        url=created["url"], grpc_port=int(env["GRPC_PORT"]), prefer_grpc=True, api_key=created["api_key"],
        cloud_inference=True, timeout=60,
    )  # fmt: skip
    over_rest = QdrantClient(url=created["url"], api_key=created["api_key"], cloud_inference=True, timeout=60)
    over_grpc.create_collection(
        "s", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
    )
    over_grpc.upsert(
        "s",
        points=[
            models.PointStruct(id=i, vector=models.Document(text=f"note {i}", model=MINILM)) for i in range(5)
        ],
    )
    assert over_rest.count("s").count == 5  # the same open store
    hits = over_rest.query_points("s", query=models.Document(text="note 3", model=MINILM), limit=1).points
    assert hits[0].id == 3
    over_grpc.close()
    over_rest.close()

    os.killpg(server.pid, signal.SIGTERM)  # what `make run`'s trap does on Ctrl-C
    server.wait(30)
    assert not port_open(int(env["GRPC_PORT"]))


def test_a_worker_whose_main_process_was_killed_stops_too(
    web_server: tuple[subprocess.Popen[bytes], dict[str, str]],
) -> None:
    server, env = web_server
    workers = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    assert len(workers) == 1
    worker = int(workers[0])

    os.kill(server.pid, signal.SIGKILL)  # the main process alone: the OOM killer's way, not a stop
    server.wait(10)

    deadline = time.monotonic() + 20
    while Path(f"/proc/{worker}").exists() and Path(f"/proc/{worker}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the orphaned worker kept serving"
        time.sleep(0.2)
    assert not port_open(int(env["GRPC_PORT"])) and not port_open(int(env["PORT"]))
