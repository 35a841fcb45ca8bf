"""Unit tests of the toggle services and the restart task's logic (claim, lease, flip, chain, fail, reap)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.conf import LazySettings
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone

from console.clusters.models import Cluster, InferenceToggle, RestartJob
from console.clusters.services import (
    ConsolePermissionDenied,
    CreatedCluster,
    CreatedUser,
    InferenceNotEligible,
    RestartJobConflict,
    cluster_inference_toggle,
    restart_job_claim,
    restart_job_complete,
    restart_job_fail,
    restart_job_progress,
    restart_job_retry,
    restart_jobs_reap,
    user_create,
)
from console.clusters.tasks import _with_db_retries, restart_cluster, run_restart
from tests.fixtures import EU, US, memory_queue_messages

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster(make_cluster: Callable[..., CreatedCluster]) -> Cluster:
    """A paid US cluster created before 2025-07-07: eligible, inference off."""
    return make_cluster().cluster


def fresh(cluster: Cluster) -> Cluster:
    return Cluster.objects.get(pk=cluster.pk)


def test_toggle_records_desired_state_job_and_audit(cluster: Cluster, admin: CreatedUser) -> None:
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    assert (job.state, job.target_enabled, job.previous_enabled, job.requested_by) == (
        "queued",
        True,
        False,
        admin.user,
    )
    stored = fresh(cluster)
    assert (stored.status, stored.inference_enabled, stored.inference_desired) == ("restarting", False, True)
    toggle = InferenceToggle.objects.get()
    assert (toggle.actor, toggle.from_state, toggle.to_state, toggle.job) == (admin.user, False, True, job)


def test_toggle_while_a_job_is_active_joins_it(cluster: Cluster, admin: CreatedUser) -> None:
    first = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    second = cluster_inference_toggle(cluster=cluster, enabled=False, actor=admin.user)
    third = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert first == second == third
    assert RestartJob.objects.count() == 1
    assert fresh(cluster).inference_desired is True
    trail = [(t.from_state, t.to_state, t.job_id) for t in InferenceToggle.objects.order_by("id")]
    assert trail == [(False, True, first.pk), (True, False, first.pk), (False, True, first.pk)]  # type: ignore[union-attr]


def test_toggle_to_the_effective_state_restarts_nothing(cluster: Cluster, admin: CreatedUser) -> None:
    assert cluster_inference_toggle(cluster=cluster, enabled=False, actor=admin.user) is None
    assert fresh(cluster).status == "running"
    assert not RestartJob.objects.exists()
    assert InferenceToggle.objects.get().job is None  # still audited


def test_only_admins_may_toggle(cluster: Cluster, viewer: CreatedUser) -> None:
    for actor in (viewer.user, AnonymousUser()):
        with pytest.raises(ConsolePermissionDenied):
            cluster_inference_toggle(cluster=cluster, enabled=True, actor=actor)
    assert not RestartJob.objects.exists() and not InferenceToggle.objects.exists()


@pytest.mark.parametrize(("tier", "region"), [("free", US), ("paid", EU), ("free", EU)])
def test_enabling_an_ineligible_cluster_is_refused_with_the_reason(
    make_cluster: Callable[..., CreatedCluster], admin: CreatedUser, tier: str, region: str
) -> None:
    cluster = make_cluster(tier=tier, region=region).cluster
    with pytest.raises(InferenceNotEligible) as refused:
        cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert refused.value.eligibility.reason and str(refused.value) == refused.value.eligibility.reason


def test_database_allows_one_active_job_per_cluster(cluster: Cluster) -> None:
    RestartJob.objects.create(cluster=cluster, target_enabled=True, previous_enabled=False)
    with pytest.raises(IntegrityError), transaction.atomic():
        RestartJob.objects.create(
            cluster=cluster, target_enabled=False, previous_enabled=False, state="running"
        )
    RestartJob.objects.create(cluster=cluster, target_enabled=False, previous_enabled=False, state="failed")


def test_claim_is_a_conditional_update_and_attempts_are_the_lease(
    cluster: Cluster, admin: CreatedUser, settings: LazySettings
) -> None:
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    assert restart_job_claim(job_id=job.pk) == 1
    assert restart_job_claim(job_id=job.pk) is None  # duplicate delivery: the job is running, heartbeat fresh
    assert restart_job_progress(job_id=job.pk, attempt=1, step="drain", progress=10)
    # The worker dies; once the heartbeat is stale another delivery claims it with the next attempt.
    later = timezone.now() + timedelta(seconds=settings.RESTART_STALE_AFTER + 1)
    assert restart_job_claim(job_id=job.pk, now=later) == 2
    assert not restart_job_progress(job_id=job.pk, attempt=1, step="storage", progress=30)  # old lease
    assert restart_job_complete(job_id=job.pk, attempt=1) is None  # the old run cannot flip
    assert fresh(cluster).inference_enabled is False
    assert not restart_job_fail(job_id=job.pk, attempt=1, error="old run")
    assert restart_job_complete(job_id=job.pk, attempt=2) is None  # no chain: desired == target
    stored = fresh(cluster)
    assert (stored.inference_enabled, stored.status) == (True, "running")
    job.refresh_from_db()
    assert (job.state, job.progress, job.attempts, job.step) == ("succeeded", 100, 2, "done")
    assert restart_job_claim(job_id=job.pk, now=later) is None  # finished jobs are never claimed


def test_claim_stops_after_max_attempts(cluster: Cluster, admin: CreatedUser, settings: LazySettings) -> None:
    settings.RESTART_MAX_ATTEMPTS = 2
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    step = timedelta(seconds=settings.RESTART_STALE_AFTER + 1)
    assert restart_job_claim(job_id=job.pk) == 1
    assert restart_job_claim(job_id=job.pk, now=timezone.now() + step) == 2
    assert restart_job_claim(job_id=job.pk, now=timezone.now() + 3 * step) is None


def test_a_toggle_during_the_job_chains_one_more_restart(cluster: Cluster, admin: CreatedUser) -> None:
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    attempt = restart_job_claim(job_id=job.pk)
    assert attempt is not None
    cluster_inference_toggle(cluster=cluster, enabled=False, actor=admin.user)  # while it runs
    chained = restart_job_complete(job_id=job.pk, attempt=attempt)
    assert chained is not None
    assert (chained.state, chained.target_enabled, chained.previous_enabled, chained.chained_from) == (
        "queued",
        False,
        True,
        job,
    )
    stored = fresh(cluster)
    # The first job's target became effective, and the cluster stays restarting for the chained job.
    assert (stored.inference_enabled, stored.inference_desired, stored.status) == (True, False, "restarting")
    assert RestartJob.objects.filter(state__in=RestartJob.ACTIVE_STATES).count() == 1


def test_failure_keeps_the_previous_state_and_retry_starts_a_new_job(
    cluster: Cluster, admin: CreatedUser, viewer: CreatedUser
) -> None:
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    with pytest.raises(RestartJobConflict):
        restart_job_retry(job=job, actor=admin.user)  # not failed yet
    attempt = restart_job_claim(job_id=job.pk)
    assert restart_job_fail(job_id=job.pk, attempt=attempt, error="Health check failed: boom")
    stored = fresh(cluster)
    assert (stored.status, stored.inference_enabled, stored.inference_desired) == ("running", False, True)
    job.refresh_from_db()
    assert (job.state, job.error) == ("failed", "Health check failed: boom")
    assert job.finished_at is not None

    with pytest.raises(ConsolePermissionDenied):
        restart_job_retry(job=job, actor=viewer.user)
    retry = restart_job_retry(job=job, actor=admin.user)
    assert (retry.state, retry.target_enabled, retry.retry_of) == ("queued", True, job)
    assert fresh(cluster).status == "restarting"
    with pytest.raises(RestartJobConflict):
        restart_job_retry(job=job, actor=admin.user)  # a restart is in progress


def test_an_older_failed_job_cannot_be_retried(cluster: Cluster, admin: CreatedUser) -> None:
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    restart_job_fail(job_id=job.pk, error="x")
    newer = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert newer is not None and newer != job
    restart_job_fail(job_id=newer.pk, error="y")
    with pytest.raises(RestartJobConflict, match="newer"):
        restart_job_retry(job=job, actor=admin.user)


def test_reaper_requeues_stale_jobs_and_fails_exhausted_ones(
    make_cluster: Callable[..., CreatedCluster], admin: CreatedUser, settings: LazySettings
) -> None:
    settings.RESTART_MAX_ATTEMPTS = 2
    long_ago = timezone.now() - timedelta(seconds=settings.RESTART_STALE_AFTER + 60)
    one, two, three, four = (make_cluster().cluster for _ in range(4))
    jobs = []
    for cluster in (one, two, three, four):
        job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
        assert job is not None
        jobs.append(job)
    stale, exhausted, fresh_job, lost_message = jobs
    RestartJob.objects.filter(pk=stale.pk).update(
        state="running", attempts=1, heartbeat_at=long_ago, step="drain"
    )
    RestartJob.objects.filter(pk=exhausted.pk).update(state="running", attempts=2, heartbeat_at=long_ago)
    RestartJob.objects.filter(pk=fresh_job.pk).update(
        state="running", attempts=1, heartbeat_at=timezone.now()
    )
    RestartJob.objects.filter(pk=lost_message.pk).update(created_at=long_ago)  # queued, never claimed
    memory_queue_messages()

    result = restart_jobs_reap()

    assert sorted(result.requeued) == sorted([stale.pk, lost_message.pk])
    assert result.failed == [exhausted.pk]
    sent = memory_queue_messages()
    assert sorted(sent) == sorted([("console.clusters.tasks.restart_cluster", [j]) for j in result.requeued])
    exhausted.refresh_from_db()
    assert exhausted.state == "failed" and "stopped responding 2 times" in exhausted.error
    assert (fresh(three).status, fresh(three).inference_enabled) == ("restarting", False)
    assert (fresh(two).status, fresh(two).inference_enabled) == ("running", False)  # previous state kept


def test_task_fails_the_job_after_retrying_an_unreachable_control_endpoint(
    cluster: Cluster, admin: CreatedUser, settings: LazySettings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CONTROL_URL = "http://127.0.0.1:9"  # discard port: connection refused
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    with caplog.at_level(logging.WARNING, logger="console.clusters.tasks"):
        assert restart_cluster.run(job.pk) == "failed"
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == settings.RESTART_STEP_ATTEMPTS - 1
    job.refresh_from_db()
    assert job.state == "failed" and job.step == "drain"
    assert (
        job.error.startswith("Draining in-flight requests failed: control endpoint")
        and "unreachable" in job.error
    )
    stored = fresh(cluster)
    assert (stored.status, stored.inference_enabled) == ("running", False)


def test_run_after_losing_the_lease_stops_without_writing(
    cluster: Cluster, admin: CreatedUser, settings: LazySettings
) -> None:
    settings.CONTROL_URL = "http://127.0.0.1:9"
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    restart_job_claim(job_id=job.pk)
    later = timezone.now() + timedelta(seconds=settings.RESTART_STALE_AFTER + 1)
    assert restart_job_claim(job_id=job.pk, now=later) == 2  # another worker took over
    assert run_restart(job_id=job.pk, attempt=1) == "lost"
    job.refresh_from_db()
    assert (job.state, job.attempts) == ("running", 2)


def test_user_create_validates_role() -> None:
    with pytest.raises(Exception, match="Unknown role"):
        user_create(username="x", role="owner")


def test_worker_database_writes_survive_a_momentarily_unavailable_database(settings: LazySettings) -> None:
    outcomes: list[BaseException | str] = [OperationalError("locked"), OperationalError("again"), "ok"]

    def write() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    assert _with_db_retries(write) == "ok"
    outcomes[:] = [OperationalError("down")] * settings.RESTART_STEP_ATTEMPTS
    with pytest.raises(OperationalError):
        _with_db_retries(write)


# --- restart recovery in seconds ------------------------------------------------------------------------


def test_production_defaults_recover_a_killed_workers_job_within_a_minute() -> None:
    """The defaults (no RESTART_* in the environment) bound the time from a kill to the job's takeover."""
    from console import settings as defaults

    beat = defaults.CELERY_BEAT_SCHEDULE["reap-stale-restart-jobs"]["schedule"]
    assert beat == defaults.RESTART_REAP_INTERVAL
    # Last beat just before the kill, stale after STALE_AFTER, seen by the next reaper run: the restart
    # itself then has the rest of the minute (drain, storage, warm, health take seconds).
    takeover = (
        defaults.RESTART_HEARTBEAT_INTERVAL + defaults.RESTART_STALE_AFTER + defaults.RESTART_REAP_INTERVAL
    )
    assert takeover <= 40
    # A few missed beats (a slow database) must not make a live job look dead.
    assert defaults.RESTART_STALE_AFTER >= 3 * defaults.RESTART_HEARTBEAT_INTERVAL
