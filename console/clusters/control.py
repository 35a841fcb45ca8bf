"""The web process's control endpoint for cluster restarts, and the client the Celery worker calls it with.

Why an endpoint at all
----------------------
A restart has to act on things that exist only inside the web process: the per-process count of in-flight
data-plane requests (`inference.inflight`), the open vector store of each cluster
(`inference.stores`; Qdrant Edge allows one opener per storage directory, so only the web process may hold
it) and the ONNX engine with its loaded models. `inference.runtime` does each step. The Celery worker is a
separate process: draining, reopening storage or loading models there would act on the worker's own,
useless copies (or, for Edge, fight the web process for the directory). So the worker orchestrates and
records progress in the database, and asks the web process to do each step over HTTP:

    POST {CONTROL_URL}/internal/clusters/<cluster_id>/restart/<step>     body: {"token": <signed>}

with `step` one of `drain`, `storage`, `warm`, `health`. Every step is idempotent, so the worker can repeat
one after a timeout or a redelivery. Answers are JSON: 200 `{"ok": true, "step": ..., "detail": {...}}`;
errors `{"ok": false, "error": msg}` with 4xx for requests that cannot succeed by repeating them (bad
signature, unknown cluster, job no longer running) and 503/500 for conditions that may pass (requests still
draining, storage unreachable), which the worker retries with backoff.

Each web process serves the endpoint twice: on the public port (the Django view below, what CONTROL_URL
reaches) and on a control listener of its own (`console.clusters.replicas`), whose address it registers so
that the worker calls every live process; several processes share the public port, and a call to it
reaches one of them. Both run `run_step`; the listener's answers also name the replica.

Authentication
--------------
The endpoint shares the public port (and a replica's listener may face the network), so every call carries
a token made with Django's signing (`TimestampSigner`, keyed with CONTROL_TOKEN or else SECRET_KEY, which the
web server and the worker share, and salted for this use) over the cluster, the step and the job. Tokens
older than five minutes are refused, so a captured call cannot be replayed later, and a token for one
cluster or step is refused for another.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings
from django.core import signing
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from console.clusters.directory import cluster_info, forget_cluster
from console.clusters.models import Cluster, RestartJob
from inference import runtime
from inference.hooks import ClusterInfo

logger = logging.getLogger(__name__)

MAX_AGE_SECONDS = 300
_SALT = "console.clusters.control"


def _signer() -> signing.TimestampSigner:
    key = str(settings.CONTROL_TOKEN) if settings.CONTROL_TOKEN else settings.SECRET_KEY
    return signing.TimestampSigner(key=key, salt=_SALT)


def sign(*, cluster_id: str, step: str, job_id: int) -> str:
    """A token that allows one step of one job of one cluster, for MAX_AGE_SECONDS."""
    return _signer().sign_object({"cluster": cluster_id, "step": step, "job": job_id})


def unsign(token: str, *, cluster_id: str, step: str) -> int:
    """The job id of a valid, fresh token for this cluster and step; `signing.BadSignature` otherwise."""
    claims = _signer().unsign_object(token, max_age=MAX_AGE_SECONDS)
    if not isinstance(claims, dict) or claims.get("cluster") != cluster_id or claims.get("step") != step:
        raise signing.BadSignature("token is for another cluster or step")
    job_id = claims.get("job")
    if not isinstance(job_id, int):
        raise signing.BadSignature("token names no job")
    return job_id


# --- client (the Celery worker) ------------------------------------------------------------------------


class ControlError(Exception):
    """A control call failed; `transient` says whether trying again may help (network errors, 5xx)."""

    def __init__(self, message: str, *, transient: bool, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.status_code = status_code


def control_url() -> str:
    """Where the web process listens for control calls: CONTROL_URL, else PUBLIC_URL."""
    return str(settings.CONTROL_URL or settings.PUBLIC_URL).rstrip("/")


def step_path(*, cluster_id: str, step: str) -> str:
    """The path of a step's control call (the same on the public port and on a replica's listener)."""
    return reverse("console-restart-step", kwargs={"cluster_id": cluster_id, "step": step})


def call_step(
    *,
    cluster_id: str,
    step: str,
    job_id: int,
    timeout: float,
    base_url: str | None = None,
    replica_id: str | None = None,
) -> dict[str, Any]:
    """Ask a web process to run one restart step; the answer's `detail`, or ControlError.

    `base_url` is a replica's own listener (default: CONTROL_URL); with `replica_id`, an answer from another
    process (a dead replica's port taken by a new one, or an advertised host shared by several) is an error.
    """
    base = (base_url or control_url()).rstrip("/")
    body = {"token": sign(cluster_id=cluster_id, step=step, job_id=job_id)}
    url = f"{base}{step_path(cluster_id=cluster_id, step=step)}"
    try:
        response = httpx.post(url, json=body, timeout=timeout)
    except httpx.TransportError as exc:  # refused, reset, DNS, timeouts: the web process may come back
        raise ControlError(
            f"control endpoint {base} unreachable: {exc or type(exc).__name__}", transient=True
        ) from exc
    try:
        data = response.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    if response.status_code >= 400:
        message = str(data.get("error") or f"HTTP {response.status_code} from {url}")
        raise ControlError(message, transient=response.status_code >= 500, status_code=response.status_code)
    if not data.get("ok"):
        raise ControlError(f"unexpected answer from {url}", transient=False, status_code=response.status_code)
    if replica_id is not None and data.get("replica") != replica_id:
        raise ControlError(
            f"{base} answered as replica {data.get('replica') or '(none)'}, not {replica_id}: each web "
            "process must advertise an address of its own (CONTROL_ADVERTISE_HOST)",
            transient=False,
            status_code=response.status_code,
        )
    detail = data.get("detail")
    return detail if isinstance(detail, dict) else {}


# --- server (the web process) --------------------------------------------------------------------------

_STEPS: dict[str, Callable[[ClusterInfo, RestartJob], dict[str, Any]]] = {
    RestartJob.Step.DRAIN: lambda cluster, job: runtime.drain(cluster),
    RestartJob.Step.STORAGE: lambda cluster, job: runtime.reopen_storage(cluster),
    RestartJob.Step.WARM: lambda cluster, job: runtime.warm(cluster),
    RestartJob.Step.HEALTH: lambda cluster, job: runtime.health(cluster, with_models=job.target_enabled),
}


@dataclass(frozen=True)
class StepAnswer:
    """A control call's answer: the HTTP status and the JSON body (see the module docstring)."""

    status: int
    body: dict[str, Any]


def _error(message: str, status: int) -> StepAnswer:
    return StepAnswer(status, {"ok": False, "error": message})


def run_step(*, cluster_id: str, step: str, body: bytes) -> StepAnswer:
    """Check a control call's signed token and run its step in this process: what the Django view and every
    replica's control listener answer. Reads the database; call it outside any transaction."""
    try:
        payload = json.loads(body or b"{}")
        token = str(payload.get("token") or "") if isinstance(payload, dict) else ""
        job_id = unsign(token, cluster_id=cluster_id, step=step)
    except (ValueError, signing.BadSignature):  # SignatureExpired is a BadSignature
        return _error("invalid or expired control token", 403)
    run = _STEPS.get(step)
    if run is None:
        names = ", ".join(str(s) for s in RestartJob.CONTROL_STEPS)
        return _error(f"unknown step {step!r}; one of: {names}", 404)
    cluster = Cluster.objects.filter(pk=cluster_id).first()
    if cluster is None:
        return _error(f"cluster {cluster_id} does not exist", 404)
    job = RestartJob.objects.filter(pk=job_id, cluster_id=cluster_id).first()
    # A worker that lost its job (reaped, failed) must not drain or reopen a cluster that is serving.
    if job is None or job.state != RestartJob.State.RUNNING or cluster.status != Cluster.Status.RESTARTING:
        return _error(f"restart job {job_id} of cluster {cluster_id} is not running", 409)
    forget_cluster(cluster_id)  # from now on requests read "restarting" fresh, not from this process's cache
    try:
        detail = run(cluster_info(cluster), job)
    except runtime.StepFailed as exc:
        logger.warning("restart step %s of %s (job %s) failed: %s", step, cluster_id, job_id, exc.message)
        return _error(exc.message, exc.status)
    logger.info("restart step %s of %s (job %s) done: %s", step, cluster_id, job_id, detail)
    return StepAnswer(200, {"ok": True, "step": step, "detail": detail})


@csrf_exempt  # authenticated by the signed token, not a session cookie
@require_POST
def restart_step(request: HttpRequest, cluster_id: str, step: str) -> JsonResponse:
    """Run one restart step of a cluster in this (the web) process, for the worker running the job."""
    answer = run_step(cluster_id=cluster_id, step=step, body=request.body)
    return JsonResponse(answer.body, status=answer.status)
