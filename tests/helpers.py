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
