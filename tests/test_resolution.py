"""Tree walking, substitution and validation of `inference.resolution.Resolver`.

The engine is replaced by a deterministic fake here on purpose: the unit under test is where objects are
found, how vectors are written back and checked. The real engine has its own tests, and the end-to-end
tests of the data plane run the resolver over it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from inference.engine.engine import Embeddings
from inference.engine.types import (
    EmbedRequest,
    EmbedResult,
    InputType,
    Kind,
    ModelNotFound,
    SparseVector,
    Vector,
)
from inference.resolution import InferenceDisabled, Resolved, Resolver
from inference.storage.base import BadRequest, DenseVectorSpec, SparseVectorSpec, VectorConfig

DENSE4 = "test/dense-4"  # dense, 4 dimensions
DENSE3 = "test/dense-3"  # dense, 3 dimensions
SPARSE = "test/sparse"
MULTI = "test/multi-4"  # multivector, rows of 4
DIMS = {DENSE4: 4, DENSE3: 3, MULTI: 4}

WRONG_SPARSE = "Wrong input: Conversion between sparse and regular vectors failed"
WRONG_MULTI = "Wrong input: Conversion between multi and regular vectors failed"


def doc(text: str, model: str = DENSE4, **extra: Any) -> dict[str, Any]:
    return {"text": text, "model": model, **extra}


def fake_vector(request: EmbedRequest) -> Vector:
    """A vector derived from the input: equal inputs give equal vectors, different ones differ."""
    seed = sum(ord(c) for c in repr(request.data)) % 997 + (7 if request.kind is Kind.QUERY else 0)
    if request.model == SPARSE:
        return SparseVector(indices=[seed, seed + 1], values=[1.0, 0.5])
    dim = DIMS[request.model]
    row = [seed / 1000 + i for i in range(dim)]
    if request.model == MULTI:
        return [row, [x + 0.5 for x in row]]
    return row


class FakeEmbed:
    """Records every call; answers like `Engine.embed` (results in order, usage per canonical model)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[list[EmbedRequest]] = []
        self.error = error

    def __call__(self, requests: Sequence[EmbedRequest]) -> Embeddings:
        self.calls.append(list(requests))
        if self.error is not None:
            raise self.error
        usage: dict[str, int] = {}
        results = []
        for request in requests:
            tokens = len(str(request.data).split()) if request.input_type is InputType.TEXT else 10
            usage[request.model] = usage.get(request.model, 0) + tokens
            results.append(EmbedResult(vector=fake_vector(request), tokens=tokens))
        return Embeddings(results=results, usage=usage)

    @property
    def requests(self) -> list[EmbedRequest]:
        assert len(self.calls) == 1, f"expected exactly one embed call, got {len(self.calls)}"
        return self.calls[0]


def expected(text: str, model: str = DENSE4, kind: Kind = Kind.DOCUMENT) -> Any:
    vector = fake_vector(EmbedRequest(model=model, kind=kind, input_type=InputType.TEXT, data=text))
    if isinstance(vector, SparseVector):
        return {"indices": vector.indices, "values": vector.values}
    return vector


# Collections: unnamed dense(4); named dense/sparse/multivector; named without an unnamed vector.
UNNAMED = VectorConfig(dense={"": DenseVectorSpec(size=4, distance="Cosine")})
NAMED = VectorConfig(
    dense={
        "": DenseVectorSpec(size=4, distance="Cosine"),
        "d4": DenseVectorSpec(size=4, distance="Cosine"),
        "d3": DenseVectorSpec(size=3, distance="Dot"),
        "colbert": DenseVectorSpec(size=4, distance="Cosine", multivector=True),
    },
    sparse={"bm25": SparseVectorSpec(modifier="idf")},
)
ONLY_NAMED = VectorConfig(
    dense={"d4": DenseVectorSpec(size=4, distance="Cosine")},
    sparse={"bm25": SparseVectorSpec()},
)


@pytest.fixture
def fake() -> FakeEmbed:
    return FakeEmbed()


@pytest.fixture
def resolver(fake: FakeEmbed) -> Resolver:
    return Resolver(fake, inference_enabled=True)


def resolve(resolver: Resolver, method: str, body: dict[str, Any], config: VectorConfig) -> Resolved:
    """Call `method` and assert the input body was not mutated."""
    before = copy.deepcopy(body)
    result: Resolved = getattr(resolver, method)(body, config)
    assert body == before, "the input body must not be mutated"
    return result


