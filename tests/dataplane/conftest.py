"""Fixtures for data-plane tests: a live server, clusters with keys, captured usage events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.clusters.services import CreatedCluster, cluster_create
from inference.usage import UsageEvent, usage_recorded, usage_refunded


@pytest.fixture
def cluster(transactional_db: None, models_dir: Path) -> CreatedCluster:
    """A paid US cluster created today: inference on, embedded storage."""
    return cluster_create(name="test", region="us-east-1", tier="paid")


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
def base_url(live_server: Any, cluster: CreatedCluster) -> str:
    """The cluster's data-plane URL on the live test server."""
    return f"{live_server.url}/clusters/{cluster.cluster.id}"
