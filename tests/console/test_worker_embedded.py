"""`make run`'s embedded default end to end, and a worker SIGKILLed in the middle of a restart.

Real processes in a fresh DATA_DIR with no DATABASE_URL / CELERY_BROKER_URL: granian (the web process,
which owns storage and the ONNX engine) and `celery -A console worker` on the SQLite-backed broker (kombu's
SQLAlchemy transport) over the SQLite database, driven through the HTTP API like the console drives them.
Independent of the test database, so it runs the same under SQLite and PostgreSQL test runs.
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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings

from console.serve import web_argv
from tests.conftest import MINILM
from tests.fixtures import TEST_QUEUE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and its children (the web server's worker, celery's pool) at once."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@dataclass
class Stack:
    """The embedded deployment: its environment, the web server's URL and an admin's API token."""

    env: dict[str, str]
    url: str
    token: str
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def broker_url(self) -> str:
        return f"sqla+sqlite:///{self.env['DATA_DIR']}/celery-broker.sqlite3"

    def manage(self, *args: str) -> dict[str, Any]:
        command = [sys.executable, "manage.py", *args, "--json"]
        out = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    def start_worker(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        worker = subprocess.Popen(
            [str(BIN / "celery"), "-A", "console", "worker", "--loglevel", "INFO", "--pool", "solo",
             "--hostname", f"{name}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat",
             *args],
            cwd=ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.processes.append(worker)
        return worker

    def stop_worker(self, worker: subprocess.Popen[bytes]) -> None:
        """Warm shutdown (SIGTERM), so the next test's workers are the only consumers of the queue."""
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def wait_log(self, name: str, predicate: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.log(name)):
            assert time.monotonic() < deadline, f"{name}: {self.log(name)[-3000:]}"
            time.sleep(0.1)

    def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Token {self.token}"}
        return httpx.request(method, f"{self.url}{path}", json=body, headers=headers, timeout=30)

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.api("GET", f"/api/v1/jobs/{job_id}").json())

    def wait_job(self, job_id: int, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if predicate(job):
                return job
            time.sleep(0.1)
        logs = {p.name: p.read_text(errors="replace")[-3000:] for p in self.logs.glob("*.log")}
        pytest.fail(f"job {job_id} stuck at {self.job(job_id)}; logs: {logs}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Migrated DATA_DIR, an admin user, and the web server serving it as `make run` does."""
    data = tmp_path_factory.mktemp("embedded")
    port = free_port()
    drop = ("DATABASE_URL", "CELERY_BROKER_URL", "CONTROL_URL", "PUBLIC_URL", "SECRET_KEY", "CONTROL_TOKEN")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        DATA_DIR=str(data),
        MODELS_DIR=str(settings.MODELS_DIR),
        PORT=str(port),
        HF_HUB_OFFLINE="1",
        DJANGO_SETTINGS_MODULE="console.settings",
        CELERY_QUEUE=TEST_QUEUE,
        RESTART_RETRY_BACKOFF="0.1",
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    logs = data / "logs"
    logs.mkdir()
    stack = Stack(env=env, url=f"http://127.0.0.1:{port}", token="", logs=logs)
    stack.token = stack.manage("create_user", "--username", "root", "--role", "admin")["token"]
    argv = web_argv(BIN, host="127.0.0.1", port=str(port), workers=1, threads=8, grace=5, make_run=False)
    server = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=(logs / "web.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack.processes.append(server)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{stack.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the web server did not start"
            time.sleep(0.2)
        yield stack
    finally:
        for process in stack.processes:
            kill_group(process)


def new_cluster(stack: Stack, name: str) -> dict[str, Any]:
    """A paid US cluster created before 2025-07-07: eligible, inference off."""
    args = ("--name", name, "--region", "us-east-1", "--tier", "paid", "--created-at", "2025-01-01")
    return stack.manage("create_cluster", *args)


def test_embedded_broker_runs_the_restart_end_to_end(stack: Stack, models_dir: Path) -> None:
    worker = stack.start_worker("embedded")
    try:
        cluster = new_cluster(stack, "embedded")
        points = f"/clusters/{cluster['id']}/collections/docs"
        dataplane = {"api-key": cluster["api_key"]}
        created = httpx.put(
            f"{stack.url}{points}", json={"vectors": {"size": 384, "distance": "Cosine"}}, headers=dataplane
        )
        assert created.status_code == 200, created.text

        answer = stack.api("PATCH", f"/api/v1/clusters/{cluster['id']}/inference", {"enabled": True})
        assert answer.status_code == 202, answer.text
        assert (answer.json()["status"], answer.json()["enabled"]) == ("restarting", False)
        job = stack.wait_job(answer.json()["job"]["id"], lambda j: j["state"] in ("succeeded", "failed"))
        assert job["state"] == "succeeded", job["error"]
    finally:
        stack.stop_worker(worker)

    state = stack.api("GET", f"/api/v1/clusters/{cluster['id']}/inference").json()
    assert (state["enabled"], state["status"]) == (True, "running")
    upsert = httpx.put(
        f"{stack.url}{points}/points",
        json={"points": [{"id": 1, "vector": {"text": "warm already", "model": MINILM}}]},
        headers=dataplane,
        timeout=30,
    )
    assert upsert.status_code == 200, upsert.text


def test_a_killed_workers_restart_finishes_within_a_minute_of_the_kill(stack: Stack) -> None:
    """Issue 10, defect 7: a killed worker left its cluster answering 503 for ~340 s.

    The doomed worker holds the job well past the stale limit (its web process accepts the drain call and
    never answers) while another worker runs the reaper on beat's schedule, as `make run` does: the
    heartbeat thread keeps the live job from being taken over. Once the doomed worker is SIGKILLed, its job
    goes stale and the other worker takes it over and finishes it. Short periods keep the test fast; the
    production defaults' bound is checked in test_services.
    """
    fast = {"RESTART_STALE_AFTER": "2", "RESTART_HEARTBEAT_INTERVAL": "0.25", "RESTART_REAP_INTERVAL": "0.5"}
    cluster = new_cluster(stack, "killed")
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(8)
        doomed = stack.start_worker(
            "doomed", CONTROL_URL=f"http://127.0.0.1:{blackhole.getsockname()[1]}", **fast
        )
        answer = stack.api("PATCH", f"/api/v1/clusters/{cluster['id']}/inference", {"enabled": True})
        job_id = answer.json()["job"]["id"]
        first = stack.wait_job(job_id, lambda j: j["state"] == "running" and j["step"] == "drain")
        schedule = Path(stack.env["DATA_DIR"]) / "celerybeat-schedule"
        stack.start_worker("rescuer", "--beat", "--schedule", str(schedule), **fast)
        reaped = "reap_stale_restart_jobs"
        stack.wait_log("rescuer", lambda log: log.count(reaped) >= 2)  # the reaper runs
        time.sleep(3)  # longer than the stale limit, with the reaper running every half second
        assert stack.log("rescuer").count(f"{reaped}[") >= 8
        held = stack.job(job_id)
        assert (held["state"], held["step"], held["attempts"]) == ("running", "drain", 1)
        beats = datetime.fromisoformat(held["heartbeat_at"]) - datetime.fromisoformat(first["heartbeat_at"])
        assert beats.total_seconds() >= 2.5  # beaten while the drain call hung
        kill_group(doomed)
        killed_at = time.monotonic()

    job = stack.wait_job(job_id, lambda j: j["state"] in ("succeeded", "failed"), timeout=60)
    took = time.monotonic() - killed_at
    assert (job["state"], job["attempts"], job["error"]) == ("succeeded", 2, "")
    assert took < 60, f"finished {took:.1f}s after the kill"
    state = stack.api("GET", f"/api/v1/clusters/{cluster['id']}/inference").json()
    assert (state["enabled"], state["status"]) == (True, "running")
