"""gRPC messages <-> the REST JSON the data-plane operations take and return.

Requests go gRPC message -> qdrant-client's REST model (`GrpcToRest`, which already understands
`Document` / `Image` / `InferenceObject` in point vectors, `VectorInput`s, queries and prefetches) -> the
JSON body the REST data plane would receive. Results come back in Qdrant's REST JSON shape; they are parsed
into qdrant-client's REST models and turned into gRPC messages with `RestToGrpc`. Only the envelopes (which
fields of a request make up the REST body) and the few messages qdrant-client has no conversion for
(`CreateCollection`, `QueryPointGroups`, `FieldType`) are written here.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_jsonable_python
from qdrant_client import grpc
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc, grpc_to_payload
from qdrant_client.http import models as rest

from inference.errors import ApiError, FormatError

Body = dict[str, Any]
Usage = dict[str, int]


def json_of(value: Any) -> Any:
    """A REST model (or a structure of them) as the JSON a REST client would have sent; unset = absent."""
    return to_jsonable_python(value, exclude_none=True)


def _selector(selector: grpc.PointsSelector) -> Body:
    """`{"points": [...]}` or `{"filter": {...}}` from a gRPC PointsSelector."""
    converted = json_of(GrpcToRest.convert_points_selector(selector))
    assert isinstance(converted, dict)
    return converted


def _put(body: Body, key: str, message: Any, field: str, convert: Any = None) -> None:
    """`body[key] = convert(message.field)` when the (optional) field is set."""
    if message.HasField(field):
        value = getattr(message, field)
        body[key] = json_of(convert(value) if convert is not None else value)


# --- collections -----------------------------------------------------------------------------------------


def create_collection(req: grpc.CreateCollection) -> Body:
    """The REST `PUT /collections/{name}` body of a gRPC CreateCollection."""
    body: Body = {}
    _put(body, "vectors", req, "vectors_config", GrpcToRest.convert_vectors_config)
    _put(body, "sparse_vectors", req, "sparse_vectors_config", GrpcToRest.convert_sparse_vector_config)
    _put(body, "hnsw_config", req, "hnsw_config", GrpcToRest.convert_hnsw_config_diff)
    _put(body, "wal_config", req, "wal_config", GrpcToRest.convert_wal_config_diff)
    _put(body, "optimizers_config", req, "optimizers_config", GrpcToRest.convert_optimizers_config_diff)
    _put(body, "quantization_config", req, "quantization_config", GrpcToRest.convert_quantization_config)
    _put(body, "strict_mode_config", req, "strict_mode_config", GrpcToRest.convert_strict_mode_config)
    _put(body, "sharding_method", req, "sharding_method", GrpcToRest.convert_sharding_method)
    for field in ("shard_number", "on_disk_payload", "replication_factor", "write_consistency_factor"):
        _put(body, field, req, field)
    if req.metadata:
        body["metadata"] = grpc_to_payload(req.metadata)
    return body


def collection_info(result: Any) -> grpc.CollectionInfo:
    """A REST collection info as gRPC's CollectionInfo."""
    return RestToGrpc.convert_collection_info(rest.CollectionInfo.model_validate(result))


_FIELD_TYPES: dict[int, str] = {
    grpc.FieldTypeKeyword: "keyword",
    grpc.FieldTypeInteger: "integer",
    grpc.FieldTypeFloat: "float",
    grpc.FieldTypeGeo: "geo",
    grpc.FieldTypeText: "text",
    grpc.FieldTypeBool: "bool",
    grpc.FieldTypeDatetime: "datetime",
    grpc.FieldTypeUuid: "uuid",
}


def create_field_index(req: grpc.CreateFieldIndexCollection) -> Body:
    """The REST `PUT /collections/{name}/index` body: typed params win over the bare field type."""
    body: Body = {"field_name": req.field_name}
    if req.HasField("field_index_params"):
        body["field_schema"] = json_of(GrpcToRest.convert_payload_schema_params(req.field_index_params))
    elif req.HasField("field_type"):
        body["field_schema"] = _FIELD_TYPES.get(req.field_type, "keyword")
    return body


# --- points: writes --------------------------------------------------------------------------------------


def upsert(req: grpc.UpsertPoints) -> Body:
    """The REST upsert body; point vectors may be Documents / Images / Objects, named or not."""
    body: Body = {"points": [json_of(GrpcToRest.convert_point_struct(p)) for p in req.points]}
    _put(body, "update_filter", req, "update_filter", GrpcToRest.convert_filter)
    _put(body, "update_mode", req, "update_mode", GrpcToRest.convert_update_mode)
    return body


def delete_points(req: grpc.DeletePoints) -> Body:
    """The REST `points/delete` body."""
    return _selector(req.points)


def update_vectors(req: grpc.UpdatePointVectors) -> Body:
    """The REST `PUT points/vectors` body; vectors may be inference objects."""
    body: Body = {"points": [json_of(GrpcToRest.convert_point_vectors(p)) for p in req.points]}
    _put(body, "update_filter", req, "update_filter", GrpcToRest.convert_filter)
    return body


def delete_vectors(req: grpc.DeletePointVectors) -> Body:
    """The REST `points/vectors/delete` body."""
    return {**_selector(req.points_selector), "vector": list(req.vectors.names)}


def set_payload(req: grpc.SetPayloadPoints) -> Body:
    """The REST set/overwrite payload body."""
    body: Body = {"payload": grpc_to_payload(req.payload)}
    if req.HasField("points_selector"):
        body.update(_selector(req.points_selector))
    if req.HasField("key"):
        body["key"] = req.key
    return body


