"""Translation between qdrant-client's REST models and Qdrant Edge 0.9.0 objects.

Everything here is a pure function of its inputs: :mod:`inference.storage.edge` owns the shards,
locks and registry and calls into this module to build Edge requests and to turn Edge results into
the JSON Qdrant's REST API would return.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias, cast

import numpy as np
import qdrant_edge as qe
from pydantic import BaseModel
from qdrant_client.http import models

from .base import (
    DEFAULT_VECTOR_NAME,
    BadRequest,
    JsonDict,
    PointId,
    PointNotFound,
    Unsupported,
    WithPayload,
    WithVector,
    normalize_point_id,
)

EdgeCondition: TypeAlias = Any  # one of Edge's condition classes (FieldCondition, HasIdCondition, ...)
EdgeVector: TypeAlias = Any  # list[float] | list[list[float]] | qe.SparseVector
EdgeScoring: TypeAlias = Any  # qe.Query | Fusion.* | OrderBy | Formula | Sample | Mmr | TextQuery
VectorInput: TypeAlias = Any  # models.VectorInput: a raw vector, a point id or an inference object
# Resolves (point id, vector name) pairs to stored vectors, for queries that name points by id.
VectorFetcher: TypeAlias = Callable[[list[tuple[int | str, str]]], dict[tuple[int | str, str], EdgeVector]]

DEFAULT_QUERY_LIMIT = 10  # Qdrant's `CollectionQueryRequest::DEFAULT_LIMIT`, also used for prefetches
DEFAULT_RRF_K = 2  # Qdrant's default `k` for `{"fusion": "rrf"}`; Edge needs it explicitly
DEFAULT_MMR_DIVERSITY = 0.5  # Qdrant's default `mmr.diversity`

# Defaults a Qdrant server reports for a collection created without overrides (config/config.yaml).
DEFAULT_HNSW: JsonDict = {
    "m": 16,
    "ef_construct": 100,
    "full_scan_threshold": 10000,
    "max_indexing_threads": 0,
    "on_disk": False,
}
DEFAULT_OPTIMIZERS: JsonDict = {
    "deleted_threshold": 0.2,
    "vacuum_min_vector_number": 1000,
    "default_segment_number": 0,
    "max_segment_size": None,
    "memmap_threshold": None,
    "indexing_threshold": 10000,
    "flush_interval_sec": 5,
    "max_optimization_threads": None,
}
DEFAULT_WAL: JsonDict = {"wal_capacity_mb": 32, "wal_segments_ahead": 0, "wal_retain_closed": 1}


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return name.replace("_", "").lower()


def edge_enum(enum_cls: Any, value: enum.Enum | str) -> Any:
    """The Edge enum member matching a qdrant-client enum value.

    Edge spells members in PascalCase (``OneAndHalfBits``), the REST API in snake_case
    (``one_and_half_bits``); both reduce to the same letters once underscores and case are dropped.
    """
    raw = value.value if isinstance(value, enum.Enum) else value
    wanted = _norm(str(raw))
    for member in dir(enum_cls):
        if not member.startswith("_") and _norm(member) == wanted:
            return getattr(enum_cls, member)
    raise Unsupported(f"`{raw}` ({enum_cls.__name__})")


def edge_enum_name(member: Any) -> str:
    """The REST spelling of a simple Edge enum member (``PayloadSchemaType.Keyword`` -> ``keyword``)."""
    return str(member).rsplit(".", 1)[-1].lower()


def _kwargs(**values: Any) -> dict[str, Any]:
    """Keyword arguments without the ``None`` ones, so Edge applies its own defaults."""
    return {k: v for k, v in values.items() if v is not None}


def _memory(value: models.Memory | None) -> Any:
    return edge_enum(qe.Memory, value) if value is not None else None


def _f32(value: float) -> float:
    """A float32 score as the shortest decimal that round-trips, as Qdrant's JSON prints it."""
    return float(str(np.float32(value)))


def _datetime_str(value: dt.datetime | dt.date | str) -> str:
    """RFC 3339 text for Edge's datetime ranges; naive datetimes are UTC, as in Qdrant."""
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).isoformat()


def as_list(value: Any) -> list[Any]:
    """REST fields such as ``must`` or ``prefetch`` take one item or a list; normalize to a list."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


# --------------------------------------------------------------------------------------------------
# Collection configuration
# --------------------------------------------------------------------------------------------------


def _hnsw(diff: models.HnswConfigDiff | None, base: JsonDict) -> tuple[Any, JsonDict]:
    """Edge's HNSW config (it needs m / ef_construct / full_scan_threshold) and the merged JSON."""
    merged = dict(base)
    if diff is not None:
        merged.update(diff.model_dump(mode="json", exclude_none=True))
    config = qe.HnswIndexConfig(
        m=merged["m"],
        ef_construct=merged["ef_construct"],
        full_scan_threshold=merged["full_scan_threshold"],
        max_indexing_threads=merged.get("max_indexing_threads") or 0,
        **_kwargs(
            on_disk=merged.get("on_disk"),
            payload_m=merged.get("payload_m"),
            inline_storage=merged.get("inline_storage"),
            memory=_memory(models.Memory(merged["memory"])) if merged.get("memory") else None,
        ),
    )
    return config, merged


