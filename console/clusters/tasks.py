"""Celery tasks: the cluster restart that applies an inference toggle, and the reaper of abandoned jobs.

How a restart runs
------------------
`restart_cluster(job_id)` is queued by the services with `transaction.on_commit` and takes only the id.
It claims the job with a conditional UPDATE (`services.restart_job_claim`); a duplicate delivery, or a
delivery of a job another worker holds, claims nothing and returns. Then, step by step:

1. drain     wait for the cluster's in-flight data-plane requests (new ones already get 503)
2. storage   close and reopen the cluster's storage, with one cheap call (a remote backend: health check)
3. warm      load the installed catalog models in the ONNX workers (only when enabling inference)
4. health    storage answers; when enabling, each text model embeds a probe
5. flip      the effective state becomes the job's target, the cluster RUNNING, the job succeeded

Steps 1-4 touch objects that live in the web process, not in this worker, so the worker asks the web process
to do them through its signed control endpoint (`console.clusters.control`, see there for why). Before each
step (and each try) the job's step, progress and heartbeat are written in a short transaction of their own;
no transaction is open while a control call runs. Meanwhile a heartbeat thread beats every
RESTART_HEARTBEAT_INTERVAL (a drain or a model warm-up may take longer than the stale limit), so a fresh
heartbeat means "a worker is on it" and a stale one "the worker is gone", whatever the step. Connection
errors and 5xx answers are transient: the step is tried RESTART_STEP_ATTEMPTS times with doubling pauses.
A 4xx or the last failed try marks the job failed with the reason; the cluster then runs again with its
previous effective state, and an admin can retry (`services.restart_job_retry`).

Every replica
-------------
There may be several web processes (web worker processes, replicas behind a load balancer); each registers its
own control listener (`console.clusters.replicas`). Each step is asked of every live replica at once, one
thread per call, each tried again on transient errors as above, and each answer is recorded on the job
(`RestartJob.replicas`, one short UPDATE per answer) for the console and the API. The threads only make HTTP
calls; every database read and write stays in this thread. A replica that cannot be reached and whose
registration has gone stale (no heartbeat for REPLICA_STALE_AFTER) or disappeared is dropped from the step
with a "gone" note: a replica killed mid-restart holds the job up for seconds, never for ever. One that
still beats but stays unreachable for 2 x REPLICA_STALE_AFTER fails the step (an address the worker cannot
reach: see CONTROL_BIND, CONTROL_ADVERTISE_HOST). The replicas are listed afresh at each step: one that
joins mid-restart reads the cluster's state fresh anyway, and is asked the steps that remain. With no
replica registered (`manage.py runserver`, Django's live test server, a WSGI server serving the bare
`console.wsgi.application`) a step is one call to CONTROL_URL (default PUBLIC_URL), as before.

A worker killed mid-job
-----------------------
Late acks with reject-on-worker-lost (settings) put the message back when a worker process dies, but a
broker may hold it for a long time (Redis: the visibility timeout) and a redelivery that comes while the
heartbeat is still fresh claims nothing. So `reap_stale_restart_jobs` (beat, every RESTART_REAP_INTERVAL
under `make run`) re-queues running jobs whose heartbeat is older than RESTART_STALE_AFTER, which the claim
then accepts with attempts + 1, and fails them after RESTART_MAX_ATTEMPTS: with the defaults (10 s, 20 s,
beats every 5 s) a killed worker's job is claimed again within 35 s and the cluster answers within a minute.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError, OperationalError, connection
from django.utils import timezone

from console.clusters import control, selectors, services
from console.clusters.models import RestartJob

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LeaseLost(Exception):
    """Another run took the job over (this worker was presumed dead) or the job was failed meanwhile."""


@shared_task(name=services.RESTART_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def restart_cluster(job_id: int) -> str:
    """Run one restart job to the end; returns what happened (for logs and tests)."""
    attempt = _with_db_retries(lambda: services.restart_job_claim(job_id=job_id))
    if attempt is None:
        logger.info("restart job %s: nothing to claim (duplicate delivery or already finished)", job_id)
        return "skipped"
    return run_restart(job_id=job_id, attempt=attempt)


@shared_task(ignore_result=True)
def reap_stale_restart_jobs() -> dict[str, list[int] | int]:
    """Re-queue restart jobs abandoned by dead workers, fail those out of attempts; prune dead replicas."""
    result = services.restart_jobs_reap()
    pruned = services.replicas_prune()
    return {"requeued": result.requeued, "failed": result.failed, "replicas_pruned": pruned}


def run_restart(*, job_id: int, attempt: int) -> str:
    """The steps of a claimed job, under the lease `attempt`; 'succeeded', 'failed' or 'lost'."""
    job = RestartJob.objects.get(pk=job_id)
    step = RestartJob.CONTROL_STEPS[0]
    report = Report(job_id=job_id, attempt=attempt)
    try:
        with heartbeat(job_id=job_id, attempt=attempt):
            for step in RestartJob.CONTROL_STEPS:
                if step == RestartJob.Step.WARM and not job.target_enabled:
                    continue  # nothing to warm when turning inference off
                _run_step(job, attempt, step, report)
            step = RestartJob.Step.FLIP
            _beat(job, attempt, step)
            chained = _with_db_retries(lambda: services.restart_job_complete(job_id=job_id, attempt=attempt))
    except LeaseLost:
        logger.warning("restart job %s: attempt %s no longer holds the job; stopping", job_id, attempt)
        return "lost"
    except control.ControlError as exc:
        hint = "" if exc.transient else " (not retried: the error is not transient)"
        error = f"{step.label} failed: {exc.message}{hint}"
        _with_db_retries(lambda: services.restart_job_fail(job_id=job_id, attempt=attempt, error=error))
        return "failed"
    except Exception as exc:
        # A bug, or a database still failing after retries: fail the job with what we know. If even that
        # write fails, the error leaves the task, the job stays running, and the reaper takes it up once its
        # heartbeat is stale.
        logger.exception("restart job %s: unexpected error in step %s", job_id, step)
        error = f"{step.label} failed: internal error ({type(exc).__name__})"
        _with_db_retries(lambda: services.restart_job_fail(job_id=job_id, attempt=attempt, error=error))
        return "failed"
    if chained is not None:
        logger.info("restart job %s: desired state changed meanwhile; chained job %s", job_id, chained.pk)
    return "succeeded"


@contextmanager
def heartbeat(*, job_id: int, attempt: int) -> Iterator[None]:
    """Beat the job's heartbeat every RESTART_HEARTBEAT_INTERVAL, from a thread, while the block runs.

    The steps block in control calls and pauses for longer than the stale limit; the thread keeps the job
    visibly alive meanwhile, so the reaper takes over only from a worker that is really gone. When the
    lease is lost the thread stops beating; the run finds out at its next conditional write (`_beat`).
    """
    interval = float(settings.RESTART_HEARTBEAT_INTERVAL)
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(interval):
                try:
                    if not services.restart_job_heartbeat(job_id=job_id, attempt=attempt):
                        return
                except DatabaseError as exc:  # a missed beat; the stale limit allows a few
                    logger.warning("restart job %s: heartbeat failed: %s", job_id, exc)
                    connection.close_if_unusable_or_obsolete()
        finally:
            connection.close()  # this thread's own database connection

    thread = threading.Thread(target=beat, name=f"restart-job-{job_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _beat(job: RestartJob, attempt: int, step: RestartJob.Step) -> None:
    """Record the step and beat the heartbeat, or stop if the job is no longer ours."""
    if not _with_db_retries(
        lambda: services.restart_job_progress(
            job_id=job.pk, attempt=attempt, step=step, progress=RestartJob.PROGRESS[step]
        )
    ):
        raise LeaseLost()


def _with_db_retries(write: Callable[[], T]) -> T:
    """A database write of the worker, tried again while the database is momentarily unavailable.

    SQLite answers "database is locked" under contention and PostgreSQL drops connections on restart;
    neither should fail a restart. Every write here is conditional on the lease, so repeating one is safe.
    """
    tries = int(settings.RESTART_STEP_ATTEMPTS)
    for number in range(1, tries + 1):
        try:
            return write()
        except OperationalError as exc:
            if number == tries:
                raise
            pause = float(settings.RESTART_RETRY_BACKOFF) * 2 ** (number - 1)
            logger.warning(
                "restart: database unavailable (try %s/%s, retry in %.1fs): %s", number, tries, pause, exc
            )
            if not connection.in_atomic_block:  # a caller's transaction is not ours to drop
                connection.close_if_unusable_or_obsolete()  # a broken one is replaced on the next query
            time.sleep(pause)
    raise AssertionError("unreachable")  # the loop returns or raises


@dataclass
class Target:
    """A web process one step is asked of: a registered replica, or the single CONTROL_URL without one."""

    key: str  # the replica's id; "control-url" for CONTROL_URL
    url: str
    host: str
    pid: int | None
    replica_id: str | None  # None: CONTROL_URL, which has no registration that could go stale
    tries: int = 0
    due: float = 0.0  # monotonic time of the next call
    calling: bool = False
    unreachable_since: float | None = None  # first refused or timed-out call of this step

    @property
    def name(self) -> str:
        """How logs and errors name it."""
        return f"{self.host} (pid {self.pid})" if self.pid is not None else self.host


def _targets() -> list[Target]:
    """The live replicas, read fresh for each step; CONTROL_URL alone when none is registered."""
    live = _with_db_retries(lambda: selectors.replicas_live())
    if live:
        return [
            Target(key=str(r.pk), url=r.control_url, host=r.host, pid=r.pid, replica_id=str(r.pk))
            for r in live
        ]
    url = control.control_url()
    parts = urlsplit(url)
    # hostname:port only: a URL's userinfo must not end up in the report.
    host = f"{parts.hostname or url}{f':{parts.port}' if parts.port else ''}"
    return [Target(key="control-url", url=url, host=host, pid=None, replica_id=None)]


class Report:
    """What each web process answered, step by step: kept here, written whole to `RestartJob.replicas` after
    each answer (one conditional UPDATE, in this thread only, so no answer overwrites another)."""

    def __init__(self, *, job_id: int, attempt: int) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.replicas: dict[str, dict[str, Any]] = {}

    def record(self, target: Target, step: str, **result: Any) -> None:
        """Add one answer (`ok`, and `detail`, `error` or `gone`) and store the report; LeaseLost if the job
        is no longer this worker's."""
        at = timezone.now().isoformat(timespec="seconds")
        entry = self.replicas.setdefault(target.key, {"host": target.host, "pid": target.pid, "steps": {}})
        outcome = {"ok": bool(result.get("ok")), "at": at}
        for name in ("detail", "error", "gone"):
            if result.get(name) is not None:
                outcome[name] = result[name]
        entry["steps"][step] = outcome
        for name in ("detail", "error", "gone"):  # the top level is the latest step's, not an older one's
            entry.pop(name, None)
        entry.update({"step": step, **outcome})
        if not _with_db_retries(
            lambda: services.restart_job_report(
                job_id=self.job_id, attempt=self.attempt, replicas=self.replicas
            )
        ):
            raise LeaseLost()


