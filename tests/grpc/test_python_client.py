"""The official Python client over gRPC (`prefer_grpc=True`, `cloud_inference=True`) against a live server.

Every answer is compared with the REST answer for the same data: the collection is written through gRPC
and read back through both protocols.
"""

from __future__ import annotations

import pytest
from qdrant_client import QdrantClient, models

from tests.conftest import BM25, MINILM

pytestmark = pytest.mark.django_db(transaction=True)

DOCS = {
    1: "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
    2: "Bananas are an excellent source of potassium.",
    3: "Rust is a systems programming language focused on safety.",
    4: "The Louvre museum in Paris holds the Mona Lisa.",
    5: "Python is a popular language for machine learning.",
}


def scored(points: list[models.ScoredPoint]) -> list[tuple[object, float, object]]:
    # An empty payload map and no payload are the same message in protobuf: compare them as {}.
    return [(p.id, round(p.score, 5), p.payload or {}) for p in points]


@pytest.fixture
def hybrid(grpc_client: QdrantClient) -> QdrantClient:
    """Collection `docs`: named dense MiniLM + BM25 sparse with IDF, five documents upserted over gRPC."""
    assert grpc_client.create_collection(
        "docs",
        vectors_config={"dense": models.VectorParams(size=384, distance=models.Distance.COSINE)},
        sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    result = grpc_client.upsert(
        "docs",
        points=[
            models.PointStruct(
                id=i,
                vector={
                    "dense": models.Document(text=t, model=MINILM),
                    "bm25": models.Document(text=t, model=BM25),
                },
                payload={"text": t, "n": i},
            )
            for i, t in DOCS.items()
        ],
    )
    assert result.status == models.UpdateStatus.COMPLETED
    return grpc_client


def test_collection_lifecycle_unnamed(grpc_client: QdrantClient, rest_client: QdrantClient) -> None:
    assert not grpc_client.collection_exists("c")
    grpc_client.create_collection(
        "c", vectors_config=models.VectorParams(size=384, distance=models.Distance.DOT)
    )
    assert grpc_client.collection_exists("c")
    info = grpc_client.get_collection("c")
    assert info.config.params.vectors.size == 384  # type: ignore[union-attr]
    assert [c.name for c in grpc_client.get_collections().collections] == ["c"]
    grpc_client.upsert(
        "c", points=[models.PointStruct(id=7, vector=models.Document(text="hi", model=MINILM))]
    )
    assert grpc_client.count("c").count == rest_client.count("c").count == 1
    hits = grpc_client.query_points("c", query=models.Document(text="hello", model=MINILM)).points
    assert scored(hits) == scored(
        rest_client.query_points("c", query=models.Document(text="hello", model=MINILM)).points
    )
    assert grpc_client.delete_collection("c")
    assert not rest_client.collection_exists("c")


def test_query_by_document_equals_rest(hybrid: QdrantClient, rest_client: QdrantClient) -> None:
    query = models.Document(text="famous landmarks in France", model=MINILM)
    over_grpc = hybrid.query_points("docs", query=query, using="dense", limit=3, with_payload=True).points
    over_rest = rest_client.query_points(
        "docs", query=query, using="dense", limit=3, with_payload=True
    ).points
    assert {p.id for p in over_grpc[:2]} == {1, 4}
    assert scored(over_grpc) == scored(over_rest)


def test_hybrid_prefetch_rrf_equals_rest(hybrid: QdrantClient, rest_client: QdrantClient) -> None:
    def ask(client: QdrantClient) -> list[models.ScoredPoint]:
        return client.query_points(
            "docs",
            prefetch=[
                models.Prefetch(
                    query=models.Document(text="programming language", model=MINILM), using="dense"
                ),
                models.Prefetch(query=models.Document(text="programming language", model=BM25), using="bm25"),
            ],
            query=models.FusionQuery(fusion=models.Fusion.RRF),
            limit=2,
        ).points

    over_grpc = ask(hybrid)
    assert {p.id for p in over_grpc} == {3, 5}
    # RRF ties (both at 1/(k+1) + 1/(k+2)) come in no defined order: compare as sets of (id, score).
    assert sorted(scored(over_grpc), key=repr) == sorted(scored(ask(rest_client)), key=repr)


def test_query_batch_and_groups_equal_rest(hybrid: QdrantClient, rest_client: QdrantClient) -> None:
    requests = [
        models.QueryRequest(
            query=models.Document(text="fruit nutrition", model=MINILM), using="dense", limit=1
        ),
        models.QueryRequest(query=models.Document(text="art museum", model=BM25), using="bm25", limit=2),
    ]
    over_grpc = hybrid.query_batch_points("docs", requests=requests)
    assert over_grpc[0].points[0].id == 2
    over_rest = rest_client.query_batch_points("docs", requests=requests)
    assert [scored(r.points) for r in over_grpc] == [scored(r.points) for r in over_rest]

    hybrid.set_payload("docs", payload={"city": "paris"}, points=[1, 4])
    hybrid.set_payload("docs", payload={"city": "none"}, points=[2, 3, 5])

    def groups(client: QdrantClient) -> list[tuple[object, list[object]]]:
        result = client.query_points_groups(
            "docs", query=models.Document(text="tower", model=MINILM), using="dense", group_by="city",
            group_size=2, limit=2,
        )  # fmt: skip
        return [(g.id, [h.id for h in g.hits]) for g in result.groups]

    assert groups(hybrid) == groups(rest_client)
    assert groups(hybrid)[0][0] == "paris"


def test_scroll_count_retrieve_delete_and_payload(hybrid: QdrantClient, rest_client: QdrantClient) -> None:
    page, offset = hybrid.scroll("docs", limit=3, with_payload=True)
    rest_page, rest_offset = rest_client.scroll("docs", limit=3, with_payload=True)
    assert [(p.id, p.payload) for p in page] == [(p.id, p.payload) for p in rest_page]
    assert offset == rest_offset == 4
    n_filter = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=3))])
    assert hybrid.count("docs", count_filter=n_filter).count == 3

    got = hybrid.retrieve("docs", ids=[1, 2], with_vectors=True)
    want = rest_client.retrieve("docs", ids=[1, 2], with_vectors=True)
    assert [(p.id, p.payload) for p in got] == [(p.id, p.payload) for p in want]
    assert got[0].vector["dense"] == pytest.approx(want[0].vector["dense"])  # type: ignore[index]
    assert got[0].vector["bm25"] == want[0].vector["bm25"]  # type: ignore[index]

    hybrid.set_payload("docs", payload={"tag": "x"}, points=[1, 2])
    hybrid.delete_payload("docs", keys=["tag"], points=[2])
    hybrid.overwrite_payload("docs", payload={"only": True}, points=[3])
    hybrid.clear_payload("docs", points_selector=models.PointIdsList(points=[4]))
    payloads = {p.id: p.payload for p in rest_client.retrieve("docs", ids=[1, 2, 3, 4])}
    assert payloads[1]["tag"] == "x" and "tag" not in payloads[2]  # type: ignore[index,operator]
    assert payloads[3] == {"only": True} and payloads[4] == {}

    hybrid.create_payload_index("docs", field_name="n", field_schema=models.PayloadSchemaType.INTEGER)
    hybrid.delete(
        "docs", points_selector=models.FilterSelector(filter=models.Filter(must=[
            models.FieldCondition(key="n", match=models.MatchValue(value=5))
        ]))
    )  # fmt: skip
    hybrid.delete("docs", points_selector=models.PointIdsList(points=[4]))
    assert rest_client.count("docs").count == hybrid.count("docs").count == 3


