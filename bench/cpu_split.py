"""Benchmark: where the web process's CPU goes under 16 concurrent Document queries, checkout by checkout.

bench/dataplane.py gives the ratios; this says which side of the process moved them. It serves each
checkout as `make run` does (bench/dataplane.py's `serve`), fills a collection with `--points` points
(default 300; bench/dataplane.py's concurrent phase meets ~1,400, and Edge searches a collection that small
without an index, so the query's cost grows with it), runs
`--clients` clients sending one Document query at a time (3 s warm-up, then `--seconds`), and prints per
query the CPU time of:
- the ONNX worker threads (found by their nice value, INFERENCE_WORKER_NICE > 0),
- every other thread of the worker process (HTTP server, request threads, gRPC, billing),
- the bench's own client threads,
with queries/s and the mean merged batch size from /metrics. Checkouts alternate `--rounds` times, since a
shared machine drifts from minute to minute. Run:
`HF_HUB_OFFLINE=1 MODELS_DIR=$PWD/data/models .venv/bin/python bench/cpu_split.py [--checkout DIR ...]
[--points N]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dataplane as bd  # the sibling bench's server and client

UPSERT_POINTS = 500  # points per upsert request while the collection is filled


def thread_cpu(pid: int) -> tuple[float, float]:
    """(CPU seconds of the niced ONNX worker threads, of every other thread) of process `pid`."""
    onnx = other = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if int(fields[16]) > 0:  # nice
            onnx += seconds
        else:
            other += seconds
    return onnx, other


def batch_totals(base_url: str) -> tuple[float, float]:
    """(sum, count) of the `inference_batch_size` histogram: inputs run, model runs."""
    text = urllib.request.urlopen(f"{base_url}/metrics", timeout=10).read().decode()
    totals = {"_sum": 0.0, "_count": 0.0}
    for line in text.splitlines():
        for suffix in totals:
            if line.startswith(f"inference_batch_size{suffix}"):
                totals[suffix] += float(line.rsplit(" ", 1)[1])
    return totals["_sum"], totals["_count"]


def measure(checkout: Path, clients: int, seconds: float, count: int = 300) -> str:
    """One round on one checkout: the line to print."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        bd.serve(checkout, os.environ.get("MODELS_DIR"), Path(tmp), {}) as server,
    ):
        client = bd.Client(server)
        client.ok("PUT", f"/collections/{bd.COLLECTION}", {"vectors": {"size": bd.DIM, "distance": "Cosine"}})
        texts = bd.sentences(count, 1)
        for start in range(0, count, UPSERT_POINTS):
            chunk = texts[start : start + UPSERT_POINTS]
            points = [{"id": start + i, "vector": bd.document(t)} for i, t in enumerate(chunk)]
            client.ok("PUT", f"/collections/{bd.COLLECTION}/points?wait=true", {"points": points})
        client.close()
        pid = bd.worker_pid(server.master_pid)
        base_url = server.url.split("/clusters/", 1)[0]
        before: dict[str, tuple[float, ...]] = {}

        def snapshot() -> None:  # at the end of the warm-up, while the clients run
            time.sleep(3.0)
            before["cpu"] = thread_cpu(pid)
            before["batch"] = batch_totals(base_url)
            before["client"] = (time.process_time(),)

        taker = threading.Thread(target=snapshot)
        taker.start()
        result = bd.concurrent(server, clients, seconds, warmup=3.0)
        taker.join()
        onnx, other = (a - b for a, b in zip(thread_cpu(pid), before["cpu"], strict=True))
        runs = [a - b for a, b in zip(batch_totals(base_url), before["batch"], strict=True)]
        client_cpu = time.process_time() - before["client"][0]
    done = result.rate * seconds
    ms = 1000.0 / done
    batch = runs[0] / max(runs[1], 1)
    return (
        f"{checkout}: {result.rate:.1f} queries/s, batch mean {batch:.2f}; CPU per query: ONNX workers "
        f"{onnx * ms:.2f} ms, other threads {other * ms:.2f} ms, total {(onnx + other) * ms:.2f} ms; "
        f"bench client {client_cpu * ms:.2f} ms"
    )


def main() -> None:
    """Alternate the checkouts for `--rounds` rounds and print one line per round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, action="append", help="serve this checkout (repeatable)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--points", type=int, default=300, help="points in the queried collection")
    args = parser.parse_args()
    checkouts = args.checkout or [bd.REPO]
    for _ in range(args.rounds):
        for checkout in checkouts:
            print(measure(checkout, args.clients, args.seconds, args.points), flush=True)


if __name__ == "__main__":
    main()
