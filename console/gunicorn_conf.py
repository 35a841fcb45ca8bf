"""Gunicorn settings for `make run`: the web worker also serves Qdrant's gRPC API (`GRPC_PORT`) and registers
itself as a replica.

The gRPC server runs inside the worker because that process owns the clusters' embedded storage (Qdrant
Edge allows one opener per directory) and the models; see `inference/grpc/server.py`. Each worker also
starts a control listener of its own and registers it in the database, so a restart job reaches every web
process, not only the one behind the shared port (`console/clusters/replicas.py`). One worker on embedded
storage; several need remote storage (`QDRANT_URL`), and then share their metrics through
prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, see `console/metrics.py`).
"""

from __future__ import annotations

import os
from typing import Any

# The request line without its query string (`%(U)s`: a query could carry an input) and the request id
# that the app's log lines carry too (console/requestid.py).
access_log_format = '%(h)s [%({x-request-id}o)s] "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'


def on_starting(server: Any) -> None:
    """Refuse several web processes on embedded storage (Qdrant Edge allows one opener per directory)."""
    workers = int(server.cfg.workers)
    if workers > 1 and not os.environ.get("QDRANT_URL", "").strip():
        raise SystemExit(
            f"{workers} web processes need remote vector storage: with the embedded Qdrant Edge storage "
            "only one process may open a cluster's files. Set QDRANT_URL (a Qdrant server) or use "
            "WEB_CONCURRENCY=1."
        )


def post_worker_init(worker: Any) -> None:
    """Start the gRPC server and register the worker as a replica, once the Django app is loaded in it."""
    from console.clusters import replicas
    from inference.grpc import server

    server.start()
    replicas.start()


def worker_exit(server: Any, worker: Any) -> None:
    """Deregister the replica (no restart waits for it) and stop the gRPC server, letting running calls
    finish."""
    from console.clusters import replicas
    from inference.grpc import server as grpc_server

    replicas.stop()
    grpc_server.stop()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the aggregated metrics (its counters keep counting in totals)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