def edge_quantization(config: models.QuantizationConfig | None) -> Any:
    """Edge's quantization config for a REST one (scalar, product, binary, turbo)."""
    if config is None:
        return None
    if isinstance(config, models.ScalarQuantization):
        c = config.scalar
        return qe.ScalarQuantizationConfig(
            type=edge_enum(qe.ScalarType, c.type),
            **_kwargs(quantile=c.quantile, always_ram=c.always_ram, memory=_memory(c.memory)),
        )
    if isinstance(config, models.ProductQuantization):
        p = config.product
        return qe.ProductQuantizationConfig(
            compression=edge_enum(qe.CompressionRatio, p.compression),
            **_kwargs(always_ram=p.always_ram, memory=_memory(p.memory)),
        )
    if isinstance(config, models.BinaryQuantization):
        b = config.binary
        return qe.BinaryQuantizationConfig(
            **_kwargs(
                always_ram=b.always_ram,
                encoding=edge_enum(qe.BinaryQuantizationEncoding, b.encoding) if b.encoding else None,
                query_encoding=(
                    edge_enum(qe.BinaryQuantizationQueryEncoding, b.query_encoding)
                    if b.query_encoding
                    else None
                ),
                memory=_memory(b.memory),
            )
        )
    if isinstance(config, models.TurboQuantization):
        t = config.turbo
        return qe.TurboQuantQuantizationConfig(
            **_kwargs(
                always_ram=t.always_ram,
                bits=edge_enum(qe.TurboQuantBitSize, t.bits) if t.bits else None,
                memory=_memory(t.memory),
            )
        )
    raise Unsupported(f"quantization `{type(config).__name__}`")


def edge_config(config: models.CreateCollection) -> Any:
    """Edge's shard config for a REST ``CreateCollection``.

    Sharding, replication, WAL sizes and collection metadata have no Edge counterpart: the store
    keeps them in its registry and reports them back in ``get_collection``.
    """
    collection_hnsw, merged_hnsw = _hnsw(config.hnsw_config, DEFAULT_HNSW)

    if isinstance(config.vectors, models.VectorParams):
        named: dict[str, models.VectorParams] = {DEFAULT_VECTOR_NAME: config.vectors}
    else:
        named = dict(config.vectors or {})
    vectors: dict[str, Any] = {}
    for name, params in named.items():
        if not 1 <= params.size <= 65536:
            raise BadRequest(
                f"Validation error in JSON body: [vectors.size: value {params.size} invalid, "
                "must be from 1 to 65536]",
                status_code=422,
            )
        vectors[name] = qe.EdgeVectorParams(
            size=params.size,
            distance=edge_enum(qe.Distance, params.distance),
            **_kwargs(
                on_disk=params.on_disk,
                multivector_config=(
                    qe.MultiVectorConfig(
                        edge_enum(qe.MultiVectorComparator, params.multivector_config.comparator)
                    )
                    if params.multivector_config
                    else None
                ),
                datatype=edge_enum(qe.VectorStorageDatatype, params.datatype) if params.datatype else None,
                quantization_config=edge_quantization(params.quantization_config),
                hnsw_config=_hnsw(params.hnsw_config, merged_hnsw)[0] if params.hnsw_config else None,
                memory=_memory(params.memory),
            ),
        )

    sparse: dict[str, Any] = {}
    for name, sparams in (config.sparse_vectors or {}).items():
        index = sparams.index
        sparse[name] = qe.EdgeSparseVectorParams(
            **_kwargs(
                full_scan_threshold=index.full_scan_threshold if index else None,
                on_disk=index.on_disk if index else None,
                modifier=edge_enum(qe.Modifier, sparams.modifier) if sparams.modifier else None,
                datatype=(
                    edge_enum(qe.VectorStorageDatatype, index.datatype) if index and index.datatype else None
                ),
                memory=_memory(index.memory) if index else None,
            )
        )

    if not vectors and not sparse:
        raise Unsupported("a collection without any dense or sparse vector")

    optimizers = None
    if config.optimizers_config is not None:
        o = config.optimizers_config
        # `prevent_unoptimized` is deliberately not passed: Edge would hide points written to large
        # segments until `optimize()` runs, and this store never optimizes on a request path.
        optimizers = qe.EdgeOptimizersConfig(
            **_kwargs(
                deleted_threshold=o.deleted_threshold,
                vacuum_min_vector_number=o.vacuum_min_vector_number,
                default_segment_number=o.default_segment_number,
                max_segment_size=o.max_segment_size,
                indexing_threshold=o.indexing_threshold,
            )
        )

    return qe.EdgeConfig(
        vectors=vectors,
        sparse_vectors=sparse or None,
        **_kwargs(
            on_disk_payload=config.on_disk_payload,
            hnsw_config=collection_hnsw if config.hnsw_config is not None else None,
            quantization_config=edge_quantization(config.quantization_config),
            optimizers=optimizers,
        ),
        # The WAL is what keeps acknowledged writes across a crash: never turn it off.
        wal_enabled=True,
    )


