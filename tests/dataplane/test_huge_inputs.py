"""A huge text costs what it bills: it is cut to what the model's context window can use before tokenizing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.test import Client

from console.clusters.services import CreatedCluster
from inference.catalog import MAX_CHARS_PER_TOKEN
from inference.usage import UsageEvent
from tests.conftest import MINILM
from tests.helpers import DataPlaneClient

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_10_mib_document_is_embedded_as_its_context_window_and_billed_so(
    cluster: CreatedCluster, usage_events: list[UsageEvent]
) -> None:
    api = DataPlaneClient(cluster.cluster.id, cluster.api_key)
    assert api.call("put", "/collections/c", {"vectors": {"size": 384, "distance": "Cosine"}})[0] == 200
    words = "the red planet has two small moons named phobos and deimos ".split()
    huge = " ".join(words[i % len(words)] for i in range(2_000_000))[: 10 * 1024 * 1024]
    window = 256 * MAX_CHARS_PER_TOKEN
    body = {
        "points": [
            {"id": 1, "vector": {"text": huge, "model": MINILM}},
            {"id": 2, "vector": {"text": huge[:window], "model": MINILM}},
        ]
    }
    response = Client().put(
        f"{api.base}/collections/c/points", data=json.dumps(body), content_type="application/json",
        headers=api.headers,
    )  # fmt: skip
    assert response.status_code == 200, response.content[:500]
    # Both are cut to the same 256 tokens: the same vector, billed once (identical inputs) at the window.
    assert response.json()["usage"]["inference"]["models"][MINILM]["tokens"] == 256
    status, points = api.call("post", "/collections/c/points", {"ids": [1, 2], "with_vector": True})
    assert status == 200
    one, two = (np.array(p["vector"]) for p in points["result"])
    assert float(one @ two / (np.linalg.norm(one) * np.linalg.norm(two))) > 0.9999
    assert [e.tokens for e in usage_events] == [256]
