"""`make run` as a user runs it: it serves, stops cleanly on SIGTERM, and `manage.py` finds that instance."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from console import runfile
from tests.processes import ROOT, free_port, processes_mentioning

pytestmark = pytest.mark.slow
MINILM = "sentence-transformers/all-minilm-l6-v2"
SECRET_TEXT = "zanzibar-quartz-7f3a inputs never reach the log"


def _wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "make run exited before serving"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("make run did not start serving")


def test_make_run_stops_cleanly_on_sigterm_and_manage_finds_its_settings(
    tmp_path: Path, models_dir: Path
) -> None:
    data_dir = tmp_path / "run-data"
    port, grpc_port = free_port(), free_port()
    run_file = tmp_path / "run-settings.json"
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "PUBLIC_URL")
    }
    env.update(HF_HUB_OFFLINE="1", MODELS_DIR=str(models_dir), RUN_SETTINGS_FILE=str(run_file))
    # `make setup` is what makes the venv and migrates; here the venv exists, so skip setup (-o) and migrate.
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env={**env, "DATA_DIR": str(data_dir)},
        check=True,
    )  # fmt: skip
    log_path = tmp_path / "make-run.log"
    with log_path.open("wb") as log:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "-o", "setup", "run",
             f"VENV={Path(sys.executable).parent.parent}", f"PORT={port}", f"GRPC_PORT={grpc_port}",
             f"DATA_DIR={data_dir}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_healthy(port, make)
        demo = json.loads((data_dir / "demo-cluster.json").read_text())
        assert demo["url"] == f"http://127.0.0.1:{port}/clusters/{demo['url'].rsplit('/', 1)[1]}"
        headers = {"api-key": demo["api_key"]}
        created = httpx.put(
            f"{demo['url']}/collections/docs",
            headers=headers,
            json={"vectors": {"size": 384, "distance": "Cosine"}},
        )
        assert created.status_code == 200, created.text
        assert re.fullmatch(r"[0-9a-f]{32}", created.headers["x-request-id"])
        # The web worker registered itself as a replica, with a control listener of its own.
        assert _replicas({**env, "DATA_DIR": str(data_dir)}) == "1 http://127.0.0.1:"

        # A request in flight when SIGTERM arrives still gets its answer.
        points = [{"id": i, "vector": {"text": f"{SECRET_TEXT} {i}", "model": MINILM}} for i in range(400)]
        answers: list[httpx.Response] = []
        upsert = threading.Thread(
            target=lambda: answers.append(
                httpx.put(f"{demo['url']}/collections/docs/points?wait=true", headers=headers,
                          json={"points": points}, timeout=30)
            )
        )  # fmt: skip
        upsert.start()
        time.sleep(0.5)
        stopped_at = time.monotonic()
        os.kill(make.pid, signal.SIGTERM)
        make.wait(15)
        elapsed = time.monotonic() - stopped_at
        upsert.join(30)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
    leftovers = processes_mentioning(str(data_dir))
    for line in leftovers:  # do not leak them into the next test, whatever the assertions say
        os.kill(int(line.split(":")[0]), signal.SIGKILL)

    log = log_path.read_text(errors="replace")
    assert elapsed < 10, f"stopping took {elapsed:.1f} s\n{log}"
    assert leftovers == []
    assert answers and answers[0].status_code == 200, log
    assert answers[0].json()["result"]["status"] == "completed"
    for bad in ("Traceback", "Segmentation fault", "Error ", "ERROR", "CRITICAL"):
        assert bad not in log, f"{bad!r} in the log:\n{log}"
    assert log.count("Warm shutdown") <= 1
    # The demo cluster's key is printed once, by design, before serving starts; never while serving.
    served = log.split("Serving on", 1)[1]
    assert SECRET_TEXT not in log and demo["api_key"] not in served
    # Access log lines and the app's own lines carry the request id.
    assert f"[{created.headers['x-request-id']}]" in log
    assert "serve: SIGTERM: stopping" in log

    # `manage.py` run later with no DATA_DIR, PORT or PUBLIC_URL reaches the same instance.
    bare = {k: v for k, v in env.items() if k not in ("DATA_DIR", "PORT", "GRPC_PORT", "MODELS_DIR")}
    out = subprocess.run(
        [sys.executable, "manage.py", "create_cluster", "--name", "later", "--region", "us-east-1",
         "--tier", "paid", "--json"],
        cwd=ROOT, env=bare, check=True, capture_output=True, text=True,
    )  # fmt: skip
    url = json.loads(out.stdout)["url"]
    assert url.startswith(f"http://127.0.0.1:{port}/clusters/")
    listed = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c",
         "from console.clusters.models import Cluster; "
         "print(sorted(Cluster.objects.values_list('name', flat=True)))"],
        cwd=ROOT, env=bare, check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert listed.stdout.strip() == "['demo', 'later']"
    assert _replicas(bare) == "0"  # deregistered as the web worker exits on the clean stop


def _replicas(env: dict[str, str]) -> str:
    """How many replicas are registered, and the start of the first one's control URL."""
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c",
         "from console.clusters.models import Replica; "
         "urls = [r.control_url for r in Replica.objects.all()]; "
         "print(len(urls), *(u.rsplit(':', 1)[0] + ':' for u in urls[:1]))"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