# --------------------------------------------------------------------------------------------------
# Upsert
# --------------------------------------------------------------------------------------------------


def test_upsert_list_unnamed_object(resolver: Resolver, fake: FakeEmbed) -> None:
    body = {"points": [{"id": 1, "vector": doc("hello world"), "payload": {"a": 1}}]}
    out = resolve(resolver, "upsert", body, UNNAMED)
    assert out.body == {"points": [{"id": 1, "vector": expected("hello world"), "payload": {"a": 1}}]}
    assert out.usage == {DENSE4: 2}
    [request] = fake.requests
    assert request == EmbedRequest(
        model=DENSE4, kind=Kind.DOCUMENT, input_type=InputType.TEXT, data="hello world", options=None
    )


def test_upsert_list_named_objects_of_every_kind(resolver: Resolver, fake: FakeEmbed) -> None:
    image = {"image": "https://example.com/cat.png", "model": DENSE3}
    obj = {"object": {"a": [1, 2]}, "model": DENSE4, "options": {"x": 1}}
    body = {
        "points": [
            {
                "id": 1,
                "vector": {
                    "d4": doc("one"),
                    "d3": image,
                    "bm25": doc("one", SPARSE),
                    "colbert": doc("one", MULTI),
                },
            },
            {"id": 2, "vector": {"d4": obj}},
        ]
    }
    out = resolve(resolver, "upsert", body, NAMED)
    first, second = out.body["points"]
    assert first["vector"]["d4"] == expected("one")
    assert first["vector"]["bm25"] == expected("one", SPARSE)
    assert first["vector"]["colbert"] == expected("one", MULTI)
    assert len(first["vector"]["d3"]) == 3
    assert isinstance(second["vector"]["d4"], list) and len(second["vector"]["d4"]) == 4
    by_type = {(r.input_type, r.model) for r in fake.requests}
    assert by_type == {
        (InputType.TEXT, DENSE4),
        (InputType.IMAGE, DENSE3),
        (InputType.TEXT, SPARSE),
        (InputType.TEXT, MULTI),
        (InputType.OBJECT, DENSE4),
    }
    image_request = next(r for r in fake.requests if r.input_type is InputType.IMAGE)
    assert image_request.data == "https://example.com/cat.png"
    object_request = next(r for r in fake.requests if r.input_type is InputType.OBJECT)
    assert object_request.data == {"a": [1, 2]} and object_request.options == {"x": 1}
    assert all(r.kind is Kind.DOCUMENT for r in fake.requests)
    assert set(out.usage) == {DENSE4, DENSE3, SPARSE, MULTI}


