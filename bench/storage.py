"""Benchmark: vector storage through the data plane (Qdrant Edge) vs qdrant-client local mode, same run.

Upserts N points (default 50,000; 384-d random float vectors, payload `{"i": n, "group": n % 10}`) in
batches of 1,000, then runs Q queries (default 500; nearest, limit 10, no filter), on both sides:

- data plane: our server as a subprocess (as `make run` starts it, via bench/dataplane.py) in a temporary
  DATA_DIR, with a cluster created by `manage.py create_cluster` on the embedded backend (Qdrant Edge),
  driven over real HTTP on 127.0.0.1 by the official `qdrant_client.QdrantClient(url=..., api_key=...)`;
- baseline: qdrant-client local mode, `QdrantClient(path=<tmpdir>)`, with the same vectors and queries
  (seeded numpy RNG).

Prints points/s and query p50/p99 (ms) for both, `ratio upsert data-plane/local` and
`ratio query p50 local/data-plane` (higher is better for both), and the agreement of the top-10 ids of
the two sides (both do exact search). Run: `.venv/bin/python bench/storage.py [--points N] [--queries Q]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dataplane import serve  # bench/ is on sys.path when a bench runs as a script
from qdrant_client import QdrantClient, models

REPO = Path(__file__).resolve().parent.parent
DIM = 384
TOP = 10
WARMUP_QUERIES = 5
COLLECTION = "bench"
CLIENT_TIMEOUT = 120  # seconds, per request


@dataclass(frozen=True)
class Result:
    """The figures of one side."""

    upsert_rate: float  # points/s
    query_p50_ms: float
    query_p99_ms: float
    top_ids: list[list[int]]  # top-10 ids of each timed query, in order


def make_data(points: int, queries: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic float32 point and query vectors, uniform in [-1, 1)."""
    rng = np.random.default_rng(seed)
    vectors = rng.uniform(-1.0, 1.0, size=(points, DIM)).astype(np.float32)
    query_vectors = rng.uniform(-1.0, 1.0, size=(queries + WARMUP_QUERIES, DIM)).astype(np.float32)
    return vectors, query_vectors


def make_batches(vectors: np.ndarray, size: int) -> list[list[models.PointStruct]]:
    """The upsert batches: PointStructs with raw vectors and a small payload (built outside the timing)."""
    rows: list[list[float]] = vectors.tolist()
    points = [
        models.PointStruct(id=i, vector=row, payload={"i": i, "group": i % 10}) for i, row in enumerate(rows)
    ]
    return [points[start : start + size] for start in range(0, len(points), size)]


def run(client: QdrantClient, batches: list[list[models.PointStruct]], queries: list[list[float]]) -> Result:
    """Create the collection, time the upserts and then each query (after a few untimed warm-up ones)."""
    client.create_collection(
        COLLECTION, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    total = sum(len(batch) for batch in batches)
    start = time.perf_counter()
    for batch in batches:
        client.upsert(COLLECTION, points=batch, wait=True)
    upsert_s = time.perf_counter() - start
    count = client.count(COLLECTION, exact=True).count
    if count != total:
        sys.exit(f"expected {total} points after the upserts, the collection holds {count}")

    for vector in queries[:WARMUP_QUERIES]:
        client.query_points(COLLECTION, query=vector, limit=TOP)
    latencies: list[float] = []
    top_ids: list[list[int]] = []
    for vector in queries[WARMUP_QUERIES:]:
        start = time.perf_counter()
        response = client.query_points(COLLECTION, query=vector, limit=TOP)
        latencies.append(time.perf_counter() - start)
        top_ids.append([int(point.id) for point in response.points])
    p50, p99 = np.percentile(np.array(latencies) * 1000.0, [50, 99])
    return Result(
        upsert_rate=total / upsert_s, query_p50_ms=float(p50), query_p99_ms=float(p99), top_ids=top_ids
    )


def agreement(a: list[list[int]], b: list[list[int]]) -> tuple[float, float]:
    """Mean overlap of the top-10 id sets, and the fraction of queries with identical ordered lists."""
    overlap = [len(set(x) & set(y)) / TOP for x, y in zip(a, b, strict=True)]
    identical = [x == y for x, y in zip(a, b, strict=True)]
    return float(np.mean(overlap)), float(np.mean(identical))


def main() -> None:
    """Run both sides, print the figures, the ratios and the agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--batch", type=int, default=1000, help="points per upsert request")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.points < TOP or args.queries < 1 or args.batch < 1:
        parser.error(f"--points must be at least {TOP}, --queries and --batch at least 1")

    vectors, query_vectors = make_data(args.points, args.queries, args.seed)
    batches = make_batches(vectors, args.batch)
    queries: list[list[float]] = query_vectors.tolist()
    print(
        f"points: {args.points} x {DIM}-d in batches of {args.batch}, queries: {args.queries} (limit {TOP})"
    )
    print(f"cores: {os.cpu_count()}")

    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        workdir = Path(tmp)
        # The server as `make run` serves it (bench/dataplane.py starts it the same way for its figures).
        with serve(REPO, os.environ.get("MODELS_DIR"), workdir, {}) as cluster:
            warnings.filterwarnings("ignore", "Api key is used with an insecure connection")  # 127.0.0.1
            remote = QdrantClient(url=cluster.url, api_key=cluster.api_key, timeout=CLIENT_TIMEOUT)
            try:
                plane = run(remote, batches, queries)
            finally:
                remote.close()

        local_dir = workdir / "local"
        local_dir.mkdir()
        local_client = QdrantClient(path=str(local_dir))
        try:
            with warnings.catch_warnings():  # local mode warns above 20,000 points: that is the point here
                warnings.simplefilter("ignore", UserWarning)
                local = run(local_client, batches, queries)
        finally:
            local_client.close()

    overlap, identical = agreement(plane.top_ids, local.top_ids)
    print(
        f"data plane (Edge, 1 web worker x 16 threads, REST): upsert {plane.upsert_rate:.0f} points/s, "
        f"query p50 {plane.query_p50_ms:.2f} ms, p99 {plane.query_p99_ms:.2f} ms"
    )
    print(
        f"local mode (QdrantClient(path=...)): upsert {local.upsert_rate:.0f} points/s, "
        f"query p50 {local.query_p50_ms:.2f} ms, p99 {local.query_p99_ms:.2f} ms"
    )
    print(f"ratio upsert data-plane/local: {plane.upsert_rate / local.upsert_rate:.2f}")
    print(f"ratio query p50 local/data-plane: {local.query_p50_ms / plane.query_p50_ms:.2f}")
    print(f"ratio query p99 local/data-plane: {local.query_p99_ms / plane.query_p99_ms:.2f}")
    print(
        f"top-{TOP} agreement over {len(plane.top_ids)} queries: {overlap:.3f} of ids, "
        f"{identical:.3f} of lists identical in order"
    )


if __name__ == "__main__":
    main()
