"""Collection configuration and payload-index schemas: REST models to Edge objects and back."""

from __future__ import annotations

from typing import Any

import qdrant_edge as qe
from qdrant_client.http import models

from ..base import (
    DEFAULT_VECTOR_NAME,
    BadRequest,
    JsonDict,
    Unsupported,
)
from .common import edge_enum, edge_memory, non_none

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
        **non_none(
            on_disk=merged.get("on_disk"),
            payload_m=merged.get("payload_m"),
            inline_storage=merged.get("inline_storage"),
            memory=edge_memory(models.Memory(merged["memory"])) if merged.get("memory") else None,
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
            **non_none(quantile=c.quantile, always_ram=c.always_ram, memory=edge_memory(c.memory)),
        )
    if isinstance(config, models.ProductQuantization):
        p = config.product
        return qe.ProductQuantizationConfig(
            compression=edge_enum(qe.CompressionRatio, p.compression),
            **non_none(always_ram=p.always_ram, memory=edge_memory(p.memory)),
        )
    if isinstance(config, models.BinaryQuantization):
        b = config.binary
        return qe.BinaryQuantizationConfig(
            **non_none(
                always_ram=b.always_ram,
                encoding=edge_enum(qe.BinaryQuantizationEncoding, b.encoding) if b.encoding else None,
                query_encoding=(
                    edge_enum(qe.BinaryQuantizationQueryEncoding, b.query_encoding)
                    if b.query_encoding
                    else None
                ),
                memory=edge_memory(b.memory),
            )
        )
    if isinstance(config, models.TurboQuantization):
        t = config.turbo
        return qe.TurboQuantQuantizationConfig(
            **non_none(
                always_ram=t.always_ram,
                bits=edge_enum(qe.TurboQuantBitSize, t.bits) if t.bits else None,
                memory=edge_memory(t.memory),
            )
        )
    raise Unsupported(f"quantization `{type(config).__name__}`")


# The hidden vector of a payload-only collection (see `edge_config`); refused as a name for a new vector.
PAYLOAD_ONLY_VECTOR = "__payload_only__"


def edge_config(config: models.CreateCollection, *, search_threads: int | None = None) -> Any:
    """Edge's shard config for a REST ``CreateCollection``.

    Sharding, replication, WAL sizes and collection metadata have no Edge counterpart: the store
    keeps them in its registry and reports them back in ``get_collection``. `search_threads` sizes the
    shard's search pool (None: one per CPU); Edge keeps it with the shard.
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
            **non_none(
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
                memory=edge_memory(params.memory),
            ),
        )

    sparse: dict[str, Any] = {}
    for name, sparams in (config.sparse_vectors or {}).items():
        index = sparams.index
        sparse[name] = qe.EdgeSparseVectorParams(
            **non_none(
                full_scan_threshold=index.full_scan_threshold if index else None,
                on_disk=index.on_disk if index else None,
                modifier=edge_enum(qe.Modifier, sparams.modifier) if sparams.modifier else None,
                datatype=(
                    edge_enum(qe.VectorStorageDatatype, index.datatype) if index and index.datatype else None
                ),
                memory=edge_memory(index.memory) if index else None,
            )
        )

    if not vectors and not sparse:
        # Edge refuses a shard without vectors; a payload-only collection gets a hidden sparse vector that
        # no point ever fills, and which the registry's config (what clients see) does not list.
        sparse[PAYLOAD_ONLY_VECTOR] = qe.EdgeSparseVectorParams()

    optimizers = None
    if config.optimizers_config is not None:
        o = config.optimizers_config
        # `prevent_unoptimized` is deliberately not passed: Edge would hide points written to large
        # segments until `optimize()` runs, and this store never optimizes on a request path.
        optimizers = qe.EdgeOptimizersConfig(
            **non_none(
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
        **non_none(
            on_disk_payload=config.on_disk_payload,
            hnsw_config=collection_hnsw if config.hnsw_config is not None else None,
            quantization_config=edge_quantization(config.quantization_config),
            optimizers=optimizers,
            max_search_threads=search_threads,
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
        "strict_mode_config": (
            config.strict_mode_config.model_dump(mode="json", exclude_none=True)
            if config.strict_mode_config is not None
            else {"enabled": False}
        ),
    }
    if config.metadata:
        result["metadata"] = config.metadata
    return result


def _dump(model: Any) -> Any:
    if isinstance(model, dict):
        return {k: _dump(v) for k, v in model.items()}
    return model.model_dump(mode="json", exclude_none=True)


def edge_index_schema(schema: models.PayloadFieldSchema) -> Any:
    """Edge's payload index schema for a REST ``field_schema`` (a type name or typed params)."""
    if isinstance(schema, models.PayloadSchemaType | str):
        return edge_enum(qe.PayloadSchemaType, schema)
    fields = schema.model_dump(exclude_none=True, exclude={"type"})
    if "memory" in fields:
        fields["memory"] = edge_memory(schema.memory)
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
                    **non_none(
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
