"""Fixtures shared by every Django test (a pytest plugin, registered by `tests/conftest.py`).

Users with roles, clusters, the control endpoint, real Celery workers, and three that every test gets: its
own embedded storage root, the in-memory Celery broker, and fast restart settings.

While tests run, the project's Celery app uses kombu's in-memory transport and a queue name of this
session's own: nothing a test queues reaches `make run`'s broker under DATA_DIR, and workers of other test
sessions sharing the local Redis never take our jobs. Worker fixtures switch the app to Redis or to the
SQLite-backed broker while they run, then back.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import LazySettings
from django.core.servers.basehttp import ThreadedWSGIServer
from django.db import OperationalError, connection
from django.test import testcases
from rest_framework.test import APIClient

from console.celery import app as celery_app
from console.clusters.models import Cluster, RestartJob
from console.clusters.services import CreatedCluster, CreatedUser, cluster_create, user_create
from inference import stores
from inference.usage import UsageEvent, usage_recorded, usage_refunded

TEST_QUEUE = f"console-test-{uuid.uuid4().hex[:10]}"
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
OLD = datetime(2025, 1, 1, tzinfo=UTC)  # created before 2025-07-07: inference starts off
NEW = datetime(2025, 8, 1, tzinfo=UTC)  # created after: starts on when eligible
US, EU, AP = "us-west-2", "eu-central-1", "ap-southeast-1"

# pytest-django's live server listens with Django's backlog of 10 connections. The concurrency tests open
# 32 at a time, and while the server's threads hold the GIL its accept loop falls behind: the kernel dropped
# ~20 handshakes a run (TcpExtListenOverflows), and now and then a client read "connection reset by peer".
ThreadedWSGIServer.request_queue_size = 128


def _production_application(media_handler_of: Any) -> Any:
    from console.wsgi import application

    return application


# The live server serves what the web server serves (console/wsgi.py: the data plane through its own handler
# and middleware), not a plain WSGIHandler, so the data-plane tests cross the same code as production. Django
# wraps that plain handler in a media-files handler, which we have no use for (no MEDIA_URL): that wrapper is
# what is replaced; the static-files handler around it stays.
testcases._MediaFilesHandler = _production_application  # type: ignore[assignment,misc]


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """pytest-django's test database, whose other sessions are ended before it is dropped.

    Connections persist (DATABASE_CONN_MAX_AGE): threads that served requests in tests (the in-process gRPC
    server's, live servers') keep theirs open, and PostgreSQL refuses to drop a database still in use.
    """
    yield
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def _reset_broker_connections() -> None:
    """Forget the app's pools so the next send uses the broker now configured.

    Not closed: kombu keeps one pool per broker URL process-wide and hands the same one out again.
    """
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Point the project's Celery app at another broker for a while."""
    previous = celery_app.conf.broker_url
    _reset_broker_connections()
    celery_app.conf.broker_url = url
    try:
        yield
    finally:
        _reset_broker_connections()
        celery_app.conf.broker_url = previous


@contextmanager
def celery_worker(url: str, queue: str = TEST_QUEUE) -> Iterator[None]:
    """A real Celery worker (solo pool, in a thread of this process) on the given broker and queue."""
    hijack = celery_app.conf.worker_hijack_root_logger
    celery_app.conf.worker_hijack_root_logger = False  # keep the session's logging as Django set it up
    try:
        with (
            celery_broker(url),
            start_worker(
                celery_app,
                pool="solo",
                concurrency=1,
                perform_ping_check=False,
                queues=[queue],
                shutdown_timeout=30,
            ),
        ):
            yield
    finally:
        celery_app.conf.worker_hijack_root_logger = hijack
        if url.startswith("redis://"):  # leave no keys of this session's queue in the shared Redis
            import redis

            redis.Redis.from_url(url).delete(
                queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"
            )


def memory_queue_messages(queue: str = TEST_QUEUE) -> list[tuple[str, list[Any]]]:
    """Drain the in-memory broker's queue: (task name, args) of every message sent to it."""
    found: list[tuple[str, list[Any]]] = []
    with celery_app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue)
        try:
            while True:
                try:
                    message = simple.get(block=False)
                except simple.Empty:
                    break
                body = message.body if isinstance(message.body, list) else json.loads(message.body)
                found.append((message.headers["task"], body[0]))
                message.ack()
        finally:
            simple.close()
    return found


@pytest.fixture(scope="module", autouse=True)
def isolated_celery() -> Iterator[None]:
    """The in-memory broker and this session's queue: nothing a test queues leaves the process."""
    previous_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = TEST_QUEUE
    with celery_broker("memory://"):
        yield
    celery_app.conf.task_default_queue = previous_queue


@pytest.fixture(autouse=True)
def fresh_caches() -> None:
    """Caches of rows keyed by id or name, dropped between tests (their tables are rolled back or flushed,
    which sends no signal): keys and cluster states, price histories, limits, installed models."""
    from billing import limits
    from billing.services import forget_prices
    from console.clusters import directory
    from inference.embedding import forget_models

    directory._keys.clear()
    directory._clusters.clear()
    forget_prices()
    limits._limits.clear()
    forget_models()


