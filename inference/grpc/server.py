"""The gRPC server: Qdrant's services for every cluster on one port (`GRPC_PORT`, default 6334).

Where it runs, and why: INSIDE the web process, started by `console.wsgi.served_application`
(the web server's factory in `make run`) and stopped as that process exits.
Qdrant Edge allows one opener per storage directory per process, and the web process already owns every
embedded cluster's storage (`inference.stores`), its in-flight counters (which a restart job drains) and
the loaded ONNX models. A separate gRPC process could open none of that storage while the web process holds
it, would load the models a second time, and would escape the restart drain. Inside the worker, gRPC calls go
through the same `inference.gateway` and the same stores as REST calls. (`manage.py grpcserver` runs the
server on its own, for setups where nothing else opens the storage, and for development.)

Limits as Qdrant's: messages up to `MAX_REQUEST_SIZE_MB` (32 MB) each way; a pool of `GRPC_WORKERS`
threads (32) so 16 concurrent streams never starve the health check or each other; a deadline that has
passed before an operation starts answers DEADLINE_EXCEEDED without running it (gRPC itself ends the
call for the client when the deadline passes mid-way).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from django.conf import settings
from qdrant_client import grpc as pb

from inference.grpc.servicers import CollectionsServicer, PointsServicer, QdrantServicer, SnapshotsServicer

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_running: grpc.Server | None = None


def build_server(*, port: int, host: str = "0.0.0.0", workers: int | None = None) -> tuple[grpc.Server, int]:
    """A started-ready (not started) server with Qdrant's four services, and the port it bound (0 = any)."""
    max_bytes = int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers or settings.GRPC_WORKERS, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
        ],
    )
    pb.add_QdrantServicer_to_server(QdrantServicer(), server)
    pb.add_CollectionsServicer_to_server(CollectionsServicer(), server)
    pb.add_PointsServicer_to_server(PointsServicer(), server)
    pb.add_SnapshotsServicer_to_server(SnapshotsServicer(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, bound


def start(port: int | None = None) -> int | None:
    """Start this process's gRPC server once (idempotent); the bound port, or None when `GRPC_PORT` is 0."""
    global _running
    port = settings.GRPC_PORT if port is None else port
    if port == 0:
        return None
    with _lock:
        if _running is None:
            server, bound = build_server(port=port)
            server.start()
            _running = server
            logger.info("gRPC (Qdrant API) listening on port %s", bound)
            return bound
    return port


def stop(grace: float = 5.0) -> None:
    """Stop this process's gRPC server, letting running calls finish for up to `grace` seconds."""
    global _running
    with _lock:
        server, _running = _running, None
    if server is not None:
        server.stop(grace).wait()
