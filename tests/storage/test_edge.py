"""EdgeStore against qdrant-client's local mode as the reference, plus concurrency and durability.

Pure pytest, no Django: ``.venv/bin/pytest -p no:django tests/storage -q``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client.http import models

from inference.storage import (
    DEFAULT_VECTOR_NAME,
    BadRequest,
    CollectionExists,
    CollectionNotFound,
    EdgeStore,
    PointNotFound,
    StorageError,
    VectorStore,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DIM = 16


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    s = EdgeStore(tmp_path / "edge")
    yield s
    s.close()


@pytest.fixture
def local() -> Iterator[QdrantClient]:
    client = QdrantClient(":memory:")
    yield client
    client.close()


def unnamed(dim: int = DIM, distance: models.Distance = models.Distance.COSINE) -> models.CreateCollection:
    return models.CreateCollection(vectors=models.VectorParams(size=dim, distance=distance))


def hybrid(dim: int = DIM) -> models.CreateCollection:
    return models.CreateCollection(
        vectors={
            "dense": models.VectorParams(size=dim, distance=models.Distance.COSINE),
            "dot": models.VectorParams(size=dim, distance=models.Distance.DOT),
            "euclid": models.VectorParams(size=dim, distance=models.Distance.EUCLID),
        },
        sparse_vectors={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )


def create_both(store: EdgeStore, local: QdrantClient, name: str, config: models.CreateCollection) -> None:
    store.create_collection(name, config)
    local.create_collection(
        name, vectors_config=config.vectors or {}, sparse_vectors_config=config.sparse_vectors
    )


def upsert_both(store: EdgeStore, local: QdrantClient, name: str, points: list[models.PointStruct]) -> None:
    store.upsert(name, points)
    local.upsert(name, points)


def rand_vec(rng: np.random.Generator, dim: int = DIM) -> list[float]:
    # float32 values, so both stores hold exactly the same numbers.
    return [float(x) for x in rng.standard_normal(dim).astype(np.float32)]


def rand_sparse(rng: np.random.Generator, vocab: int = 60, nnz: int = 6) -> models.SparseVector:
    indices = sorted(int(i) for i in rng.choice(vocab, size=nnz, replace=False))
    return models.SparseVector(indices=indices, values=[float(v) for v in rng.random(nnz).astype(np.float32)])


def payload_for(i: int) -> dict[str, Any]:
    return {
        "i": i,
        "group": f"g{i % 7}",
        "tags": [f"t{i % 3}", f"t{i % 5}"],
        "flag": i % 2 == 0,
        # Decoys for the 0.9.0 bool bug: integers 1 / 0 where a broken filter would match.
        "flag_int": 1 if i % 2 == 0 else 0,
        "price": float(i % 50),
        "maybe": None if i % 4 == 0 else i,
        "nested": [{"k": i % 3, "ok": i % 3 == 0}],
        **({"rare": "x"} if i % 10 == 0 else {}),
    }


def hybrid_points(n: int, seed: int = 7) -> list[models.PointStruct]:
    rng = np.random.default_rng(seed)
    return [
        models.PointStruct(
            id=i,
            vector={
                "dense": rand_vec(rng),
                "dot": rand_vec(rng),
                "euclid": rand_vec(rng),
                "bm25": rand_sparse(rng),
            },
            payload=payload_for(i),
        )
        for i in range(n)
    ]


def unnamed_points(n: int, seed: int = 3) -> list[models.PointStruct]:
    rng = np.random.default_rng(seed)
    return [models.PointStruct(id=i, vector=rand_vec(rng), payload=payload_for(i)) for i in range(n)]


def local_query(local: QdrantClient, name: str, req: models.QueryRequest) -> list[models.ScoredPoint]:
    return local.query_points(
        name,
        query=req.query,
        using=req.using,
        prefetch=req.prefetch,
        query_filter=req.filter,
        limit=req.limit or 10,
        offset=req.offset,
        score_threshold=req.score_threshold,
        with_payload=req.with_payload if req.with_payload is not None else False,
        with_vectors=req.with_vector if req.with_vector is not None else False,
    ).points


def assert_same_hits(edge: dict[str, Any], ref: list[models.ScoredPoint]) -> None:
    got = [(p["id"], p["score"]) for p in edge["points"]]
    want = [(p.id, p.score) for p in ref]
    assert [i for i, _ in got] == [i for i, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def scroll_all_ids(store: EdgeStore, name: str, flt: models.Filter | None = None) -> list[Any]:
    ids: list[Any] = []
    offset: Any = None
    while True:
        page = store.scroll(
            name, models.ScrollRequest(limit=7, offset=offset, filter=flt, with_payload=False)
        )
        ids.extend(p["id"] for p in page["points"])
        offset = page["next_page_offset"]
        if offset is None:
            return ids


def local_scroll_ids(local: QdrantClient, name: str, flt: models.Filter | None) -> list[Any]:
    points, _ = local.scroll(name, scroll_filter=flt, limit=10_000, with_payload=False)
    return [p.id for p in points]


# --------------------------------------------------------------------------------------------------
# Collections
# --------------------------------------------------------------------------------------------------


def test_store_implements_the_protocol(store: EdgeStore) -> None:
    assert isinstance(store, VectorStore)


def test_collection_lifecycle_unnamed(store: EdgeStore) -> None:
    assert store.list_collections() == []
    store.create_collection("docs", unnamed(4))
    assert store.list_collections() == ["docs"]
    assert store.collection_exists("docs")
    assert not store.collection_exists("other")

    info = store.get_collection("docs")
    parsed = models.CollectionInfo.model_validate(info)
    assert parsed.status == models.CollectionStatus.GREEN
    assert parsed.points_count == 0
    assert isinstance(parsed.config.params.vectors, models.VectorParams)
    assert parsed.config.params.vectors.size == 4
    assert parsed.config.params.vectors.distance == models.Distance.COSINE
    assert parsed.config.hnsw_config.m == 16
    assert info["payload_schema"] == {}

    # A plain list is the unnamed vector.
    result = store.upsert("docs", [models.PointStruct(id=1, vector=[0.1, 0.2, 0.3, 0.4])])
    assert result["status"] == "completed"
    assert isinstance(result["operation_id"], int)
    assert store.get_collection("docs")["points_count"] == 1

    with pytest.raises(CollectionExists) as exc:
        store.create_collection("docs", unnamed(4))
    assert exc.value.status_code == 400
    assert exc.value.message == "Wrong input: Collection `docs` already exists!"

    assert store.delete_collection("docs") is True
    assert store.delete_collection("docs") is False
    assert not store.collection_exists("docs")
    assert store.list_collections() == []

    # Re-created under the same name: a fresh, empty collection with the new config.
    store.create_collection("docs", unnamed(8, models.Distance.DOT))
    info = store.get_collection("docs")
    assert info["points_count"] == 0
    assert info["config"]["params"]["vectors"] == {"size": 8, "distance": "Dot"}


def test_named_dense_and_sparse_idf_collection(store: EdgeStore) -> None:
    store.create_collection("hybrid", hybrid(8))
    info = models.CollectionInfo.model_validate(store.get_collection("hybrid"))
    vectors = info.config.params.vectors
    assert isinstance(vectors, dict)
    assert vectors["dense"].size == 8
    assert vectors["euclid"].distance == models.Distance.EUCLID
    assert info.config.params.sparse_vectors is not None
    assert info.config.params.sparse_vectors["bm25"].modifier == models.Modifier.IDF

    config = store.vector_config("hybrid")
    assert DEFAULT_VECTOR_NAME not in config.dense
    assert config.dense["dense"].size == 8
    assert config.dense["dot"].distance == "Dot"
    assert config.sparse["bm25"].modifier == "idf"


def test_unknown_collection_is_404(store: EdgeStore) -> None:
    calls = [
        lambda: store.get_collection("missing"),
        lambda: store.upsert("missing", [models.PointStruct(id=1, vector=[1.0])]),
        lambda: store.query("missing", models.QueryRequest(query=[1.0])),
        lambda: store.count("missing", models.CountRequest()),
        lambda: store.vector_config("missing"),
    ]
    for call in calls:
        with pytest.raises(CollectionNotFound) as exc:
            call()
        assert exc.value.status_code == 404
        assert exc.value.message == "Not found: Collection `missing` doesn't exist!"


def test_invalid_collection_name(store: EdgeStore) -> None:
    with pytest.raises(BadRequest) as exc:
        store.create_collection("a/b", unnamed(4))
    assert exc.value.status_code == 422
    assert (
        exc.value.message
        == 'Validation error in path parameters: [name: collection name cannot contain "/" char]'
    )
    with pytest.raises(BadRequest):
        store.create_collection("", unnamed(4))
    # Names that are awkward on disk but valid for Qdrant work: directories are not named after them.
    store.create_collection("weird name ünïcode.v1", unnamed(4))
    assert store.collection_exists("weird name ünïcode.v1")


def test_payload_only_collection(store: EdgeStore) -> None:
    store.create_collection("empty", models.CreateCollection(vectors={}))
    store.upsert("empty", [models.PointStruct(id=1, vector={}, payload={"a": 1})])
    [record] = store.retrieve("empty", [1], with_vector=True)
    assert (record["payload"], record["vector"]) == ({"a": 1}, {})
    info = store.get_collection("empty")
    assert info["config"]["params"]["vectors"] == {}
    assert "sparse_vectors" not in info["config"]["params"]  # the hidden placeholder stays hidden
    assert store.vector_config("empty").dense == {} and store.vector_config("empty").sparse == {}


# --------------------------------------------------------------------------------------------------
# Points
# --------------------------------------------------------------------------------------------------


def test_upsert_and_retrieve_int_and_uuid_ids(store: EdgeStore) -> None:
    store.create_collection("c", unnamed(3, models.Distance.DOT))
    u1 = uuid.UUID(int=0xABC)
    u2 = uuid.uuid4()
    store.upsert(
        "c",
        [
            models.PointStruct(id=7, vector=[1.0, 2.0, 3.0], payload={"a": 1, "b": "x"}),
            models.PointStruct(id=str(u1), vector=[0.5, 0.5, 0.5], payload={"a": 2}),
            # Qdrant accepts any UUID spelling and answers with the hyphenated form.
            models.PointStruct(id=u2.hex.upper(), vector=[0.0, 0.0, 1.0]),
        ],
    )
    records = store.retrieve("c", [7, u1, str(u2), 12345], with_payload=True, with_vector=True)
    by_id = {r["id"]: r for r in records}
    assert set(by_id) == {7, str(u1), str(u2)}
    assert by_id[7]["payload"] == {"a": 1, "b": "x"}
    assert by_id[7]["vector"] == [1.0, 2.0, 3.0]  # unnamed vector comes back as a plain list
    assert by_id[str(u2)]["payload"] == {}
    assert set(by_id[7]) == {"id", "payload", "vector", "shard_key", "order_value"}
    models.Record.model_validate(by_id[7])

    only_a = store.retrieve("c", [7], with_payload=["a"], with_vector=False)
    assert only_a[0]["payload"] == {"a": 1}
    assert only_a[0]["vector"] is None
    excluded = store.retrieve("c", [7], with_payload=models.PayloadSelectorExclude(exclude=["a"]))
    assert excluded[0]["payload"] == {"b": "x"}

    with pytest.raises(BadRequest) as exc:
        store.retrieve("c", ["not-a-uuid"])
    assert exc.value.status_code == 400


def test_wrong_dimension_and_unknown_vector_name(store: EdgeStore) -> None:
    store.create_collection("c", unnamed(4))
    with pytest.raises(BadRequest) as exc:
        store.upsert("c", [models.PointStruct(id=1, vector=[1.0, 2.0, 3.0])])
    assert exc.value.status_code == 400
    assert exc.value.message == "Wrong input: Vector dimension error: expected dim: 4, got 3"

    store.create_collection("named", hybrid(4))
    with pytest.raises(BadRequest) as exc:
        store.upsert("named", [models.PointStruct(id=1, vector={"nope": [1.0, 2.0, 3.0, 4.0]})])
    assert exc.value.message == "Wrong input: Not existing vector name error: nope"
    with pytest.raises(BadRequest) as exc:
        store.query("named", models.QueryRequest(query=[1.0, 2.0], using="dense"))
    assert exc.value.message == "Wrong input: Vector dimension error: expected dim: 4, got 2"


def test_malformed_sparse_vector_is_rejected_not_a_panic(store: EdgeStore) -> None:
    store.create_collection("s", hybrid(4))
    bad = models.SparseVector(indices=[1, 2], values=[1.0])
    with pytest.raises(BadRequest) as exc:
        store.upsert("s", [models.PointStruct(id=1, vector={"bm25": bad})])
    assert exc.value.status_code == 422
    dup = models.SparseVector(indices=[3, 3], values=[1.0, 2.0])
    with pytest.raises(BadRequest):
        store.upsert("s", [models.PointStruct(id=1, vector={"bm25": dup})])
    # The shard still works afterwards.
    store.upsert("s", [models.PointStruct(id=1, vector={"dense": [1.0, 0.0, 0.0, 0.0]})])
    assert store.count("s", models.CountRequest())["count"] == 1


def test_inference_objects_must_be_resolved_first(store: EdgeStore) -> None:
    store.create_collection("c", unnamed(4))
    doc = models.Document(text="hello", model="sentence-transformers/all-minilm-l6-v2")
    with pytest.raises(BadRequest) as exc:
        store.upsert("c", [models.PointStruct(id=1, vector=doc)])
    assert "must be embedded" in exc.value.message
    with pytest.raises(BadRequest):
        store.query("c", models.QueryRequest(query=doc))


def test_scroll_pagination_and_count(store: EdgeStore) -> None:
    store.create_collection("c", unnamed(DIM))
    store.upsert("c", unnamed_points(53))
    ids = scroll_all_ids(store, "c")
    assert ids == list(range(53))

    page = store.scroll("c", models.ScrollRequest(limit=5, offset=10, with_vector=True))
    assert [p["id"] for p in page["points"]] == [10, 11, 12, 13, 14]
    assert page["next_page_offset"] == 15
    assert len(page["points"][0]["vector"]) == DIM
    assert page["points"][0]["payload"]["i"] == 10  # scroll returns payload by default

    even = models.Filter(must=[models.FieldCondition(key="flag", match=models.MatchValue(value=True))])
    assert scroll_all_ids(store, "c", even) == list(range(0, 53, 2))
    assert store.count("c", models.CountRequest())["count"] == 53
    assert store.count("c", models.CountRequest(filter=even, exact=True)) == {"count": 27}


def test_delete_points_by_ids_and_filter(store: EdgeStore) -> None:
    store.create_collection("c", unnamed(DIM))
    store.upsert("c", unnamed_points(30))
    result = store.delete_points("c", models.PointIdsList(points=[0, 1, 2, 999]))
    assert result["status"] == "completed"
    assert store.count("c", models.CountRequest())["count"] == 27
    store.delete_points("c", [3])  # a bare id list is accepted too
    flt = models.Filter(must=[models.FieldCondition(key="group", match=models.MatchValue(value="g1"))])
    store.delete_points("c", models.FilterSelector(filter=flt))
    remaining = scroll_all_ids(store, "c")
    assert remaining == [i for i in range(4, 30) if i % 7 != 1]


def test_payload_operations(store: EdgeStore) -> None:
    store.create_collection("c", unnamed(3))
    store.upsert(
        "c",
        [
            models.PointStruct(
                id=i, vector=[1.0, float(i), 0.0], payload={"a": i, "keep": True, "obj": {"x": 1}}
            )
            for i in range(1, 5)
        ],
    )

    def payload(pid: int) -> Any:
        return store.retrieve("c", [pid])[0]["payload"]

    store.set_payload("c", models.SetPayload(payload={"b": "new"}, points=[1]))
    assert payload(1) == {"a": 1, "keep": True, "obj": {"x": 1}, "b": "new"}

    store.set_payload("c", models.SetPayload(payload={"y": 2}, points=[1], key="obj"))
    assert payload(1)["obj"] == {"x": 1, "y": 2}

    store.overwrite_payload("c", models.SetPayload(payload={"only": 1}, points=[2]))
    assert payload(2) == {"only": 1}

    store.delete_payload("c", models.DeletePayload(keys=["keep", "obj"], points=[3]))
    assert payload(3) == {"a": 3}

    store.clear_payload("c", models.PointIdsList(points=[4]))
    assert payload(4) == {}

    by_filter = models.Filter(must=[models.FieldCondition(key="a", range=models.Range(gte=1, lte=3))])
    store.set_payload("c", models.SetPayload(payload={"tagged": True}, filter=by_filter))
    assert [p["id"] for p in store.scroll("c", models.ScrollRequest(filter=by_filter))["points"]] == [1, 3]
    assert payload(1)["tagged"] is True and payload(3)["tagged"] is True
    assert "tagged" not in payload(2)

    with pytest.raises(PointNotFound) as exc:
        store.set_payload("c", models.SetPayload(payload={"z": 1}, points=[999]))
    assert exc.value.status_code == 404
    assert exc.value.message == "Not found: No point with id 999 found"


def test_update_and_delete_vectors(store: EdgeStore) -> None:
    store.create_collection("h", hybrid(4))
    store.upsert(
        "h",
        [
            models.PointStruct(
                id=1,
                vector={
                    "dense": [1.0, 0.0, 0.0, 0.0],
                    "bm25": models.SparseVector(indices=[1, 5], values=[0.5, 0.25]),
                },
            )
        ],
    )
    store.update_vectors("h", [models.PointVectors(id=1, vector={"dot": [1.0, 2.0, 3.0, 4.0]})])
    vec = store.retrieve("h", [1], with_vector=True)[0]["vector"]
    assert vec["dot"] == [1.0, 2.0, 3.0, 4.0]
    assert vec["dense"] == [1.0, 0.0, 0.0, 0.0]  # untouched
    assert vec["bm25"] == {"indices": [1, 5], "values": [0.5, 0.25]}

    store.delete_vectors("h", models.DeleteVectors(points=[1], vector=["bm25"]))
    vec = store.retrieve("h", [1], with_vector=True)[0]["vector"]
    assert set(vec) == {"dense", "dot"}

    with pytest.raises(BadRequest) as exc:
        store.delete_vectors("h", models.DeleteVectors(points=[1], vector=["nope"]))
    assert exc.value.message == "Wrong input: Not existing vector name error: nope"
    with pytest.raises(PointNotFound):
        store.update_vectors("h", [models.PointVectors(id=2, vector={"dot": [1.0, 2.0, 3.0, 4.0]})])


# --------------------------------------------------------------------------------------------------
# Queries, checked against qdrant-client local mode
# --------------------------------------------------------------------------------------------------


def test_nearest_unnamed_matches_local_mode(store: EdgeStore, local: QdrantClient) -> None:
    create_both(store, local, "c", unnamed(DIM))
    upsert_both(store, local, "c", unnamed_points(400))
    rng = np.random.default_rng(11)
    for _ in range(5):
        req = models.QueryRequest(query=rand_vec(rng), limit=10, with_payload=True)
        result = store.query("c", req)
        assert_same_hits(result, local_query(local, "c", req))
        models.QueryResponse.model_validate(result)
        assert result["points"][0]["payload"]["i"] >= 0
        assert set(result["points"][0]) == {
            "id",
            "version",
            "score",
            "payload",
            "vector",
            "shard_key",
            "order_value",
        }

    # Default: no payload, no vector; offset; exact search params are accepted.
    req = models.QueryRequest(
        query=rand_vec(rng), limit=5, offset=3, params=models.SearchParams(exact=True, hnsw_ef=64)
    )
    result = store.query("c", req)
    assert all(p["payload"] is None and p["vector"] is None for p in result["points"])
    assert_same_hits(result, local_query(local, "c", req))


@pytest.mark.parametrize("using", ["dense", "dot", "euclid"])
def test_nearest_using_named_vectors_matches_local_mode(
    store: EdgeStore, local: QdrantClient, using: str
) -> None:
    create_both(store, local, "h", hybrid())
    upsert_both(store, local, "h", hybrid_points(300))
    rng = np.random.default_rng(5)
    for _ in range(4):
        req = models.QueryRequest(query=rand_vec(rng), using=using, limit=8)
        assert_same_hits(store.query("h", req), local_query(local, "h", req))
    nearest = models.QueryRequest(query=models.NearestQuery(nearest=rand_vec(rng)), using=using, limit=8)
    assert_same_hits(store.query("h", nearest), local_query(local, "h", nearest))


def test_sparse_idf_and_prefetch_rrf_match_local_mode(store: EdgeStore, local: QdrantClient) -> None:
    create_both(store, local, "h", hybrid())
    upsert_both(store, local, "h", hybrid_points(300))
    rng = np.random.default_rng(9)
    for _ in range(3):
        sparse_q = rand_sparse(rng, nnz=3)
        sparse_req = models.QueryRequest(query=sparse_q, using="bm25", limit=10)
        assert_same_hits(store.query("h", sparse_req), local_query(local, "h", sparse_req))

        # Final limit above the union of both prefetches: no tie at a cut-off can differ.
        req = models.QueryRequest(
            prefetch=[
                models.Prefetch(query=rand_vec(rng), using="dense", limit=10),
                models.Prefetch(query=sparse_q, using="bm25", limit=10),
            ],
            query=models.FusionQuery(fusion=models.Fusion.RRF),
            limit=25,
        )
        got = {p["id"]: p["score"] for p in store.query("h", req)["points"]}
        want = {p.id: p.score for p in local_query(local, "h", req)}
        assert set(got) == set(want)
        for pid, score in want.items():
            assert got[pid] == pytest.approx(score, abs=1e-4)
        scores = list(got.values())
        assert scores == sorted(scores, reverse=True)

    # Explicit k and DBSF run too.
    rrf_k = models.QueryRequest(
        prefetch=[models.Prefetch(query=rand_vec(rng), using="dense", limit=5)],
        query=models.RrfQuery(rrf=models.Rrf(k=60)),
        limit=5,
    )
    assert store.query("h", rrf_k)["points"][0]["score"] == pytest.approx(
        1 / 60, abs=1e-6
    )  # 1 / (k + 0-based rank)
    dbsf = rrf_k.model_copy(update={"query": models.FusionQuery(fusion=models.Fusion.DBSF)})
    assert len(store.query("h", dbsf)["points"]) == 5


def test_bool_filters_work_around_the_edge_bug(store: EdgeStore, local: QdrantClient) -> None:
    create_both(store, local, "c", unnamed(DIM))
    upsert_both(store, local, "c", unnamed_points(60))

    def is_flag(value: bool) -> models.FieldCondition:
        return models.FieldCondition(key="flag", match=models.MatchValue(value=value))

    true_ids = scroll_all_ids(store, "c", models.Filter(must=[is_flag(True)]))
    false_ids = scroll_all_ids(store, "c", models.Filter(must=[is_flag(False)]))
    assert true_ids == list(range(0, 60, 2))
    assert false_ids == list(range(1, 60, 2))
    # Payload integers 1 / 0 never match a boolean condition (the unpatched 0.9.0 bug matched them).
    assert (
        scroll_all_ids(
            store,
            "c",
            models.Filter(must=[models.FieldCondition(key="flag_int", match=models.MatchValue(value=True))]),
        )
        == []
    )
    # ... and integer conditions still match integers only.
    ints = models.Filter(must=[models.FieldCondition(key="flag_int", match=models.MatchValue(value=1))])
    assert scroll_all_ids(store, "c", ints) == list(range(0, 60, 2))

    filters = [
        models.Filter(must_not=[is_flag(True)]),
        models.Filter(should=[is_flag(False), models.FieldCondition(key="i", range=models.Range(lt=5))]),
        models.Filter(
            must=[
                models.NestedCondition(
                    nested=models.Nested(
                        key="nested",
                        filter=models.Filter(
                            must=[models.FieldCondition(key="ok", match=models.MatchValue(value=True))]
                        ),
                    )
                )
            ]
        ),
        models.Filter(min_should=models.MinShould(conditions=[is_flag(True), is_flag(False)], min_count=1)),
    ]
    for flt in filters:
        assert scroll_all_ids(store, "c", flt) == local_scroll_ids(local, "c", flt)
        assert store.count("c", models.CountRequest(filter=flt))["count"] == local.count("c", flt).count

    # In a query (and a prefetch) the workaround applies as well.
    rng = np.random.default_rng(1)
    req = models.QueryRequest(query=rand_vec(rng), filter=models.Filter(must=[is_flag(True)]), limit=10)
    result = store.query("c", req)
    assert all(p["id"] % 2 == 0 for p in result["points"])
    assert_same_hits(result, local_query(local, "c", req))


def test_filter_conditions_match_local_mode(store: EdgeStore, local: QdrantClient) -> None:
    create_both(store, local, "c", unnamed(DIM))
    points = unnamed_points(80)
    points.append(models.PointStruct(id=str(uuid.UUID(int=1)), vector=points[0].vector, payload={"i": 1000}))
    upsert_both(store, local, "c", points)
    fc = models.FieldCondition
    filters = [
        models.Filter(must=[fc(key="group", match=models.MatchValue(value="g3"))]),
        models.Filter(must=[fc(key="tags", match=models.MatchAny(any=["t1", "t4"]))]),
        models.Filter(must=[fc(key="group", match=models.MatchExcept(**{"except": ["g0", "g1"]}))]),
        models.Filter(must=[fc(key="price", range=models.Range(gte=10.5, lt=20))]),
        models.Filter(must=[fc(key="i", match=models.MatchAny(any=[1, 2, 3, 1000]))]),
        models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="rare"))]),
        models.Filter(must=[models.IsNullCondition(is_null=models.PayloadField(key="maybe"))]),
        models.Filter(must=[models.HasIdCondition(has_id=[1, 5, 9, str(uuid.UUID(int=1)), 12345])]),
        models.Filter(must=[fc(key="tags", values_count=models.ValuesCount(gte=2))]),
        models.Filter(
            should=[
                fc(key="group", match=models.MatchValue(value="g2")),
                fc(key="i", range=models.Range(lt=4)),
            ],
            must_not=[fc(key="tags", match=models.MatchValue(value="t0"))],
        ),
        models.Filter(
            must=[
                models.Filter(
                    should=[fc(key="i", range=models.Range(gt=70)), fc(key="i", range=models.Range(lt=3))]
                )
            ]
        ),
        models.Filter(
            must=[
                models.NestedCondition(
                    nested=models.Nested(
                        key="nested",
                        filter=models.Filter(must=[fc(key="k", match=models.MatchValue(value=2))]),
                    )
                )
            ]
        ),
    ]
    for flt in filters:
        assert sorted(map(str, scroll_all_ids(store, "c", flt))) == sorted(
            map(str, local_scroll_ids(local, "c", flt))
        )


def test_score_threshold_and_with_vector_match_local_mode(store: EdgeStore, local: QdrantClient) -> None:
    create_both(store, local, "h", hybrid())
    upsert_both(store, local, "h", hybrid_points(200))
    rng = np.random.default_rng(21)
    req = models.QueryRequest(
        query=rand_vec(rng), using="dense", limit=50, score_threshold=0.3, with_vector=["dense", "bm25"]
    )
    result = store.query("h", req)
    ref = local_query(local, "h", req)
    assert_same_hits(result, ref)
    assert result["points"], "threshold should leave some hits"
    assert all(p["score"] >= 0.3 for p in result["points"])
    for got, want in zip(result["points"], ref, strict=True):
        assert set(got["vector"]) == {"dense", "bm25"}
        assert got["vector"]["dense"] == pytest.approx(want.vector["dense"], abs=1e-5)  # type: ignore[index]
        assert got["vector"]["bm25"]["indices"] == want.vector["bm25"].indices  # type: ignore[index,union-attr]

    # Euclid: lower is better, the threshold is an upper bound.
    req = models.QueryRequest(query=rand_vec(rng), using="euclid", limit=50, score_threshold=5.0)
    result = store.query("h", req)
    assert_same_hits(result, local_query(local, "h", req))
    assert all(p["score"] <= 5.0 for p in result["points"])


def test_query_by_point_id_and_recommend(store: EdgeStore, local: QdrantClient) -> None:
    create_both(store, local, "h", hybrid())
    upsert_both(store, local, "h", hybrid_points(150))
    # Nearest by id: the vector of point 3, and point 3 itself is excluded, as in Qdrant.
    req = models.QueryRequest(query=3, using="dense", limit=5)
    result = store.query("h", req)
    assert 3 not in [p["id"] for p in result["points"]]
    assert_same_hits(result, local_query(local, "h", req))

    for strategy in (models.RecommendStrategy.AVERAGE_VECTOR, models.RecommendStrategy.BEST_SCORE):
        req = models.QueryRequest(
            query=models.RecommendQuery(
                recommend=models.RecommendInput(positive=[1, 2], negative=[10], strategy=strategy)
            ),
            using="dense",
            limit=6,
        )
        result = store.query("h", req)
        assert not {1, 2, 10} & {p["id"] for p in result["points"]}
        assert_same_hits(result, local_query(local, "h", req))

    with pytest.raises(PointNotFound) as exc:
        store.query("h", models.QueryRequest(query=424242, using="dense"))
    assert exc.value.message == "Not found: No point with id 424242 found"

    rng = np.random.default_rng(2)
    discover = models.QueryRequest(
        query=models.DiscoverQuery(
            discover=models.DiscoverInput(
                target=rand_vec(rng), context=[models.ContextPair(positive=4, negative=5)]
            )
        ),
        using="dense",
        limit=5,
    )
    assert len(store.query("h", discover)["points"]) == 5
    context = models.QueryRequest(
        query=models.ContextQuery(
            context=[models.ContextPair(positive=rand_vec(rng), negative=rand_vec(rng))]
        ),
        using="dense",
        limit=5,
    )
    assert len(store.query("h", context)["points"]) == 5


def test_order_by_sample_formula_and_mmr(store: EdgeStore) -> None:
    store.create_collection("c", unnamed(DIM))
    store.upsert("c", unnamed_points(40))
    order = models.OrderBy(key="i", direction=models.Direction.DESC)
    with pytest.raises(BadRequest) as exc:
        store.scroll("c", models.ScrollRequest(order_by=order))
    assert exc.value.message.startswith("Wrong input: No range index for `order_by` key: `i`")

    store.create_payload_index("c", "i", models.PayloadSchemaType.INTEGER)
    page = store.scroll("c", models.ScrollRequest(order_by=order, limit=3))
    assert [p["id"] for p in page["points"]] == [39, 38, 37]
    assert [p["order_value"] for p in page["points"]] == [39, 38, 37]
    assert page["next_page_offset"] is None
    ranked = store.query("c", models.QueryRequest(query=models.OrderByQuery(order_by="i"), limit=3))
    assert [p["id"] for p in ranked["points"]] == [0, 1, 2]
    info = store.get_collection("c")
    assert info["payload_schema"]["i"] == {"data_type": "integer", "points": 40}
    models.CollectionInfo.model_validate(info)

    sample = store.query(
        "c", models.QueryRequest(query=models.SampleQuery(sample=models.Sample.RANDOM), limit=5)
    )
    assert len({p["id"] for p in sample["points"]}) == 5

    rng = np.random.default_rng(4)
    formula = models.QueryRequest(
        prefetch=models.Prefetch(query=rand_vec(rng), limit=10),
        query=models.FormulaQuery(
            formula=models.SumExpression(sum=["$score", models.MultExpression(mult=[0.01, "i"])])
        ),
        limit=10,
    )
    points = store.query("c", formula)["points"]
    assert len(points) == 10
    assert [p["score"] for p in points] == sorted((p["score"] for p in points), reverse=True)

    mmr = models.QueryRequest(
        query=models.NearestQuery(nearest=rand_vec(rng), mmr=models.Mmr(diversity=0.0, candidates_limit=20)),
        limit=5,
    )
    plain = models.QueryRequest(query=mmr.query.nearest, limit=5)  # type: ignore[union-attr]
    # No diversity: the same points as a plain nearest search.
    assert {p["id"] for p in store.query("c", mmr)["points"]} == {
        p["id"] for p in store.query("c", plain)["points"]
    }


def test_multivector_max_sim_matches_local_mode(store: EdgeStore, local: QdrantClient) -> None:
    config = models.CreateCollection(
        vectors={
            "colbert": models.VectorParams(
                size=4,
                distance=models.Distance.COSINE,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            )
        }
    )
    create_both(store, local, "m", config)
    rng = np.random.default_rng(8)
    points = [
        models.PointStruct(id=i, vector={"colbert": [rand_vec(rng, 4) for _ in range(1 + i % 3)]})
        for i in range(60)
    ]
    upsert_both(store, local, "m", points)
    assert store.vector_config("m").dense["colbert"].multivector
    req = models.QueryRequest(query=[rand_vec(rng, 4), rand_vec(rng, 4)], using="colbert", limit=7)
    assert_same_hits(store.query("m", req), local_query(local, "m", req))


def test_query_batch(store: EdgeStore, local: QdrantClient) -> None:
    create_both(store, local, "c", unnamed(DIM))
    upsert_both(store, local, "c", unnamed_points(100))
    rng = np.random.default_rng(6)
    reqs = [models.QueryRequest(query=rand_vec(rng), limit=4) for _ in range(3)]
    results = store.query_batch("c", reqs)
    assert len(results) == 3
    for result, req in zip(results, reqs, strict=True):
        assert_same_hits(result, local_query(local, "c", req))


def test_query_groups(store: EdgeStore, local: QdrantClient) -> None:
    create_both(store, local, "c", unnamed(DIM))
    upsert_both(store, local, "c", unnamed_points(300))
    rng = np.random.default_rng(13)
    query = rand_vec(rng)
    req = models.QueryGroupsRequest(query=query, group_by="group", limit=4, group_size=3, with_payload=True)
    result = store.query_groups("c", req)
    parsed = models.GroupsResult.model_validate(result)
    assert len(parsed.groups) == 4
    best_scores = []
    for group in result["groups"]:
        assert len(group["hits"]) == 3
        assert all(hit["payload"]["group"] == group["id"] for hit in group["hits"])
        scores = [hit["score"] for hit in group["hits"]]
        assert scores == sorted(scores, reverse=True)
        best_scores.append(scores[0])
    assert best_scores == sorted(best_scores, reverse=True)

    ref = local.query_points_groups(
        "c", query=query, group_by="group", limit=4, group_size=3, with_payload=True
    ).groups
    assert [g["id"] for g in result["groups"]] == [g.id for g in ref]
    assert [[h["id"] for h in g["hits"]] for g in result["groups"]] == [[h.id for h in g.hits] for g in ref]

    # Array values: a point joins the group of each of its values.
    tags = store.query_groups(
        "c", models.QueryGroupsRequest(query=query, group_by="tags", limit=10, group_size=2)
    )
    assert {g["id"] for g in tags["groups"]} == {"t0", "t1", "t2", "t3", "t4"}
    assert all(hit["payload"] is None for g in tags["groups"] for hit in g["hits"])

    # Filter + vectors of the chosen hits.
    flt = models.Filter(must=[models.FieldCondition(key="flag", match=models.MatchValue(value=True))])
    filtered = store.query_groups(
        "c",
        models.QueryGroupsRequest(
            query=query, group_by="group", limit=7, group_size=2, filter=flt, with_vector=True
        ),
    )
    for group in filtered["groups"]:
        for hit in group["hits"]:
            assert hit["id"] % 2 == 0
            assert len(hit["vector"]) == DIM


def test_lookup_from_and_with_lookup(store: EdgeStore) -> None:
    store.create_collection("c", unnamed(4))
    store.upsert(
        "c",
        [
            models.PointStruct(id=1, vector=[1.0, 0.0, 0.0, 0.0], payload={"g": 10}),
            models.PointStruct(id=2, vector=[0.0, 1.0, 0.0, 0.0], payload={"g": 20}),
        ],
    )
    store.create_collection(
        "other",
        models.CreateCollection(vectors={"v": models.VectorParams(size=4, distance=models.Distance.COSINE)}),
    )
    store.upsert(
        "other", [models.PointStruct(id=1, vector={"v": [0.0, 1.0, 0.0, 0.0]}, payload={"name": "ten"})]
    )
    store.upsert(
        "other", [models.PointStruct(id=10, vector={"v": [0.0, 1.0, 0.0, 0.0]}, payload={"name": "ten"})]
    )
    # Id 1 is looked up in `other` (where it points along y), so point 2 of `c` is nearest, and
    # point 1 of `c` is not excluded (it was not named in this collection).
    result = store.query(
        "c", models.QueryRequest(query=1, lookup_from=models.LookupLocation(collection="other", vector="v"))
    )
    assert [p["id"] for p in result["points"]] == [2, 1]
    with pytest.raises(CollectionNotFound):
        store.query("c", models.QueryRequest(query=1, lookup_from=models.LookupLocation(collection="nope")))
    groups = store.query_groups(
        "c", models.QueryGroupsRequest(query=[1.0, 0.0, 0.0, 0.0], group_by="g", with_lookup="other")
    )["groups"]
    assert [g["id"] for g in groups] == [10, 20]
    assert (groups[0]["lookup"]["id"], groups[0]["lookup"]["payload"]) == (10, {"name": "ten"})
    assert groups[0]["lookup"]["vector"] is None
    assert groups[1]["lookup"] is None


# --------------------------------------------------------------------------------------------------
# Concurrency, durability, reopen
# --------------------------------------------------------------------------------------------------


def test_readers_and_a_writer_in_threads(store: EdgeStore) -> None:
    store.create_collection("c", unnamed(DIM))
    store.upsert("c", unnamed_points(200))
    errors: list[BaseException] = []
    stop = threading.Event()
    written = [200]

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                store.query("c", models.QueryRequest(query=rand_vec(rng), limit=10, with_payload=True))
                store.scroll("c", models.ScrollRequest(limit=20))
                store.count("c", models.CountRequest())
                store.retrieve("c", [int(rng.integers(0, 200))], with_vector=True)
        except BaseException as exc:
            errors.append(exc)

    def writer() -> None:
        rng = np.random.default_rng(99)
        try:
            while not stop.is_set():
                start = written[0]
                batch = [
                    models.PointStruct(id=start + k, vector=rand_vec(rng), payload={"i": start + k})
                    for k in range(50)
                ]
                store.upsert("c", batch)
                written[0] = start + 50
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors[:3]
    assert written[0] > 200
    assert store.count("c", models.CountRequest())["count"] == written[0]


def test_delete_collection_waits_for_running_queries(store: EdgeStore) -> None:
    store.create_collection("c", unnamed(DIM))
    store.upsert("c", unnamed_points(500))
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        rng = np.random.default_rng(0)
        while not stop.is_set():
            try:
                store.query("c", models.QueryRequest(query=rand_vec(rng), limit=5))
            except CollectionNotFound:
                return  # expected once the collection is gone
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    assert store.delete_collection("c")
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert not errors, errors


DURABILITY_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from qdrant_client.http import models
    from inference.storage import EdgeStore

    store = EdgeStore(sys.argv[1])
    store.create_collection("c", models.CreateCollection(vectors=models.VectorParams(size=8, distance="Dot")))
    points = [
        models.PointStruct(id=i, vector=[float(i % 13)] * 8, payload={"i": i}) for i in range(1000)
    ]
    store.upsert("c", points)
    print("ok", flush=True)
    time.sleep(60)  # killed long before this returns; never closes the store
    """
)


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", DURABILITY_SCRIPT, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ok", proc.stderr.read() if proc.stderr else line
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    with EdgeStore(root) as reopened:
        assert reopened.list_collections() == ["c"]
        assert reopened.count("c", models.CountRequest())["count"] == 1000
        assert reopened.retrieve("c", [999])[0]["payload"] == {"i": 999}


