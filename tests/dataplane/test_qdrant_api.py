"""The rest of Qdrant's REST API through the official client on a live server, checked against its local mode.

Each test runs the same calls on the data plane (embedded Qdrant Edge storage) and on qdrant-client's
`QdrantClient(":memory:")` with the same data, and compares what both answer. The legacy endpoints, which
qdrant-client 1.20 no longer wraps, are sent as raw JSON and compared with the equivalent universal query.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from console.clusters.services import CreatedCluster
from inference.usage import UsageEvent
from tests.conftest import MINILM

pytestmark = pytest.mark.django_db(transaction=True)

DIM = 4


@pytest.fixture
def remote(base_url: str, cluster: CreatedCluster) -> Iterator[QdrantClient]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qc = QdrantClient(url=base_url, api_key=cluster.api_key, timeout=60)
        qc.get_collections()
    assert [w for w in caught if "version" in str(w.message).lower()] == []
    yield qc
    qc.close()


@pytest.fixture
def local() -> Iterator[QdrantClient]:
    qc = QdrantClient(":memory:")
    yield qc
    qc.close()


@pytest.fixture
def raw(base_url: str, cluster: CreatedCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"api-key": cluster.api_key}, timeout=60) as client:
        yield client


def points(n: int = 30, seed: int = 7) -> list[models.PointStruct]:
    rng = random.Random(seed)
    return [
        models.PointStruct(
            id=i,
            vector={
                "d": [rng.uniform(-1, 1) for _ in range(DIM)],
                "s": models.SparseVector(
                    indices=sorted(rng.sample(range(8), 3)), values=[rng.uniform(0.1, 1) for _ in range(3)]
                ),
                "m": [[rng.uniform(-1, 1) for _ in range(2)] for _ in range(2)],
            },
            payload={"n": i, "group": i % 4, "color": ["red", "green", "blue"][i % 3]},
        )
        for i in range(1, n + 1)
    ]


def setup(*clients: QdrantClient, name: str = "c", data: list[models.PointStruct] | None = None) -> None:
    for qc in clients:
        qc.create_collection(
            name,
            vectors_config={
                "d": models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                "m": models.VectorParams(
                    size=2,
                    distance=models.Distance.DOT,
                    multivector_config=models.MultiVectorConfig(
                        comparator=models.MultiVectorComparator.MAX_SIM
                    ),
                ),
            },
            sparse_vectors_config={"s": models.SparseVectorParams()},
        )
        qc.upsert(name, points=data if data is not None else points())


def ids(scored: list[Any]) -> list[Any]:
    return [p.id if hasattr(p, "id") else p["id"] for p in scored]


def scores_close(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        sx = x.score if hasattr(x, "score") else x["score"]
        sy = y.score if hasattr(y, "score") else y["score"]
        assert math.isclose(sx, sy, rel_tol=1e-4, abs_tol=1e-5)


# --- legacy endpoints -------------------------------------------------------------------------------------


def test_legacy_search_recommend_discover_match_local_queries(
    remote: QdrantClient, local: QdrantClient, raw: httpx.Client
) -> None:
    setup(remote, local)
    q = [0.3, -0.2, 0.9, 0.1]
    flt = {"must": [{"key": "group", "match": {"any": [0, 1, 2]}}]}

    search = raw.post(
        "/collections/c/points/search",
        json={"vector": {"name": "d", "vector": q}, "limit": 5, "filter": flt, "with_payload": True},
    )
    assert search.status_code == 200, search.text
    expected = local.query_points(
        "c", query=q, using="d", limit=5, query_filter=models.Filter.model_validate(flt), with_payload=True
    ).points
    assert ids(search.json()["result"]) == ids(expected)
    scores_close(search.json()["result"], expected)
    assert search.json()["result"][0]["payload"] == expected[0].payload

    recommend = raw.post(
        "/collections/c/points/recommend",
        json={"positive": [1, 2], "negative": [3], "using": "d", "limit": 6},
    )
    assert recommend.status_code == 200, recommend.text
    expected = local.query_points(
        "c",
        query=models.RecommendQuery(recommend=models.RecommendInput(positive=[1, 2], negative=[3])),
        using="d",
        limit=6,
    ).points
    assert ids(recommend.json()["result"]) == ids(expected)
    assert not {1, 2, 3} & set(ids(recommend.json()["result"]))

    best = raw.post(
        "/collections/c/points/recommend",
        json={"positive": [1], "negative": [2], "strategy": "best_score", "using": "d", "limit": 4},
    )
    expected = local.query_points(
        "c",
        query=models.RecommendQuery(
            recommend=models.RecommendInput(
                positive=[1], negative=[2], strategy=models.RecommendStrategy.BEST_SCORE
            )
        ),
        using="d",
        limit=4,
    ).points
    assert ids(best.json()["result"]) == ids(expected)

    discover = raw.post(
        "/collections/c/points/discover",
        json={"target": 5, "context": [{"positive": 6, "negative": 7}], "using": "d", "limit": 5},
    )
    assert discover.status_code == 200, discover.text
    expected = local.query_points(
        "c",
        query=models.DiscoverQuery(
            discover=models.DiscoverInput(target=5, context=[models.ContextPair(positive=6, negative=7)])
        ),
        using="d",
        limit=5,
    ).points
    assert ids(discover.json()["result"]) == ids(expected)

    context = raw.post(
        "/collections/c/points/discover",
        json={"context": [{"positive": 6, "negative": 7}], "using": "d", "limit": 3},
    )
    assert context.status_code == 200 and len(context.json()["result"]) == 3

    batch = raw.post(
        "/collections/c/points/search/batch",
        json={
            "searches": [
                {"vector": {"name": "d", "vector": q}, "limit": 2},
                {"vector": {"name": "d", "vector": [1, 0, 0, 0]}, "limit": 3},
            ]
        },
    )
    assert [len(r) for r in batch.json()["result"]] == [2, 3]
    assert ids(batch.json()["result"][0]) == ids(local.query_points("c", query=q, using="d", limit=2).points)
    for path, body in [
        ("recommend/batch", {"searches": [{"positive": [1], "using": "d", "limit": 2}]}),
        (
            "discover/batch",
            {
                "searches": [
                    {"target": 1, "context": [{"positive": 2, "negative": 3}], "using": "d", "limit": 2}
                ]
            },
        ),
    ]:
        response = raw.post(f"/collections/c/points/{path}", json=body)
        assert response.status_code == 200 and len(response.json()["result"][0]) == 2, (path, response.text)

    groups = raw.post(
        "/collections/c/points/search/groups",
        json={"vector": {"name": "d", "vector": q}, "group_by": "group", "group_size": 2, "limit": 3},
    )
    expected_groups = local.query_points_groups(
        "c", query=q, using="d", group_by="group", group_size=2, limit=3
    ).groups
    assert [g["id"] for g in groups.json()["result"]["groups"]] == [g.id for g in expected_groups]
    assert [ids(g["hits"]) for g in groups.json()["result"]["groups"]] == [
        ids(g.hits) for g in expected_groups
    ]
    rec_groups = raw.post(
        "/collections/c/points/recommend/groups",
        json={"positive": [1], "using": "d", "group_by": "color", "group_size": 1, "limit": 3},
    )
    assert rec_groups.status_code == 200 and len(rec_groups.json()["result"]["groups"]) == 3


def test_legacy_search_embeds_inference_objects_and_bills(
    remote: QdrantClient, raw: httpx.Client, usage_events: list[UsageEvent]
) -> None:
    remote.create_collection(
        "docs", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
    )
    doc = {"text": "towers in Paris", "model": MINILM}
    assert raw.put("/collections/docs/points", json={"points": [{"id": 1, "vector": doc}]}).status_code == 200
    response = raw.post("/collections/docs/points/search", json={"vector": doc, "limit": 1})
    assert response.status_code == 200, response.text
    assert ids(response.json()["result"]) == [1]
    assert response.json()["result"][0]["score"] > 0.99
    assert response.json()["usage"]["inference"]["models"][MINILM]["tokens"] > 0


def test_legacy_errors_are_qdrant_shaped(remote: QdrantClient, raw: httpx.Client) -> None:
    setup(remote)
    for path, body in [
        ("search", {"vector": [1, 0, 0, 0]}),  # no limit
        ("search", {"limit": 3}),  # no vector
        ("recommend", {"positive": [1], "limit": -1, "using": "d"}),
        ("search/batch", {"searches": 3}),
        ("discover", {"target": 999, "using": "d", "limit": 2}),
        ("search", {"vector": {"name": "nope", "vector": [1, 0, 0, 0]}, "limit": 1}),
    ]:
        response = raw.post(f"/collections/c/points/{path}", json=body)
        assert 400 <= response.status_code < 500, (path, body, response.text)
        assert set(response.json()) == {"status", "time"}


# --- aliases ----------------------------------------------------------------------------------------------


def test_aliases_match_local_mode_and_queries_by_alias_hit_the_collection(
    remote: QdrantClient, local: QdrantClient
) -> None:
    setup(remote, local)
    for qc in (remote, local):
        assert qc.update_collection_aliases(
            [
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name="c", alias_name="live")
                ),
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name="c", alias_name="old")
                ),
            ]
        )
        qc.update_collection_aliases(
            [
                models.RenameAliasOperation(
                    rename_alias=models.RenameAlias(old_alias_name="old", new_alias_name="prev")
                )
            ]
        )
    assert remote.get_aliases() == local.get_aliases()
    assert remote.get_collection_aliases("c") == local.get_collection_aliases("c")
    by_alias = remote.query_points("live", query=[1, 0, 0, 0], using="d", limit=3).points
    assert ids(by_alias) == ids(local.query_points("c", query=[1, 0, 0, 0], using="d", limit=3).points)
    assert remote.count("prev").count == 30
    remote.upsert("live", points=[models.PointStruct(id=100, vector={"d": [1, 1, 1, 1]})])
    assert remote.count("c").count == 31

    with pytest.raises(UnexpectedResponse) as exc:
        remote.update_collection_aliases(
            [
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name="nope", alias_name="x")
                )
            ]
        )
    assert exc.value.status_code == 404
    with pytest.raises(UnexpectedResponse) as exc:  # all or nothing: the first action is not applied
        remote.update_collection_aliases(
            [
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name="c", alias_name="y")
                ),
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="never")),
            ]
        )
    assert exc.value.status_code == 404
    assert "y" not in {a.alias_name for a in remote.get_aliases().aliases}

    for qc in (remote, local):
        qc.delete_collection("c")
    assert remote.get_aliases() == local.get_aliases()
    assert remote.get_aliases().aliases == []


def test_aliases_survive_a_restart_of_the_store(remote: QdrantClient, cluster: CreatedCluster) -> None:
    from inference import stores

    setup(remote)
    remote.update_collection_aliases(
        [models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="c", alias_name="a"))]
    )
    stores.store_close(cluster.cluster.id)
    assert [a.alias_name for a in remote.get_aliases().aliases] == ["a"]
    assert remote.count("a").count == 30


# --- collections ------------------------------------------------------------------------------------------


def test_update_collection_is_accepted_and_persisted(remote: QdrantClient) -> None:
    setup(remote)
    assert remote.update_collection(
        "c",
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=5000),
        hnsw_config=models.HnswConfigDiff(m=32),
        vectors_config={"d": models.VectorParamsDiff(on_disk=True)},
        metadata={"owner": "team-a"},
    )
    info = remote.get_collection("c")
    assert info.config.optimizer_config.indexing_threshold == 5000
    assert info.config.hnsw_config.m == 32
    assert info.config.params.vectors["d"].on_disk is True  # type: ignore[index]
    assert info.config.metadata == {"owner": "team-a"}
    remote.update_collection("c", metadata={"owner": None})
    assert not remote.get_collection("c").config.metadata
    with pytest.raises(UnexpectedResponse) as exc:
        remote.update_collection("c", vectors_config={"nope": models.VectorParamsDiff(on_disk=True)})
    assert exc.value.status_code == 400
    with pytest.raises(UnexpectedResponse) as exc:
        remote.update_collection("missing", metadata={"a": 1})
    assert exc.value.status_code == 404


def test_named_vectors_can_be_added_and_dropped(remote: QdrantClient, local: QdrantClient) -> None:
    setup(remote, local, data=points(5))
    for qc in (remote, local):
        qc.create_vector_name(
            "c",
            "extra",
            models.DenseVectorNameConfig(
                dense=models.DenseVectorConfig(size=2, distance=models.Distance.EUCLID)
            ),
        )
        qc.create_vector_name("c", "sp2", models.SparseVectorNameConfig(sparse=models.SparseVectorConfig()))
        qc.update_vectors("c", points=[models.PointVectors(id=1, vector={"extra": [1.0, 2.0]})])
    assert remote.get_collection("c").config.params.vectors["extra"].size == 2  # type: ignore[index]
    assert remote.retrieve("c", [1], with_vectors=["extra"])[0].vector == {"extra": [1.0, 2.0]}
    hits = remote.query_points("c", query=[1.0, 2.0], using="extra", limit=3).points
    assert ids(hits) == ids(local.query_points("c", query=[1.0, 2.0], using="extra", limit=3).points) == [1]
    for qc in (remote, local):
        qc.delete_vector_name("c", "extra")
    assert "extra" not in remote.get_collection("c").config.params.vectors  # type: ignore[operator]
    with pytest.raises(UnexpectedResponse) as exc:
        remote.query_points("c", query=[1.0, 2.0], using="extra")
    assert exc.value.status_code == 400
    with pytest.raises(UnexpectedResponse) as exc:
        remote.delete_vector_name("c", "extra")
    assert exc.value.status_code == 400


def test_payload_only_collection_matches_local_mode(remote: QdrantClient, local: QdrantClient) -> None:
    data = [models.PointStruct(id=i, vector={}, payload={"n": i}) for i in range(1, 6)]
    for qc in (remote, local):
        qc.create_collection("p", vectors_config={})
        qc.upsert("p", points=data)
    assert remote.count("p").count == local.count("p").count == 5
    a, _ = remote.scroll("p", limit=10, with_payload=True)
    b, _ = local.scroll("p", limit=10, with_payload=True)
    assert [(r.id, r.payload) for r in a] == [(r.id, r.payload) for r in b]
    assert remote.get_collection("p").config.params.vectors == {}


def test_cluster_and_shards_answer_as_a_single_node(remote: QdrantClient, raw: httpx.Client) -> None:
    setup(remote, data=points(7))
    info = remote.collection_cluster_info("c")
    assert info.shard_count == 1 and info.remote_shards == [] and info.local_shards[0].points_count == 7
    assert raw.get("/cluster").json()["result"] == {"status": "disabled"}
    assert raw.get("/collections/c/shards").json()["result"] == {"shard_keys": None}
    assert raw.post("/collections/c/cluster", json={}).status_code == 400
    assert raw.get("/collections/nope/cluster").status_code == 404
    assert raw.get("/collections/c/snapshots").json()["result"] == []
    response = raw.post("/collections/c/snapshots")
    assert response.status_code == 501 and "snapshots" in response.json()["status"]["error"]


# --- points -----------------------------------------------------------------------------------------------


def test_update_mode_and_update_filter_match_local_mode(remote: QdrantClient, local: QdrantClient) -> None:
    setup(remote, local, data=points(4))

    def state(qc: QdrantClient) -> list[tuple[Any, Any]]:
        records = qc.retrieve("c", [1, 2, 3, 4, 50, 51], with_payload=True)
        return sorted((r.id, r.payload) for r in records)

    for qc in (remote, local):
        qc.upsert(
            "c",
            points=[
                models.PointStruct(id=1, vector={"d": [1, 0, 0, 0]}, payload={"n": "replaced"}),
                models.PointStruct(id=50, vector={"d": [1, 0, 0, 0]}, payload={"n": "new"}),
            ],
            update_mode=models.UpdateMode.INSERT_ONLY,
        )
        qc.upsert(
            "c",
            points=[
                models.PointStruct(id=2, vector={"d": [1, 0, 0, 0]}, payload={"n": "updated"}),
                models.PointStruct(id=51, vector={"d": [1, 0, 0, 0]}, payload={"n": "not inserted"}),
            ],
            update_mode=models.UpdateMode.UPDATE_ONLY,
        )
        qc.upsert(
            "c",
            points=[
                models.PointStruct(id=3, vector={"d": [1, 0, 0, 0]}, payload={"n": "filtered in"}),
                models.PointStruct(id=4, vector={"d": [1, 0, 0, 0]}, payload={"n": "filtered out"}),
            ],
            update_filter=models.Filter(
                must=[models.FieldCondition(key="n", match=models.MatchValue(value=3))]
            ),
        )
    assert state(remote) == state(local)
    payloads = dict(state(remote))
    assert payloads[1]["n"] == 1 and payloads[50] == {"n": "new"} and 51 not in payloads
    assert payloads[2] == {"n": "updated"} and payloads[3] == {"n": "filtered in"}
    assert payloads[4]["n"] == 4


def test_lookup_from_and_with_lookup_match_local_mode(remote: QdrantClient, local: QdrantClient) -> None:
    setup(remote, local)
    for qc in (remote, local):
        qc.create_collection(
            "refs", vectors_config={"v": models.VectorParams(size=DIM, distance=models.Distance.COSINE)}
        )
        qc.upsert(
            "refs",
            points=[
                models.PointStruct(id=0, vector={"v": [1, 0, 0, 0]}, payload={"label": "zero"}),
                models.PointStruct(id=1, vector={"v": [0, 1, 0, 0]}, payload={"label": "one"}),
                models.PointStruct(id=2, vector={"v": [0, 0, 1, 0]}, payload={"label": "two"}),
            ],
        )
    lookup = models.LookupLocation(collection="refs", vector="v")
    a = remote.query_points("c", query=1, using="d", lookup_from=lookup, limit=5).points
    b = local.query_points("c", query=1, using="d", lookup_from=lookup, limit=5).points
    assert ids(a) == ids(b)
    scores_close(a, b)
    rec = models.RecommendQuery(recommend=models.RecommendInput(positive=[0], negative=[2]))
    assert ids(remote.query_points("c", query=rec, using="d", lookup_from=lookup, limit=4).points) == ids(
        local.query_points("c", query=rec, using="d", lookup_from=lookup, limit=4).points
    )
    g_remote = remote.query_points_groups(
        "c", query=[1, 0, 0, 0], using="d", group_by="group", limit=3, group_size=1, with_lookup="refs"
    ).groups
    g_local = local.query_points_groups(
        "c", query=[1, 0, 0, 0], using="d", group_by="group", limit=3, group_size=1, with_lookup="refs"
    ).groups
    assert [(g.id, g.lookup.payload if g.lookup else None) for g in g_remote] == [
        (g.id, g.lookup.payload if g.lookup else None) for g in g_local
    ]


def test_distance_matrix_matches_local_mode_when_the_sample_covers_everything(
    remote: QdrantClient, local: QdrantClient
) -> None:
    setup(remote, local, data=points(8))
    flt = models.Filter(must_not=[models.HasIdCondition(has_id=[8])])
    pairs_remote = remote.search_matrix_pairs("c", using="d", sample=20, limit=2, query_filter=flt).pairs
    pairs_local = local.search_matrix_pairs("c", using="d", sample=20, limit=2, query_filter=flt).pairs
    assert [(p.a, p.b) for p in pairs_remote] == [(p.a, p.b) for p in pairs_local]
    assert all(
        math.isclose(x.score, y.score, abs_tol=1e-5) for x, y in zip(pairs_remote, pairs_local, strict=True)
    )
    off_remote = remote.search_matrix_offsets("c", using="d", sample=20, limit=2, query_filter=flt)
    off_local = local.search_matrix_offsets("c", using="d", sample=20, limit=2, query_filter=flt)
    assert off_remote.ids == off_local.ids and len(off_remote.ids) == 7
    assert off_remote.offsets_row == off_local.offsets_row
    assert off_remote.offsets_col == off_local.offsets_col
    small = remote.search_matrix_pairs("c", using="d", sample=3, limit=1)
    assert len(small.pairs) == 3 and len({p.a for p in small.pairs}) == 3


# --- the 500s of the issue ---------------------------------------------------------------------------------


def test_former_500s_now_answer_like_qdrant(
    remote: QdrantClient, local: QdrantClient, raw: httpx.Client
) -> None:
    setup(remote, local)
    before = remote.scroll("c", limit=100, with_payload=True)[0]

    response = raw.post(
        "/collections/c/points/payload", json={"payload": {"x": 1}, "points": [1], "key": "a[["}
    )
    assert response.status_code == 400, response.text
    formula = {
        "prefetch": {"query": [1, 0, 0, 0], "using": "d"},
        "query": {"formula": {"sum": ["$score", "missing_variable"]}},
    }
    response = raw.post("/collections/c/points/query", json=formula)
    assert response.status_code == 400, response.text
    response = raw.post("/collections/c/points/query", json={**formula, "query": {"formula": {"ln": -1}}})
    assert response.status_code == 400, response.text
    assert remote.scroll("c", limit=100, with_payload=True)[0] == before  # nothing written

    sparse = models.SparseVector(indices=[1, 2, 3], values=[1.0, 0.5, 0.2])
    mmr = models.NearestQuery(nearest=sparse, mmr=models.Mmr(diversity=0.6, candidates_limit=15))
    a = remote.query_points("c", query=mmr, using="s", limit=5).points
    b = local.query_points("c", query=mmr, using="s", limit=5).points
    assert ids(a) == ids(b)

    dense_mmr = models.NearestQuery(nearest=[1, 0, 0, 0], mmr=models.Mmr(diversity=0.5))
    hits = remote.query_points("c", query=dense_mmr, using="d", limit=4).points
    assert hits and all(h.vector is None for h in hits)
    hits = remote.query_points("c", query=dense_mmr, using="d", limit=4, with_vectors=["d"]).points
    assert all(set(h.vector) == {"d"} for h in hits)  # type: ignore[arg-type]

    for offset in (0, 10, 25, 29):
        sample = remote.query_points(
            "c", query=models.SampleQuery(sample=models.Sample.RANDOM), limit=10, offset=offset
        )
        assert len(sample.points) == min(10, 30 - offset), offset

    remote.create_payload_index("c", "tags", models.PayloadSchemaType.UUID)
    local.create_payload_index("c", "tags", models.PayloadSchemaType.UUID)
    uuids = [f"00000000-0000-0000-0000-00000000000{i}" for i in range(5)]
    for qc in (remote, local):
        for i in range(1, 31):
            qc.set_payload("c", {"tags": [uuids[i % 5], uuids[(i + 1) % 5]]}, points=[i])
    facets = [remote.facet("c", "tags", limit=3, exact=True).hits for _ in range(3)]
    assert facets[0] == facets[1] == facets[2]
    assert [(h.value, h.count) for h in facets[0]] == [
        (h.value, h.count) for h in local.facet("c", "tags", limit=3, exact=True).hits
    ]

    rec = models.RecommendQuery(recommend=models.RecommendInput(positive=[1, 2], negative=[3]))
    a = remote.query_points("c", query=rec, using="m", limit=5).points
    b = local.query_points("c", query=rec, using="m", limit=5).points
    assert ids(a) == ids(b)
    scores_close(a, b)


# --- hand fuzzing ----------------------------------------------------------------------------------------


FUZZ: list[tuple[str, str, Any]] = [
    ("put", "/collections/c/points", {"points": [{"id": 1, "vector": {"d": [float("nan")] * DIM}}]}),
    ("put", "/collections/c/points", {"points": [{"id": -1, "vector": {"d": [1, 0, 0, 0]}}]}),
    ("put", "/collections/c/points", {"points": [{"id": "x" * 100_000, "vector": {"d": [1, 0, 0, 0]}}]}),
    (
        "put",
        "/collections/c/points",
        {"points": [{"id": 9, "vector": {"d": [1, 0, 0, 0]}, "payload": {"a": "x" * 2_000_000}}, {"id": 10}]},
    ),
    (
        "post",
        "/collections/c/points/count",
        {"filter": {"must": [{"key": "x" * 1_000_000, "match": {"value": 1}}]}},
    ),
    ("post", "/collections/c/points/search", {"vector": {"name": "d", "vector": [1, 0, 0, 0]}, "limit": -2}),
    ("post", "/collections/c/points/recommend", {"positive": ["not-an-id"], "limit": 2, "using": "d"}),
    ("post", "/collections/c/points/discover", {"target": [1, 0], "context": "x", "limit": 2, "using": "d"}),
    (
        "post",
        "/collections/c/points/query",
        {"query": {"nearest": [1, 0, 0, 0]}, "using": "d", "lookup_from": {"collection": "../x"}},
    ),
    ("put", "/collections/c/points", {"points": "nope"}),
    ("put", "/collections/c/points", {"batch": {"ids": [1, 2], "vectors": {"d": [[1, 0, 0, 0]]}}}),
    ("post", "/collections/c/points/query", {"query": [1, 0, 0, 0], "using": "d", "limit": -5}),
    ("post", "/collections/c/points/query", {"query": [1, 0, 0, 0], "using": "d", "offset": -1}),
    ("post", "/collections/c/points/query", {"query": [1e309, 0, 0, 0], "using": "d"}),
    (
        "post",
        "/collections/c/points/query",
        {"query": {"nearest": [1, 0, 0, 0], "mmr": {"diversity": 7}}, "using": "d"},
    ),
    ("post", "/collections/c/points/query", {"query": {"formula": {"div": {"left": 1, "right": 0}}}}),
    (
        "post",
        "/collections/c/points/query",
        {"prefetch": [{"prefetch": [{"prefetch": {"query": 1}}]}], "query": {"fusion": "rrf"}},
    ),
    ("post", "/collections/c/points/scroll", {"limit": -1}),
    ("post", "/collections/c/points/scroll", {"offset": "not-an-id"}),
    ("post", "/collections/c/points/count", {"filter": {"must": [{"key": "n", "range": {"gt": "x"}}]}}),
    ("post", "/collections/c/facet", {"key": "color", "limit": -3}),
    ("post", "/collections/c/facet", {"key": "", "limit": 3}),
    ("post", "/collections/c/points/search/matrix/pairs", {"sample": -1, "limit": 2, "using": "d"}),
    ("post", "/collections/c/points/search/matrix/pairs", {"sample": 5, "using": "nope"}),
    ("post", "/collections/c/points/search", {"vector": [1, 0, 0, 0], "limit": 3}),  # unnamed vector absent
    ("post", "/collections/c/points/recommend", {"positive": [], "limit": 3, "using": "d"}),
    (
        "post",
        "/collections/aliases",
        {"actions": [{"create_alias": {"collection_name": "c", "alias_name": "a/b"}}]},
    ),
    ("post", "/collections/aliases", {"actions": [{"nope": {}}]}),
    ("patch", "/collections/c", {"vectors": {"d": {"on_disk": "maybe"}}}),
    ("patch", "/collections/c", {"sparse_vectors": {"s": {"modifier": "idf"}}}),
    ("put", "/collections/c/vectors/%20", {"dense": {"size": 0, "distance": "Cosine"}}),
    ("put", "/collections/c/vectors/v2", {"dense": {"size": 4, "distance": "Nope"}}),
    ("put", "/collections/" + "x" * 300, {"vectors": {"size": 4, "distance": "Cosine"}}),
    ("put", "/collections/a%00b", {"vectors": {"size": 4, "distance": "Cosine"}}),
    ("put", "/collections/..", {"vectors": {"size": 4, "distance": "Cosine"}}),
    ("put", "/collections/c/index", {"field_name": "n", "field_schema": "no-such-type"}),
]


def test_hand_fuzzing_gives_no_5xx_and_writes_nothing(remote: QdrantClient, raw: httpx.Client) -> None:
    setup(remote, data=points(5))
    before = (
        remote.get_collection("c").config,
        remote.scroll("c", limit=100, with_payload=True, with_vectors=True)[0],
    )
    collections = remote.get_collections()
    for method, path, body in FUZZ:
        content = json.dumps(body, allow_nan=True).encode()
        response = raw.request(
            method.upper(), path, content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
        assert "html" not in response.headers.get("content-type", "")
        if response.status_code >= 400:
            assert set(response.json()) == {"status", "time"}, (path, response.text[:200])
    deep = '{"filter": ' + '{"must": [' * 3000 + "{}" + "]}" * 3000 + "}"
    for body in (deep, "[" * 100_000, '{"limit": NaN}', "\x00\x01", '{"a": 1'):
        response = raw.post(
            "/collections/c/points/scroll", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (body[:20], response.text[:200])
    after = (
        remote.get_collection("c").config,
        remote.scroll("c", limit=100, with_payload=True, with_vectors=True)[0],
    )
    assert after == before
    assert remote.get_collections() == collections


def test_strict_mode_limits_that_are_enforced(remote: QdrantClient) -> None:
    setup(remote, data=points(5))
    remote.update_collection(
        "c",
        strict_mode_config=models.StrictModeConfig(
            enabled=True, max_query_limit=4, upsert_max_batchsize=2, search_max_batchsize=1
        ),
    )
    config = remote.get_collection("c").config.strict_mode_config
    assert config is not None and config.enabled and config.max_query_limit == 4
    assert len(remote.query_points("c", query=[1, 0, 0, 0], using="d", limit=4).points) == 4
    for call in (
        lambda: remote.query_points("c", query=[1, 0, 0, 0], using="d", limit=5),
        lambda: remote.query_points("c", query=[1, 0, 0, 0], using="d", limit=3, offset=2),
        lambda: remote.upsert(
            "c", points=[models.PointStruct(id=i, vector={"d": [1, 0, 0, 0]}) for i in (7, 8, 9)]
        ),
        lambda: remote.query_batch_points(
            "c", requests=[models.QueryRequest(query=[1, 0, 0, 0], using="d", limit=1)] * 2
        ),
    ):
        with pytest.raises(UnexpectedResponse) as exc:
            call()
        assert exc.value.status_code == 400 and b"strict mode" in exc.value.content
    assert remote.count("c").count == 5
    remote.update_collection("c", strict_mode_config=models.StrictModeConfig(enabled=False))
    assert len(remote.query_points("c", query=[1, 0, 0, 0], using="d", limit=5).points) == 5


def test_remote_store_speaks_the_new_calls_to_a_qdrant_server(base_url: str, cluster: CreatedCluster) -> None:
    """RemoteStore against a live server speaking Qdrant's protocol (this data plane, on Edge)."""
    from inference.storage import CollectionNotFound, RemoteStore

    with RemoteStore(base_url, api_key=cluster.api_key) as store:
        store.create_collection(
            "r",
            models.CreateCollection(vectors={"d": models.VectorParams(size=2, distance=models.Distance.DOT)}),
        )
        store.upsert("r", [models.PointStruct(id=1, vector={"d": [1.0, 0.0]})])
        store.update_aliases(
            [
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name="r", alias_name="ra")
                )
            ]
        )
        assert store.list_aliases() == [{"alias_name": "ra", "collection_name": "r"}]
        assert store.list_aliases("r") == [{"alias_name": "ra", "collection_name": "r"}]
        assert store.query("ra", models.QueryRequest(query=[1.0, 0.0], using="d"))["points"][0]["id"] == 1
        store.update_collection("r", models.UpdateCollection(metadata={"k": "v"}))
        assert store.get_collection("r")["config"]["metadata"] == {"k": "v"}
        store.create_vector(
            "r",
            "e",
            models.SparseVectorNameConfig(sparse=models.SparseVectorConfig(modifier=models.Modifier.IDF)),
        )
        assert "e" in store.vector_config("r").sparse
        store.delete_vector("r", "e")
        assert "e" not in store.vector_config("r").sparse
        info = store.cluster_info("r")
        assert info["shard_count"] == 1 and info["local_shards"][0]["points_count"] == 1
        with pytest.raises(CollectionNotFound):
            store.cluster_info("missing")


