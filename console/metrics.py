"""`/metrics` in Prometheus's text format: requests, tokens, the ONNX pool, restart jobs, usage-flush lag.

Plumbing, not domain: it observes the apps through their public seams (URL resolution, the
`inference.usage` signals, `inference.embedding`'s pool observers, the restart-job table) and changes none
of them. Labels are bounded: requests are labelled by URL pattern (`clusters/<str:cluster_id>/...`), never
by raw path. Protected: a `METRICS_TOKEN` bearer token, or loopback clients only when no token is set.

One web process: the metrics live in it. Several (`WEB_CONCURRENCY=N` worker processes behind one port)
use prometheus_client's multiprocess mode, on when `PROMETHEUS_MULTIPROC_DIR` is set (`make run` sets it,
to a directory it empties at start; each web process, as it starts, removes the live gauges of the dead
ones, `forget_dead_processes`): every process writes its values to files there, and a scrape, answered by
whichever process, aggregates them all:

- counters and histograms (requests, latency, tokens, refunds, batch sizes) are summed over every process
  that ever ran, so a total does not drop when the web server replaces a worker;
- the ONNX pool's live values (worker threads, batches in flight, batches queued) are gauges that each
  process sets whenever they change, aggregated with `livesum`: the sum over the processes alive now, i.e.
  the replica's pool (per-process series, `liveall`, would add a `pid` label that grows with each restart);
- what comes from the database (restart jobs by state) or is a constant (usage-flush lag) is computed at
  scrape time by the scraping process: any process would answer the same.

Separate replicas (hosts, containers) do not share the directory: scrape every replica.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inference import embedding
from inference.usage import UsageEvent, usage_recorded, usage_refunded

REQUESTS = Counter(
    "http_requests", "HTTP requests served, by URL pattern, method and status.", ["route", "method", "status"]
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by URL pattern and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TOKENS = Counter(
    "inference_tokens", "Tokens recorded for billing, by model and cluster.", ["model", "cluster"]
)
TOKENS_REFUNDED = Counter(
    "inference_tokens_refunded",
    "Tokens withdrawn again because their request failed, by model and cluster (net = tokens - refunded).",
    ["model", "cluster"],
)
BATCH_SIZE = Histogram(
    "inference_batch_size",
    "Inputs per batch the ONNX workers run (inputs of concurrent requests merged into one run count once), "
    "by model.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


# --- tokens: from the usage signals (billing's receiver ran first, so a failed recording counts nothing) ----
_RECENT = 10_000  # request events remembered for refunds (refunds follow their request within seconds)
_recent: OrderedDict[tuple[str, str], list[UsageEvent]] = OrderedDict()
_recent_lock = threading.Lock()


def _on_recorded(sender: Any, events: list[UsageEvent], **kwargs: Any) -> frozenset[str]:
    for event in events:
        TOKENS.labels(event.model, event.cluster_id).inc(event.tokens)
    if events:
        with _recent_lock:
            _recent[(events[0].cluster_id, events[0].request_id)] = list(events)
            while len(_recent) > _RECENT:
                _recent.popitem(last=False)
    return frozenset()  # records nothing in the ledger's sense


def _on_refunded(
    sender: Any, cluster_id: str, request_id: str, models: frozenset[str], **kwargs: Any
) -> None:
    with _recent_lock:
        events = _recent.pop((cluster_id, request_id), [])
    for event in events:
        if event.model in models:
            TOKENS_REFUNDED.labels(event.model, cluster_id).inc(event.tokens)


usage_recorded.connect(_on_recorded, dispatch_uid="console.metrics.tokens")
usage_refunded.connect(_on_refunded, dispatch_uid="console.metrics.refunds")
SOLO_BATCHES = Counter(
    "inference_solo_batches",
    "Batches run alone on the solo session (every other worker idle, INFERENCE_SOLO_THREADS), by model.",
    ["model"],
)


def _on_batch(model: str, size: int, alone: bool) -> None:
    BATCH_SIZE.labels(model).observe(size)
    if alone:
        SOLO_BATCHES.labels(model).inc()


embedding.on_batch(_on_batch)


# --- the ONNX pool: live values of each process, set when they change -------------------------------------
WORKERS = Gauge("inference_workers", "ONNX worker threads.", multiprocess_mode="livesum")
JOBS_IN_FLIGHT = Gauge(
    "inference_jobs_in_flight", "Batches handed to the ONNX workers, unfinished.", multiprocess_mode="livesum"
)
QUEUE_DEPTH = Gauge(
    "inference_queue_depth", "Batches waiting for a free ONNX worker.", multiprocess_mode="livesum"
)


def _on_pool_state(state: embedding.PoolState) -> None:
    WORKERS.set(state.workers)
    JOBS_IN_FLIGHT.set(state.jobs_in_flight)
    QUEUE_DEPTH.set(state.queue_depth)


# Before the pool is built (it is on first use) it has the configured workers and nothing in flight.
_on_pool_state(embedding.pool_state() or embedding.PoolState(settings.INFERENCE_WORKERS, 0, 0))
embedding.on_state(_on_pool_state)


# --- gauges read from the database when scraped (the same whichever process answers) ---------------------
class DatabaseCollector(Collector):
    """Reads the restart jobs by state at scrape time, and reports this process's usage-flush lag."""

    def describe(self) -> Iterator[Metric]:
        """The metric names, without reading anything (called at registration, before the database is up)."""
        for name in ("restart_jobs", "usage_flush_lag_seconds"):
            yield GaugeMetricFamily(name, "")

    def collect(self) -> Iterator[Metric]:
        """The current values."""
        from billing import journal
        from console.clusters.models import RestartJob  # the app registry is ready by the first scrape

        jobs = GaugeMetricFamily(
            "restart_jobs", "Cluster restart jobs by state (all time).", labels=["state"]
        )
        counts = dict.fromkeys(RestartJob.State.values, 0)
        try:
            for row in RestartJob.objects.values("state").order_by().annotate(n=_count()):
                counts[row["state"]] = row["n"]
        except DatabaseError:
            pass  # the database is down: the other metrics are still worth serving (and /healthz says so)
        else:
            for job_state, number in sorted(counts.items()):
                jobs.add_metric([job_state], number)
            yield jobs

        lag = GaugeMetricFamily(
            "usage_flush_lag_seconds",
            "Seconds since the oldest answered request of this process whose usage is journaled but not "
            "yet in the ledger (billing/journal.py); 0 without a journal (usage recorded in the request).",
        )
        usage_journal = journal.active()
        lag.add_metric([], usage_journal.lag() if usage_journal is not None else 0.0)
        yield lag