def collection_config_json(config: models.CreateCollection) -> JsonDict:
    """The ``config`` object of ``CollectionInfo`` as a Qdrant server reports it for this request."""
    params: JsonDict = {
        "vectors": _dump(config.vectors) if config.vectors is not None else {},
        "shard_number": config.shard_number or 1,
        "replication_factor": config.replication_factor or 1,
        "write_consistency_factor": config.write_consistency_factor or 1,
        "on_disk_payload": True if config.on_disk_payload is None else config.on_disk_payload,
    }
    if config.sharding_method is not None:
        params["sharding_method"] = config.sharding_method.value
    if config.sparse_vectors:
        params["sparse_vectors"] = {k: _dump(v) for k, v in config.sparse_vectors.items()}

    hnsw = dict(DEFAULT_HNSW)
    if config.hnsw_config is not None:
        hnsw.update(config.hnsw_config.model_dump(mode="json", exclude_none=True))
    optimizers = dict(DEFAULT_OPTIMIZERS)
    if config.optimizers_config is not None:
        optimizers.update(config.optimizers_config.model_dump(mode="json", exclude_none=True))
    wal = dict(DEFAULT_WAL)
    if config.wal_config is not None:
        wal.update(config.wal_config.model_dump(mode="json", exclude_none=True))

    result: JsonDict = {
        "params": params,
        "hnsw_config": hnsw,
        "optimizer_config": optimizers,
        "wal_config": wal,
        "quantization_config": _dump(config.quantization_config) if config.quantization_config else None,
        "strict_mode_config": {"enabled": False},
    }
    if config.metadata:
        result["metadata"] = config.metadata
    return result


def _dump(model: Any) -> Any:
    if isinstance(model, dict):
        return {k: _dump(v) for k, v in model.items()}
    return model.model_dump(mode="json", exclude_none=True)


# --------------------------------------------------------------------------------------------------
# Payload indexes
# --------------------------------------------------------------------------------------------------


def edge_index_schema(schema: models.PayloadFieldSchema) -> Any:
    """Edge's payload index schema for a REST ``field_schema`` (a type name or typed params)."""
    if isinstance(schema, models.PayloadSchemaType | str):
        return edge_enum(qe.PayloadSchemaType, schema)
    fields = schema.model_dump(exclude_none=True, exclude={"type"})
    if "memory" in fields:
        fields["memory"] = _memory(schema.memory)
    simple = {
        models.KeywordIndexParams: qe.KeywordIndexParams,
        models.IntegerIndexParams: qe.IntegerIndexParams,
        models.FloatIndexParams: qe.FloatIndexParams,
        models.GeoIndexParams: qe.GeoIndexParams,
        models.BoolIndexParams: qe.BoolIndexParams,
        models.DatetimeIndexParams: qe.DatetimeIndexParams,
        models.UuidIndexParams: qe.UuidIndexParams,
    }
    for rest_cls, edge_cls in simple.items():
        if isinstance(schema, rest_cls):
            return edge_cls(**fields)
    if isinstance(schema, models.TextIndexParams):
        if schema.tokenizer is not None:
            fields["tokenizer"] = edge_enum(qe.TokenizerType, schema.tokenizer)
        if schema.stopwords is not None:
            stop = schema.stopwords
            if isinstance(stop, models.StopwordsSet):
                fields["stopwords"] = qe.StopwordsSet(
                    **_kwargs(
                        languages={edge_enum(qe.Language, lang) for lang in stop.languages}
                        if stop.languages
                        else None,
                        custom=set(stop.custom) if stop.custom else None,
                    )
                )
            else:
                fields["stopwords"] = qe.StopwordsSet(languages={edge_enum(qe.Language, stop)})
        if schema.stemmer is not None:
            if isinstance(schema.stemmer, models.SnowballParams):
                fields["stemmer"] = qe.SnowballParams(edge_enum(qe.SnowballLanguage, schema.stemmer.language))
            else:
                fields["stemmer"] = qe.DisabledStemmer()
        if schema.scoring is not None:
            if schema.scoring is False:
                del fields["scoring"]
            else:
                fields["scoring"] = qe.TextScoringParams()
        return qe.TextIndexParams(**fields)
    raise Unsupported(f"payload index schema `{type(schema).__name__}`")


def index_schema_json(schema: models.PayloadFieldSchema) -> JsonDict:
    """``payload_schema`` entry of ``CollectionInfo`` (without ``points``) for an index request."""
    if isinstance(schema, models.PayloadSchemaType | str):
        return {"data_type": models.PayloadSchemaType(schema).value}
    params = schema.model_dump(mode="json", exclude_none=True)
    return {"data_type": params["type"], "params": params}


# --------------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------------


def _match_value(value: bool | int | str) -> Any:
    # Qdrant Edge 0.9.0 extracts the value as an integer first, and Python's True is an int, so
    # `MatchValue(True)` silently becomes `MatchValue(1)` and never matches a boolean payload.
    # numpy.bool_ is not an int subclass and has no __index__, so the binding falls through to its
    # bool branch and the condition matches booleans exactly like the server does.
    if isinstance(value, bool):
        return qe.MatchValue(np.bool_(value))  # type: ignore[arg-type]  # the stubs only list bool
    return qe.MatchValue(value)


def _edge_match(match: Any) -> Any:
    if isinstance(match, models.MatchValue):
        return _match_value(match.value)
    if isinstance(match, models.MatchAny):
        return qe.MatchAny(cast(Any, list(match.any)))
    if isinstance(match, models.MatchExcept):
        return qe.MatchExcept(cast(Any, list(match.except_)))
    if isinstance(match, models.MatchText):
        return qe.MatchText(match.text)
    if isinstance(match, models.MatchTextAny):
        return qe.MatchTextAny(match.text_any)
    if isinstance(match, models.MatchPhrase):
        return qe.MatchPhrase(match.phrase)
    if isinstance(match, models.MatchPrefix):
        return qe.MatchPrefix(match.prefix)
    if isinstance(match, models.MatchSubstring):
        return qe.MatchSubstring(match.substring)
    raise Unsupported(f"match condition `{type(match).__name__}`")