def test_reopen_after_close_keeps_collections_and_data(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    store = EdgeStore(root)
    store.create_collection("h", hybrid())
    store.create_collection("u", unnamed(DIM))
    store.upsert("h", hybrid_points(50))
    store.upsert("u", unnamed_points(20))
    store.create_payload_index("u", "group", models.PayloadSchemaType.KEYWORD)
    before = store.query("u", models.QueryRequest(query=unnamed_points(1, seed=42)[0].vector, limit=5))

    # The root is exclusively locked while open.
    with pytest.raises(StorageError):
        EdgeStore(root)
    store.close()
    with pytest.raises(StorageError):
        store.count("u", models.CountRequest())

    with EdgeStore(root) as again:
        assert again.list_collections() == ["h", "u"]
        assert again.count("h", models.CountRequest())["count"] == 50
        assert again.count("u", models.CountRequest())["count"] == 20
        info = again.get_collection("h")
        assert info["config"]["params"]["sparse_vectors"]["bm25"]["modifier"] == "idf"
        assert again.get_collection("u")["payload_schema"]["group"]["data_type"] == "keyword"
        after = again.query("u", models.QueryRequest(query=unnamed_points(1, seed=42)[0].vector, limit=5))
        assert after["points"] == before["points"]
        again.upsert("u", [models.PointStruct(id=100, vector=rand_vec(np.random.default_rng(0)))])
        assert again.count("u", models.CountRequest())["count"] == 21


def test_new_collections_get_a_search_pool_of_the_configured_size(tmp_path: Path) -> None:
    for threads in (1, 3, None):  # None: Edge's default, one thread per CPU
        root = tmp_path / f"edge-{threads}"
        with EdgeStore(root, search_threads=threads) as s:
            s.create_collection("c", unnamed())
            (shard_config,) = root.glob("**/edge_config.json")
            assert json.loads(shard_config.read_text()).get("max_search_threads") == threads