def test_raw_vectors_pass_untouched_without_embedding(resolver: Resolver, fake: FakeEmbed) -> None:
    body = {
        "points": [
            {"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]},
            {
                "id": 2,
                "vector": {
                    "d4": [1, 2, 3, 4],
                    "d3": [1.0, 2.0, 3.0],
                    "bm25": {"indices": [1, 5], "values": [0.5, 0.25]},
                    "colbert": [[1, 2, 3, 4], [5, 6, 7, 8]],
                },
            },
        ]
    }
    sent = copy.deepcopy(body)
    out = resolve(resolver, "upsert", body, NAMED)
    assert out.body == sent
    assert body == sent  # read, never rewritten
    assert out.usage == {}
    assert fake.calls == []


def test_mixed_raw_and_inferred_in_one_point(resolver: Resolver) -> None:
    body = {"points": [{"id": 1, "vector": {"d4": doc("x"), "d3": [1, 2, 3]}}]}
    out = resolve(resolver, "upsert", body, NAMED)
    assert out.body["points"][0]["vector"] == {"d4": expected("x"), "d3": [1, 2, 3]}


def test_upsert_batch_named_vectors(resolver: Resolver, fake: FakeEmbed) -> None:
    body = {
        "batch": {
            "ids": [1, 2, 3],
            "vectors": {
                "d4": [doc("a"), [0, 0, 0, 1], doc("b")],
                "bm25": [doc("a", SPARSE), doc("b", SPARSE), {"indices": [1], "values": [1.0]}],
            },
            "payloads": [{}, {}, {}],
        }
    }
    out = resolve(resolver, "upsert", body, NAMED)
    vectors = out.body["batch"]["vectors"]
    assert vectors["d4"] == [expected("a"), [0, 0, 0, 1], expected("b")]
    assert vectors["bm25"] == [
        expected("a", SPARSE),
        expected("b", SPARSE),
        {"indices": [1], "values": [1.0]},
    ]
    assert out.body["batch"]["ids"] == [1, 2, 3]
    assert len(fake.requests) == 4  # one call for every vector name together


def test_upsert_batch_unnamed_raw_vectors(resolver: Resolver, fake: FakeEmbed) -> None:
    body = {"batch": {"ids": [1, 2], "vectors": [[1, 2, 3, 4], [4, 3, 2, 1]]}}
    out = resolve(resolver, "upsert", body, UNNAMED)
    assert out.body == body
    assert fake.calls == []


@pytest.mark.parametrize(
    ("obj", "word"),
    [
        (doc("a"), "Document"),
        ({"image": "https://example.com/x.png", "model": DENSE4}, "Image"),
        ({"object": {"k": 1}, "model": DENSE4}, "Object"),
    ],
)
def test_upsert_batch_unnamed_object_is_rejected(
    resolver: Resolver, fake: FakeEmbed, obj: dict[str, Any], word: str
) -> None:
    body = {"batch": {"ids": [1, 2], "vectors": [[1, 2, 3, 4], obj]}}
    with pytest.raises(BadRequest) as info:
        resolve(resolver, "upsert", body, UNNAMED)
    assert info.value.message == (
        f"Direct {word} processing is not supported in top-level batch vectors. Use named vectors."
    )
    assert info.value.status_code == 400
    assert fake.calls == []


# --------------------------------------------------------------------------------------------------
# Update vectors and the points batch
# --------------------------------------------------------------------------------------------------


def test_update_vectors_named(resolver: Resolver, fake: FakeEmbed) -> None:
    body = {"points": [{"id": 7, "vector": {"d4": doc("new"), "bm25": doc("new", SPARSE)}}]}
    out = resolve(resolver, "update_vectors", body, NAMED)
    assert out.body == {
        "points": [{"id": 7, "vector": {"d4": expected("new"), "bm25": expected("new", SPARSE)}}]
    }
    assert all(r.kind is Kind.DOCUMENT for r in fake.requests)


def test_update_vectors_raw_unnamed_is_checked(resolver: Resolver) -> None:
    ok = {"points": [{"id": 7, "vector": [1, 2, 3, 4]}]}
    assert resolve(resolver, "update_vectors", ok, UNNAMED).body == ok
    with pytest.raises(BadRequest, match=r"^Wrong input: Vector dimension error: expected dim: 4, got 2$"):
        resolve(resolver, "update_vectors", {"points": [{"id": 7, "vector": [1, 2]}]}, UNNAMED)


@pytest.mark.parametrize(
    ("obj", "word"),
    [
        (doc("a"), "Document"),
        ({"image": "data:image/png;base64,AAAA", "model": DENSE4}, "Image"),
        ({"object": [1, 2], "model": DENSE4}, "Object"),
    ],
)
def test_update_vectors_unnamed_object_is_rejected(
    resolver: Resolver, fake: FakeEmbed, obj: dict[str, Any], word: str
) -> None:
    with pytest.raises(BadRequest) as info:
        resolve(resolver, "update_vectors", {"points": [{"id": 1, "vector": obj}]}, UNNAMED)
    assert (
        info.value.message == f"Direct {word} processing not supported for PointVectors. Use named vectors."
    )
    assert info.value.status_code == 400
    assert fake.calls == []


def test_points_batch_resolves_upserts_and_vector_updates_in_one_call(
    resolver: Resolver, fake: FakeEmbed
) -> None:
    body = {
        "operations": [
            {"upsert": {"points": [{"id": 1, "vector": {"d4": doc("same")}}]}},
            {"delete": {"points": [3]}},
            {"set_payload": {"payload": {"text": "not an object", "model": "x"}, "points": [1]}},
            {"upsert": {"batch": {"ids": [2], "vectors": {"d4": [doc("same")]}}}},
            {"update_vectors": {"points": [{"id": 1, "vector": {"d3": doc("other", DENSE3)}}]}},
        ]
    }
    out = resolve(resolver, "points_batch", body, NAMED)
    ops = out.body["operations"]
    assert ops[0]["upsert"]["points"][0]["vector"]["d4"] == expected("same")
    assert ops[1] == body["operations"][1]
    assert ops[2] == body["operations"][2]
    assert ops[3]["upsert"]["batch"]["vectors"]["d4"] == [expected("same")]
    assert ops[4]["update_vectors"]["points"][0]["vector"]["d3"] == expected("other", DENSE3)
    assert [r.data for r in fake.requests] == ["same", "other"]  # "same" once across operations
    assert out.usage == {DENSE4: 1, DENSE3: 1}


def test_points_batch_unnamed_update_vectors_object_is_rejected(resolver: Resolver) -> None:
    body = {"operations": [{"update_vectors": {"points": [{"id": 1, "vector": doc("a")}]}}]}
    with pytest.raises(BadRequest, match="not supported for PointVectors"):
        resolve(resolver, "points_batch", body, UNNAMED)


# --------------------------------------------------------------------------------------------------
# Deduplication and options
# --------------------------------------------------------------------------------------------------


def test_identical_objects_are_embedded_once(resolver: Resolver, fake: FakeEmbed) -> None:
    body = {
        "points": [{"id": i, "vector": {"d4": doc("repeat me", options={"a": 1, "b": 2})}} for i in range(5)]
        + [{"id": 9, "vector": {"d4": doc("repeat me", options={"b": 2, "a": 1})}}]
    }
    out = resolve(resolver, "upsert", body, NAMED)
    assert len(fake.calls) == 1
    assert len(fake.requests) == 1
    assert fake.requests[0].options == {"a": 1, "b": 2}
    assert out.usage == {DENSE4: 2}  # billed once
    assert all(p["vector"]["d4"] == expected("repeat me") for p in out.body["points"])


def test_different_model_options_or_kind_are_not_merged(resolver: Resolver, fake: FakeEmbed) -> None:
    body = {
        "points": [
            {"id": 1, "vector": {"d4": doc("t"), "d3": doc("t", DENSE3)}},
            {"id": 2, "vector": {"d4": doc("t", options={"lang": "en"})}},
            {"id": 3, "vector": {"d4": {"object": "t", "model": DENSE4}}},
        ]
    }
    resolve(resolver, "upsert", body, NAMED)
    assert len(fake.requests) == 4


def test_options_are_passed_through(resolver: Resolver, fake: FakeEmbed) -> None:
    options = {"k": 1.5, "b": 0.5, "stemmer": {"type": "none"}}
    body = {"query": doc("q", SPARSE, options=options), "using": "bm25"}
    resolve(resolver, "query", body, NAMED)
    [request] = fake.requests
    assert request.options == options
    assert request.kind is Kind.QUERY


# --------------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------------

Q = doc("query text")
Q2 = doc("second text")
QV = expected("query text", kind=Kind.QUERY)
QV2 = expected("second text", kind=Kind.QUERY)


@pytest.mark.parametrize(
    ("query", "resolved"),
    [
        pytest.param(Q, QV, id="bare"),
        pytest.param({"nearest": Q}, {"nearest": QV}, id="nearest"),
        pytest.param(
            {"nearest": Q, "mmr": {"diversity": 0.5}}, {"nearest": QV, "mmr": {"diversity": 0.5}}, id="mmr"
        ),
        pytest.param(
            {
                "recommend": {
                    "positive": [Q, 5, [1, 2, 3, 4]],
                    "negative": [Q2, "uuid"],
                    "strategy": "best_score",
                }
            },
            {
                "recommend": {
                    "positive": [QV, 5, [1, 2, 3, 4]],
                    "negative": [QV2, "uuid"],
                    "strategy": "best_score",
                }
            },
            id="recommend",
        ),
        pytest.param(
            {"discover": {"target": Q, "context": [{"positive": Q2, "negative": 3}]}},
            {"discover": {"target": QV, "context": [{"positive": QV2, "negative": 3}]}},
            id="discover",
        ),
        pytest.param(
            {"discover": {"target": 1, "context": {"positive": Q, "negative": Q2}}},
            {"discover": {"target": 1, "context": {"positive": QV, "negative": QV2}}},
            id="discover-single-pair",
        ),
        pytest.param(
            {"context": [{"positive": Q, "negative": Q2}, {"positive": 1, "negative": 2}]},
            {"context": [{"positive": QV, "negative": QV2}, {"positive": 1, "negative": 2}]},
            id="context-list",
        ),
        pytest.param(
            {"context": {"positive": Q, "negative": Q2}},
            {"context": {"positive": QV, "negative": QV2}},
            id="context-pair",
        ),
        pytest.param(
            {
                "relevance_feedback": {
                    "target": Q,
                    "feedback": [{"example": Q2, "score": 0.9}, {"example": 4, "score": 0.1}],
                    "strategy": {"naive": {"a": 1, "b": 1, "c": 1}},
                }
            },
            {
                "relevance_feedback": {
                    "target": QV,
                    "feedback": [{"example": QV2, "score": 0.9}, {"example": 4, "score": 0.1}],
                    "strategy": {"naive": {"a": 1, "b": 1, "c": 1}},
                }
            },
            id="relevance-feedback",
        ),
    ],
)
def test_query_forms(resolver: Resolver, fake: FakeEmbed, query: Any, resolved: Any) -> None:
    body = {"query": query, "limit": 3, "filter": {"must": [{"key": "text", "match": {"value": "x"}}]}}
    out = resolve(resolver, "query", body, UNNAMED)
    assert out.body == {**body, "query": resolved}
    assert fake.requests and all(r.kind is Kind.QUERY for r in fake.requests)


@pytest.mark.parametrize(
    "query",
    [
        [0.1, 0.2, 0.3, 0.4],
        42,
        "3fa85f64-5717-4562-b3fc-2c963f66afa6",
        {"nearest": [1, 2, 3, 4]},
        {"indices": [1], "values": [1.0]},
        {"fusion": "rrf"},
        {"order_by": "price"},
        {"text": "full text query"},  # TextQuery, not a Document: no model
        {"text": {"query": "words"}},
        {"sample": "random"},
    ],
)
def test_queries_without_objects_pass_untouched(resolver: Resolver, fake: FakeEmbed, query: Any) -> None:
    body = {"query": query}
    out = resolve(resolver, "query", body, UNNAMED)
    assert out.body == body
    assert out.usage == {}
    assert fake.calls == []


def test_nested_prefetch_each_with_its_own_using(resolver: Resolver, fake: FakeEmbed) -> None:
    body = {
        "prefetch": [
            {"query": doc("hybrid", SPARSE), "using": "bm25", "limit": 20},
            {
                "query": {"nearest": doc("hybrid", DENSE3)},
                "using": "d3",
                "prefetch": {"query": doc("deep"), "using": "d4", "prefetch": [{"query": doc("deeper")}]},
            },
        ],
        "query": {"fusion": "rrf"},
    }
    out = resolve(resolver, "query", body, NAMED)
    first, second = out.body["prefetch"]
    assert first["query"] == expected("hybrid", SPARSE, Kind.QUERY)
    assert second["query"]["nearest"] == expected("hybrid", DENSE3, Kind.QUERY)
    assert second["prefetch"]["query"] == expected("deep", kind=Kind.QUERY)
    assert second["prefetch"]["prefetch"][0]["query"] == expected("deeper", kind=Kind.QUERY)
    assert out.body["query"] == {"fusion": "rrf"}
    assert len(fake.requests) == 4


def test_query_groups_have_the_query_shape(resolver: Resolver) -> None:
    body = {"query": Q, "group_by": "doc_id", "group_size": 2, "limit": 3, "prefetch": {"query": Q2}}
    out = resolve(resolver, "query", body, UNNAMED)
    assert out.body == {**body, "query": QV, "prefetch": {"query": QV2}}


def test_query_batch_embeds_all_searches_in_one_call(resolver: Resolver, fake: FakeEmbed) -> None:
    body = {
        "searches": [
            {"query": Q, "limit": 1},
            {"query": {"nearest": Q}, "using": "d4"},
            {"query": [1, 2, 3, 4]},
            {"query": Q2, "prefetch": [{"query": doc("p", SPARSE), "using": "bm25"}]},
        ]
    }
    out = resolve(resolver, "query_batch", body, NAMED)
    searches = out.body["searches"]
    assert searches[0]["query"] == QV
    assert searches[1]["query"]["nearest"] == QV
    assert searches[2]["query"] == [1, 2, 3, 4]
    assert searches[3]["query"] == QV2
    assert searches[3]["prefetch"][0]["query"] == expected("p", SPARSE, Kind.QUERY)
    assert sorted(r.data for r in fake.requests) == ["p", "query text", "second text"]
    assert out.usage == {DENSE4: 4, SPARSE: 1}


def test_same_text_is_a_document_in_upserts_and_a_query_in_queries(
    resolver: Resolver, fake: FakeEmbed
) -> None:
    resolve(resolver, "upsert", {"points": [{"id": 1, "vector": doc("t")}]}, UNNAMED)
    resolve(resolver, "query", {"query": doc("t")}, UNNAMED)
    assert [call[0].kind for call in fake.calls] == [Kind.DOCUMENT, Kind.QUERY]


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def test_sparse_result_on_the_unnamed_vector(resolver: Resolver) -> None:
    body = {"points": [{"id": 1, "vector": doc("a", SPARSE)}]}
    with pytest.raises(BadRequest) as info:
        resolve(resolver, "upsert", body, NAMED)
    assert info.value.message == "Bad request: Sparse vector from document inference should be named"
    assert info.value.status_code == 400


def test_sparse_result_from_an_image_on_the_unnamed_vector(resolver: Resolver) -> None:
    body = {"points": [{"id": 1, "vector": {"image": "https://e.com/a.png", "model": SPARSE}}]}
    with pytest.raises(
        BadRequest, match=r"^Bad request: Sparse vector from image inference should be named$"
    ):
        resolve(resolver, "upsert", body, ONLY_NAMED)


@pytest.mark.parametrize(
    ("vector", "config", "message"),
    [
        (doc("a", DENSE3), UNNAMED, "Wrong input: Vector dimension error: expected dim: 4, got 3"),
        ({"d3": doc("a")}, NAMED, "Wrong input: Vector dimension error: expected dim: 3, got 4"),
        (
            {"colbert": doc("a", DENSE4)},
            NAMED,
            WRONG_MULTI,
        ),
        ({"d4": doc("a", MULTI)}, NAMED, WRONG_MULTI),
        (
            {"d4": doc("a", SPARSE)},
            NAMED,
            WRONG_SPARSE,
        ),
        ({"bm25": doc("a")}, NAMED, WRONG_SPARSE),
        (doc("a"), ONLY_NAMED, "Wrong input: Not existing vector name error: "),
    ],
)
def test_inferred_vectors_are_checked(
    resolver: Resolver, vector: Any, config: VectorConfig, message: str
) -> None:
    with pytest.raises(BadRequest) as info:
        resolve(resolver, "upsert", {"points": [{"id": 1, "vector": vector}]}, config)
    assert info.value.message.startswith(message)
    assert info.value.status_code == 400


def test_kind_mismatch_names_the_model(resolver: Resolver) -> None:
    with pytest.raises(BadRequest) as info:
        resolve(resolver, "upsert", {"points": [{"id": 1, "vector": {"d4": doc("a", SPARSE)}}]}, NAMED)
    assert info.value.message == (
        "Wrong input: Conversion between sparse and regular vectors failed "
        f"(model `{SPARSE}` produces sparse vectors)"
    )


def test_unknown_vector_name_fails_before_embedding(resolver: Resolver, fake: FakeEmbed) -> None:
    with pytest.raises(BadRequest) as info:
        resolve(resolver, "upsert", {"points": [{"id": 1, "vector": {"nope": doc("a")}}]}, NAMED)
    assert info.value.message == "Wrong input: Not existing vector name error: nope"
    assert fake.calls == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"points": [{"id": 1, "vector": [1, 2, 3]}]},
            "Wrong input: Vector dimension error: expected dim: 4, got 3",
        ),
        (
            {"points": [{"id": 1, "vector": {"d3": [1, 2, 3, 4]}}]},
            "Wrong input: Vector dimension error: expected dim: 3, got 4",
        ),
        (
            {"points": [{"id": 1, "vector": {"colbert": [[1, 2, 3, 4], [1, 2, 3]]}}]},
            "Wrong input: Vector dimension error: expected dim: 4, got 3",
        ),
        (
            {"points": [{"id": 1, "vector": {"colbert": [1, 2, 3, 4]}}]},
            WRONG_MULTI,
        ),
        (
            {"points": [{"id": 1, "vector": {"d4": {"indices": [1], "values": [1.0]}}}]},
            WRONG_SPARSE,
        ),
        (
            {"points": [{"id": 1, "vector": {"bm25": [1, 2, 3]}}]},
            WRONG_SPARSE,
        ),
        (
            {"points": [{"id": 1, "vector": {"unknown": [1, 2, 3, 4]}}]},
            "Wrong input: Not existing vector name error: unknown",
        ),
        (
            {"batch": {"ids": [1, 2], "vectors": [[1, 2, 3, 4], [1, 2]]}},
            "Wrong input: Vector dimension error: expected dim: 4, got 2",
        ),
        (
            {"batch": {"ids": [1], "vectors": {"d3": [[1, 2]]}}},
            "Wrong input: Vector dimension error: expected dim: 3, got 2",
        ),
    ],
)
def test_raw_vectors_are_checked(resolver: Resolver, fake: FakeEmbed, body: Any, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        resolve(resolver, "upsert", body, NAMED)
    assert info.value.message == message
    assert fake.calls == []


def test_raw_vector_error_comes_before_any_inference(resolver: Resolver, fake: FakeEmbed) -> None:
    body = {"points": [{"id": 1, "vector": {"d4": doc("a")}}, {"id": 2, "vector": {"d3": [1, 2]}}]}
    with pytest.raises(BadRequest, match="expected dim: 3, got 2"):
        resolve(resolver, "upsert", body, NAMED)
    assert fake.calls == []


def test_raw_vectors_in_points_batch_are_checked(resolver: Resolver) -> None:
    body = {"operations": [{"update_vectors": {"points": [{"id": 1, "vector": {"d4": [1.0]}}]}}]}
    with pytest.raises(BadRequest, match="expected dim: 4, got 1"):
        resolve(resolver, "points_batch", body, NAMED)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": doc("q", DENSE3)}, "Wrong input: Vector dimension error: expected dim: 4, got 3"),
        ({"query": doc("q"), "using": "d3"}, "Wrong input: Vector dimension error: expected dim: 3, got 4"),
        ({"query": doc("q"), "using": "missing"}, "Wrong input: Not existing vector name error: missing"),
        ({"query": doc("q", SPARSE), "using": "d4"}, WRONG_SPARSE),
        (
            {"query": {"nearest": doc("q")}, "using": "bm25"},
            WRONG_SPARSE,
        ),
        (
            {"prefetch": [{"query": doc("q"), "using": "bm25"}], "query": {"fusion": "rrf"}},
            WRONG_SPARSE,
        ),
        (
            {"query": {"recommend": {"positive": [doc("q", MULTI)]}}, "using": "d3"},
            "Wrong input: Vector dimension error: expected dim: 3, got 4",
        ),
    ],
)
def test_inferred_query_vectors_are_checked_against_using(
    resolver: Resolver, body: Any, message: str
) -> None:
    with pytest.raises(BadRequest) as info:
        resolve(resolver, "query", body, NAMED)
    assert info.value.message.startswith(message)