def _geo_point(point: models.GeoPoint) -> Any:
    return qe.GeoPoint(lon=point.lon, lat=point.lat)


def _field_condition(cond: models.FieldCondition) -> Any:
    rng: Any = None
    if isinstance(cond.range, models.DatetimeRange):
        r = cond.range
        rng = qe.RangeDateTime(
            **_kwargs(
                gte=_datetime_str(r.gte) if r.gte is not None else None,
                gt=_datetime_str(r.gt) if r.gt is not None else None,
                lte=_datetime_str(r.lte) if r.lte is not None else None,
                lt=_datetime_str(r.lt) if r.lt is not None else None,
            )
        )
    elif isinstance(cond.range, models.Range):
        r2 = cond.range
        rng = qe.RangeFloat(**_kwargs(gte=r2.gte, gt=r2.gt, lte=r2.lte, lt=r2.lt))
    bbox = None
    if cond.geo_bounding_box is not None:
        bbox = qe.GeoBoundingBox(
            _geo_point(cond.geo_bounding_box.top_left), _geo_point(cond.geo_bounding_box.bottom_right)
        )
    radius = None
    if cond.geo_radius is not None:
        radius = qe.GeoRadius(_geo_point(cond.geo_radius.center), cond.geo_radius.radius)
    polygon = None
    if cond.geo_polygon is not None:
        polygon = qe.GeoPolygon(
            [_geo_point(p) for p in cond.geo_polygon.exterior.points],
            [[_geo_point(p) for p in ring.points] for ring in cond.geo_polygon.interiors]
            if cond.geo_polygon.interiors
            else None,
        )
    values_count = None
    if cond.values_count is not None:
        vc = cond.values_count
        values_count = qe.ValuesCount(**_kwargs(lt=vc.lt, gt=vc.gt, lte=vc.lte, gte=vc.gte))
    return qe.FieldCondition(
        cond.key,
        **_kwargs(
            match=_edge_match(cond.match) if cond.match is not None else None,
            range=rng,
            geo_bounding_box=bbox,
            geo_radius=radius,
            geo_polygon=polygon,
            values_count=values_count,
            is_empty=cond.is_empty,
            is_null=cond.is_null,
        ),
    )


def edge_condition(cond: Any) -> EdgeCondition:
    """Edge's condition for one REST condition (field, is_empty, is_null, has_id, nested, filter ...)."""
    if isinstance(cond, models.FieldCondition):
        return _field_condition(cond)
    if isinstance(cond, models.Filter):
        return edge_filter(cond)
    if isinstance(cond, models.IsEmptyCondition):
        return qe.IsEmptyCondition(cond.is_empty.key)
    if isinstance(cond, models.IsNullCondition):
        return qe.IsNullCondition(cond.is_null.key)
    if isinstance(cond, models.HasIdCondition):
        return qe.HasIdCondition({normalize_point_id(p) for p in cond.has_id})
    if isinstance(cond, models.HasVectorCondition):
        return qe.HasVectorCondition(cond.has_vector)
    if isinstance(cond, models.NestedCondition):
        return qe.NestedCondition(cond.nested.key, edge_filter(cond.nested.filter))
    if isinstance(cond, models.SliceCondition):
        # Present in the 0.9.0 module but missing from its type stubs.
        slice_condition: Any = getattr(qe, "SliceCondition")  # noqa: B009
        return slice_condition(cond.slice.total, cond.slice.index)
    raise Unsupported(f"filter condition `{type(cond).__name__}`")


def edge_filter(flt: models.Filter | None) -> Any:
    """Edge's filter for a REST filter (``None`` stays ``None``)."""
    if flt is None:
        return None
    min_should = None
    if flt.min_should is not None:
        min_should = qe.MinShould(
            [edge_condition(c) for c in flt.min_should.conditions], flt.min_should.min_count
        )
    return qe.Filter(
        **_kwargs(
            must=[edge_condition(c) for c in as_list(flt.must)] if flt.must is not None else None,
            should=[edge_condition(c) for c in as_list(flt.should)] if flt.should is not None else None,
            must_not=[edge_condition(c) for c in as_list(flt.must_not)] if flt.must_not is not None else None,
            min_should=min_should,
        )
    )


def merge_filter_excluding(flt: Any, ids: Iterable[PointId]) -> Any:
    """``flt`` AND NOT ``has_id(ids)``, as Qdrant adds to queries that reference points by id."""
    id_set: set[PointId] = set(ids)
    if not id_set:
        return flt
    must_not: list[Any] = [qe.HasIdCondition(id_set)]
    if flt is None:
        return qe.Filter(must_not=must_not)
    return qe.Filter(must=[flt], must_not=must_not)


# --------------------------------------------------------------------------------------------------
# Vectors and points
# --------------------------------------------------------------------------------------------------


def _is_inference_object(value: Any) -> bool:
    return isinstance(value, models.Document | models.Image | models.InferenceObject)