def test_update_options_in_batch_and_update_vectors_and_read_only_keys(
    remote: QdrantClient, local: QdrantClient, base_url: str, cluster: CreatedCluster
) -> None:
    from console.clusters.services import api_key_create

    setup(remote, local, data=points(3))
    only_3 = models.Filter(must=[models.FieldCondition(key="n", match=models.MatchValue(value=3))])
    for qc in (remote, local):
        qc.batch_update_points(
            "c",
            [
                models.UpsertOperation(
                    upsert=models.PointsList(
                        points=[models.PointStruct(id=1, vector={"d": [1, 0, 0, 0]}, payload={"n": "x"})],
                        update_mode=models.UpdateMode.INSERT_ONLY,
                    )
                ),
                models.UpdateVectorsOperation(
                    update_vectors=models.UpdateVectors(
                        points=[
                            models.PointVectors(id=2, vector={"d": [0, 0, 0, 1]}),
                            models.PointVectors(id=3, vector={"d": [0, 0, 0, 1]}),
                        ],
                        update_filter=only_3,
                    )
                ),
            ],
        )
    for qc in (remote, local):
        records = qc.retrieve("c", [1, 2, 3], with_payload=True, with_vectors=["d"])
        assert records[0].payload["n"] == 1  # type: ignore[index]
    a = {r.id: r.vector["d"] for r in remote.retrieve("c", [2, 3], with_vectors=["d"])}  # type: ignore[index]
    b = {r.id: r.vector["d"] for r in local.retrieve("c", [2, 3], with_vectors=["d"])}  # type: ignore[index]
    assert a.keys() == b.keys() and all(
        all(math.isclose(x, y, abs_tol=1e-6) for x, y in zip(a[i], b[i], strict=True)) for i in a
    )
    assert a[2] != pytest.approx([0, 0, 0, 1]) and a[3] == pytest.approx([0, 0, 0, 1])

    secret, _ = api_key_create(cluster=cluster.cluster, name="ro", read_only=True)
    with httpx.Client(base_url=base_url, headers={"api-key": secret}) as ro:
        assert ro.patch("/collections/c", json={"metadata": {"a": 1}}).status_code == 403
        assert ro.post("/collections/aliases", json={"actions": []}).status_code == 403
        assert ro.put("/collections/c/vectors/v", json={"sparse": {}}).status_code == 403
        assert (
            ro.post(
                "/collections/c/points/search",
                json={"vector": {"name": "d", "vector": [1, 0, 0, 0]}, "limit": 1},
            ).status_code
            == 200
        )
