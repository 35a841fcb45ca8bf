"""`manage.py grpcserver`: serve Qdrant's gRPC API in the foreground (development and storage-less setups).

`make run` does not use this: there the gRPC server runs inside the web worker process, which owns the
embedded storage (see `inference/grpc/server.py`). Run this only where no other process opens the same
`DATA_DIR` clusters (Qdrant Edge allows one opener per directory).
"""

from __future__ import annotations

import signal
import threading
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from inference.grpc import server


class Command(BaseCommand):
    """Run the gRPC server until SIGINT/SIGTERM."""

    help = "Serve Qdrant's gRPC API for every cluster on one port (default GRPC_PORT)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """--port."""
        parser.add_argument("--port", type=int, default=settings.GRPC_PORT)

    def handle(self, *args: Any, **options: Any) -> None:
        """Start, wait for a signal, stop gracefully."""
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        port = server.start(options["port"])
        if port is None:
            self.stdout.write("gRPC is off (port 0)")
            return
        self.stdout.write(f"gRPC (Qdrant API) on port {port}")
        done.wait()
        server.stop()
