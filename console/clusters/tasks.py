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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError, OperationalError, connection

from console.clusters import control, services
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
def reap_stale_restart_jobs() -> dict[str, list[int]]:
    """Re-queue restart jobs abandoned by dead workers; fail those out of attempts."""
    result = services.restart_jobs_reap()
    return {"requeued": result.requeued, "failed": result.failed}


def run_restart(*, job_id: int, attempt: int) -> str:
    """The steps of a claimed job, under the lease `attempt`; 'succeeded', 'failed' or 'lost'."""
    job = RestartJob.objects.get(pk=job_id)
    step = RestartJob.CONTROL_STEPS[0]
    try:
        with heartbeat(job_id=job_id, attempt=attempt):
            for step in RestartJob.CONTROL_STEPS:
                if step == RestartJob.Step.WARM and not job.target_enabled:
                    continue  # nothing to warm when turning inference off
                _run_step(job, attempt, step)
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


def _run_step(job: RestartJob, attempt: int, step: RestartJob.Step) -> None:
    """One control call, tried again on transient errors with doubling pauses (a heartbeat per try)."""
    timeout = float(settings.RESTART_CONTROL_TIMEOUT)
    if step == RestartJob.Step.DRAIN:
        timeout += float(settings.RESTART_DRAIN_TIMEOUT)  # the web process waits that long before answering
    tries = int(settings.RESTART_STEP_ATTEMPTS)
    for number in range(1, tries + 1):
        _beat(job, attempt, step)
        try:
            detail = control.call_step(cluster_id=job.cluster_id, step=step, job_id=job.pk, timeout=timeout)
        except control.ControlError as exc:
            if not exc.transient or number == tries:
                raise
            pause = float(settings.RESTART_RETRY_BACKOFF) * 2 ** (number - 1)
            logger.warning(
                "restart job %s: %s failed (try %s/%s, retrying in %.1fs): %s",
                job.pk, step, number, tries, pause, exc.message,
            )  # fmt: skip
            time.sleep(pause)
            continue
        logger.info("restart job %s: %s done %s", job.pk, step, detail)
        return
