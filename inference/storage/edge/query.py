"""The universal query: REST `QueryRequest` to an Edge `QueryRequest` (prefetch, fusion, formula, MMR)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import qdrant_edge as qe
from pydantic import BaseModel
from qdrant_client.http import models

from ..base import (
    DEFAULT_VECTOR_NAME,
    BadRequest,
    PointNotFound,
    Unsupported,
    normalize_point_id,
)
from .common import EdgeScoring, EdgeVector, VectorInput, as_list, datetime_str, edge_enum, non_none
from .filters import edge_condition, edge_filter, geo_point, merge_filter_excluding
from .points import edge_vector, edge_with_payload, edge_with_vector, inference_error, is_inference_object

DEFAULT_QUERY_LIMIT = 10  # Qdrant's `CollectionQueryRequest::DEFAULT_LIMIT`, also used for prefetches
DEFAULT_RRF_K = 2  # Qdrant's default `k` for `{"fusion": "rrf"}`; Edge needs it explicitly
DEFAULT_MMR_DIVERSITY = 0.5  # Qdrant's default `mmr.diversity`
# Resolves (point id, vector name) pairs to stored vectors, for queries that name points by id.
# A stored vector named by (collection to look it up in, None = the queried one; point id; vector name).
VectorKey: TypeAlias = tuple[str | None, int | str, str]
VectorFetcher: TypeAlias = Callable[[list[VectorKey]], dict[VectorKey, EdgeVector]]


def edge_order_by(order_by: str | models.OrderBy) -> Any:
    """Edge's ``OrderBy`` for a REST ``order_by`` (a key, or key + direction + start_from)."""
    if isinstance(order_by, str):
        return qe.OrderBy(order_by)
    start: Any = order_by.start_from
    if isinstance(start, dt.datetime | dt.date):
        start = datetime_str(start)
    return qe.OrderBy(
        order_by.key,
        **non_none(
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
            **non_none(ignore=q.ignore, rescore=q.rescore, oversampling=q.oversampling)
        )
    acorn = None
    if params.acorn is not None:
        acorn = qe.AcornSearchParams(
            **non_none(enable=params.acorn.enable, max_selectivity=params.acorn.max_selectivity)
        )
    idf = None
    if isinstance(params.idf, models.IdfCorpusParams):
        idf = qe.IdfParams(corpus=edge_filter(params.idf.corpus))
    return qe.SearchParams(
        **non_none(
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
        return e.GeoDistance(geo_point(expr.geo_distance.origin), expr.geo_distance.to)
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
        self._vectors: dict[VectorKey, EdgeVector] = {}
        # Where ids of the level being converted are looked up: `lookup_from` (collection, vector).
        self._source: tuple[str | None, str | None] = (None, None)

    # Reference resolution -------------------------------------------------------------------

    @staticmethod
    def _source_of(level: Any) -> tuple[str | None, str | None]:
        lookup = getattr(level, "lookup_from", None)
        return (lookup.collection, lookup.vector) if lookup is not None else (None, None)

    def _key(self, value: VectorInput, using: str) -> VectorKey:
        collection, vector = self._source
        return (collection, normalize_point_id(value), vector if vector is not None else using)

    def _collect(self, level: Any, out: list[VectorKey]) -> None:
        self._source = self._source_of(level)
        using = level.using or DEFAULT_VECTOR_NAME
        for value in _inputs_of(level.query):
            if _is_point_id(value):
                out.append(self._key(value, using))
        for prefetch in as_list(level.prefetch):
            self._collect(prefetch, out)

    def _resolve_all(self, req: Any) -> None:
        wanted: list[VectorKey] = []
        self._collect(req, wanted)
        if wanted:
            self._vectors = self._fetch(list(dict.fromkeys(wanted)))

    def _vector(self, value: VectorInput, using: str, where: str) -> EdgeVector:
        if _is_point_id(value):
            key = self._key(value, using)
            if key not in self._vectors:
                raise PointNotFound(key[1])
            return self._vectors[key]
        return edge_vector(value, where)

    # Conversion -----------------------------------------------------------------------------

    def _scoring(self, query: Any, using: str | None, limit: int) -> tuple[EdgeScoring, list[int | str]]:
        """Edge's scoring query and the ids it references (to be excluded from the results)."""
        name = using or DEFAULT_VECTOR_NAME
        # Points named by id are left out of the results, unless they were looked up elsewhere.
        referenced = (
            [normalize_point_id(v) for v in _inputs_of(query) if _is_point_id(v)]
            if self._source[0] is None
            else []
        )
        if query is None:
            return None, []
        if is_inference_object(query):
            raise inference_error()
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
                scoring = qe.Bm25Params(**non_none(k=text.scoring.bm25.k, b=text.scoring.bm25.b))
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
        self._source = self._source_of(prefetch)
        scoring, referenced = self._scoring(prefetch.query, prefetch.using, limit)
        return qe.Prefetch(
            limit=limit,
            **non_none(
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
        self._source = self._source_of(req)
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
        if not all(v and isinstance(v[0], list) for v in everything):
            raise BadRequest("Wrong input: Can't average multi-vectors and regular vectors together")
        # Qdrant (and qdrant-client's local mode) recommend on multi-vectors with one multi-vector made
        # of every row of the positives and every row of the negatives, negated.
        return [list(row) for v in positives for row in v] + [
            [-x for x in row] for v in negatives for row in v
        ]
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
