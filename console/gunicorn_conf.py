"""Gunicorn settings for `make run`: the web worker also serves Qdrant's gRPC API (`GRPC_PORT`).

The gRPC server runs inside the worker because that process owns the clusters' embedded storage (Qdrant
Edge allows one opener per directory) and the models; see `inference/grpc/server.py`. Use one worker.
"""

from __future__ import annotations

from typing import Any


def post_worker_init(worker: Any) -> None:
    """Start the gRPC server once the Django app is loaded in the worker."""
    from inference.grpc import server

    server.start()


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the gRPC server with the worker, letting running calls finish."""
    from inference.grpc import server as grpc_server

    grpc_server.stop()