def _inference_error() -> BadRequest:
    return BadRequest(
        "Wrong input: Document, Image and InferenceObject inputs must be embedded before they reach "
        "the storage"
    )


def edge_sparse(vector: models.SparseVector, where: str = "vector") -> Any:
    """Edge's sparse vector, validated first: Edge 0.9.0 panics on mismatched lengths."""
    indices = list(vector.indices)
    values = list(vector.values)
    if len(indices) != len(values):
        raise BadRequest(
            f"Validation error in JSON body: [{where}.values: must be the same length as indices]",
            status_code=422,
        )
    if len(set(indices)) != len(indices):
        raise BadRequest(f"Validation error in JSON body: [{where}.indices: must be unique]", status_code=422)
    if any(i < 0 or i >= 2**32 for i in indices):
        raise BadRequest(
            f"Validation error in JSON body: [{where}.indices: must be unsigned 32-bit integers]",
            status_code=422,
        )
    if not all(math.isfinite(v) for v in values):
        raise BadRequest(f"Wrong input: sparse vector `{where}` contains a non-finite value")
    return qe.SparseVector(indices, values)


def edge_vector(value: Any, where: str = "vector") -> EdgeVector:
    """One dense / multi-dense / sparse vector in Edge form."""
    if isinstance(value, models.SparseVector):
        return edge_sparse(value, where)
    if _is_inference_object(value):
        raise _inference_error()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return value
    raise BadRequest(f"Wrong input: unsupported vector value for `{where}`")


def edge_vector_struct(vector: Any) -> dict[str, EdgeVector]:
    """A point's vectors keyed by name; a plain list is the unnamed vector (name ``""``)."""
    if isinstance(vector, dict):
        return {name: edge_vector(v, f"vector.{name}") for name, v in vector.items()}
    return {DEFAULT_VECTOR_NAME: edge_vector(vector)}


def edge_point(point: models.PointStruct) -> Any:
    """Edge's point for a REST ``PointStruct``."""
    return qe.Point(normalize_point_id(point.id), edge_vector_struct(point.vector), point.payload)


def edge_point_vectors(point: models.PointVectors) -> Any:
    """Edge's ``PointVectors`` for ``PUT .../points/vectors``."""
    return qe.PointVectors(normalize_point_id(point.id), edge_vector_struct(point.vector))


def edge_with_payload(value: WithPayload | None, default: bool) -> Any:
    """Edge's payload selector: bool, ``PayloadSelector.Include`` or ``.Exclude``."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, models.PayloadSelectorInclude):
        return qe.PayloadSelector.Include(list(value.include))
    if isinstance(value, models.PayloadSelectorExclude):
        return qe.PayloadSelector.Exclude(list(value.exclude))
    return qe.PayloadSelector.Include(list(value))


def edge_with_vector(value: WithVector | None, default: bool = False) -> Any:
    """Edge's vector selector: bool or a list of vector names."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return list(value)


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


def json_id(point_id: Any) -> int | str:
    """A point id as Qdrant's JSON has it: an integer or a hyphenated UUID string."""
    return point_id if isinstance(point_id, int) else str(point_id)


def _json_named_vector(value: Any) -> Any:
    if isinstance(value, qe.SparseVector):
        return {"indices": [int(i) for i in value.indices], "values": [float(v) for v in value.values]}
    return value


def json_vector(vector: Any) -> Any:
    """Vectors in REST form: a list for a lone unnamed vector, else ``{name: list | sparse | multi}``."""
    if vector is None:
        return None
    if isinstance(vector, dict):
        if set(vector) == {DEFAULT_VECTOR_NAME}:
            return _json_named_vector(vector[DEFAULT_VECTOR_NAME])
        return {name: _json_named_vector(v) for name, v in vector.items()}
    return _json_named_vector(vector)


def scored_point_json(point: Any) -> JsonDict:
    """Qdrant's ``ScoredPoint`` for an Edge result."""
    return {
        "id": json_id(point.id),
        "version": point.version,
        "score": _f32(point.score),
        "payload": point.payload,
        "vector": json_vector(point.vector),
        "shard_key": None,
        "order_value": point.order_value,
    }


def record_json(record: Any) -> JsonDict:
    """Qdrant's ``Record`` for an Edge record."""
    return {
        "id": json_id(record.id),
        "payload": record.payload,
        "vector": json_vector(record.vector),
        "shard_key": None,
        "order_value": record.order_value,
    }


# --------------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------------


def edge_order_by(order_by: str | models.OrderBy) -> Any:
    """Edge's ``OrderBy`` for a REST ``order_by`` (a key, or key + direction + start_from)."""
    if isinstance(order_by, str):
        return qe.OrderBy(order_by)
    start: Any = order_by.start_from
    if isinstance(start, dt.datetime | dt.date):
        start = _datetime_str(start)
    return qe.OrderBy(
        order_by.key,
        **_kwargs(
            direction=edge_enum(qe.Direction, order_by.direction) if order_by.direction else None,
            start_from=start,
        ),
    )


