"""Filters and conditions: REST models to Edge objects."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import numpy as np
import qdrant_edge as qe
from qdrant_client.http import models

from ..base import (
    PointId,
    Unsupported,
    normalize_point_id,
)
from .common import EdgeCondition, as_list, datetime_str, non_none


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


def geo_point(point: models.GeoPoint) -> Any:
    return qe.GeoPoint(lon=point.lon, lat=point.lat)


def _field_condition(cond: models.FieldCondition) -> Any:
    rng: Any = None
    if isinstance(cond.range, models.DatetimeRange):
        r = cond.range
        rng = qe.RangeDateTime(
            **non_none(
                gte=datetime_str(r.gte) if r.gte is not None else None,
                gt=datetime_str(r.gt) if r.gt is not None else None,
                lte=datetime_str(r.lte) if r.lte is not None else None,
                lt=datetime_str(r.lt) if r.lt is not None else None,
            )
        )
    elif isinstance(cond.range, models.Range):
        r2 = cond.range
        rng = qe.RangeFloat(**non_none(gte=r2.gte, gt=r2.gt, lte=r2.lte, lt=r2.lt))
    bbox = None
    if cond.geo_bounding_box is not None:
        bbox = qe.GeoBoundingBox(
            geo_point(cond.geo_bounding_box.top_left), geo_point(cond.geo_bounding_box.bottom_right)
        )
    radius = None
    if cond.geo_radius is not None:
        radius = qe.GeoRadius(geo_point(cond.geo_radius.center), cond.geo_radius.radius)
    polygon = None
    if cond.geo_polygon is not None:
        polygon = qe.GeoPolygon(
            [geo_point(p) for p in cond.geo_polygon.exterior.points],
            [[geo_point(p) for p in ring.points] for ring in cond.geo_polygon.interiors]
            if cond.geo_polygon.interiors
            else None,
        )
    values_count = None
    if cond.values_count is not None:
        vc = cond.values_count
        values_count = qe.ValuesCount(**non_none(lt=vc.lt, gt=vc.gt, lte=vc.lte, gte=vc.gte))
    return qe.FieldCondition(
        cond.key,
        **non_none(
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
        **non_none(
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