def _call(target: Target, job: RestartJob, step: str, timeout: float, answers: queue.Queue[Any]) -> None:
    """One control call, in a thread of its own: its answer (or ControlError) goes to `answers`."""
    outcome: dict[str, Any] | control.ControlError
    try:
        outcome = control.call_step(
            cluster_id=job.cluster_id,
            step=step,
            job_id=job.pk,
            timeout=timeout,
            base_url=target.url,
            replica_id=target.replica_id,
        )
    except control.ControlError as exc:
        outcome = exc
    except Exception as exc:  # a bug must reach the job's error, not die silently in this thread
        logger.exception("restart job %s: control call to %s failed", job.pk, target.name)
        outcome = control.ControlError(f"internal error ({type(exc).__name__})", transient=False)
    answers.put((target.key, outcome))


def _run_step(job: RestartJob, attempt: int, step: RestartJob.Step, report: Report) -> None:
    """One step on every live replica at once, each tried again on transient errors with doubling pauses (a
    heartbeat per try); returns when each answered or is gone, raises ControlError when one fails."""
    timeout = float(settings.RESTART_CONTROL_TIMEOUT)
    if step == RestartJob.Step.DRAIN:
        timeout += float(settings.RESTART_DRAIN_TIMEOUT)  # the web process waits that long before answering
    tries = int(settings.RESTART_STEP_ATTEMPTS)
    stale_after = float(settings.REPLICA_STALE_AFTER)
    liveness_every = min(1.0, stale_after / 4)  # how soon a replica that stopped beating is let go
    _beat(job, attempt, step)
    pending = {target.key: target for target in _targets()}
    answers: queue.Queue[tuple[str, dict[str, Any] | control.ControlError]] = queue.Queue()  # this step's
    details: dict[str, Any] = {}
    next_liveness = time.monotonic() + liveness_every

    def gone(target: Target) -> None:
        note = (
            f"replica {target.name} gone: no heartbeat for {stale_after:g}s (or deregistered); "
            "the restart goes on without it"
        )
        logger.warning("restart job %s: %s: %s", job.pk, step, note)
        report.record(target, step, ok=False, gone=True, error=note)
        del pending[target.key]

    def live(targets: list[Target]) -> set[str]:
        ids = [t.replica_id for t in targets if t.replica_id is not None]
        return _with_db_retries(lambda: selectors.replica_ids_live(ids=ids)) if ids else set()

    while pending:
        now = time.monotonic()
        for target in pending.values():
            if not target.calling and target.due <= now:
                target.calling, target.tries = True, target.tries + 1
                threading.Thread(
                    target=_call, args=(target, job, step, timeout, answers), daemon=True,
                    name=f"restart-job-{job.pk}-{step}-{target.key[:8]}",
                ).start()  # fmt: skip
        waits = [t.due - now for t in pending.values() if not t.calling]
        try:
            key, outcome = answers.get(timeout=max(0.01, min([*waits, next_liveness - now])))
        except queue.Empty:
            key, outcome = "", None
        now = time.monotonic()
        if now >= next_liveness:
            # A replica frozen or cut off mid-call may not answer before the call's timeout: let it go as
            # soon as its registration is stale, rather than waiting for the timeout. Its thread is abandoned.
            replicas = [t for t in pending.values() if t.replica_id is not None]
            alive = live(replicas)
            for target in replicas:
                if target.replica_id not in alive:
                    gone(target)
            next_liveness = now + liveness_every
        answered = pending.get(key)
        if answered is None or outcome is None:
            continue  # no answer yet, or a late one from a replica already let go
        target = answered
        target.calling = False
        if isinstance(outcome, dict):
            details[key] = outcome
            report.record(target, step, ok=True, detail=outcome)
            del pending[key]
            continue
        exc = outcome
        if target.replica_id is not None and target.replica_id not in live([target]):
            gone(target)
            continue
        unreachable = exc.status_code is None  # refused, reset or timed out: the process may be dead
        if unreachable and target.unreachable_since is None:
            target.unreachable_since = now
        # A killed replica refuses calls at once, while its registration stays fresh for up to
        # REPLICA_STALE_AFTER: keep calling until it goes stale (then it is gone) rather than failing the
        # job. Bounded: one that still beats but stays unreachable for twice that long fails the step.
        waiting_for_stale = (
            target.replica_id is not None
            and unreachable
            and target.unreachable_since is not None
            and now - target.unreachable_since < 2 * stale_after
        )
        if not exc.transient or (target.tries >= tries and not waiting_for_stale):
            report.record(target, step, ok=False, error=exc.message)
            if target.replica_id is None:
                raise exc
            message = f"replica {target.name}: {exc.message}"
            if unreachable and exc.transient:
                message += (
                    f" (still beating but unreachable for {now - (target.unreachable_since or now):.0f}s: "
                    "the worker must reach CONTROL_BIND / CONTROL_ADVERTISE_HOST)"
                )
            raise control.ControlError(message, transient=exc.transient, status_code=exc.status_code) from exc
        pause = min(float(settings.RESTART_RETRY_BACKOFF) * 2 ** (target.tries - 1), 5.0)
        if target.replica_id is None:
            logger.warning(
                "restart job %s: %s failed (try %s/%s, retrying in %.1fs): %s",
                job.pk, step, target.tries, tries, pause, exc.message,
            )  # fmt: skip
        else:
            logger.warning(
                "restart job %s: %s on replica %s failed (try %s, retrying in %.1fs): %s",
                job.pk, step, target.name, target.tries, pause, exc.message,
            )  # fmt: skip
        _beat(job, attempt, step)
        target.due = now + pause
    logger.info("restart job %s: %s done %s", job.pk, step, details)