def test_run_file_gives_defaults_that_the_environment_overrides(tmp_path: Path) -> None:
    run_file = tmp_path / "run.json"
    data = tmp_path / "d"
    runfile.write({"RUN_SETTINGS_FILE": str(run_file), "DATA_DIR": str(data), "PORT": "9123"})
    assert oct(run_file.stat().st_mode & 0o777) == "0o600"

    env = {"RUN_SETTINGS_FILE": str(run_file)}
    used = runfile.apply(env)
    assert env["DATA_DIR"] == str(data.resolve()) and env["PORT"] == "9123"
    assert env["PUBLIC_URL"] == "http://127.0.0.1:9123" and set(used) == {"DATA_DIR", "PORT", "PUBLIC_URL"}

    # The environment wins, key by key, for the same instance...
    env = {"RUN_SETTINGS_FILE": str(run_file), "DATA_DIR": str(data), "PORT": "7000"}
    runfile.apply(env)
    assert env["PORT"] == "7000" and env["PUBLIC_URL"] == "http://127.0.0.1:9123"
    # ...and a process with another DATA_DIR is another instance: the file does not apply at all.
    env = {"RUN_SETTINGS_FILE": str(run_file), "DATA_DIR": str(tmp_path / "other")}
    assert runfile.apply(env) == {} and "PORT" not in env
    # No file, or an unreadable one, changes nothing.
    assert runfile.apply({"RUN_SETTINGS_FILE": "/dev/null"}) == {}


def test_several_web_processes_on_embedded_storage_are_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "QDRANT_URL"}
    env.update(WEB_CONCURRENCY="2", DATA_DIR=str(tmp_path), RUN_SETTINGS_FILE=str(tmp_path / "run.json"))
    done = subprocess.run(
        [sys.executable, "-m", "console.serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "WEB_CONCURRENCY=2 needs remote vector storage" in done.stderr
    assert "QDRANT_URL" in done.stderr
    assert not (tmp_path / "run.json").exists()  # refused before recording anything


def test_web_threads_reach_the_web_server_and_a_bad_value_is_refused() -> None:
    from console.serve import commands

    web = commands({"WEB_THREADS": "24", "DATA_DIR": "/tmp/x"})[0].argv
    assert web[web.index("--blocking-threads") + 1] == "24"
    default = commands({"DATA_DIR": "/tmp/x"})[0].argv
    assert default[default.index("--blocking-threads") + 1] == "16"
    for bad in ("0", "many"):
        with pytest.raises(SystemExit, match="WEB_THREADS must be"):
            commands({"WEB_THREADS": bad})
