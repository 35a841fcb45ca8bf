"""This web process as one replica among several: its own control listener and its entry in the registry.

Why a listener of its own
-------------------------
A restart drains, reopens storage and warms models inside each web process (`console.clusters.control`).
Several processes serve one public port (the web server's workers with WEB_CONCURRENCY=N) or sit behind a load
balancer (replicas), so a control call to the public address reaches one of them, at random. So each process
also serves the control endpoint, and only it, on a small stdlib HTTP server of its own: a daemon thread
bound to CONTROL_BIND on an ephemeral port. It answers exactly what the Django view answers (both call
`control.run_step`, signed tokens and all) plus the replica's id, so the worker can tell it reached the
process it meant to.

The registry
------------
`start()` (called by `console.wsgi.served_application`, `make run`'s web process) registers the process in the
database (`Replica`: id, the listener's advertised URL, host, pid) and beats `seen_at` from a daemon thread
every REPLICA_HEARTBEAT_SECONDS; `stop()` (`worker_exit`) deletes the row. A process killed outright leaves a
row that stops beating: after REPLICA_STALE_AFTER it counts as dead and the restart worker goes on without
it (`console.clusters.tasks`); REPLICA_PRUNE_AFTER later a registration or the reaper deletes it. Only the
database is shared, so this works on SQLite and PostgreSQL alike, with no other service.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError, connection, connections
from django.urls import Resolver404, resolve

from console.clusters import control, services

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # a control call's body is one signed token (~200 bytes)
_STEP_ROUTE = "console-restart-step"  # the control endpoint's URL name: one route for both servers


class ControlServer(ThreadingHTTPServer):
    """The control listener: one thread per call (a drain may wait for half a minute), daemon threads so a
    hung call never keeps the process from exiting."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], replica_id: str) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, ControlHandler)
        self.replica_id = replica_id

    @property
    def port(self) -> int:
        """The port bound (the kernel chose it when asked for 0)."""
        return int(self.server_address[1])


class ControlHandler(BaseHTTPRequestHandler):
    """`POST /internal/clusters/<id>/restart/<step>` with `{"token": ...}`; anything else is refused."""

    server: ControlServer
    timeout = 30  # seconds a client may take to send its request: a stalled one does not hold a thread
    server_version = "replica-control"

    def do_POST(self) -> None:
        """Run one signed restart step in this process, as `control.restart_step` does on the public port."""
        try:
            match = resolve(urlsplit(self.path).path)
        except Resolver404:
            match = None
        if match is None or match.url_name != _STEP_ROUTE:
            self._answer(404, {"ok": False, "error": "not a control endpoint"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self._answer(413, {"ok": False, "error": "control call body too large"})
            return
        body = self.rfile.read(length)
        try:
            answer = control.run_step(
                cluster_id=str(match.kwargs["cluster_id"]), step=str(match.kwargs["step"]), body=body
            )
        except Exception:  # a bug or the database down: a 500 the worker retries, never a dropped connection
            logger.exception("control listener: step %s failed", match.kwargs.get("step"))
            self._answer(500, {"ok": False, "error": "internal error in the web process"})
            return
        finally:
            connections.close_all()  # this thread's own connections: it ends with the call
        self._answer(answer.status, answer.body)

    def do_GET(self) -> None:
        """Control calls are POSTs only."""
        self._answer(405, {"ok": False, "error": "method not allowed"}, allow="POST")

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _answer(self, status: int, body: dict[str, Any], *, allow: str | None = None) -> None:
        data = json.dumps({**body, "replica": self.server.replica_id}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Through logging (the access log of control calls is of interest when debugging only)."""
        logger.debug("control listener: %s %s", self.address_string(), format % args)


def advertised_host(*, bind: str, configured: str = "") -> str:
    """The host other processes reach this listener at: CONTROL_ADVERTISE_HOST, else the bind address, else
    (bound to every interface) this machine's hostname, which compose's DNS resolves to the container."""
    host = configured or bind
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"[{host}]" if ":" in host else host


@dataclass
class LocalReplica:
    """This process's registration: the listener serving, the heartbeat beating, until `stop()`."""

    replica_id: uuid.UUID
    control_url: str
    host: str
    pid: int
    heartbeat: float
    server: ControlServer
    _stopped: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def register(self) -> bool:
        """Write (or rewrite) this process's row; False if the database refused (the heartbeat retries)."""
        try:
            services.replica_register(
                replica_id=self.replica_id, control_url=self.control_url, host=self.host, pid=self.pid
            )
        except DatabaseError as exc:
            logger.warning("replica %s: registration failed (retried): %s", self.replica_id, exc)
            connection.close_if_unusable_or_obsolete()
            return False
        return True

    def _beat_forever(self) -> None:
        try:
            while not self._stopped.wait(self.heartbeat):
                try:
                    if not services.replica_beat(replica_id=self.replica_id):
                        # Pruned while this process was stalled (or never registered): it is alive, say so.
                        self.register()
                except DatabaseError as exc:  # a missed beat; REPLICA_STALE_AFTER allows a few
                    logger.warning("replica %s: heartbeat failed: %s", self.replica_id, exc)
                    connection.close_if_unusable_or_obsolete()
        finally:
            connection.close()  # this thread's own connection

    def start(self) -> None:
        """Serve the listener, register, and beat; each in a daemon thread except the registration."""
        serving = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="replica-control",
            daemon=True,
        )
        serving.start()
        self.register()
        beating = threading.Thread(target=self._beat_forever, name="replica-heartbeat", daemon=True)
        beating.start()
        self._threads = [serving, beating]
        logger.info("replica %s (pid %s) registered; control listener at %s", self.replica_id, self.pid,
                    self.control_url)  # fmt: skip

    def stop(self, *, deregister: bool = True) -> None:
        """Stop beating and listening; with `deregister`, delete the row (a clean exit). Without it the row
        is left to go stale, as a killed process leaves it (tests)."""
        self._stopped.set()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(5)
        if deregister:
            try:
                services.replica_deregister(replica_id=self.replica_id)
            except DatabaseError as exc:  # the row goes stale and is pruned later; exiting matters more
                logger.warning("replica %s: could not deregister: %s", self.replica_id, exc)


def serve(*, bind: str, advertise_host: str = "", heartbeat: float) -> LocalReplica:
    """Start a control listener on `bind` (ephemeral port), register it, and beat: a started replica."""
    replica_id = uuid.uuid4()
    server = ControlServer((bind, 0), str(replica_id))
    url = f"http://{advertised_host(bind=bind, configured=advertise_host)}:{server.port}"
    replica = LocalReplica(
        replica_id=replica_id,
        control_url=url,
        host=socket.gethostname(),
        pid=os.getpid(),
        heartbeat=heartbeat,
        server=server,
    )
    replica.start()
    return replica


_current: LocalReplica | None = None
_lock = threading.Lock()


def start() -> LocalReplica:
    """Make this process a registered replica, from the settings (once; `console.wsgi.served_application`)."""
    global _current
    with _lock:
        if _current is None:
            _current = serve(
                bind=str(settings.CONTROL_BIND),
                advertise_host=str(settings.CONTROL_ADVERTISE_HOST),
                heartbeat=float(settings.REPLICA_HEARTBEAT_SECONDS),
            )
            connection.close()  # the registration's connection: this thread serves no requests
        return _current


def stop() -> None:
    """Stop this process's listener and heartbeat and deregister it (as the web process exits)."""
    global _current
    with _lock:
        if _current is not None:
            _current.stop()
            connection.close()
            _current = None
