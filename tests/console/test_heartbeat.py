"""The restart job's heartbeat thread, against the real database.

Transactional (the thread writes through a connection of its own, which sees only committed rows), and in a
file of its own: pytest-xdist's `--dist loadfile` runs a file's tests together, so a file mixing kinds would
flush migrate's seed rows before other files' non-transactional tests that read them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.conf import LazySettings

from console.clusters.models import RestartJob
from console.clusters.services import (
    CreatedCluster,
    CreatedUser,
    cluster_inference_toggle,
    restart_job_claim,
    restart_job_progress,
)
from console.clusters.tasks import heartbeat

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_heartbeat_thread_beats_while_the_job_is_held_and_stops_when_the_lease_is_lost(
    make_cluster: Callable[..., CreatedCluster], admin: CreatedUser, settings: LazySettings
) -> None:
    settings.RESTART_HEARTBEAT_INTERVAL = 0.05
    cluster = make_cluster().cluster
    job = cluster_inference_toggle(cluster=cluster, enabled=True, actor=admin.user)
    assert job is not None
    attempt = restart_job_claim(job_id=job.pk)
    assert attempt == 1
    claimed_at = RestartJob.objects.get(pk=job.pk).heartbeat_at
    assert claimed_at is not None
    with heartbeat(job_id=job.pk, attempt=attempt):
        time.sleep(0.4)  # a control call in flight: no step writes meanwhile
        beaten = RestartJob.objects.get(pk=job.pk).heartbeat_at
        assert beaten is not None and beaten > claimed_at + timedelta(seconds=0.2)
        # Another worker takes the job over: this one's thread must not keep it looking alive.
        RestartJob.objects.filter(pk=job.pk).update(attempts=2, heartbeat_at=claimed_at)
        time.sleep(0.3)
        assert RestartJob.objects.get(pk=job.pk).heartbeat_at == claimed_at
    # The run's own next write finds the lease lost.
    assert restart_job_progress(job_id=job.pk, attempt=attempt, step="storage", progress=30) is False
