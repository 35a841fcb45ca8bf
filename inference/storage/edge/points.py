"""Points, vectors and payload selectors to Edge objects; Edge records and scored points to REST JSON."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import qdrant_edge as qe
from qdrant_client.http import models

from ..base import (
    DEFAULT_VECTOR_NAME,
    BadRequest,
    JsonDict,
    WithPayload,
    WithVector,
    normalize_point_id,
)
from .common import EdgeVector, f32


def is_inference_object(value: Any) -> bool:
    return isinstance(value, models.Document | models.Image | models.InferenceObject)


def inference_error() -> BadRequest:
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
    if is_inference_object(value):
        raise inference_error()
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
        "score": f32(point.score),
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
