"""The web process's control endpoint for cluster restarts, and the client the Celery worker calls it with.

Why an endpoint at all
----------------------
A restart has to act on things that exist only inside the web process: the per-process count of in-flight
data-plane requests (`inference.dataplane.inflight`), the open vector store of each cluster
(`inference.stores`; Qdrant Edge allows one opener per storage directory, so only the web process may hold
it) and the ONNX engine with its loaded models (`inference.embedding.get_engine`). The Celery worker is a
separate process: draining, reopening storage or loading models there would act on the worker's own,
useless copies (or, for Edge, fight the web process for the directory). So the worker orchestrates and
records progress in the database, and asks the web process to do each step over HTTP:

    POST {CONTROL_URL}/internal/clusters/<cluster_id>/restart/<step>     body: {"job_id": <id>}

with `step` one of `drain`, `storage`, `warm`, `health`. Every step is idempotent, so the worker can repeat
one after a timeout or a redelivery. Answers are JSON: 200 `{"ok": true, "step": ..., "detail": {...}}`;
errors `{"ok": false, "error": msg}` with 4xx for requests that cannot succeed by repeating them (bad
signature, unknown cluster, job no longer running) and 503/500 for conditions that may pass (requests still
draining, storage unreachable), which the worker retries with backoff.

Authentication
--------------
The endpoint shares the public port, so every call is signed: `X-Control-Timestamp` (unix seconds) and
`X-Control-Signature`, an HMAC-SHA256 keyed with CONTROL_TOKEN (by default derived from SECRET_KEY, which the
web server and the worker share) over the step, the cluster id, the timestamp and the body's SHA-256.
Signatures older than five minutes are refused, so a captured request cannot be replayed later. It assumes
one web process per deployment, as Qdrant Edge already requires (`make run` serves one process).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from console.clusters.models import Cluster, RestartJob
from inference import catalog, stores
from inference.dataplane import inflight
from inference.engine.types import EmbedRequest, EngineError, InputType, Kind
from inference.storage import StorageError

logger = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Control-Timestamp"
SIGNATURE_HEADER = "X-Control-Signature"
MAX_CLOCK_SKEW_SECONDS = 300
STEPS = ("drain", "storage", "warm", "health")


# --- signing (both sides) ------------------------------------------------------------------------------


def control_key() -> bytes:
    """The HMAC key: CONTROL_TOKEN, or one derived from SECRET_KEY (never SECRET_KEY itself)."""
    if settings.CONTROL_TOKEN:
        return str(settings.CONTROL_TOKEN).encode()
    return hmac.new(settings.SECRET_KEY.encode(), b"console.agent.control-token", hashlib.sha256).digest()


def sign(*, step: str, cluster_id: str, timestamp: str, body: bytes) -> str:
    """The signature of one control call."""
    message = "\n".join((step, cluster_id, timestamp, hashlib.sha256(body).hexdigest())).encode()
    return hmac.new(control_key(), message, hashlib.sha256).hexdigest()


def verify(*, step: str, cluster_id: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether a call is signed with our key, recently (constant-time comparison)."""
    try:
        skew = abs(time.time() - int(timestamp))
    except ValueError:
        return False
    if skew > MAX_CLOCK_SKEW_SECONDS:
        return False
    expected = sign(step=step, cluster_id=cluster_id, timestamp=timestamp, body=body)
    return hmac.compare_digest(expected, signature)


# --- client (the Celery worker) ------------------------------------------------------------------------


class AgentError(Exception):
    """A control call failed; `transient` says whether trying again may help (network errors, 5xx)."""

    def __init__(self, message: str, *, transient: bool, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.status_code = status_code


def control_url() -> str:
    """Where the web process listens for control calls: CONTROL_URL, else PUBLIC_URL."""
    return str(settings.CONTROL_URL or settings.PUBLIC_URL).rstrip("/")


def call_step(*, cluster_id: str, step: str, job_id: int, timeout: float) -> dict[str, Any]:
    """Ask the web process to run one restart step; the answer's `detail`, or AgentError."""
    body = json.dumps({"job_id": job_id}).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(step=step, cluster_id=cluster_id, timestamp=timestamp, body=body),
    }
    path = reverse("console-restart-step", kwargs={"cluster_id": cluster_id, "step": step})
    url = f"{control_url()}{path}"
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.TransportError as exc:  # refused, reset, DNS, timeouts: the web process may come back
        raise AgentError(
            f"control endpoint {control_url()} unreachable: {exc or type(exc).__name__}", transient=True
        ) from exc
    try:
        data = response.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    if response.status_code >= 400:
        message = str(data.get("error") or f"HTTP {response.status_code} from {url}")
        raise AgentError(message, transient=response.status_code >= 500, status_code=response.status_code)
    if not data.get("ok"):
        raise AgentError(f"unexpected answer from {url}", transient=False, status_code=response.status_code)
    detail = data.get("detail")
    return detail if isinstance(detail, dict) else {}


