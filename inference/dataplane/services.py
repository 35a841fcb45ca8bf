"""Data-plane operations: resolve inference objects, then one call to the cluster's vector store.

Each function is an operation of the inference gateway (`inference.gateway.serve`): it takes the gateway's
`Context` (the cluster, and the metered `embed`) and the parsed JSON body, and returns `(result, usage)`:
`result` in Qdrant's REST shape, `usage` as model -> tokens (empty when no inference ran). Inference happens
before storage is touched, and outside any database transaction; the gateway reports usage only after the
whole operation succeeded. Protocol-neutral: the REST views and the gRPC servicers both call these.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from qdrant_client.http import models

from inference.dataplane import legacy
from inference.gateway import Context
from inference.storage import BadRequest, PointNotFound, VectorStore
from inference.storage.base import normalize_point_id, normalize_point_ids
from inference.stores import store_for

Usage = dict[str, int]
Result = tuple[Any, Usage]


def _store(ctx: Context) -> VectorStore:
    return store_for(ctx.cluster)


# --- collections -----------------------------------------------------------------------------------------


def collection_create(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Create a collection (dense, named, sparse, multivector params)."""
    _store(ctx).create_collection(collection, models.CreateCollection.model_validate(body))
    return True, {}


def collection_get(ctx: Context, *, collection: str) -> Result:
    """Collection info."""
    return _store(ctx).get_collection(collection), {}


def collection_exists(ctx: Context, *, collection: str) -> Result:
    """Whether a collection exists."""
    return {"exists": _store(ctx).collection_exists(collection)}, {}


def collection_list(ctx: Context) -> Result:
    """Names of every collection."""
    return {"collections": [{"name": n} for n in _store(ctx).list_collections()]}, {}


def collection_delete(ctx: Context, *, collection: str) -> Result:
    """Delete a collection; True if it existed."""
    return _store(ctx).delete_collection(collection), {}


