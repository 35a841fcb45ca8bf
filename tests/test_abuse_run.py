"""An abuse run against the server as `make run` serves it: nothing answers 5xx, health stays fast, memory
stays bounded, and the ledger bills exactly the tokens the answered requests report.

For a while, at once: 10 MiB Documents, JSON nested 100,000 deep, overflowing numbers, one Idempotency-Key
reused with other bodies, sixteen clients pressing on a tokens-per-minute limit, and image URLs that drip a
byte at a time; meanwhile `/healthz` is polled. Bounded in count and time, loopback only.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import MINILM
from tests.processes import ROOT, start_server

pytestmark = pytest.mark.slow
RSS_BOUND_MIB = 1536  # the web process's documented bound (README, "Limits")
SECONDS = 20.0


# Polls /healthz every 0.1 s for argv[2] seconds; prints the latencies (s) as JSON; fails on a non-200.
PROBE = """
import json, sys, time
import httpx
latencies, stop_at = [], time.monotonic() + float(sys.argv[2])
with httpx.Client(timeout=30) as probe:
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        assert probe.get(sys.argv[1]).status_code == 200
        latencies.append(time.perf_counter() - started)
        time.sleep(0.1)
print(json.dumps(latencies))
"""


def worker_rss_peak_mib(master_pid: int) -> float:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    status = Path(f"/proc/{children[0]}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_abuse_run(
    embedded_env: dict[str, str], server_processes: list[subprocess.Popen[bytes]], drip: str
) -> None:
    drip_host = drip
    env = {**embedded_env, "IMAGE_FETCH_ALLOW_HOSTS": drip_host, "IMAGE_FETCH_TOTAL_TIMEOUT": "3"}
    manage = [sys.executable, "manage.py"]
    created = json.loads(
        subprocess.run(
            [*manage, "create_cluster", "--name", "abuse", "--region", "us-east-1", "--tier", "paid",
             "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    limit_code = (
        "from billing.services import cluster_limit_set; "
        f"cluster_limit_set(cluster_id={created['id']!r}, tokens_per_minute=3000)"
    )
    subprocess.run([*manage, "shell", "-c", limit_code], cwd=ROOT, env=env, check=True)
    server = start_server(env)
    server_processes.append(server)
    base, headers = created["url"], {"api-key": created["api_key"]}
    collection = {"vectors": {"size": 384, "distance": "Cosine"}}
    assert httpx.put(f"{base}/collections/c", json=collection, headers=headers, timeout=60).status_code == 200

    statuses: Counter[int] = Counter()
    served_tokens: list[int] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + SECONDS

    def note(response: httpx.Response) -> None:
        with lock:
            statuses[response.status_code] += 1
            if response.status_code == 200:
                usage = response.json().get("usage", {}).get("inference", {}).get("models", {})
                served_tokens.extend(int(u["tokens"]) for u in usage.values())

    def loop(send: Callable[[httpx.Client, int], httpx.Response]) -> Callable[[], None]:
        def run() -> None:
            with httpx.Client(headers=headers, timeout=120) as client:
                i = 0
                while time.monotonic() < stop_at:
                    note(send(client, i))
                    i += 1

        return run

    huge = ("the red planet has two moons " * 400_000)[: 10 * 1024 * 1024]

    def huge_text(client: httpx.Client, i: int) -> httpx.Response:
        body = {"points": [{"id": 10_000 + i, "vector": {"text": f"{i} {huge}", "model": MINILM}}]}
        return client.put(f"{base}/collections/c/points", json=body)

    def deep_nesting(client: httpx.Client, i: int) -> httpx.Response:
        deep = '{"filter":' * 100_000 + "{}" + "}" * 100_000
        return client.post(f"{base}/collections/c/points/scroll", content=deep,
                           headers={"Content-Type": "application/json"})  # fmt: skip

    def overflow(client: httpx.Client, i: int) -> httpx.Response:
        text = json.dumps({"points": [{"id": 20_000 + i, "vector": [0.1] * 384}]}).replace("0.1", "1e999", 1)
        return client.put(
            f"{base}/collections/c/points", content=text, headers={"Content-Type": "application/json"}
        )

    def reused_key(client: httpx.Client, i: int) -> httpx.Response:
        body = {"query": {"text": f"reused key {i}", "model": MINILM}, "limit": 1}
        return client.post(
            f"{base}/collections/c/points/query", json=body, headers={"Idempotency-Key": "same"}
        )

    def pressure(client: httpx.Client, i: int) -> httpx.Response:
        body = {"query": {"text": f"limit pressure query number {i}", "model": MINILM}, "limit": 3}
        return client.post(f"{base}/collections/c/points/query", json=body)

    def slow_image(client: httpx.Client, i: int) -> httpx.Response:
        body = {"query": {"image": f"http://{drip_host}/{i}.png", "model": "qdrant/clip-vit-b-32-vision"}}
        return client.post(f"{base}/collections/c/points/query", json=body)

    workers = [loop(huge_text), loop(deep_nesting), loop(overflow), loop(reused_key), loop(slow_image)]
    workers += [loop(pressure)] * 16
    threads = [threading.Thread(target=w, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    # The probe runs in a process of its own, as a load balancer's would: in this one it would time the
    # twenty-one client threads' fight for the GIL (building 10 MiB bodies) as much as the server.
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, f"http://127.0.0.1:{env['PORT']}/healthz", str(SECONDS - 1)],
        capture_output=True, text=True, timeout=SECONDS + 60, check=True,
    )  # fmt: skip
    health: list[float] = json.loads(probe.stdout)
    for thread in threads:
        thread.join(180)

    assert all(status < 500 for status in statuses), statuses  # never a 5xx
    assert statuses[200] > 0 and statuses[400] > 0 and statuses[429] > 0, statuses
    median_ms = statistics.median(health) * 1000
    assert median_ms < 100, f"/healthz median {median_ms:.0f} ms over {len(health)} probes"
    assert worker_rss_peak_mib(server.pid) < RSS_BOUND_MIB
    database = Path(env["DATA_DIR"]) / "db.sqlite3"
    with sqlite3.connect(database) as db:
        (billed,) = db.execute("SELECT COALESCE(SUM(tokens), 0) FROM billing_usagerecord").fetchone()
    assert billed == sum(served_tokens)
