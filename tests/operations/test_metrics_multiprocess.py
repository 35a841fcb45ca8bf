"""`/metrics` of `make run` with WEB_CONCURRENCY=2 (two web worker processes behind one port, on remote
storage): whichever worker answers a scrape, it reports the requests and tokens of both, and a worker that
dies takes its live gauges with it but not its counts (prometheus_client's multiprocess mode,
console/metrics.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MINILM
from tests.processes import ROOT, free_port, processes_mentioning

pytestmark = pytest.mark.slow

POINTS_ROUTE = "clusters/<str:cluster_id>/collections/<str:collection>/points"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def counting_pids(metrics_dir: Path) -> set[int]:
    """The processes that counted something (prometheus_client writes `counter_<pid>.db` on a first count)."""
    return {int(path.stem.split("_")[-1]) for path in metrics_dir.glob("counter_*.db")}


def live_pids(metrics_dir: Path) -> set[int]:
    """The processes whose live gauges count (a new worker removes a dead one's file as it starts)."""
    return {int(path.stem.split("_")[-1]) for path in metrics_dir.glob("gauge_livesum_*.db")}


@pytest.fixture
def served(
    qdrant_server: tuple[str, str], tmp_path: Path, models_dir: Path
) -> Iterator[tuple[int, Path, dict[str, Any]]]:
    """(port, DATA_DIR, cluster) of `python -m console.serve` (what `make run` runs) with two web workers."""
    data_dir = tmp_path / "run-data"
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "PUBLIC_URL",
            "LIMITS_REDIS_URL",
            "PROMETHEUS_MULTIPROC_DIR",
        )
    }
    env.update(
        DATA_DIR=str(data_dir), MODELS_DIR=str(models_dir), PORT=str(port), GRPC_PORT="0", HF_HUB_OFFLINE="1",
        RUN_SETTINGS_FILE=str(tmp_path / "run.json"), WEB_CONCURRENCY="2", INFERENCE_WORKERS="1",
        QDRANT_URL=qdrant_server[0], QDRANT_API_KEY=qdrant_server[1],
        DJANGO_SETTINGS_MODULE="console.settings",
    )  # fmt: skip
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    created = subprocess.run(
        [*manage, "create_cluster", "--name", "metrics", "--region", "us-east-1", "--tier", "paid", "--json"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    cluster = json.loads(created.stdout)
    stale = data_dir / "prometheus-multiproc"
    stale.mkdir(parents=True)
    (stale / "counter_999999.db").write_bytes(b"\0" * 16)  # a previous run's: must not be added in
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "console.serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text(errors="replace")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "make run did not start serving"
            time.sleep(0.3)
        yield port, data_dir, cluster
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
        for line in processes_mentioning(str(data_dir)):  # whatever the assertions said, leak nothing
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        log.close()


def test_one_scrape_reports_every_web_process(served: tuple[int, Path, dict[str, Any]]) -> None:
    port, data_dir, cluster = served
    metrics_dir = data_dir / "prometheus-multiproc"
    assert not (metrics_dir / "counter_999999.db").exists()  # emptied at start
    url, headers = cluster["url"], {"api-key": cluster["api_key"]}
    created = httpx.put(
        f"{url}/collections/docs", headers=headers, json={"vectors": {"size": 384, "distance": "Cosine"}}
    )
    assert created.status_code == 200, created.text

    def upsert(i: int) -> int:
        point = {"id": i, "vector": {"text": f"counted by whichever process {i}", "model": MINILM}}
        answer = httpx.put(
            f"{url}/collections/docs/points?wait=true", headers=headers, json={"points": [point]}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        return int(answer.json()["usage"]["inference"]["models"][MINILM]["tokens"])

    # Concurrent requests on fresh connections, until both workers served some (the kernel picks one).
    sent, tokens = 0, 0
    with ThreadPoolExecutor(4) as pool:
        while len(counting_pids(metrics_dir)) < 2 or sent < 24:
            assert sent < 400, "one worker served everything"
            tokens += sum(pool.map(upsert, range(sent, sent + 8)))
            sent += 8
    assert tokens > 0

    def check(samples: Samples, workers: int) -> None:
        assert value(samples, "http_requests_total", route=POINTS_ROUTE, method="PUT", status="200") == sent
        assert value(samples, "http_request_duration_seconds_count", route=POINTS_ROUTE, method="PUT") == sent
        assert (
            value(samples, "inference_tokens_total", model=MINILM, cluster=cluster["url"].rsplit("/", 1)[1])
            == tokens
        )
        # The pool's live gauges: summed over the live processes (one ONNX worker each), nothing in flight.
        assert value(samples, "inference_workers") == workers
        assert (
            value(samples, "inference_jobs_in_flight") == 0 and value(samples, "inference_queue_depth") == 0
        )
        # Read from the database by the scraping process.
        assert (
            value(samples, "restart_jobs", state="failed") == 0
            and ("restart_jobs", (("state", "queued"),)) in samples
        )

    for _ in range(6):  # whichever worker answers the scrape
        check(scrape(port), workers=2)

    # A worker killed: the web server starts another, which drops the dead one's live gauges; its counts stay.
    victim = sorted(counting_pids(metrics_dir))[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while victim in live_pids(metrics_dir) or len(live_pids(metrics_dir)) < 2:
        assert time.monotonic() < deadline, sorted(p.name for p in metrics_dir.iterdir())
        time.sleep(0.2)
    for _ in range(4):
        check(scrape(port), workers=2)