def test_query_multivector_against_multivector_target(resolver: Resolver) -> None:
    out = resolve(resolver, "query", {"query": doc("q", MULTI), "using": "colbert"}, NAMED)
    assert out.body["query"] == expected("q", MULTI, Kind.QUERY)


def test_raw_query_vectors_are_left_to_storage(resolver: Resolver) -> None:
    body = {"query": [1, 2], "using": "nope"}
    assert resolve(resolver, "query", body, NAMED).body == body


# --------------------------------------------------------------------------------------------------
# Inference switched off, engine errors, privacy
# --------------------------------------------------------------------------------------------------


def test_inference_disabled_rejects_objects() -> None:
    fake = FakeEmbed()
    resolver = Resolver(fake, inference_enabled=False)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("upsert", {"points": [{"id": 1, "vector": doc("a")}]}),
        ("update_vectors", {"points": [{"id": 1, "vector": {"d4": doc("a")}}]}),
        ("points_batch", {"operations": [{"upsert": {"points": [{"id": 1, "vector": doc("a")}]}}]}),
        ("query", {"prefetch": {"query": doc("a")}}),
        ("query_batch", {"searches": [{"query": [1, 2, 3, 4]}, {"query": {"nearest": doc("a")}}]}),
    ]
    for method, body in cases:
        with pytest.raises(InferenceDisabled) as info:
            resolve(resolver, method, body, NAMED)
        assert isinstance(info.value, BadRequest)
        assert info.value.status_code == 400
        assert info.value.message == (
            "Bad request: Inference is not enabled for this cluster. "
            "Enable it in the console's Inference tab, or send vectors."
        )
    assert fake.calls == []