def delete_payload(req: grpc.DeletePayloadPoints) -> Body:
    """The REST `points/payload/delete` body."""
    body: Body = {"keys": list(req.keys)}
    if req.HasField("points_selector"):
        body.update(_selector(req.points_selector))
    return body


def clear_payload(req: grpc.ClearPayloadPoints) -> Body:
    """The REST `points/payload/clear` body."""
    return _selector(req.points)


def update_batch(req: grpc.UpdateBatchPoints) -> Body:
    """The REST `points/batch` body; upserts and vector updates may carry inference objects."""
    operations = [GrpcToRest.convert_points_update_operation(op) for op in req.operations]
    return {"operations": json_of(operations)}


# --- points: reads ---------------------------------------------------------------------------------------


def get_points(req: grpc.GetPoints) -> Body:
    """The REST retrieve body (gRPC defaults: no payload and no vectors unless asked)."""
    body: Body = {"ids": [json_of(GrpcToRest.convert_point_id(i)) for i in req.ids]}
    body["with_payload"] = (
        json_of(GrpcToRest.convert_with_payload_selector(req.with_payload))
        if req.HasField("with_payload")
        else False
    )
    _put(body, "with_vector", req, "with_vectors", GrpcToRest.convert_with_vectors_selector)
    return body


def scroll(req: grpc.ScrollPoints) -> Body:
    """The REST scroll body."""
    body: Body = {}
    _put(body, "filter", req, "filter", GrpcToRest.convert_filter)
    _put(body, "offset", req, "offset", GrpcToRest.convert_point_id)
    _put(body, "limit", req, "limit")
    _put(body, "with_payload", req, "with_payload", GrpcToRest.convert_with_payload_selector)
    _put(body, "with_vector", req, "with_vectors", GrpcToRest.convert_with_vectors_selector)
    _put(body, "order_by", req, "order_by", GrpcToRest.convert_order_by)
    return body


def count(req: grpc.CountPoints) -> Body:
    """The REST count body."""
    body: Body = {}
    _put(body, "filter", req, "filter", GrpcToRest.convert_filter)
    _put(body, "exact", req, "exact")
    return body


def facet(req: grpc.FacetCounts) -> Body:
    """The REST facet body."""
    body: Body = {"key": req.key}
    _put(body, "filter", req, "filter", GrpcToRest.convert_filter)
    _put(body, "limit", req, "limit")
    _put(body, "exact", req, "exact")
    return body


def query(req: grpc.QueryPoints) -> Body:
    """The REST query body: inference objects may appear in the query and in every prefetch."""
    converted = json_of(GrpcToRest.convert_query_points(req))
    assert isinstance(converted, dict)
    return converted


def query_batch(req: grpc.QueryBatchPoints) -> Body:
    """The REST `points/query/batch` body."""
    return {"searches": [query(q) for q in req.query_points]}


def query_groups(req: grpc.QueryPointGroups) -> Body:
    """The REST `points/query/groups` body (qdrant-client has no conversion for QueryPointGroups)."""
    common = grpc.QueryPoints(collection_name=req.collection_name)
    source: Any = req  # the fields below are the ones QueryPoints and QueryPointGroups share
    for field in ("prefetch", "query", "using", "filter", "params", "score_threshold", "with_payload",
                  "with_vectors", "lookup_from", "limit"):  # fmt: skip
        if field == "prefetch":
            common.prefetch.extend(req.prefetch)
        elif source.HasField(field):
            value = getattr(source, field)
            if isinstance(value, str | int | float):
                setattr(common, field, value)
            else:
                getattr(common, field).CopyFrom(value)
    body = query(common)
    body["group_by"] = req.group_by
    _put(body, "group_size", req, "group_size")
    _put(body, "with_lookup", req, "with_lookup", GrpcToRest.convert_with_lookup)
    return body


# --- results ---------------------------------------------------------------------------------------------


def usage_of(usage: Usage) -> grpc.Usage | None:
    """The `usage` field of a response: tokens per model, as Qdrant reports inference usage."""
    if not usage:
        return None
    models = {model: grpc.ModelUsage(tokens=tokens) for model, tokens in usage.items()}
    return grpc.Usage(inference=grpc.InferenceUsage(models=models))


def update_result(result: Any) -> grpc.UpdateResult:
    """A REST update result (`{"operation_id", "status"}`) as gRPC's UpdateResult."""
    return RestToGrpc.convert_update_result(rest.UpdateResult.model_validate(result))


def scored_points(points: Any) -> list[grpc.ScoredPoint]:
    """REST scored points as gRPC ScoredPoints."""
    return [RestToGrpc.convert_scored_point(rest.ScoredPoint.model_validate(p)) for p in points]


def records(points: Any) -> list[grpc.RetrievedPoint]:
    """REST records as gRPC RetrievedPoints."""
    return [RestToGrpc.convert_record(rest.Record.model_validate(p)) for p in points]


def point_id(value: Any) -> grpc.PointId:
    """A REST point id as gRPC's PointId."""
    return RestToGrpc.convert_extended_point_id(value)


def groups(result: Any) -> grpc.GroupsResult:
    """A REST groups result as gRPC's GroupsResult."""
    return RestToGrpc.convert_groups_result(rest.GroupsResult.model_validate(result))


def facet_hits(result: Any) -> list[grpc.FacetHit]:
    """REST facet hits as gRPC FacetHits."""
    hits = rest.FacetResponse.model_validate(result).hits
    return [RestToGrpc.convert_facet_value_hit(hit) for hit in hits]


def bad_request(exc: Exception) -> ApiError:
    """A request the converters could not read: a 400 that names the problem without echoing inputs."""
    return FormatError(f"the request could not be read ({type(exc).__name__})")