def collection_update(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Update a collection's parameters (`PATCH /collections/{name}`)."""
    _store(ctx).update_collection(collection, models.UpdateCollection.model_validate(body))
    return True, {}


def vector_create(ctx: Context, *, collection: str, vector_name: str, body: dict[str, Any]) -> Result:
    """Add a named vector (`PUT /collections/{name}/vectors/{vector_name}`)."""
    config = TypeAdapter(models.VectorNameConfig).validate_python(body)
    return _store(ctx).create_vector(collection, vector_name, config), {}


def vector_delete(ctx: Context, *, collection: str, vector_name: str) -> Result:
    """Drop a named vector and its data (`DELETE /collections/{name}/vectors/{vector_name}`)."""
    return _store(ctx).delete_vector(collection, vector_name), {}


def aliases_update(ctx: Context, *, body: dict[str, Any]) -> Result:
    """Create / delete / rename aliases atomically (`POST /collections/aliases`)."""
    actions = models.ChangeAliasesOperation.model_validate(body).actions
    _store(ctx).update_aliases(actions)
    return True, {}


def aliases_list(ctx: Context, *, collection: str | None = None) -> Result:
    """Aliases of the cluster (`GET /aliases`) or of one collection (`GET /collections/{name}/aliases`)."""
    return {"aliases": _store(ctx).list_aliases(collection)}, {}


def collection_cluster(ctx: Context, *, collection: str) -> Result:
    """How the collection is distributed: one local shard, as a single-node Qdrant reports."""
    return _store(ctx).cluster_info(collection), {}


def snapshots_list(ctx: Context, *, collection: str | None = None) -> Result:
    """Snapshots of a collection (or of the whole storage): none, as the embedded storage makes none."""
    if collection is not None:
        _store(ctx).vector_config(collection)  # 404 for a missing collection
    return [], {}


def collection_shard_keys(ctx: Context, *, collection: str) -> Result:
    """Shard keys of the collection: none, as for every collection not in custom sharding mode."""
    _store(ctx).vector_config(collection)  # 404 for a missing collection
    return {"shard_keys": None}, {}


def payload_index_create(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Create a payload index."""
    req = models.CreateFieldIndex.model_validate(body)
    schema = req.field_schema if req.field_schema is not None else models.PayloadSchemaType.KEYWORD
    return _store(ctx).create_payload_index(collection, req.field_name, schema), {}


def payload_index_delete(ctx: Context, *, collection: str, field_name: str) -> Result:
    """Delete a payload index."""
    return _store(ctx).delete_payload_index(collection, field_name), {}


# --- points: writes --------------------------------------------------------------------------------------


def points_upsert(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Upsert points (list or batch form); inference objects are embedded as documents.

    `update_filter` (only points matching it are replaced) and `update_mode` (`insert_only` /
    `update_only`) are honoured as Qdrant does.
    """
    store = _store(ctx)
    resolved = ctx.resolver().upsert(body, store.vector_config(collection))
    points = _points_of(resolved.body)
    options = {k: v for k, v in resolved.body.items() if k in ("update_filter", "update_mode")}
    insert = models.PointsList.model_validate({**options, "points": []})  # the write options, validated
    return store.upsert(
        collection, points, update_filter=insert.update_filter, update_mode=insert.update_mode
    ), resolved.usage


def points_update_vectors(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Update named vectors of existing points; inference objects are embedded as documents."""
    store = _store(ctx)
    resolved = ctx.resolver().update_vectors(body, store.vector_config(collection))
    req = models.UpdateVectors.model_validate(resolved.body)
    return store.update_vectors(collection, req.points, update_filter=req.update_filter), resolved.usage


def points_batch(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Several update operations in order (`POST /points/batch`), all resolved before the first runs."""
    store = _store(ctx)
    resolved = ctx.resolver().points_batch(body, store.vector_config(collection))
    # Parse every operation before running any, so a malformed last one writes nothing.
    operations = models.UpdateOperations.model_validate(resolved.body).operations
    for op in operations:  # a bad id in a later operation must not leave the earlier ones applied
        _check_point_ids(op.model_dump(exclude_none=True))
    results = [_run_operation(store, collection, op) for op in operations]
    return results, resolved.usage


def _run_operation(store: VectorStore, collection: str, op: models.UpdateOperation) -> Any:
    if isinstance(op, models.UpsertOperation):
        insert = op.upsert
        return store.upsert(
            collection,
            _points_of(insert.model_dump(exclude_unset=True)),
            update_filter=insert.update_filter,
            update_mode=insert.update_mode,
        )
    if isinstance(op, models.DeleteOperation):
        return store.delete_points(collection, _selector(op.delete.model_dump(exclude_unset=True)))
    if isinstance(op, models.SetPayloadOperation):
        return store.set_payload(collection, op.set_payload)
    if isinstance(op, models.OverwritePayloadOperation):
        return store.overwrite_payload(collection, op.overwrite_payload)
    if isinstance(op, models.DeletePayloadOperation):
        return store.delete_payload(collection, op.delete_payload)
    if isinstance(op, models.ClearPayloadOperation):
        return store.clear_payload(collection, _selector(op.clear_payload.model_dump(exclude_unset=True)))
    if isinstance(op, models.UpdateVectorsOperation):
        vectors = op.update_vectors
        return store.update_vectors(collection, vectors.points, update_filter=vectors.update_filter)
    if isinstance(op, models.DeleteVectorsOperation):
        return store.delete_vectors(collection, op.delete_vectors)
    raise TypeError(f"unhandled operation {type(op).__name__}")


def _check_point_ids(value: Any) -> None:
    """Raise BadRequest for any invalid point id in an update operation (ids, point structs, batches)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "points" and isinstance(item, list):
                for point in item:
                    if isinstance(point, dict):
                        normalize_point_id(point.get("id"))
                    else:
                        normalize_point_id(point)
            elif key == "ids" and isinstance(item, list):
                normalize_point_ids(item)
            else:
                _check_point_ids(item)
    elif isinstance(value, list):
        for item in value:
            _check_point_ids(item)


def points_delete(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Delete points by ids or filter."""
    return _store(ctx).delete_points(collection, _selector(body)), {}


def payload_set(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Merge payload keys into points."""
    return _store(ctx).set_payload(collection, models.SetPayload.model_validate(body)), {}


def payload_overwrite(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Replace the payload of points."""
    return _store(ctx).overwrite_payload(collection, models.SetPayload.model_validate(body)), {}


def payload_delete(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Delete payload keys."""
    return _store(ctx).delete_payload(collection, models.DeletePayload.model_validate(body)), {}


def payload_clear(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Remove the whole payload of points."""
    return _store(ctx).clear_payload(collection, _selector(body)), {}


def vectors_delete(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Delete named vectors of points."""
    return _store(ctx).delete_vectors(collection, models.DeleteVectors.model_validate(body)), {}


# --- points: reads -------------------------------------------------------------------------------------


def points_retrieve(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Points by id."""
    req = models.PointRequest.model_validate(body)
    with_payload = req.with_payload if req.with_payload is not None else True
    with_vector = req.with_vector if req.with_vector is not None else False
    return _store(ctx).retrieve(
        collection,
        req.ids,
        with_payload=with_payload,
        with_vector=with_vector,
    ), {}


def point_get(ctx: Context, *, collection: str, point_id: int | str) -> Result:
    """One point by id, with payload and vectors."""
    points = _store(ctx).retrieve(collection, [point_id], with_payload=True, with_vector=True)
    if not points:
        raise PointNotFound(point_id)
    return points[0], {}


def points_scroll(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """A page of points."""
    return _store(ctx).scroll(collection, models.ScrollRequest.model_validate(body)), {}


def points_count(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """How many points match."""
    return _store(ctx).count(collection, models.CountRequest.model_validate(body)), {}


def points_facet(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Counts of payload values."""
    return _store(ctx).facet(collection, models.FacetRequest.model_validate(body)), {}


def points_query(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Universal query; inference objects anywhere in it are embedded as queries."""
    store = _store(ctx)
    resolved = ctx.resolver().query(body, store.vector_config(collection))
    return store.query(collection, models.QueryRequest.model_validate(resolved.body)), resolved.usage


def points_query_batch(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Several queries; all their inference objects are embedded in one call."""
    store = _store(ctx)
    resolved = ctx.resolver().query_batch(body, store.vector_config(collection))
    searches = models.QueryRequestBatch.model_validate(resolved.body).searches
    return store.query_batch(collection, searches), resolved.usage


def points_query_groups(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """Query grouped by a payload field."""
    store = _store(ctx)
    resolved = ctx.resolver().query(body, store.vector_config(collection))
    req = models.QueryGroupsRequest.model_validate(resolved.body)
    return store.query_groups(collection, req), resolved.usage


# --- legacy search / recommend / discover: rewritten as universal queries ---------------------------------


def points_search(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """`POST /points/search`: nearest neighbours as a list of scored points."""
    result, usage = points_query(ctx, collection=collection, body=legacy.search(body))
    return result["points"], usage


def points_search_batch(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """`POST /points/search/batch`."""
    return _legacy_batch(ctx, collection, legacy.batch(body, legacy.search))


def points_search_groups(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """`POST /points/search/groups`."""
    return points_query_groups(ctx, collection=collection, body=legacy.search_groups(body))


def points_recommend(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """`POST /points/recommend`: by example ids or vectors, as a list of scored points."""
    result, usage = points_query(ctx, collection=collection, body=legacy.recommend(body))
    return result["points"], usage


def points_recommend_batch(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """`POST /points/recommend/batch`."""
    return _legacy_batch(ctx, collection, legacy.batch(body, legacy.recommend))


def points_recommend_groups(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """`POST /points/recommend/groups`."""
    return points_query_groups(ctx, collection=collection, body=legacy.recommend_groups(body))


def points_discover(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """`POST /points/discover`: discovery (with a target) or context search, as a list of scored points."""
    result, usage = points_query(ctx, collection=collection, body=legacy.discover(body))
    return result["points"], usage


def points_discover_batch(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """`POST /points/discover/batch`."""
    return _legacy_batch(ctx, collection, legacy.batch(body, legacy.discover))


def _legacy_batch(ctx: Context, collection: str, searches: list[dict[str, Any]]) -> Result:
    result, usage = points_query_batch(ctx, collection=collection, body={"searches": searches})
    return [r["points"] for r in result], usage


# --- distance matrix -------------------------------------------------------------------------------------


def search_matrix_pairs(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """`POST /points/search/matrix/pairs`: `{"pairs": [{"a", "b", "score"}]}` over a random sample."""
    ids, rows = _distance_matrix(_store(ctx), collection, models.SearchMatrixRequest.model_validate(body))
    pairs = [
        {"a": a, "b": hit["id"], "score": hit["score"]}
        for a, hits in zip(ids, rows, strict=True)
        for hit in hits
    ]
    return {"pairs": pairs}, {}


def search_matrix_offsets(ctx: Context, *, collection: str, body: dict[str, Any]) -> Result:
    """`POST /points/search/matrix/offsets`: the same matrix as row / column offsets into `ids`."""
    ids, rows = _distance_matrix(_store(ctx), collection, models.SearchMatrixRequest.model_validate(body))
    position = {point_id: i for i, point_id in enumerate(ids)}
    result: dict[str, list[Any]] = {"offsets_row": [], "offsets_col": [], "scores": [], "ids": ids}
    for row, hits in enumerate(rows):
        for hit in hits:
            result["offsets_row"].append(row)
            result["offsets_col"].append(position[hit["id"]])
            result["scores"].append(hit["score"])
    return result, {}


def _distance_matrix(
    store: VectorStore, collection: str, req: models.SearchMatrixRequest
) -> tuple[list[Any], list[list[dict[str, Any]]]]:
    """Qdrant's distance matrix: `sample` random points with the vector, each one's `limit` nearest ones.

    Built from universal queries (a random sample, then one nearest query per sampled point restricted to
    the others), so both backends answer it through the same code. Ids are sorted (integers first), as
    Qdrant orders them; fewer than two sampled points give an empty matrix.
    """
    sample = 10 if req.sample is None else req.sample
    limit = 3 if req.limit is None else req.limit
    if sample < 0 or limit < 0:
        from inference.storage import BadRequest

        raise BadRequest(
            "Validation error in JSON body: [sample / limit: must be a non-negative integer]", 422
        )
    name = req.using or ""
    has_vector = models.HasVectorCondition(has_vector=name)
    must = [*(_as_list(req.filter.must) if req.filter else []), has_vector]
    sample_filter = (req.filter or models.Filter()).model_copy(update={"must": must})
    sampled = store.query(
        collection,
        models.QueryRequest(
            query=models.SampleQuery(sample=models.Sample.RANDOM),
            filter=sample_filter,
            limit=sample,
            with_vector=[name] if name else True,
            with_payload=False,
        ),
    )["points"]
    if len(sampled) < 2:
        return [], []
    sampled.sort(
        key=lambda p: (isinstance(p["id"], str), p["id"] if isinstance(p["id"], str) else int(p["id"]))
    )
    ids = [p["id"] for p in sampled]
    rows = []
    for point in sampled:
        vector = point["vector"]
        if isinstance(vector, dict) and name in vector:
            vector = vector[name]
        others = [i for i in ids if i != point["id"]]
        flt = (req.filter or models.Filter()).model_copy(
            update={
                "must": [
                    *(_as_list(req.filter.must) if req.filter else []),
                    models.HasIdCondition(has_id=others),
                ]
            }
        )
        hits = store.query(
            collection,
            models.QueryRequest.model_validate(
                {
                    "query": vector,
                    "using": req.using,
                    "filter": flt.model_dump(exclude_none=True),
                    "limit": limit,
                }
            ),
        )["points"]
        rows.append([{"id": h["id"], "score": h["score"]} for h in hits])
    return ids, rows


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


# --- helpers ---------------------------------------------------------------------------------------------


def _points_of(body: dict[str, Any]) -> list[models.PointStruct]:
    """PointStructs from an upsert body in list form or batch (columnar) form."""
    if "batch" in body:
        batch = models.Batch.model_validate(body["batch"])
        ids = list(batch.ids)
        size = len(ids)
        vectors = batch.vectors
        payloads: list[dict[str, Any] | None] = (
            list(batch.payloads) if batch.payloads is not None else [None] * size
        )
        if isinstance(vectors, dict):
            columns = {name: list(values) for name, values in vectors.items()}
            if any(len(values) != size for values in columns.values()):
                raise _length_error()
            per_point: list[Any] = [
                {name: values[i] for name, values in columns.items()} for i in range(size)
            ]
        else:
            per_point = list(vectors)
            if len(per_point) != size:
                raise _length_error()
        if len(payloads) != size:
            raise _length_error()
        return [models.PointStruct(id=ids[i], vector=per_point[i], payload=payloads[i]) for i in range(size)]
    return list(models.PointsList.model_validate(body).points)


def _length_error() -> Exception:
    return BadRequest("Wrong input: Batch has different number of ids, vectors and payloads")


def _selector(body: dict[str, Any]) -> models.PointIdsList | models.FilterSelector:
    """A points selector from `{"points": [...]}` or `{"filter": {...}}`."""
    if "points" in body:
        return models.PointIdsList.model_validate(body)
    return models.FilterSelector.model_validate(body)