def test_inference_disabled_still_accepts_raw_vectors() -> None:
    fake = FakeEmbed()
    resolver = Resolver(fake, inference_enabled=False)
    body = {"points": [{"id": 1, "vector": [1, 2, 3, 4], "payload": {"text": "hi", "model": "m"}}]}
    assert resolve(resolver, "upsert", body, UNNAMED) == Resolved(body=body, usage={})
    query = {"query": {"recommend": {"positive": [1, [1, 2, 3, 4]]}}}
    assert resolve(resolver, "query", query, UNNAMED).body == query
    assert fake.calls == []


def test_engine_errors_propagate_unchanged() -> None:
    error = ModelNotFound("Model nope is not supported")
    resolver = Resolver(FakeEmbed(error=error), inference_enabled=True)
    with pytest.raises(ModelNotFound) as info:
        resolve(resolver, "upsert", {"points": [{"id": 1, "vector": doc("a", "nope")}]}, UNNAMED)
    assert info.value is error


def test_inputs_are_never_logged(resolver: Resolver, caplog: pytest.LogCaptureFixture) -> None:
    secret = "very private patient note"
    caplog.set_level(logging.DEBUG)
    resolve(resolver, "upsert", {"points": [{"id": 1, "vector": doc(secret)}]}, UNNAMED)
    with pytest.raises(BadRequest):
        resolve(resolver, "upsert", {"points": [{"id": 1, "vector": doc(secret, DENSE3)}]}, UNNAMED)
    assert secret not in caplog.text