def test_update_vectors_and_batch_with_documents(hybrid: QdrantClient, rest_client: QdrantClient) -> None:
    hybrid.update_vectors(
        "docs",
        points=[
            models.PointVectors(id=2, vector={"dense": models.Document(text="Rust ownership", model=MINILM)})
        ],
    )
    borrow = models.Document(text="Rust borrow checker", model=MINILM)
    hybrid.batch_update_points(
        "docs",
        update_operations=[
            models.UpsertOperation(
                upsert=models.PointsList(points=[models.PointStruct(id=9, vector={"dense": borrow})])
            ),
            models.DeleteVectorsOperation(delete_vectors=models.DeleteVectors(points=[1], vector=["bm25"])),
        ],
    )
    hits = rest_client.query_points(
        "docs", query=models.Document(text="Rust ownership", model=MINILM), using="dense", limit=2
    ).points
    assert {h.id for h in hits} == {2, 9}
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    stored = rest_client.retrieve("docs", ids=[1], with_vectors=True)[0]
    assert set(stored.vector) == {"dense"}  # type: ignore[arg-type]


def test_unsupported_rpcs_are_unimplemented(grpc_client: QdrantClient) -> None:
    import grpc

    with pytest.raises(grpc.RpcError) as caught:
        grpc_client.create_snapshot("docs")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    assert "Snapshots" in caught.value.details()  # type: ignore[attr-defined]