def edge_search_params(params: models.SearchParams | None) -> Any:
    """Edge's search params (hnsw_ef, exact, quantization, indexed_only, acorn, idf)."""
    if params is None:
        return None
    quantization = None
    if params.quantization is not None:
        q = params.quantization
        quantization = qe.QuantizationSearchParams(
            **_kwargs(ignore=q.ignore, rescore=q.rescore, oversampling=q.oversampling)
        )
    acorn = None
    if params.acorn is not None:
        acorn = qe.AcornSearchParams(
            **_kwargs(enable=params.acorn.enable, max_selectivity=params.acorn.max_selectivity)
        )
    idf = None
    if isinstance(params.idf, models.IdfCorpusParams):
        idf = qe.IdfParams(corpus=edge_filter(params.idf.corpus))
    return qe.SearchParams(
        **_kwargs(
            hnsw_ef=params.hnsw_ef,
            exact=params.exact,
            quantization=quantization,
            indexed_only=params.indexed_only,
            acorn=acorn,
            idf=idf,
        )
    )


_CONDITION_TYPES = (
    models.FieldCondition,
    models.IsEmptyCondition,
    models.IsNullCondition,
    models.HasIdCondition,
    models.HasVectorCondition,
    models.SliceCondition,
    models.NestedCondition,
    models.Filter,
)


def edge_expression(expr: Any) -> Any:
    """Edge's formula expression for a REST one (constants, variables, conditions, arithmetic, decay)."""
    e = qe.Expression
    if isinstance(expr, bool):
        raise BadRequest("Wrong input: a boolean is not a formula expression")
    if isinstance(expr, int | float):
        return e.Constant(float(expr))
    if isinstance(expr, str):
        return e.Variable(expr)
    if isinstance(expr, _CONDITION_TYPES):
        return e.Condition(edge_condition(expr))
    if isinstance(expr, models.GeoDistance):
        return e.GeoDistance(_geo_point(expr.geo_distance.origin), expr.geo_distance.to)
    if isinstance(expr, models.DatetimeExpression):
        return e.Datetime(expr.datetime)
    if isinstance(expr, models.DatetimeKeyExpression):
        return e.DatetimeKey(expr.datetime_key)
    many: dict[type[Any], tuple[str, Callable[..., Any]]] = {
        models.MultExpression: ("mult", e.Mult),
        models.SumExpression: ("sum", e.Sum),
        models.MaxExpression: ("max", e.Max),
        models.MinExpression: ("min", e.Min),
    }
    for cls, (attr, build) in many.items():
        if isinstance(expr, cls):
            return build([edge_expression(x) for x in getattr(expr, attr)])
    one: dict[type[Any], tuple[str, Callable[..., Any]]] = {
        models.NegExpression: ("neg", e.Neg),
        models.AbsExpression: ("abs", e.Abs),
        models.SqrtExpression: ("sqrt", e.Sqrt),
        models.ExpExpression: ("exp", e.Exp),
        models.Log10Expression: ("log10", e.Log10),
        models.LnExpression: ("ln", e.Ln),
        models.AcoshExpression: ("acosh", e.Acosh),
    }
    for cls, (attr, build) in one.items():
        if isinstance(expr, cls):
            return build(edge_expression(getattr(expr, attr)))
    if isinstance(expr, models.DivExpression):
        d = expr.div
        return e.Div(edge_expression(d.left), edge_expression(d.right), d.by_zero_default)
    if isinstance(expr, models.PowExpression):
        return e.Pow(edge_expression(expr.pow.base), edge_expression(expr.pow.exponent))
    decays: dict[type[Any], tuple[str, Any]] = {
        models.LinDecayExpression: ("lin_decay", qe.DecayKind.Lin),
        models.ExpDecayExpression: ("exp_decay", qe.DecayKind.Exp),
        models.GaussDecayExpression: ("gauss_decay", qe.DecayKind.Gauss),
    }
    for cls, (attr, kind) in decays.items():
        if isinstance(expr, cls):
            p = getattr(expr, attr)
            return e.Decay(
                kind,
                edge_expression(p.x),
                edge_expression(p.target) if p.target is not None else None,
                p.midpoint,
                p.scale,
            )
    raise Unsupported(f"formula expression `{type(expr).__name__}`")


def _is_point_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int | str | uuid.UUID)


def _inputs_of(query: Any) -> list[VectorInput]:
    """Every vector input of a query, so ids among them can be resolved in one round trip."""
    if query is None:
        return []
    if isinstance(query, models.SparseVector):
        return [query]
    if isinstance(query, models.NearestQuery):
        return [query.nearest]
    if isinstance(query, models.RecommendQuery):
        return [*(query.recommend.positive or []), *(query.recommend.negative or [])]
    if isinstance(query, models.DiscoverQuery):
        pairs = as_list(query.discover.context)
        return [query.discover.target, *[v for p in pairs for v in (p.positive, p.negative)]]
    if isinstance(query, models.ContextQuery):
        return [v for p in as_list(query.context) for v in (p.positive, p.negative)]
    if isinstance(query, models.RelevanceFeedbackQuery):
        rf = query.relevance_feedback
        return [rf.target, *[item.example for item in rf.feedback]]
    if isinstance(query, BaseModel):
        return []  # fusion, order_by, formula, sample, text: no vectors
    return [query]  # a bare VectorInput means `nearest`