def _count() -> Any:
    from django.db.models import Count

    return Count("id")


_DATABASE = DatabaseCollector()
REGISTRY.register(_DATABASE)


def forget_dead_processes() -> list[int]:
    """In multiprocess mode, drop the live gauges of processes that are gone (a worker killed, then replaced);
    the pids dropped. Their counters stay: totals must not fall when a worker is replaced."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not os.path.isdir(directory):
        return []
    suffixes = (
        name.removesuffix(".db").rsplit("_", 1)[-1]
        for name in os.listdir(directory)
        if name.startswith("gauge_live") and name.endswith(".db")
    )
    pids = {int(suffix) for suffix in suffixes if suffix.isdigit()}
    dead = sorted(pid for pid in pids if not _alive(pid))
    for pid in dead:
        forget_process(pid)
    return dead


def forget_process(pid: int) -> None:
    """In multiprocess mode, drop a process's live gauges: it no longer serves (its counters stay)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        multiprocess.mark_process_dead(pid, directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def exposition() -> bytes:
    """Every metric in Prometheus's text format: this process's, or every process's in multiprocess mode."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()  # a fresh one per scrape, as prometheus_client's documentation asks
    multiprocess.MultiProcessCollector(registry)
    registry.register(_DATABASE)
    return generate_latest(registry)


# --- the request middleware and the endpoint ---------------------------------------------------------------
class MetricsMiddleware:
    """Counts every request and times it, labelled by the URL pattern that served it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Serve and observe."""
        started = time.perf_counter()
        response = self.get_response(request)
        match = request.resolver_match
        route = (match.route or match.view_name or "unnamed") if match else "unmatched"
        LATENCY.labels(route, request.method or "").observe(time.perf_counter() - started)
        REQUESTS.labels(route, request.method or "", str(response.status_code)).inc()
        return response


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus exposition of this process's metrics, or of all of them in multiprocess mode (token or
    loopback only)."""
    if not _allowed(request):
        status = 401 if settings.METRICS_TOKEN else 403
        response = HttpResponse("metrics: forbidden\n", status=status, content_type="text/plain")
        if status == 401:
            response["WWW-Authenticate"] = "Bearer"
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