@pytest.fixture(autouse=True)
def clusters_dir(tmp_path: Path, settings: LazySettings) -> Iterator[Path]:
    """Each test gets its own embedded storage root; stores opened in the test are closed after it."""
    settings.CLUSTERS_DIR = tmp_path / "clusters"
    yield settings.CLUSTERS_DIR
    for cluster_id in list(stores._stores):
        stores.store_close(cluster_id)


@pytest.fixture(autouse=True)
def fast_restarts(settings: LazySettings) -> None:
    """Short pauses between tries so failure tests take a fraction of a second; cheap password hashing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.RESTART_RETRY_BACKOFF = 0.05
    settings.RESTART_DRAIN_TIMEOUT = 20.0
    settings.RESTART_CONTROL_TIMEOUT = 30.0


@pytest.fixture
def make_cluster(db: None) -> Callable[..., CreatedCluster]:
    """Create clusters: `make_cluster(tier="paid", region="us-east-1", created_at=OLD)`."""

    def make(*, tier: str = "paid", region: str = "us-east-1", created_at: datetime = OLD) -> CreatedCluster:
        return cluster_create(name=f"{tier}-{region}", region=region, tier=tier, created_at=created_at)

    return make


@pytest.fixture
def admin(db: None) -> CreatedUser:
    """A console admin with an API token."""
    return user_create(username="ada", role="admin", password="pw-admin-1")


@pytest.fixture
def viewer(db: None) -> CreatedUser:
    """A console viewer with an API token."""
    return user_create(username="vic", role="viewer", password="pw-viewer-1")


def token_client(user: CreatedUser) -> APIClient:
    """An API client authenticated with `Authorization: Token <t>`."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user.token}")
    return client


@pytest.fixture
def admin_api(admin: CreatedUser) -> APIClient:
    """The admin's token-authenticated client."""
    return token_client(admin)


@pytest.fixture
def viewer_api(viewer: CreatedUser) -> APIClient:
    """The viewer's token-authenticated client."""
    return token_client(viewer)


@pytest.fixture
def control(live_server: Any, settings: LazySettings) -> str:
    """The web process's control endpoint, served by the live test server in this process."""
    settings.CONTROL_URL = live_server.url
    return str(live_server.url)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; its value, or a failed test with `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OperationalError:  # the in-memory SQLite test database's table locks: look again
            value = None
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def job_state(job_id: int) -> RestartJob:
    """The job as stored now."""
    return RestartJob.objects.get(pk=job_id)


def settled(cluster_id: str) -> bool:
    """The cluster runs and no job of it is queued or running."""
    running = Cluster.objects.filter(pk=cluster_id, status=Cluster.Status.RUNNING).exists()
    active = RestartJob.objects.filter(cluster_id=cluster_id, state__in=RestartJob.ACTIVE_STATES).exists()
    return running and not active


@pytest.fixture(scope="module")
def redis_worker() -> Iterator[None]:
    """A real worker consuming this session's queue on the local Redis."""
    if connection.vendor == "sqlite":
        # The in-memory SQLite test database is shared between threads through SQLite's shared cache, which
        # locks whole tables across connections and fails ("table is locked") instead of waiting. The embedded
        # stack (test_worker_embedded.py) covers SQLite with real processes and a file database instead.
        pytest.skip("a worker thread needs a PostgreSQL test database (DATABASE_URL; make test sets it)")
    with celery_worker(TEST_REDIS_URL):
        yield


@pytest.fixture
def usage_events() -> Iterator[list[UsageEvent]]:
    """The usage events that stand at the end: every one emitted, less those a failed request refunded."""
    events: list[UsageEvent] = []

    def recorded(sender: Any, events: list[UsageEvent], **kwargs: Any) -> None:
        captured.extend(events)

    def refunded(
        sender: Any, cluster_id: str, request_id: str, models: frozenset[str], **kwargs: Any
    ) -> None:
        captured[:] = [
            e
            for e in captured
            if (e.cluster_id, e.request_id) != (cluster_id, request_id) or e.model not in models
        ]

    captured = events
    usage_recorded.connect(recorded, weak=False, dispatch_uid="test-usage")
    usage_refunded.connect(refunded, weak=False, dispatch_uid="test-usage-refund")
    yield events
    usage_recorded.disconnect(dispatch_uid="test-usage")
    usage_refunded.disconnect(dispatch_uid="test-usage-refund")


@pytest.fixture
def cluster(transactional_db: None, models_dir: Path) -> CreatedCluster:
    """A paid US cluster created today: inference on, embedded storage (a data-plane test's cluster)."""
    return cluster_create(name="test", region="us-east-1", tier="paid")


@pytest.fixture
def base_url(live_server: Any, cluster: CreatedCluster) -> str:
    """The cluster's data-plane URL on the live test server."""
    return f"{live_server.url}/clusters/{cluster.cluster.id}"
