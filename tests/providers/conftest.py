"""Fixtures for provider tests: the fake providers on 127.0.0.1, settings pointing at them, a cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import LazySettings

from console.clusters.services import CreatedCluster, cluster_create
from tests.helpers import DataPlaneClient
from tests.providers import fake_providers
from tests.providers.fake_providers import FakeProviders


@pytest.fixture
def fake(settings: LazySettings) -> Iterator[FakeProviders]:
    """The fake providers, with every `*_API_BASE` setting pointing at them and short retry waits."""
    with fake_providers.running() as running:
        for name, value in running.settings().items():
            setattr(settings, name, value)
        settings.PROVIDER_RETRY_BACKOFF = 0.01
        settings.PROVIDER_TIMEOUT = 5.0
        settings.PROVIDER_DEADLINE = 10.0
        settings.PROVIDER_ATTEMPTS = 3
        yield running


@pytest.fixture
def cluster(transactional_db: None, models_dir: Path) -> CreatedCluster:
    """A paid US cluster created today: inference on, embedded storage."""
    return cluster_create(name="providers", region="us-east-1", tier="paid")


@pytest.fixture
def api(cluster: CreatedCluster) -> DataPlaneClient:
    """The cluster's data plane through Django's test client."""
    return DataPlaneClient(cluster.cluster.id, cluster.api_key)