# --- server (the web process) --------------------------------------------------------------------------


class StepFailed(Exception):
    """A step could not be done now; the status tells the worker whether to retry (5xx) or give up (4xx)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _drain(cluster: Cluster, job: RestartJob) -> dict[str, Any]:
    # New requests are already refused (the cluster is RESTARTING and the data plane re-reads it after
    # counting a request), so the count only goes down from here.
    timeout = float(settings.RESTART_DRAIN_TIMEOUT)
    started = time.monotonic()
    if not inflight.drain(cluster.pk, timeout):
        raise StepFailed(
            f"{inflight.in_flight(cluster.pk)} request(s) still running after {timeout:g}s of draining", 503
        )
    return {"waited_ms": round((time.monotonic() - started) * 1000)}


def _storage(cluster: Cluster, job: RestartJob) -> dict[str, Any]:
    was_open = stores.store_close(cluster.pk)
    try:
        # Reopen now, not on the first request, and make one cheap call: a remote server is health-checked
        # and an embedded directory is proven readable before traffic comes back.
        names = stores.store_for(cluster).list_collections()
    except StorageError as exc:
        raise StepFailed(f"storage did not reopen: {exc.message}", 503) from exc
    return {"backend": cluster.storage_backend, "was_open": was_open, "collections": len(names)}


def _installed_models() -> list[catalog.CatalogEntry]:
    return [e for e in catalog.CATALOG if catalog.is_installed(settings.MODELS_DIR, e.name)]


def _warm(cluster: Cluster, job: RestartJob) -> dict[str, Any]:
    from inference.embedding import get_engine  # the engine is built on first use, never at import

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


def _health(cluster: Cluster, job: RestartJob) -> dict[str, Any]:
    from inference.embedding import get_engine

    try:
        collections = len(stores.store_for(cluster).list_collections())
    except StorageError as exc:
        raise StepFailed(f"storage health check failed: {exc.message}", 503) from exc
    probed: list[str] = []
    if job.target_enabled:
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


_HANDLERS: dict[str, Callable[[Cluster, RestartJob], dict[str, Any]]] = {
    "drain": _drain,
    "storage": _storage,
    "warm": _warm,
    "health": _health,
}


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"ok": False, "error": message}, status=status)


@csrf_exempt  # authenticated by the HMAC signature, not a session cookie
@require_POST
def restart_step(request: HttpRequest, cluster_id: str, step: str) -> JsonResponse:
    """Run one restart step of a cluster in this (the web) process, for the worker running the job."""
    if not verify(
        step=step,
        cluster_id=cluster_id,
        timestamp=request.headers.get(TIMESTAMP_HEADER, ""),
        body=request.body,
        signature=request.headers.get(SIGNATURE_HEADER, ""),
    ):
        return _error("invalid or expired control signature", 403)
    handler = _HANDLERS.get(step)
    if handler is None:
        return _error(f"unknown step {step!r}; one of: {', '.join(STEPS)}", 404)
    try:
        job_id = int(json.loads(request.body or b"{}").get("job_id"))
    except (ValueError, TypeError, AttributeError):
        return _error('body must be {"job_id": <int>}', 400)
    cluster = Cluster.objects.filter(pk=cluster_id).first()
    if cluster is None:
        return _error(f"cluster {cluster_id} does not exist", 404)
    job = RestartJob.objects.filter(pk=job_id, cluster_id=cluster_id).first()
    # A worker that lost its job (reaped, failed) must not drain or reopen a cluster that is serving.
    if job is None or job.state != RestartJob.State.RUNNING or cluster.status != Cluster.Status.RESTARTING:
        return _error(f"restart job {job_id} of cluster {cluster_id} is not running", 409)
    try:
        detail = handler(cluster, job)
    except StepFailed as exc:
        logger.warning("restart step %s of %s (job %s) failed: %s", step, cluster_id, job_id, exc.message)
        return _error(exc.message, exc.status)
    logger.info("restart step %s of %s (job %s) done: %s", step, cluster_id, job_id, detail)
    return JsonResponse({"ok": True, "step": step, "detail": detail})
