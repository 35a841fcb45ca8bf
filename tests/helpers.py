"""Small helpers shared by test modules."""

from __future__ import annotations

import json
import threading
from typing import Any

from django.db import connection
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


def restart_in_thread(job_id: int, results: list[str]) -> threading.Thread:
    """Start the restart task for `job_id` in a thread of its own (as a Celery worker runs it, while the
    test goes on); its outcome is appended to `results`, and the thread's database connection closed."""
    from console.clusters.tasks import restart_cluster

    def run() -> None:
        try:
            results.append(restart_cluster.run(job_id))
        finally:
            connection.close()  # this thread's own

    thread = threading.Thread(target=run)
    thread.start()
    return thread
