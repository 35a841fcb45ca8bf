"""The unmodified official qdrant-client (REST, cloud_inference=True) against a live server."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from console.clusters.services import CreatedCluster
from inference.embedding import get_engine
from inference.engine.types import EmbedRequest, InputType, Kind, SparseVector
from inference.usage import UsageEvent
from tests.conftest import BM25, MINILM

pytestmark = pytest.mark.django_db(transaction=True)

DOCS = {
    1: "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
    2: "Bananas are an excellent source of potassium.",
    3: "Rust is a systems programming language focused on safety.",
    4: "The Louvre museum in Paris holds the Mona Lisa.",
    5: "Python is a popular language for machine learning.",
}


@pytest.fixture
def client(base_url: str, cluster: CreatedCluster) -> Iterator[QdrantClient]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qc = QdrantClient(url=base_url, api_key=cluster.api_key, cloud_inference=True, timeout=60)
        qc.get_collections()  # wait for a round trip; the version check runs in its own thread
    version_warnings = [w for w in caught if "version" in str(w.message).lower()]
    assert version_warnings == [], [str(w.message) for w in version_warnings]
    yield qc
    qc.close()


@pytest.fixture
def hybrid(client: QdrantClient) -> QdrantClient:
    client.create_collection(
        "docs",
        vectors_config={"dense": models.VectorParams(size=384, distance=models.Distance.COSINE)},
        sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    client.upsert(
        "docs",
        points=[
            models.PointStruct(
                id=i,
                vector={
                    "dense": models.Document(text=text, model="sentence-transformers/all-MiniLM-L6-v2"),
                    "bm25": models.Document(text=text, model="Qdrant/bm25"),
                },
                payload={"text": text, "n": i},
            )
            for i, text in DOCS.items()
        ],
    )
    return client


def engine_vector(text: str, model: str, kind: Kind = Kind.DOCUMENT) -> list[float] | SparseVector:
    result = get_engine().embed([EmbedRequest(model, kind, InputType.TEXT, text)]).results[0]
    assert not isinstance(result.vector, list) or isinstance(result.vector[0], float)
    return result.vector  # type: ignore[return-value]


def test_collection_lifecycle(client: QdrantClient) -> None:
    assert not client.collection_exists("c")
    client.create_collection("c", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    assert client.collection_exists("c")
    info = client.get_collection("c")
    assert info.config.params.vectors.size == 4  # type: ignore[union-attr]
    assert [c.name for c in client.get_collections().collections] == ["c"]
    assert client.delete_collection("c")
    assert not client.collection_exists("c")


def test_documents_are_embedded_stored_and_searchable(hybrid: QdrantClient) -> None:
    stored = hybrid.retrieve("docs", ids=[1], with_vectors=True)[0]
    dense = np.asarray(stored.vector["dense"])  # type: ignore[index]
    expected = np.asarray(engine_vector(DOCS[1], MINILM))
    assert float(dense @ expected / np.linalg.norm(dense) / np.linalg.norm(expected)) > 0.9999
    sparse = stored.vector["bm25"]  # type: ignore[index]
    expected_sparse = engine_vector(DOCS[1], BM25)
    assert isinstance(expected_sparse, SparseVector)
    assert list(sparse.indices) == expected_sparse.indices  # type: ignore[union-attr]
    assert "text" in stored.payload and len(stored.payload) == 2  # type: ignore[arg-type]  # input not added

    hits = hybrid.query_points(
        "docs",
        query=models.Document(text="famous landmarks in France", model=MINILM),
        using="dense",
        limit=2,
    ).points
    assert {h.id for h in hits} == {1, 4}


def test_prefetch_fusion_over_dense_and_bm25(hybrid: QdrantClient) -> None:
    response = hybrid.query_points(
        "docs",
        prefetch=[
            models.Prefetch(query=models.Document(text="programming language", model=MINILM), using="dense"),
            models.Prefetch(query=models.Document(text="programming language", model=BM25), using="bm25"),
        ],
        query=models.FusionQuery(fusion=models.Fusion.RRF),
        limit=2,
    )
    assert {p.id for p in response.points} == {3, 5}


def test_bm25_query_ranks_keyword_match_first(hybrid: QdrantClient) -> None:
    hits = hybrid.query_points(
        "docs", query=models.Document(text="potassium bananas", model=BM25), using="bm25", limit=1
    ).points
    assert hits[0].id == 2


def test_query_batch(hybrid: QdrantClient) -> None:
    results = hybrid.query_batch_points(
        "docs",
        requests=[
            models.QueryRequest(
                query=models.Document(text="fruit nutrition", model=MINILM), using="dense", limit=1
            ),
            models.QueryRequest(
                query=models.Document(text="art museum", model=MINILM), using="dense", limit=1
            ),
        ],
    )
    assert [r.points[0].id for r in results] == [2, 4]


def test_update_vectors_with_a_document(hybrid: QdrantClient) -> None:
    hybrid.update_vectors(
        "docs",
        points=[
            models.PointVectors(id=2, vector={"dense": models.Document(text="Rust ownership", model=MINILM)})
        ],
    )
    stored = hybrid.retrieve("docs", ids=[2], with_vectors=["dense"])[0]
    assert np.allclose(stored.vector["dense"], engine_vector("Rust ownership", MINILM), atol=1e-5)  # type: ignore[index]


def test_usage_is_reported_and_emitted_once_per_model(
    client: QdrantClient, usage_events: list[UsageEvent], cluster: CreatedCluster
) -> None:
    client.create_collection(
        "u", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
    )
    text = "hello world"
    client.upsert(
        "u",
        points=[models.PointStruct(id=i, vector=models.Document(text=text, model=MINILM)) for i in range(20)],
    )
    assert client.count("u").count == 20
    assert len(usage_events) == 1  # twenty identical documents: embedded once, billed once
    event = usage_events[0]
    assert (event.cluster_id, event.model, event.tokens) == (cluster.cluster.id, MINILM, 4)


def test_scroll_count_delete_and_payload(hybrid: QdrantClient) -> None:
    page, offset = hybrid.scroll("docs", limit=3)
    assert len(page) == 3 and offset is not None
    assert hybrid.count("docs", count_filter=models.Filter(must=[
        models.FieldCondition(key="n", range=models.Range(gte=3))
    ])).count == 3  # fmt: skip
    hybrid.set_payload("docs", payload={"tag": "x"}, points=[1, 2])
    hybrid.delete_payload("docs", keys=["tag"], points=[2])
    assert hybrid.retrieve("docs", ids=[1])[0].payload["tag"] == "x"  # type: ignore[index]
    assert "tag" not in hybrid.retrieve("docs", ids=[2])[0].payload  # type: ignore[operator]
    hybrid.delete("docs", points_selector=models.PointIdsList(points=[5]))
    assert hybrid.count("docs").count == 4