class QueryBuilder:
    """Turns a REST query (with prefetches, ids as vectors ...) into Edge's ``QueryRequest``.

    ``fetch`` resolves ``(point id, vector name)`` pairs to stored vectors; queries that reference
    points by id exclude those points from their results, as Qdrant does.
    """

    def __init__(self, fetch: VectorFetcher) -> None:
        self._fetch = fetch
        self._vectors: dict[tuple[int | str, str], EdgeVector] = {}

    # Reference resolution -------------------------------------------------------------------

    def _collect(self, level: Any, out: list[tuple[int | str, str]]) -> None:
        if getattr(level, "lookup_from", None) is not None:
            raise Unsupported("`lookup_from`")
        using = level.using or DEFAULT_VECTOR_NAME
        for value in _inputs_of(level.query):
            if _is_point_id(value):
                out.append((normalize_point_id(value), using))
        for prefetch in as_list(level.prefetch):
            self._collect(prefetch, out)

    def _resolve_all(self, req: Any) -> None:
        wanted: list[tuple[int | str, str]] = []
        self._collect(req, wanted)
        if wanted:
            self._vectors = self._fetch(list(dict.fromkeys(wanted)))

    def _vector(self, value: VectorInput, using: str, where: str) -> EdgeVector:
        if _is_point_id(value):
            key = (normalize_point_id(value), using)
            if key not in self._vectors:
                raise PointNotFound(key[0])
            return self._vectors[key]
        return edge_vector(value, where)

    # Conversion -----------------------------------------------------------------------------

    def _scoring(self, query: Any, using: str | None, limit: int) -> tuple[EdgeScoring, list[int | str]]:
        """Edge's scoring query and the ids it references (to be excluded from the results)."""
        name = using or DEFAULT_VECTOR_NAME
        referenced = [normalize_point_id(v) for v in _inputs_of(query) if _is_point_id(v)]
        if query is None:
            return None, []
        if _is_inference_object(query):
            raise _inference_error()
        if isinstance(query, models.NearestQuery):
            vector = self._vector(query.nearest, name, "query.nearest")
            if query.mmr is not None:
                diversity = DEFAULT_MMR_DIVERSITY if query.mmr.diversity is None else query.mmr.diversity
                # Edge's `lambda_` weighs relevance (1.0 = plain nearest), Qdrant's `diversity` the
                # opposite; candidates default to the limit as in Qdrant.
                mmr = qe.Mmr(vector, 1.0 - diversity, query.mmr.candidates_limit or limit, using=using)
                return mmr, referenced
            return qe.Query.Nearest(vector, using=using), referenced
        if isinstance(query, models.RecommendQuery):
            return self._recommend(query.recommend, name, using), referenced
        if isinstance(query, models.DiscoverQuery):
            d = query.discover
            pairs = [self._pair(p, name) for p in as_list(d.context)]
            target = self._vector(d.target, name, "query.discover.target")
            return qe.Query.Discover(qe.DiscoverQuery(target, pairs), using=using), referenced
        if isinstance(query, models.ContextQuery):
            pairs = [self._pair(p, name) for p in as_list(query.context)]
            return qe.Query.Context(qe.ContextQuery(pairs), using=using), referenced
        if isinstance(query, models.RelevanceFeedbackQuery):
            rf = query.relevance_feedback
            naive = rf.strategy.naive
            feedback = [
                qe.FeedbackItem(self._vector(item.example, name, "feedback.example"), item.score)
                for item in rf.feedback
            ]
            target = self._vector(rf.target, name, "relevance_feedback.target")
            q = qe.FeedbackNaiveQuery(target, feedback, qe.NaiveFeedbackStrategy(naive.a, naive.b, naive.c))
            return qe.Query.FeedbackNaive(q, using=using), referenced
        if isinstance(query, models.FusionQuery):
            if query.fusion == models.Fusion.RRF:
                return qe.Fusion.Rrf(k=DEFAULT_RRF_K), []
            return qe.Fusion.Dbsf(), []
        if isinstance(query, models.RrfQuery):
            k = DEFAULT_RRF_K if query.rrf.k is None else query.rrf.k
            return qe.Fusion.Rrf(k=k, weights=query.rrf.weights), []
        if isinstance(query, models.OrderByQuery):
            return edge_order_by(query.order_by), []
        if isinstance(query, models.FormulaQuery):
            return qe.Formula(edge_expression(query.formula), query.defaults or None), []
        if isinstance(query, models.SampleQuery):
            return qe.Sample.Random, []
        if isinstance(query, models.TextQuery):
            if not using:
                raise BadRequest("Wrong input: a `text` query needs `using` to name the payload field")
            text = query.text
            if isinstance(text, str):
                return qe.TextQuery(using, text), []
            scoring = None
            if text.scoring is not None:
                scoring = qe.Bm25Params(**_kwargs(k=text.scoring.bm25.k, b=text.scoring.bm25.b))
            return qe.TextQuery(using, text.query, scoring), []
        if isinstance(query, BaseModel) and not isinstance(query, models.SparseVector):
            raise Unsupported(f"query `{type(query).__name__}`")
        # A bare vector or point id means `nearest`.
        return qe.Query.Nearest(self._vector(query, name, "query"), using=using), referenced

    def _pair(self, pair: models.ContextPair, name: str) -> Any:
        return qe.ContextPair(
            self._vector(pair.positive, name, "context.positive"),
            self._vector(pair.negative, name, "context.negative"),
        )

    def _recommend(self, rec: models.RecommendInput, name: str, using: str | None) -> EdgeScoring:
        positives = [self._vector(v, name, "recommend.positive") for v in rec.positive or []]
        negatives = [self._vector(v, name, "recommend.negative") for v in rec.negative or []]
        strategy = rec.strategy or models.RecommendStrategy.AVERAGE_VECTOR
        if strategy == models.RecommendStrategy.BEST_SCORE:
            return qe.Query.RecommendBestScore(qe.RecommendQuery(positives, negatives), using=using)
        if strategy == models.RecommendStrategy.SUM_SCORES:
            return qe.Query.RecommendSumScores(qe.RecommendQuery(positives, negatives), using=using)
        # `average_vector` is a plain nearest search on avg(pos) + (avg(pos) - avg(neg)), computed
        # by the collection layer in Qdrant (lib/collection/src/recommendations.rs), so here too.
        return qe.Query.Nearest(average_vector(positives, negatives), using=using)

    def _prefetch(self, prefetch: models.Prefetch) -> Any:
        limit = DEFAULT_QUERY_LIMIT if prefetch.limit is None else prefetch.limit
        scoring, referenced = self._scoring(prefetch.query, prefetch.using, limit)
        return qe.Prefetch(
            limit=limit,
            **_kwargs(
                query=scoring,
                prefetches=[self._prefetch(p) for p in as_list(prefetch.prefetch)] or None,
                params=edge_search_params(prefetch.params),
                filter=merge_filter_excluding(edge_filter(prefetch.filter), referenced),
                score_threshold=prefetch.score_threshold,
            ),
        )

    def build(
        self,
        req: models.QueryRequest | models.QueryGroupsRequest,
        *,
        limit: int | None = None,
        offset: int | None = None,
        with_payload: Any = None,
        with_vector: Any = None,
    ) -> Any:
        """Edge's ``QueryRequest``; keyword overrides serve ``query_groups``' candidate search."""
        self._resolve_all(req)
        if limit is None:
            limit = DEFAULT_QUERY_LIMIT if req.limit is None else req.limit
        if offset is None:
            offset = getattr(req, "offset", None) or 0
        scoring, referenced = self._scoring(req.query, req.using, limit + offset)
        return qe.QueryRequest(
            limit=limit,
            offset=offset,
            query=scoring,
            prefetches=[self._prefetch(p) for p in as_list(req.prefetch)] or None,
            with_vector=with_vector if with_vector is not None else edge_with_vector(req.with_vector),
            with_payload=(
                with_payload if with_payload is not None else edge_with_payload(req.with_payload, False)
            ),
            filter=merge_filter_excluding(edge_filter(req.filter), referenced),
            score_threshold=req.score_threshold,
            params=edge_search_params(req.params),
        )


