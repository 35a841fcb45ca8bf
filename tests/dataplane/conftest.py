"""Fixtures for data-plane tests: a live server, clusters with keys, captured usage events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from console.clusters.services import CreatedCluster, cluster_create


@pytest.fixture
def cluster(transactional_db: None, models_dir: Path) -> CreatedCluster:
    """A paid US cluster created today: inference on, embedded storage."""
    return cluster_create(name="test", region="us-east-1", tier="paid")


@pytest.fixture
def base_url(live_server: Any, cluster: CreatedCluster) -> str:
    """The cluster's data-plane URL on the live test server."""
    return f"{live_server.url}/clusters/{cluster.cluster.id}"