# --------------------------------------------------------------------------------------------------
# Malformed bodies: left for the pydantic parse to reject, never a TypeError / KeyError
# --------------------------------------------------------------------------------------------------

MALFORMED: list[tuple[str, Any]] = [
    ("upsert", {}),
    ("upsert", {"points": "nope"}),
    ("upsert", {"points": {"id": 1}}),
    ("upsert", {"points": [1, None, "x", [doc("a")]]}),
    ("upsert", {"points": [{"id": 1}]}),
    ("upsert", {"points": [{"id": 1, "vector": None}]}),
    ("upsert", {"points": [{"id": 1, "vector": "text"}]}),
    ("upsert", {"points": [{"id": 1, "vector": [1, "a", None]}]}),
    ("upsert", {"points": [{"id": 1, "vector": {"d4": "text"}}]}),
    ("upsert", {"points": [{"id": 1, "vector": {"text": "hi"}}]}),  # a Document without a model
    ("upsert", {"points": [{"id": 1, "vector": {"text": "hi", "model": "m", "extra": 1}}]}),
    ("upsert", {"points": [{"id": 1, "vector": {"text": "hi", "image": "x", "model": "m"}}]}),
    ("upsert", {"points": [{"id": 1, "vector": {"text": 5, "model": "m"}}]}),
    ("upsert", {"points": [{"id": 1, "vector": {"text": "hi", "model": "m", "options": 3}}]}),
    ("upsert", {"points": [{"id": 1, "vector": {"text": "hi", "model": 7}}]}),
    ("upsert", {"batch": "x"}),
    ("upsert", {"batch": {"ids": [1], "vectors": "x"}}),
    ("upsert", {"batch": {"ids": [1], "vectors": {"d4": "x"}}}),
    ("upsert", {"batch": {"ids": [1], "vectors": [None, "a", {}]}}),
    ("update_vectors", {"points": None}),
    ("update_vectors", {"points": [{"vector": 3}]}),
    ("points_batch", {"operations": {"upsert": {}}}),
    ("points_batch", {"operations": [None, 1, {"upsert": None}, {"update_vectors": "x"}]}),
    ("query", {"query": None}),
    ("query", {"query": {"nearest": None}}),
    ("query", {"query": {"recommend": {"positive": {"a": 1}, "negative": 5}}}),
    ("query", {"query": {"recommend": None, "discover": "x", "context": 5, "relevance_feedback": []}}),
    ("query", {"query": {"discover": {"context": [None, {"positive": 1}]}}}),
    ("query", {"query": {"relevance_feedback": {"feedback": [None, {"score": 1}], "target": None}}}),
    ("query", {"prefetch": "x"}),
    ("query", {"prefetch": [None, 1, {"prefetch": {"prefetch": "x"}}]}),
    ("query", {"query": doc("a"), "using": 5}),  # resolved; `using` is the parser's problem
    ("query_batch", {"searches": "x"}),
    ("query_batch", {"searches": [None, 1, {"query": 3}]}),
    ("query_batch", {}),
]


@pytest.mark.parametrize(("method", "body"), MALFORMED)
def test_malformed_bodies_do_not_crash(resolver: Resolver, method: str, body: Any) -> None:
    try:
        out = resolve(resolver, method, body, NAMED)
    except BadRequest:
        return
    assert isinstance(out, Resolved)
    if "using" not in body:
        assert out.body == body


def test_non_dict_body_is_returned_as_is(resolver: Resolver) -> None:
    body: Any = [1, 2]
    assert resolver.upsert(body, NAMED).body == [1, 2]
