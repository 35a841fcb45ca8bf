"""WSGI entry point: the data plane and the console, each through a Django handler of its own.

`make run` serves `served_application` with granian (`console/serve.py`); any WSGI server can serve
`application` alone (the live test server does).

The data plane (`/clusters/<id>...`, Qdrant's REST API) authenticates by API key and speaks JSON only, so
it skips the console's middleware (sessions, CSRF, users, messages, static files, trailing-slash redirects,
frame headers): Django ran all of them on every data-plane request for nothing, ~8% of a raw-vector
query's CPU. Both handlers share settings, URLs and views; only the middleware differs.
"""

from __future__ import annotations

import atexit
import gc
import multiprocessing.util
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.utils.module_loading import import_string

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

DATA_PLANE_PREFIX = "/clusters/"  # console/urls.py mounts the data plane here
# Middleware hooks that Django's own load_middleware collects; the data plane's chain does not.
_HOOKS = ("process_view", "process_template_response", "process_exception")


class DataPlaneHandler(WSGIHandler):
    """Django's WSGI handler with `settings.DATA_PLANE_MIDDLEWARE` instead of `settings.MIDDLEWARE`."""

    def load_middleware(self, is_async: bool = False) -> None:
        """Chain the data plane's middleware as Django chains MIDDLEWARE (synchronous middleware only)."""
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        handler = convert_exception_to_response(self._get_response)  # type: ignore[attr-defined]  # not in the stubs
        for path in reversed(settings.DATA_PLANE_MIDDLEWARE):
            middleware = import_string(path)(handler)
            if any(hasattr(middleware, hook) for hook in _HOOKS):
                # Those hooks would need the rest of Django's load_middleware; the data plane needs none.
                raise ImproperlyConfigured(f"{path}: data-plane middleware may not define {_HOOKS}")
            handler = convert_exception_to_response(middleware)
        self._middleware_chain = handler


StartResponse = Callable[..., Any]
_console = get_wsgi_application()  # sets Django up
_data_plane = DataPlaneHandler()


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Serve a request through the data plane's handler or the console's, by its path."""
    handler = _data_plane if environ.get("PATH_INFO", "").startswith(DATA_PLANE_PREFIX) else _console
    response = handler(environ, start_response)
    if isinstance(response, HttpResponse):  # the whole body is in memory (streaming ones are not)
        # Returned as a list, granian writes the body in one call from Rust; the response object itself is
        # iterated through Python (bench/cpu_split.py, 3 rounds: ~0.05 ms less CPU a query, 1.35 -> 1.30 ms
        # outside the ONNX workers). Closing it first only moves Django's request_finished (connections
        # tidied) before the bytes go out.
        try:
            return [response.content]
        finally:
            response.close()
    return response


def served_application() -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """`make run`'s web process (granian's `--factory` target): `application`, and beside it Qdrant's gRPC
    API (`GRPC_PORT`) and this process's registration as a replica; both stop when the process exits.

    The gRPC server runs in the web process because that process owns the clusters' embedded storage
    (Qdrant Edge allows one opener per directory) and the loaded models (`inference/grpc/server.py`). Each
    process registers a control listener of its own, so a restart job reaches every web process, not only
    the one behind the shared port (`console/clusters/replicas.py`).
    """
    from billing import journal
    from console import metrics
    from console.clusters import replicas
    from inference.grpc import server as grpc_server

    metrics.forget_dead_processes()  # a worker killed before this one took its place
    if settings.USAGE_JOURNAL:
        journal.start(settings.USAGE_JOURNAL_DIR)  # after replaying what a killed worker left
    # What is loaded by now (Django, the apps, the clients' models: ~190k objects) lives as long as the
    # process. Frozen, the garbage collector stops walking it at every full collection: measured under the
    # 16-client load, a full collection held the GIL for ~70 ms, ~12 ms once frozen.
    gc.collect()
    gc.freeze()
    grpc_server.start()
    replicas.start()
    _stop_with_parent()
    # Granian's workers are multiprocessing processes: a forked one runs multiprocessing's finalizers as it
    # exits, not atexit's; a spawned one runs both. Stopping twice is harmless.
    multiprocessing.util.Finalize(None, _stop_serving, exitpriority=10)
    atexit.register(_stop_serving)
    return application


PARENT_CHECK_SECONDS = 1.0


def _stop_with_parent() -> None:
    """Stop this worker gracefully once the web server's main process is gone.

    Granian's workers, unlike gunicorn's, keep serving when their main process is killed (SIGKILL, the OOM
    killer): the orphan would hold the port, the embedded storage and the replica registration, and nothing
    would restart it. Its own SIGTERM goes through granian's handler: requests in flight finish.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _stop_serving() -> None:
    """Deregister the replica (no restart job waits for it), stop gRPC, letting running calls finish, and
    fold the usage journal."""
    from billing import journal
    from console import metrics
    from console.clusters import replicas
    from inference.grpc import server as grpc_server

    replicas.stop()
    grpc_server.stop()
    journal.stop()  # once the last RPC settled its usage
    metrics.forget_process(os.getpid())
