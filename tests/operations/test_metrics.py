"""`/metrics` after real traffic: requests by URL pattern, tokens by model and cluster, the ONNX pool,
restart jobs by state; protected by a bearer token or loopback only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import LazySettings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from console import metrics
from console.clusters.models import RestartJob
from console.clusters.services import CreatedCluster
from tests.conftest import MINILM
from tests.helpers import DataPlaneClient

pytestmark = pytest.mark.django_db(transaction=True)

POINTS_ROUTE = "clusters/<str:cluster_id>/collections/<str:collection>/points"


def scrape(**extra: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = Client().get("/metrics", **extra)  # type: ignore[arg-type]
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_traffic(cluster: CreatedCluster) -> None:
    cluster_id = cluster.cluster.id
    before = scrape()
    api = DataPlaneClient(cluster_id, cluster.api_key)
    status, _ = api.call("put", "/collections/docs", {"vectors": {"size": 384, "distance": "Cosine"}})
    assert status == 200
    points = [{"id": i, "vector": {"text": f"planet number {i}", "model": MINILM}} for i in range(5)]
    status, body = api.call("put", "/collections/docs/points?wait=true", {"points": points})
    assert status == 200, body
    tokens = body["usage"]["inference"]["models"][MINILM]["tokens"]
    status, _ = api.call("put", "/collections/missing/points?wait=true", {"points": points[:1]})
    assert status == 404
    RestartJob.objects.create(
        cluster=cluster.cluster, target_enabled=False, previous_enabled=True, state="failed"
    )
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Requests by URL pattern (never the raw path, which holds ids) and status, with a latency histogram.
    assert delta("http_requests_total", route=POINTS_ROUTE, method="PUT", status="200") == 1
    assert delta("http_requests_total", route=POINTS_ROUTE, method="PUT", status="404") == 1
    assert delta("http_request_duration_seconds_count", route=POINTS_ROUTE, method="PUT") == 2
    assert delta("http_request_duration_seconds_bucket", route=POINTS_ROUTE, method="PUT", le="+Inf") == 2
    assert not any(cluster_id in dict(labels).get("route", "") for _, labels in after)
    # Tokens by model and cluster: exactly what the response reported; the failed request billed nothing.
    assert tokens > 0
    assert delta("inference_tokens_total", model=MINILM, cluster=cluster_id) == tokens
    assert delta("inference_tokens_refunded_total", model=MINILM, cluster=cluster_id) == 0
    # The ONNX pool ran the five distinct texts (in one batch, or split over the idle workers); nothing is
    # left in flight.
    assert 1 <= delta("inference_batch_size_count", model=MINILM) <= 5
    assert delta("inference_batch_size_sum", model=MINILM) == 5
    assert value(after, "inference_jobs_in_flight") == 0 and value(after, "inference_queue_depth") == 0
    assert value(after, "inference_workers") >= 1
    # Restart jobs by state, read from the database; usage is written synchronously: no flush lag.
    assert (
        value(after, "restart_jobs", state="failed") == 1
        and value(after, "restart_jobs", state="queued") == 0
    )
    assert value(after, "usage_flush_lag_seconds") == 0


def test_metrics_need_the_token_or_loopback(settings: LazySettings) -> None:
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 403
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200

    settings.METRICS_TOKEN = "s3cret-metrics"
    assert Client().get("/metrics").status_code == 401  # loopback is not enough once a token is set
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert (
        Client(REMOTE_ADDR="10.1.2.3").get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics").status_code
        == 200
    )


def test_a_starting_web_process_drops_only_the_dead_processes_live_gauges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What replaces gunicorn's child_exit: a killed worker's live gauges stop counting once another starts,
    its counters keep counting in the totals, and a live process's gauges are left alone."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid, live_pid = int(dead.stdout), os.getpid()
    files = [f"gauge_livesum_{dead_pid}.db", f"counter_{dead_pid}.db", f"gauge_livesum_{live_pid}.db"]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    assert metrics.forget_dead_processes() == [dead_pid]

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files[1:])
