"""Fixtures for data-plane tests: a live server, clusters with keys, captured usage events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import LazySettings

from console.clusters.services import CreatedCluster, cluster_create
from inference import stores
from inference.usage import UsageEvent, usage_recorded


@pytest.fixture(autouse=True)
def clusters_dir(tmp_path: Path, settings: LazySettings) -> Iterator[Path]:
    """Each test gets its own embedded storage root; stores opened in the test are closed after it."""
    settings.CLUSTERS_DIR = tmp_path / "clusters"
    yield settings.CLUSTERS_DIR
    for cluster_id in list(stores._stores):
        stores.store_close(cluster_id)


@pytest.fixture
def cluster(transactional_db: None, models_dir: Path) -> CreatedCluster:
    """A paid US cluster created today: inference on, embedded storage."""
    return cluster_create(name="test", region="us-east-1", tier="paid")


@pytest.fixture
def usage_events() -> Iterator[list[UsageEvent]]:
    """Every usage event emitted during the test."""
    events: list[UsageEvent] = []

    def receiver(sender: Any, events: list[UsageEvent], **kwargs: Any) -> None:
        captured.extend(events)

    captured = events
    usage_recorded.connect(receiver, weak=False, dispatch_uid="test-usage")
    yield events
    usage_recorded.disconnect(dispatch_uid="test-usage")


@pytest.fixture
def base_url(live_server: Any, cluster: CreatedCluster) -> str:
    """The cluster's data-plane URL on the live test server."""
    return f"{live_server.url}/clusters/{cluster.cluster.id}"
