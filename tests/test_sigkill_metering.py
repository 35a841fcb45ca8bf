"""A server killed at any moment bills exactly what it answered, and no written point goes unbilled.

The server runs as `make run` serves it (granian over SQLite and Qdrant Edge, in a fresh DATA_DIR, usage
made durable in the usage journal and folded into the ledger in the background). Killed right after its
answers, the usage it reported is in the ledger once it has started again, exactly. Killed mid-stream while
writer threads upsert Documents (each request tagged in its points' payload and with its own
Idempotency-Key), five times, every point in storage belongs to a request that the ledger bills (the usage
is made durable before the write).
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import MINILM
from tests.processes import ROOT, create_cluster, kill_group, start_server

ROUNDS = 5
WRITERS = 4
QUERIES = 200


def ledger(database: Path) -> Counter[str]:
    """model -> tokens billed."""
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT model, SUM(tokens) FROM billing_usagerecord GROUP BY model").fetchall()
    return Counter({model: tokens for model, tokens in rows})


def test_usage_answered_right_before_a_sigkill_is_billed_exactly(
    embedded_env: dict[str, str], server_processes: list[subprocess.Popen[bytes]]
) -> None:
    env = {**embedded_env, "GRPC_PORT": "0"}
    created = create_cluster(env, "answered")
    base, headers = created["url"], {"api-key": created["api_key"]}
    database = Path(env["DATA_DIR"]) / "db.sqlite3"
    server = start_server(env, as_make_run=True)
    server_processes.append(server)
    collection = {"vectors": {"size": 384, "distance": "Cosine"}}
    assert httpx.put(f"{base}/collections/c", json=collection, headers=headers).status_code == 200

    def query(i: int) -> dict[str, int]:
        body = {"query": {"text": f"question number {i} " * (1 + i % 5), "model": MINILM}, "limit": 1}
        answer = httpx.post(f"{base}/collections/c/points/query", json=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        return {m: int(u["tokens"]) for m, u in answer.json()["usage"]["inference"]["models"].items()}

    reported: Counter[str] = Counter()
    with ThreadPoolExecutor(16) as pool:
        for usage in pool.map(query, range(QUERIES)):
            reported.update(usage)
    kill_group(server)  # right after the last answer: no chance to fold, flush or close

    assert reported[MINILM] > QUERIES
    server_processes.append(start_server(env, as_make_run=True))  # replays what the killed one left
    assert ledger(database) == reported


def test_sigkill_during_streaming_writes_leaves_no_point_unbilled(
    embedded_env: dict[str, str], server_processes: list[subprocess.Popen[bytes]]
) -> None:
    out = subprocess.run(
        [sys.executable, "manage.py", "create_cluster", "--name", "kill", "--region", "us-east-1",
         "--tier", "paid", "--json"],
        cwd=ROOT, env=embedded_env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    created = json.loads(out.stdout)
    base, headers = created["url"], {"api-key": created["api_key"]}
    database = Path(embedded_env["DATA_DIR"]) / "db.sqlite3"
    rng = random.Random(11)
    next_id = iter(range(1, 10**9))

    env = {**embedded_env, "GRPC_PORT": "0"}
    for round_number in range(ROUNDS):
        server = start_server(env, as_make_run=True)
        server_processes.append(server)
        if round_number == 0:
            collection = {"vectors": {"size": 384, "distance": "Cosine"}}
            assert httpx.put(f"{base}/collections/c", json=collection, headers=headers).status_code == 200
        stop = threading.Event()

        def write(stop: threading.Event = stop) -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    request_id = uuid.uuid4().hex
                    points = [
                        {
                            "id": next(next_id),
                            "vector": {"text": f"note {request_id} {i}", "model": MINILM},
                            "payload": {"request": request_id},
                        }
                        for i in range(4)
                    ]
                    try:
                        client.put(
                            f"{base}/collections/c/points?wait=true",
                            json={"points": points},
                            headers={**headers, "Idempotency-Key": request_id},
                        )
                    except httpx.HTTPError:
                        return  # the server is gone

        writers = [threading.Thread(target=write) for _ in range(WRITERS)]
        for thread in writers:
            thread.start()
        time.sleep(rng.uniform(1.5, 3.0))
        kill_group(server)  # mid-stream, with no chance to flush or close
        stop.set()
        for thread in writers:
            thread.join(30)

    server_processes.append(start_server(env, as_make_run=True))
    written: set[str] = set()
    offset = None
    while True:
        page = httpx.post(
            f"{base}/collections/c/points/scroll",
            json={"limit": 1000, "offset": offset, "with_payload": True},
            headers=headers,
        ).json()["result"]
        written |= {p["payload"]["request"] for p in page["points"]}
        offset = page.get("next_page_offset")
        if offset is None:
            break
    with sqlite3.connect(database) as db:
        billed = [row[0] for row in db.execute("SELECT request_id FROM billing_usagerecord")]
    assert written, "no request got through: the test measured nothing"
    assert written - set(billed) == set()  # no written point without its tokens in the ledger
    assert len(billed) == len(set(billed))  # one model per request: one row each, never two
