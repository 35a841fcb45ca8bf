"""A dripping image server (one byte every 0.2 s, never done) and its `drip` fixture. No Django."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Drip(BaseHTTPRequestHandler):
    """Sends a PNG's headers, then one byte every 0.2 s, for ever."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\x89")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            return

    def log_message(self, *args: object) -> None:
        """Quiet."""


@contextmanager
def drip_server() -> Iterator[str]:
    """A dripping server on 127.0.0.1 for the block; its `host:port`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture
def drip() -> Iterator[str]:
    """The `host:port` of a dripping image server, for the test."""
    with drip_server() as host:
        yield host
