"""The Inference API page's three-vector example, end to end with the official Python client.

One point, three named vectors from three places in one request: an image embedded by `jinaai/jina-clip-v2`
at Jina AI (here a Jina-shaped server on 127.0.0.1), a text by a model this server hosts, and BM25.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.context_headers import headers

from console.clusters.services import CreatedCluster
from inference.usage import UsageEvent
from tests.providers.fake_providers import IMAGE_TOKENS, VALID_KEYS, FakeProviders, fake_vector

pytestmark = pytest.mark.django_db(transaction=True)

IMAGE_URL = "https://qdrant.tech/example.png"


@pytest.fixture
def client(live_server: Any, cluster: CreatedCluster) -> Iterator[QdrantClient]:
    url = f"{live_server.url}/clusters/{cluster.cluster.id}"
    qc = QdrantClient(url=url, api_key=cluster.api_key, cloud_inference=True, timeout=60)
    qc.create_collection(
        "collection_name",
        vectors_config={
            "image": models.VectorParams(size=512, distance=models.Distance.COSINE),
            "text": models.VectorParams(size=384, distance=models.Distance.COSINE),
        },
        sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    yield qc
    qc.close()


def seed_point(image_options: dict[str, Any]) -> models.PointStruct:
    """The page's example point (its Python snippet, with the key in the options or not)."""
    return models.PointStruct(
        id=1,
        vector={
            "image": models.Image(image=IMAGE_URL, model="jinaai/jina-clip-v2", options=image_options),
            "text": models.Document(
                text="Mars, the red planet", model="sentence-transformers/all-minilm-l6-v2"
            ),
            "bm25": models.Document(text="Mars, the red planet", model="Qdrant/bm25"),
        },
    )


def check_point(client: QdrantClient, fake: FakeProviders, usage_events: list[UsageEvent]) -> None:
    (point,) = client.retrieve("collection_name", ids=[1], with_vectors=True)
    vectors = point.vector
    assert isinstance(vectors, dict)
    expected = fake_vector("jina-clip-v2", "image:" + IMAGE_URL, 512)
    image = vectors["image"]
    assert isinstance(image, list) and len(image) == 512
    assert max(abs(a - b) for a, b in zip(image, expected, strict=True)) < 1e-5  # type: ignore[operator]
    assert isinstance(vectors["text"], list) and len(vectors["text"]) == 384
    assert isinstance(vectors["bm25"], models.SparseVector) and vectors["bm25"].indices
    (call,) = fake.calls_to("jina")
    assert call.headers["authorization"] == f"Bearer {VALID_KEYS['jina']}"
    assert call.body["input"] == [{"image": IMAGE_URL}] and call.body["dimensions"] == 512
    assert "jina-api-key" not in call.body
    models_billed = {e.model: e.tokens for e in usage_events}
    assert models_billed["jinaai/jina-clip-v2"] == IMAGE_TOKENS
    assert models_billed["sentence-transformers/all-minilm-l6-v2"] > 0
    assert models_billed["qdrant/bm25"] > 0
    # The text query side of the multimodal model: a Document against the image vector, key by header.
    with headers({"jina-api-key": VALID_KEYS["jina"]}):
        hits = client.query_points(
            "collection_name",
            query=models.Document(
                text="a red planet", model="jinaai/jina-clip-v2", options={"dimensions": 512}
            ),
            using="image",
        ).points
    assert [h.id for h in hits] == [1]
    assert fake.calls_to("jina")[-1].body["task"] == "retrieval.query"


def test_seed_example_with_the_key_in_options(
    client: QdrantClient, fake: FakeProviders, usage_events: list[UsageEvent]
) -> None:
    client.upsert(
        "collection_name",
        points=[seed_point({"jina-api-key": VALID_KEYS["jina"], "dimensions": 512})],
        wait=True,
    )
    check_point(client, fake, usage_events)


def test_seed_example_with_the_key_in_a_context_header(
    client: QdrantClient, fake: FakeProviders, usage_events: list[UsageEvent]
) -> None:
    with headers({"jina-api-key": VALID_KEYS["jina"]}):
        client.upsert("collection_name", points=[seed_point({"dimensions": 512})], wait=True)
    check_point(client, fake, usage_events)
