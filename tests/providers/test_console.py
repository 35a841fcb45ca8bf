"""The providers in the catalog API and the Inference tab (with this month's provider usage)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.services import usage_record
from console.clusters.services import CreatedCluster, CreatedUser
from inference.usage import UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)


def test_models_api_points_to_the_providers_list() -> None:
    response = Client().get("/api/v1/models")
    assert response.status_code == 200
    assert isinstance(response.json(), list)  # the model list keeps its shape for existing clients
    assert response["Link"] == '</api/v1/providers>; rel="providers"'
    providers = Client().get("/api/v1/providers").json()
    assert [p["prefix"] for p in providers] == ["openai", "cohere", "jinaai", "openrouter"]
    jina = providers[2]
    assert jina["key_header"] == "jina-api-key" and jina["input_types"] == ["image", "text"]
    assert "models" not in jina  # their model lists are theirs: none invented here


def test_inference_tab_lists_providers_with_examples_and_usage(
    cluster: CreatedCluster, admin: CreatedUser
) -> None:
    now = timezone.now()
    usage_record(
        events=[
            UsageEvent(cluster.cluster.id, "jinaai/jina-clip-v2", 1234, "r1", now),
            UsageEvent(cluster.cluster.id, "cohere/embed-v4.0", 5, "r2", now),
            UsageEvent(cluster.cluster.id, "cohere/embed-v4.0", 7, "r3", datetime(2020, 1, 5, tzinfo=UTC)),
        ]
    )
    client = Client()
    client.force_login(admin.user)
    page = client.get(reverse("console:cluster-inference", args=[cluster.cluster.id])).content.decode()
    section = page[page.index('id="providers"') : page.index('id="examples"')]
    rows = dict(re.findall(r'<tr data-provider="([a-z]+)">(.*?)</tr>', section, re.S))
    assert list(rows) == ["openai", "cohere", "jinaai", "openrouter"]
    tokens = {p: re.search(r'data-col="tokens">([\d,]+)', row).group(1) for p, row in rows.items()}  # type: ignore[union-attr]
    assert tokens == {"openai": "0", "cohere": "5", "jinaai": "1,234", "openrouter": "0"}  # this month only
    assert "from qdrant_client.context_headers import headers" in section
    assert "with headers({&quot;jina-api-key&quot;: " in section
    assert "headers: { &quot;cohere-api-key&quot;" in section  # TypeScript
    assert "-H &quot;openrouter-api-key: " in section  # HTTP
