"""What a cluster restart does inside the web process: drain, reopen storage, warm models, health-check.

These act on objects that live only in the serving process (the in-flight counts, the open vector stores,
the ONNX engine), so the restart job's worker asks the web process to run them through the cluster
domain's signed control endpoint (`console.clusters.control`). Each step is idempotent and raises
`StepFailed` with an HTTP status: 5xx when trying again may help, 4xx when it cannot.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from inference import catalog, inflight, stores
from inference.engine.types import EmbedRequest, EngineError, InputType, Kind
from inference.hooks import ClusterInfo
from inference.storage import StorageError


class StepFailed(Exception):
    """A step could not be done now; the status tells the worker whether to retry (5xx) or give up (4xx)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def drain(cluster: ClusterInfo) -> dict[str, Any]:
    """Wait until the cluster's in-flight requests finished (new ones are refused while it restarts)."""
    timeout = float(settings.RESTART_DRAIN_TIMEOUT)
    started = time.monotonic()
    if not inflight.drain(cluster.id, timeout):
        raise StepFailed(
            f"{inflight.in_flight(cluster.id)} request(s) still running after {timeout:g}s of draining", 503
        )
    return {"waited_ms": round((time.monotonic() - started) * 1000)}


def reopen_storage(cluster: ClusterInfo) -> dict[str, Any]:
    """Close the cluster's store and open it again, proving it answers before traffic comes back."""
    was_open = stores.store_close(cluster.id)
    try:
        # Reopen now, not on the first request: a remote server is health-checked and an embedded
        # directory is proven readable.
        names = stores.store_for(cluster).list_collections()
    except StorageError as exc:
        raise StepFailed(f"storage did not reopen: {exc.message}", 503) from exc
    return {"backend": stores.backend(cluster), "was_open": was_open, "collections": len(names)}


def warm(cluster: ClusterInfo) -> dict[str, Any]:
    """Load every installed model in the ONNX workers, so the first request after the restart is fast."""
    from inference.embedding import forget_models, get_engine  # the engine is built on first use

    forget_models()  # models installed or removed since are found again
    engine = get_engine()
    loaded: dict[str, int] = {}
    for entry in _installed_models():
        started = time.monotonic()
        try:
            engine.warm(entry.name)
        except EngineError as exc:
            raise StepFailed(f"model {entry.name} did not load: {exc}", 500) from exc
        loaded[entry.name] = round((time.monotonic() - started) * 1000)
    return {"models": loaded}


def health(cluster: ClusterInfo, *, with_models: bool) -> dict[str, Any]:
    """Storage answers; with `with_models`, each installed text model embeds a probe."""
    from inference.embedding import get_engine

    try:
        collections = len(stores.store_for(cluster).list_collections())
    except StorageError as exc:
        raise StepFailed(f"storage health check failed: {exc.message}", 503) from exc
    probed: list[str] = []
    if with_models:
        # One tiny embedding per text model proves the workers run, not only that the files loaded.
        for entry in _installed_models():
            if entry.spec.input_type != InputType.TEXT:
                continue
            request = EmbedRequest(entry.name, Kind.QUERY, InputType.TEXT, "health check")
            try:
                get_engine().embed([request])
            except EngineError as exc:
                raise StepFailed(f"model {entry.name} failed its health check: {exc}", 500) from exc
            probed.append(entry.name)
    return {"collections": collections, "models_probed": probed}


def _installed_models() -> list[catalog.CatalogEntry]:
    return [e for e in catalog.CATALOG if catalog.is_installed(settings.MODELS_DIR, e.name)]
