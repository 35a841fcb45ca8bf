"""The server as `make run` serves it, as a real process: start it, SIGKILL it (fixtures and helpers)."""

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
from typing import Any

import httpx
import pytest
from django.conf import settings

from console.serve import web_argv

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


def start_server(env: dict[str, str], *, as_make_run: bool = False) -> subprocess.Popen[bytes]:
    """The web server serving the app as `make run` starts it (console/serve.py's command line);
    `as_make_run` serves `console.wsgi.served_application` as `make run` and compose do (the worker then
    registers itself as a replica and serves gRPC when GRPC_PORT is not 0), else the bare application."""
    argv = web_argv(
        BIN, host="127.0.0.1", port=env["PORT"], workers=1, threads=4, grace=5, make_run=as_make_run
    )
    server = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    kill_group(server)
    raise AssertionError("server did not start")


def create_cluster(env: dict[str, str], name: str) -> dict[str, Any]:
    """`manage.py create_cluster --json` (a paid us-east-1 cluster) run in `env`; what it printed."""
    done = subprocess.run(
        [sys.executable, "manage.py", "create_cluster", "--name", name, "--region", "us-east-1",
         "--tier", "paid", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    created: dict[str, Any] = json.loads(done.stdout)
    return created


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the web server's main process and its worker at once (killing the main one alone leaves the
    worker)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def processes_mentioning(text: str) -> list[str]:
    """Every process whose command line contains `text` (e.g. a test's DATA_DIR), as "pid: command line"."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.fixture
def server_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        kill_group(process)


# --- a Qdrant server for the remote storage mode: a second instance of this project's data plane ---


@pytest.fixture(scope="session")
def qdrant_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[str, str]]:
    """(url, api key) of a real Qdrant-compatible server: this project's data plane in a web server process
    of its own (own DATA_DIR, SQLite), serving one cluster whose URL is the shared server's base URL.

    No Qdrant server binary can be installed here; the data plane speaks the same REST API, and
    RemoteStore reaches it through qdrant-client as it would reach Qdrant (a base URL with a path)."""
    data_dir = tmp_path_factory.mktemp("qdrant-server")
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "QDRANT_URL")
    }
    env.update(
        DATA_DIR=str(data_dir), MODELS_DIR=str(models_dir), PORT=str(free_port()), GRPC_PORT="0",
        HF_HUB_OFFLINE="1", DJANGO_SETTINGS_MODULE="console.settings", RUN_SETTINGS_FILE="/dev/null",
    )  # fmt: skip
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    cluster = create_cluster(env, "shared-qdrant")
    server = start_server(env)
    try:
        yield cluster["url"], cluster["api_key"]
    finally:
        kill_group(server)


@pytest.fixture(autouse=True)
def storage_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """ "embedded", or "remote" when TEST_STORAGE=remote: then every cluster of the test stores its vectors
    in its own namespace on `qdrant_server` (QDRANT_URL), so the same tests run on both backends."""
    if os.environ.get("TEST_STORAGE", "") != "remote":
        yield "embedded"
        return
    url, key = request.getfixturevalue("qdrant_server")
    overrides = request.getfixturevalue("settings")
    overrides.QDRANT_URL, overrides.QDRANT_API_KEY = url, key
    yield "remote"
