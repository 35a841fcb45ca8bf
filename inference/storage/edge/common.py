"""Type aliases and small helpers shared by the Edge translation modules."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, TypeAlias

import numpy as np
import qdrant_edge as qe
from qdrant_client.http import models

from ..base import (
    Unsupported,
)

EdgeCondition: TypeAlias = Any  # one of Edge's condition classes (FieldCondition, HasIdCondition, ...)
EdgeVector: TypeAlias = Any  # list[float] | list[list[float]] | qe.SparseVector
EdgeScoring: TypeAlias = Any  # qe.Query | Fusion.* | OrderBy | Formula | Sample | Mmr | TextQuery
VectorInput: TypeAlias = Any  # models.VectorInput: a raw vector, a point id or an inference object


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


def non_none(**values: Any) -> dict[str, Any]:
    """Keyword arguments without the ``None`` ones, so Edge applies its own defaults."""
    return {k: v for k, v in values.items() if v is not None}


def edge_memory(value: models.Memory | None) -> Any:
    return edge_enum(qe.Memory, value) if value is not None else None


def f32(value: float) -> float:
    """A float32 score as the shortest decimal that round-trips, as Qdrant's JSON prints it."""
    return float(str(np.float32(value)))


def datetime_str(value: dt.datetime | dt.date | str) -> str:
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
