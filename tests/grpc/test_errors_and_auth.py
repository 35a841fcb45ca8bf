"""Auth, errors, usage and limits of the gRPC API, through raw stubs (status codes, metadata, `usage`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from django.conf import LazySettings
from qdrant_client import grpc as pb

from billing.models import UsageRecord
from console.clusters.models import Cluster
from console.clusters.services import CreatedCluster, api_key_create, cluster_create
from inference.dataplane import services
from inference.grpc.server import build_server
from inference.usage import UsageEvent
from tests.conftest import BM25, MINILM
from tests.grpc.conftest import Stubs
from tests.helpers import cluster_update

pytestmark = pytest.mark.django_db(transaction=True)


def key(secret: str | None, **extra: str) -> list[tuple[str, str]]:
    return ([("api-key", secret)] if secret else []) + list(extra.items())


def doc_vector(text: str, model: str = MINILM) -> pb.Vector:
    return pb.Vector(document=pb.Document(text=text, model=model))


def doc_query(text: str, model: str = MINILM) -> pb.Query:
    return pb.Query(nearest=pb.VectorInput(document=pb.Document(text=text, model=model)))


@pytest.fixture
def setup(stubs: Stubs, cluster: CreatedCluster) -> Stubs:
    """Collections `c` (dense `dense` 384 + sparse `bm25` with IDF) and `small` (unnamed, 3 dims)."""
    md = key(cluster.api_key)
    stubs.collections.Create(
        pb.CreateCollection(
            collection_name="c",
            vectors_config=pb.VectorsConfig(
                params_map=pb.VectorParamsMap(map={"dense": pb.VectorParams(size=384, distance=pb.Cosine)})
            ),
            sparse_vectors_config=pb.SparseVectorConfig(map={"bm25": pb.SparseVectorParams(modifier=pb.Idf)}),
        ),
        metadata=md,
    )
    stubs.collections.Create(
        pb.CreateCollection(
            collection_name="small",
            vectors_config=pb.VectorsConfig(params=pb.VectorParams(size=3, distance=pb.Dot)),
        ),
        metadata=md,
    )
    return stubs


def count(stubs: Stubs, secret: str, collection: str) -> int:
    reply = stubs.points.Count(pb.CountPoints(collection_name=collection, exact=True), metadata=key(secret))
    return int(reply.result.count)


def error_of(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def assert_status(error: grpc.RpcError, code: grpc.StatusCode, text: str) -> None:
    assert error.code() == code, (error.code(), error.details())  # type: ignore[attr-defined]
    assert text in error.details(), error.details()  # type: ignore[attr-defined]
    assert "Traceback" not in error.details()  # type: ignore[attr-defined]


def small_point(point_id: int = 1) -> pb.UpsertPoints:
    vector = pb.Vectors(vector=pb.Vector(dense=pb.DenseVector(data=[1, 0, 0])))
    return pb.UpsertPoints(
        collection_name="small", points=[pb.PointStruct(id=pb.PointId(num=point_id), vectors=vector)]
    )


def test_health_check_needs_no_key(stubs: Stubs) -> None:
    reply = stubs.qdrant.HealthCheck(pb.HealthCheckRequest())
    assert reply.title == "qdrant - vector search engine" and reply.version.count(".") == 2


def test_auth_matrix(setup: Stubs, cluster: CreatedCluster) -> None:
    other = cluster_create(name="other", region="us-east-1", tier="paid")
    read_only, _ = api_key_create(cluster=cluster.cluster, name="ro", read_only=True)
    revoked, revoked_key = api_key_create(cluster=cluster.cluster, name="old", read_only=False)
    revoked_key.revoke()
    points = setup.points

    assert_status(
        error_of(lambda: points.Upsert(small_point())), grpc.StatusCode.UNAUTHENTICATED, "Must provide"
    )
    assert_status(
        error_of(lambda: points.Upsert(small_point(), metadata=key(revoked))),
        grpc.StatusCode.UNAUTHENTICATED,
        "Invalid API key",
    )
    # The key names the cluster: another cluster's key sees its own (empty) cluster, never this one's.
    listed = setup.collections.List(pb.ListCollectionsRequest(), metadata=key(other.api_key))
    assert list(listed.collections) == []
    assert_status(
        error_of(lambda: points.Upsert(small_point(), metadata=key(other.api_key))),
        grpc.StatusCode.NOT_FOUND,
        "Collection `small` doesn't exist",
    )
    for write in (
        lambda: points.Upsert(small_point(), metadata=key(read_only)),
        lambda: points.Delete(
            pb.DeletePoints(
                collection_name="small",
                points=pb.PointsSelector(points=pb.PointsIdsList(ids=[pb.PointId(num=1)])),
            ),
            metadata=key(read_only),
        ),
        lambda: setup.collections.Delete(
            pb.DeleteCollection(collection_name="small"), metadata=key(read_only)
        ),
    ):
        assert_status(error_of(write), grpc.StatusCode.PERMISSION_DENIED, "read-only")
    reply = points.Query(
        pb.QueryPoints(
            collection_name="small",
            query=pb.Query(nearest=pb.VectorInput(dense=pb.DenseVector(data=[1, 0, 0]))),
        ),
        metadata=key(read_only),
    )  # reads are fine with a read-only key
    assert list(reply.result) == []
    bearer = [("authorization", f"Bearer {cluster.api_key}")]
    points.Upsert(small_point(), metadata=bearer)
    assert count(setup, cluster.api_key, "small") == 1


def test_restarting_cluster_is_unavailable_with_retry_after(setup: Stubs, cluster: CreatedCluster) -> None:
    cluster_update(cluster.cluster.pk, status=Cluster.Status.RESTARTING)
    call = setup.points.Count.with_call
    error = error_of(lambda: call(pb.CountPoints(collection_name="small"), metadata=key(cluster.api_key)))
    assert_status(error, grpc.StatusCode.UNAVAILABLE, "restarting")
    trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
    assert int(trailers["retry-after"]) > 0


def test_unknown_model_and_dimension_mismatch_write_and_bill_nothing(
    setup: Stubs, cluster: CreatedCluster, usage_events: list[UsageEvent]
) -> None:
    md = key(cluster.api_key)
    good = pb.PointStruct(
        id=pb.PointId(num=1),
        vectors=pb.Vectors(vectors=pb.NamedVectors(vectors={"dense": doc_vector("fine")})),
    )
    unknown = pb.PointStruct(
        id=pb.PointId(num=2),
        vectors=pb.Vectors(vectors=pb.NamedVectors(vectors={"dense": doc_vector("x", "acme/no-such-model")})),
    )
    error = error_of(
        lambda: setup.points.Upsert(pb.UpsertPoints(collection_name="c", points=[good, unknown]), metadata=md)
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "acme/no-such-model")

    # 384-dimensional MiniLM into the 3-dimensional unnamed vector of `small`.
    wrong_dims = pb.PointStruct(id=pb.PointId(num=1), vectors=pb.Vectors(vector=doc_vector("x")))
    error = error_of(
        lambda: setup.points.Upsert(
            pb.UpsertPoints(collection_name="small", points=[wrong_dims]), metadata=md
        )
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "dimension")
    assert count(setup, cluster.api_key, "c") == count(setup, cluster.api_key, "small") == 0
    assert usage_events == []
    assert not UsageRecord.objects.exists()


def test_usage_in_responses_equals_the_ledger_and_retries_bill_once(
    setup: Stubs, cluster: CreatedCluster, usage_events: list[UsageEvent]
) -> None:
    md = key(cluster.api_key, **{"idempotency-key": "grpc-order-1"})
    point = pb.PointStruct(
        id=pb.PointId(num=1),
        vectors=pb.Vectors(
            vectors=pb.NamedVectors(
                vectors={"dense": doc_vector("hello world"), "bm25": doc_vector("hello world", BM25)}
            )
        ),
    )
    upsert = pb.UpsertPoints(collection_name="c", points=[point])
    first = setup.points.Upsert(upsert, metadata=md)
    retry = setup.points.Upsert(upsert, metadata=md)
    reported = {m: u.tokens for m, u in first.usage.inference.models.items()}
    assert reported == {m: u.tokens for m, u in retry.usage.inference.models.items()}
    assert reported[MINILM] == 4 and reported[BM25] > 0

    query = setup.points.Query(
        pb.QueryPoints(collection_name="c", query=doc_query("hello world"), using="dense"),
        metadata=key(cluster.api_key, **{"idempotency-key": "grpc-query-1"}),
    )
    assert [p.id.num for p in query.result] == [1]
    assert {m: u.tokens for m, u in query.usage.inference.models.items()} == {MINILM: 4}

    def ledger(request_id: str) -> dict[str, int]:
        rows = UsageRecord.objects.filter(request_id=request_id, cluster_id=cluster.cluster.pk)
        return {model: tokens for model, tokens in rows.values_list("model", "tokens")}

    assert ledger("grpc-order-1") == reported  # the retry was billed once
    assert ledger("grpc-query-1") == {MINILM: 4}
    assert UsageRecord.objects.count() == 3

    plain = setup.points.Query(
        pb.QueryPoints(
            collection_name="c",
            query=pb.Query(nearest=pb.VectorInput(dense=pb.DenseVector(data=[0.1] * 384))),
            using="dense",
        ),
        metadata=key(cluster.api_key),
    )
    assert not plain.HasField("usage")  # no model ran: no usage, as REST


def test_every_query_form_and_prefetch_take_documents(setup: Stubs, cluster: CreatedCluster) -> None:
    md = key(cluster.api_key)
    texts = {1: "Paris has the Eiffel Tower", 2: "Bananas are yellow fruit", 3: "Rust is a language"}
    setup.points.UpdateBatch(
        pb.UpdateBatchPoints(
            collection_name="c",
            operations=[
                pb.PointsUpdateOperation(
                    upsert=pb.PointsUpdateOperation.PointStructList(
                        points=[
                            pb.PointStruct(
                                id=pb.PointId(num=i),
                                vectors=pb.Vectors(
                                    vectors=pb.NamedVectors(
                                        vectors={"dense": doc_vector(t), "bm25": doc_vector(t, BM25)}
                                    )
                                ),
                            )
                            for i, t in texts.items()
                        ]
                    )
                )
            ],
        ),
        metadata=md,
    )
    recommend = pb.Query(
        recommend=pb.RecommendInput(
            positive=[pb.VectorInput(document=pb.Document(text="fruit", model=MINILM))],
            negative=[pb.VectorInput(document=pb.Document(text="programming", model=MINILM))],
        )
    )
    reply = setup.points.Query(
        pb.QueryPoints(collection_name="c", query=recommend, using="dense", limit=1), metadata=md
    )
    assert reply.result[0].id.num == 2
    context = pb.Query(
        context=pb.ContextInput(
            pairs=[
                pb.ContextInputPair(
                    positive=pb.VectorInput(document=pb.Document(text="city landmark", model=MINILM)),
                    negative=pb.VectorInput(document=pb.Document(text="food", model=MINILM)),
                )
            ]
        )
    )
    reply = setup.points.Query(
        pb.QueryPoints(collection_name="c", query=context, using="dense", limit=3), metadata=md
    )
    assert len(reply.result) == 3 and reply.usage.inference.models[MINILM].tokens > 0
    nested = pb.QueryPoints(
        collection_name="c",
        prefetch=[
            pb.PrefetchQuery(
                prefetch=[pb.PrefetchQuery(query=doc_query("language", BM25), using="bm25", limit=3)],
                query=doc_query("programming language"),
                using="dense",
                limit=2,
            )
        ],
        query=pb.Query(fusion=pb.RRF),
        limit=1,
    )
    reply = setup.points.Query(nested, metadata=md)
    assert reply.result[0].id.num == 3
    assert set(reply.usage.inference.models) == {MINILM, BM25}


def test_sixteen_concurrent_streams_do_not_starve(
    setup: Stubs, cluster: CreatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sixteen calls held inside the server at once, and the health check still answers meanwhile."""
    streams = 16
    gate = threading.Barrier(streams + 1, timeout=20)
    real_count = services.points_count

    def held_count(*args: Any, **kwargs: Any) -> Any:
        gate.wait()  # every one of the sixteen must be running in the server at the same time
        return real_count(*args, **kwargs)

    monkeypatch.setattr(services, "points_count", held_count)
    results: list[int] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(count(setup, cluster.api_key, "small"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(streams)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while gate.n_waiting < streams and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gate.n_waiting == streams
    assert setup.qdrant.HealthCheck(pb.HealthCheckRequest(), timeout=5).title  # not starved
    gate.wait()
    for thread in threads:
        thread.join(30)
    assert errors == [] and results == [0] * streams


def test_a_deadline_passed_before_the_operation_runs_writes_nothing(
    setup: Stubs, cluster: CreatedCluster
) -> None:
    point = pb.PointStruct(
        id=pb.PointId(num=1),
        vectors=pb.Vectors(vectors=pb.NamedVectors(vectors={"dense": doc_vector("late")})),
    )
    error = error_of(
        lambda: setup.points.Upsert(
            pb.UpsertPoints(collection_name="c", points=[point]), metadata=key(cluster.api_key), timeout=0.001
        )
    )
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    time.sleep(0.5)  # a handler that ignored the deadline would have written by now
    assert count(setup, cluster.api_key, "c") == 0


def test_messages_over_the_size_limit_are_resource_exhausted(
    cluster: CreatedCluster, settings: LazySettings
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024  # as MAX_REQUEST_SIZE_MB, in bytes
    server, port = build_server(port=0, host="127.0.0.1")
    server.start()
    try:
        stubs = Stubs(port)
        big = pb.UpsertPoints(collection_name="small", points=[small_point(i).points[0] for i in range(200)])
        error = error_of(lambda: stubs.points.Upsert(big, metadata=key(cluster.api_key)))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        stubs.channel.close()
    finally:
        server.stop(0).wait()


def test_unsupported_and_malformed_requests(setup: Stubs, cluster: CreatedCluster) -> None:
    md = key(cluster.api_key)
    error = error_of(
        lambda: setup.points.Search(pb.SearchPoints(collection_name="small", vector=[1, 0, 0]), metadata=md)
    )
    assert_status(error, grpc.StatusCode.UNIMPLEMENTED, "Query")
    error = error_of(
        lambda: setup.snapshots.List(pb.ListSnapshotsRequest(collection_name="small"), metadata=md)
    )
    assert_status(error, grpc.StatusCode.UNIMPLEMENTED, "Snapshots")
    error = error_of(
        lambda: setup.points.Upsert(
            pb.UpsertPoints(collection_name="small", points=[pb.PointStruct(id=pb.PointId(num=1))]),
            metadata=md,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    error = error_of(
        lambda: setup.collections.Get(pb.GetCollectionInfoRequest(collection_name="nope"), metadata=md)
    )
    assert_status(error, grpc.StatusCode.NOT_FOUND, "Not found: Collection `nope` doesn't exist!")
    error = error_of(
        lambda: setup.collections.Create(
            pb.CreateCollection(
                collection_name="small",
                vectors_config=pb.VectorsConfig(params=pb.VectorParams(size=3, distance=pb.Dot)),
            ),
            metadata=md,
        )
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "Wrong input: Collection `small` already exists!")


def test_one_cache_generation_read_per_call(
    setup: Stubs, cluster: CreatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An RPC is a request in Django's sense: the key, the cluster and the limit share one Redis read."""
    import os
    import uuid

    import redis

    from billing.services import cluster_limit_set
    from console.clusters import sharedcache
    from console.clusters.sharedcache import Generation

    url = os.environ.get("TEST_REDIS_URL", "")
    if not url:
        pytest.skip("needs Redis (TEST_REDIS_URL; make test sets it when Redis answers)")
    client, name, reads = redis.Redis.from_url(url), f"test:cache-generation:{uuid.uuid4().hex}", []

    class Counting:
        def get(self, key: str) -> Any:
            reads.append(key)
            return client.get(key)

        def incr(self, key: str) -> Any:
            return client.incr(key)

    counted = Generation(Counting(), key=name)  # type: ignore[arg-type]
    monkeypatch.setattr(sharedcache, "generation", lambda: counted)
    try:
        cluster_limit_set(cluster_id=cluster.cluster.id, tokens_per_minute=10_000)
        reads.clear()
        vectors = pb.Vectors(vectors=pb.NamedVectors(vectors={"dense": doc_vector("one read")}))
        point = pb.PointStruct(id=pb.PointId(num=1), vectors=vectors)
        setup.points.Upsert(
            pb.UpsertPoints(collection_name="c", points=[point], wait=True), metadata=key(cluster.api_key)
        )
        assert reads == [name]
    finally:
        client.delete(name)
