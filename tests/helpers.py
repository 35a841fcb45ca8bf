"""Small helpers shared by test modules."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client


class DataPlaneClient:
    """A tiny JSON client for one cluster's data plane (Django's test client, real views and storage)."""

    def __init__(self, cluster_id: str, key: str | None) -> None:
        self.base = f"/clusters/{cluster_id}"
        self.client = Client()
        self.headers = {"api-key": key} if key else {}

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, dict[str, Any]]:
        """Send JSON, return (status, JSON body)."""
        response = getattr(self.client, method)(
            self.base + path,
            data=json.dumps(body) if body is not None else None,
            content_type="application/json",
            headers={**self.headers, **headers},
        )
        return response.status_code, response.json()


def cluster_update(cluster_id: str, **fields: Any) -> None:
    """Change a cluster's row behind the services' back, as a test sets up a state, and drop this process's
    cached copy (`console.clusters.directory`), as the services' own writes do."""
    from console.clusters.directory import forget_cluster
    from console.clusters.models import Cluster

    Cluster.objects.filter(pk=cluster_id).update(**fields)
    forget_cluster(cluster_id)