def average_vector(positives: Sequence[EdgeVector], negatives: Sequence[EdgeVector]) -> EdgeVector:
    """Qdrant's ``average_vector`` recommendation query: avg(pos) + (avg(pos) - avg(neg))."""
    if not positives:
        raise BadRequest("Wrong input: Positive vectors should not be empty with `average` strategy")
    everything = [*positives, *negatives]
    if all(isinstance(v, qe.SparseVector) for v in everything):
        pos = _sparse_average(positives)
        if not negatives:
            return _sparse_from(pos)
        neg = _sparse_average(negatives)
        merged = {i: 2 * pos.get(i, 0.0) - neg.get(i, 0.0) for i in sorted(set(pos) | set(neg))}
        return _sparse_from(merged)
    if any(isinstance(v, qe.SparseVector) for v in everything):
        raise BadRequest("Wrong input: Can't average dense and sparse vectors together")
    if any(v and isinstance(v[0], list) for v in everything):
        raise BadRequest("Wrong input: MultiDenseVector is not supported")
    try:
        pos_avg = np.mean(np.asarray(positives, dtype=np.float64), axis=0)
        if not negatives:
            return pos_avg.astype(np.float32).tolist()
        neg_avg = np.mean(np.asarray(negatives, dtype=np.float64), axis=0)
        return (2 * pos_avg - neg_avg).astype(np.float32).tolist()
    except ValueError:
        raise BadRequest("Wrong input: recommendation examples have different dimensions") from None


def _sparse_average(vectors: Sequence[Any]) -> dict[int, float]:
    total: dict[int, float] = {}
    for v in vectors:
        for i, x in zip(v.indices, v.values, strict=True):
            total[int(i)] = total.get(int(i), 0.0) + float(x)
    return {i: x / len(vectors) for i, x in total.items()}


def _sparse_from(values: Mapping[int, float]) -> Any:
    indices = sorted(values)
    return qe.SparseVector(indices, [values[i] for i in indices])


def group_values(payload: Mapping[str, Any] | None, path: str) -> list[int | str]:
    """The values a point is grouped under: keyword / integer values at ``path`` (arrays flattened).

    Like Qdrant, a point whose field holds several values joins every group among them; other
    value types (floats, booleans, objects) do not form groups.
    """
    current: list[Any] = [payload or {}]
    for part in path.split("."):
        flatten = part.endswith("[]")
        key = part[:-2] if flatten else part
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, Mapping) and key in item:
                value = item[key]
                if isinstance(value, list):
                    nxt.extend(value)
                else:
                    nxt.append(value)
        current = nxt
    out: list[int | str] = []
    for value in current:
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, bool) or not isinstance(v, int | str):
                continue
            if v not in out:
                out.append(v)
    return out
