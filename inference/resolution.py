"""Replace the inference objects of Qdrant REST request bodies by vectors, as Qdrant Cloud Inference does.

An inference object is a JSON object with a ``model`` and exactly one of ``text`` (Document), ``image``
(Image) or ``object`` (Object), plus optional ``options``. Qdrant resolves them only in some places
(src/common/inference/update_requests.rs, batch_processing.rs, query_requests_rest.rs); this module walks
exactly those places of a raw JSON body, embeds every object found in ONE call to the engine (identical
objects are sent once and billed once), writes the vectors into a deep copy of the body and checks every
vector against the collection's :class:`VectorConfig` before anything is written.

Shapes it does not recognise are left alone for the pydantic parse that follows to reject; raw vectors,
point ids and everything else pass through untouched. Nothing here logs or keeps the raw inputs.
No Django imports: the data-plane API calls :class:`Resolver` with a plain ``embed`` callable.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inference.engine.engine import Embeddings
from inference.engine.types import EmbedRequest, InputType, Kind, SparseVector, Vector, vector_json
from inference.storage.base import DEFAULT_VECTOR_NAME, BadRequest, StorageError, VectorConfig

__all__ = ["InferenceDisabled", "Resolved", "Resolver"]

EmbedFn = Callable[[Sequence[EmbedRequest]], Embeddings]

# The key holding the input of each kind of inference object, and how Qdrant names that kind in messages.
_DATA_KEYS: dict[str, InputType] = {
    "text": InputType.TEXT,
    "image": InputType.IMAGE,
    "object": InputType.OBJECT,
}
_KIND_WORD: dict[InputType, str] = {
    InputType.TEXT: "Document",
    InputType.IMAGE: "Image",
    InputType.OBJECT: "Object",
}

# Qdrant's texts for vectors that do not fit the collection: `OperationError` (lib/segment/src/common/
# operation_error.rs) as turned into `CollectionError::BadInput` (lib/collection/src/operations/types.rs).
_WRONG_SPARSE = "Wrong input: Conversion between sparse and regular vectors failed"
_WRONG_MULTI = "Wrong input: Conversion between multi and regular vectors failed"


@dataclass(frozen=True)
class Resolved:
    """A request body with every inference object replaced by its vector, and the tokens it cost.

    ``usage`` maps each model's canonical name to the tokens processed (identical inputs counted once); it
    is empty when the body held no inference object, so callers bill only what :attr:`usage` says.
    """

    body: dict[str, Any]
    usage: dict[str, int]


class InferenceDisabled(BadRequest):
    """The body holds inference objects but the cluster has inference turned off (400)."""

    def __init__(self) -> None:
        super().__init__(
            "Bad request: Inference is not enabled for this cluster. "
            "Enable it in the console's Inference tab, or send vectors."
        )


# --------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """What a vector looks like: ``"dense"`` / ``"multi"`` (with the length of each row) or ``"sparse"``."""

    kind: str
    dims: tuple[int, ...] = ()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _raw_shape(value: object) -> _Shape | None:
    """The shape of a raw JSON vector, or None when it is not one (left for the parser to reject)."""
    if isinstance(value, list) and value:
        if all(_is_number(x) for x in value):
            return _Shape("dense", (len(value),))
        if all(isinstance(row, list) and row and all(_is_number(x) for x in row) for row in value):
            return _Shape("multi", tuple(len(row) for row in value))
        return None
    if isinstance(value, dict) and set(value) == {"indices", "values"}:
        return _Shape("sparse")
    return None


def _result_shape(vector: Vector) -> _Shape:
    if isinstance(vector, SparseVector):
        return _Shape("sparse")
    if vector and isinstance(vector[0], list):
        return _Shape("multi", tuple(len(row) for row in vector if isinstance(row, list)))
    return _Shape("dense", (len(vector),))


def _inference_object(value: object) -> tuple[InputType, Any, str, dict[str, Any] | None] | None:
    """``(input type, data, model, options)`` if ``value`` is a Document / Image / Object, else None.

    Mirrors Qdrant's untagged parse: a string ``model``, exactly one data key, no other keys; a Document's
    ``text`` must be a string and ``options`` an object or null.
    """
    if not isinstance(value, dict) or not isinstance(value.get("model"), str):
        return None
    data_keys = [key for key in _DATA_KEYS if key in value]
    if len(data_keys) != 1 or not set(value) <= {"model", "options", data_keys[0]}:
        return None
    input_type = _DATA_KEYS[data_keys[0]]
    data = value[data_keys[0]]
    options = value.get("options")
    if (input_type is InputType.TEXT and not isinstance(data, str)) or not (
        options is None or isinstance(options, dict)
    ):
        return None
    return input_type, data, value["model"], options


# --------------------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One inference object found in the body: where its vector goes and what it is checked against.

    ``target`` is the vector name (``""`` for the default vector, None when the request names it in a way
    the parser will reject anyway); ``unnamed`` marks a point's plain ``vector`` field, which must not be
    sparse; ``query`` relaxes the dense/multivector distinction the way Qdrant's query planner does.
    """

    container: dict[str, Any] | list[Any]
    key: str | int
    request: EmbedRequest
    target: str | None
    unnamed: bool = False
    query: bool = False


class _Walk:
    """Collects the inference objects of one body and checks its raw vectors on the way."""

    def __init__(self, config: VectorConfig, kind: Kind) -> None:
        self.config = config
        self.kind = kind
        self.slots: list[_Slot] = []

    # Objects ------------------------------------------------------------------------------------

    def _take(
        self,
        container: dict[str, Any] | list[Any],
        key: str | int,
        target: str | None,
        *,
        unnamed: bool = False,
        query: bool = False,
    ) -> bool:
        """Record ``container[key]`` if it is an inference object; True if it was one."""
        value = container[key]  # type: ignore[index]
        found = _inference_object(value)
        if found is None:
            return False
        input_type, data, model, options = found
        request = EmbedRequest(model=model, kind=self.kind, input_type=input_type, data=data, options=options)
        self.slots.append(_Slot(container, key, request, target, unnamed=unnamed, query=query))
        return True

    # Writes --------------------------------------------------------------------------------------

    def upsert(self, op: object) -> None:
        """``{"points": [PointStruct]}`` or ``{"batch": {"ids", "vectors", "payloads"}}``."""
        if not isinstance(op, dict):
            return
        points = op.get("points")
        if isinstance(points, list):
            for point in points:
                if isinstance(point, dict) and "vector" in point:
                    self._point_vector(point, allow_unnamed_object=True)
        batch = op.get("batch")
        if isinstance(batch, dict):
            self._batch_vectors(batch.get("vectors"))

    def update_vectors(self, op: object) -> None:
        """``{"points": [PointVectors]}``: objects only under a vector name."""
        if not isinstance(op, dict):
            return
        points = op.get("points")
        if isinstance(points, list):
            for point in points:
                if isinstance(point, dict) and "vector" in point:
                    self._point_vector(point, allow_unnamed_object=False)

    def _point_vector(self, point: dict[str, Any], *, allow_unnamed_object: bool) -> None:
        vector = point["vector"]
        found = _inference_object(vector)
        if found is not None:
            if not allow_unnamed_object:
                # update_requests.rs `convert_point_vectors`: StorageError::inference_error (400, no prefix).
                raise BadRequest(
                    f"Direct {_KIND_WORD[found[0]]} processing not supported for PointVectors. "
                    "Use named vectors."
                )
            self._take(point, "vector", DEFAULT_VECTOR_NAME, unnamed=True)
            return
        if isinstance(vector, dict):
            for name, value in vector.items():
                if isinstance(name, str) and not self._take(vector, name, name):
                    self._check_raw(name, value)
        else:
            self._check_raw(DEFAULT_VECTOR_NAME, vector)

    def _batch_vectors(self, vectors: object) -> None:
        if isinstance(vectors, list):
            for value in vectors:
                found = _inference_object(value)
                if found is not None:
                    # update_requests.rs `convert_batch`: StorageError::inference_error (400, no prefix).
                    raise BadRequest(
                        f"Direct {_KIND_WORD[found[0]]} processing is not supported in top-level batch "
                        "vectors. Use named vectors."
                    )
                self._check_raw(DEFAULT_VECTOR_NAME, value)
        elif isinstance(vectors, dict):
            for name, values in vectors.items():
                if isinstance(name, str) and isinstance(values, list):
                    for index, value in enumerate(values):
                        if not self._take(values, index, name):
                            self._check_raw(name, value)

    def _check_raw(self, name: str, value: object) -> None:
        shape = _raw_shape(value)
        if shape is not None:
            _check(self.config, name, shape)

    # Queries -------------------------------------------------------------------------------------

    def query_request(self, request: object) -> None:
        """A query / query-groups request or a prefetch: ``query`` against ``using``, then prefetches."""
        if not isinstance(request, dict):
            return
        using = request.get("using", DEFAULT_VECTOR_NAME)
        target = DEFAULT_VECTOR_NAME if using is None else using if isinstance(using, str) else None
        if "query" in request:
            self._query(request, target)
        prefetch = request.get("prefetch")
        for sub in prefetch if isinstance(prefetch, list) else [prefetch]:
            self.query_request(sub)

    def _query(self, request: dict[str, Any], target: str | None) -> None:
        """``query``: a bare VectorInput, or nearest / recommend / discover / context / relevance_feedback."""
        if self._input(request, "query", target):
            return
        query = request["query"]
        if not isinstance(query, dict):
            return
        if "nearest" in query:
            self._input(query, "nearest", target)
        recommend = query.get("recommend")
        if isinstance(recommend, dict):
            for side in ("positive", "negative"):
                examples = recommend.get(side)
                if isinstance(examples, list):
                    for index in range(len(examples)):
                        self._input(examples, index, target)
        discover = query.get("discover")
        if isinstance(discover, dict):
            if "target" in discover:
                self._input(discover, "target", target)
            self._context_pairs(discover.get("context"), target)
        if "context" in query:
            self._context_pairs(query["context"], target)
        feedback = query.get("relevance_feedback")
        if isinstance(feedback, dict):
            if "target" in feedback:
                self._input(feedback, "target", target)
            items = feedback.get("feedback")
            if isinstance(items, list):
                for item in items:
                    if isinstance(item, dict) and "example" in item:
                        self._input(item, "example", target)

    def _context_pairs(self, pairs: object, target: str | None) -> None:
        """One ``{"positive", "negative"}`` pair or a list of them."""
        for pair in pairs if isinstance(pairs, list) else [pairs]:
            if isinstance(pair, dict):
                for side in ("positive", "negative"):
                    if side in pair:
                        self._input(pair, side, target)

    def _input(self, container: dict[str, Any] | list[Any], key: str | int, target: str | None) -> bool:
        return self._take(container, key, target, query=True)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _dimension_error(expected: int, got: int) -> BadRequest:
    # OperationError::WrongVectorDimension behind CollectionError::BadInput's "Wrong input: " prefix.
    return BadRequest(f"Wrong input: Vector dimension error: expected dim: {expected}, got {got}")


def _check(config: VectorConfig, name: str, shape: _Shape, *, query: bool = False, note: str = "") -> None:
    """Raise the BadRequest Qdrant answers when ``shape`` does not fit vector ``name`` of the collection.

    ``note`` is appended to kind-mismatch errors of inferred vectors, so users learn which model produced
    what. Queries accept a plain vector against a multivector and the reverse (Qdrant converts them).
    """
    dense = config.dense.get(name)
    if dense is not None:
        if shape.kind == "sparse":
            raise BadRequest(_WRONG_SPARSE + note)
        if not query and (shape.kind == "multi") != dense.multivector:
            raise BadRequest(_WRONG_MULTI + note)
        for dim in shape.dims:
            if dim != dense.size:
                raise _dimension_error(dense.size, dim)
        return
    if name in config.sparse:
        if shape.kind == "dense":
            raise BadRequest(_WRONG_SPARSE + note)
        if shape.kind == "multi":
            raise BadRequest(_WRONG_MULTI + note)
        return
    _check_name(config, name)


def _check_name(config: VectorConfig, name: str) -> None:
    if name not in config.dense and name not in config.sparse:
        # OperationError::VectorNameNotExists; same text as the storage layer's check.
        raise BadRequest(f"Wrong input: Not existing vector name error: {name}")


def _check_inferred(config: VectorConfig, slot: _Slot, shape: _Shape) -> None:
    if slot.unnamed and shape.kind == "sparse":
        # update_requests.rs `convert_point_struct`: StorageError::bad_request -> "Bad request: " prefix.
        word = _KIND_WORD[slot.request.input_type].lower()
        raise BadRequest(f"Bad request: Sparse vector from {word} inference should be named")
    if slot.target is None:
        return
    produces = {"dense": "dense", "multi": "multivector", "sparse": "sparse"}[shape.kind]
    note = f" (model `{slot.request.model}` produces {produces} vectors)"
    _check(config, slot.target, shape, query=slot.query, note=note)


# --------------------------------------------------------------------------------------------------
# The resolver
# --------------------------------------------------------------------------------------------------


class Resolver:
    """Resolves the inference objects of one cluster's request bodies, one method per endpoint.

    ``embed`` is the engine's :meth:`Engine.embed` (or any callable with its contract); it is called at most
    once per body, with each distinct object once. ``inference_enabled`` is the cluster's switch: when off,
    a body holding any inference object raises :class:`InferenceDisabled` while raw vectors still work.
    Every method returns a :class:`Resolved` with a deep copy of the body, never mutating the input, and
    raises :class:`BadRequest` for vectors that do not fit ``config``; engine errors propagate unchanged.
    """

    def __init__(self, embed: EmbedFn, *, inference_enabled: bool) -> None:
        self._embed = embed
        self._inference_enabled = inference_enabled

    def upsert(self, body: dict[str, Any], config: VectorConfig) -> Resolved:
        """``PUT /collections/{c}/points`` (list or batch form); objects are embedded as documents."""
        return self._resolve(body, config, Kind.DOCUMENT, lambda walk, work: walk.upsert(work))

    def update_vectors(self, body: dict[str, Any], config: VectorConfig) -> Resolved:
        """``PUT /collections/{c}/points/vectors``; objects (named vectors only) are embedded as documents."""
        return self._resolve(body, config, Kind.DOCUMENT, lambda walk, work: walk.update_vectors(work))

    def points_batch(self, body: dict[str, Any], config: VectorConfig) -> Resolved:
        """``POST /collections/{c}/points/batch``: the ``upsert`` and ``update_vectors`` operations."""

        def collect(walk: _Walk, work: dict[str, Any]) -> None:
            operations = work.get("operations")
            if not isinstance(operations, list):
                return
            for operation in operations:
                if not isinstance(operation, dict):
                    continue
                if "upsert" in operation:
                    walk.upsert(operation["upsert"])
                if "update_vectors" in operation:
                    walk.update_vectors(operation["update_vectors"])

        return self._resolve(body, config, Kind.DOCUMENT, collect)

    def query(self, body: dict[str, Any], config: VectorConfig) -> Resolved:
        """``POST .../points/query`` and ``.../points/query/groups``; objects are embedded as queries."""
        return self._resolve(body, config, Kind.QUERY, lambda walk, work: walk.query_request(work))

    def query_batch(self, body: dict[str, Any], config: VectorConfig) -> Resolved:
        """``POST .../points/query/batch``: every search's objects, embedded as queries in one call."""

        def collect(walk: _Walk, work: dict[str, Any]) -> None:
            searches = work.get("searches")
            if isinstance(searches, list):
                for search in searches:
                    walk.query_request(search)

        return self._resolve(body, config, Kind.QUERY, collect)

    def _resolve(
        self,
        body: dict[str, Any],
        config: VectorConfig,
        kind: Kind,
        collect: Callable[[_Walk, dict[str, Any]], None],
    ) -> Resolved:
        if not isinstance(body, dict):
            return Resolved(body=body, usage={})
        walk = _Walk(config, kind)
        collect(walk, body)  # raises on raw vectors that do not fit, before any inference; reads only
        if not walk.slots:
            # Nothing to embed: the body as it came (a copy of 384 floats per point cost a raw-vector
            # query ~0.3 ms, the largest item after the model).
            return Resolved(body=body, usage={})
        # The vectors replace the objects in a copy, so the caller's body stays as the client sent it.
        work = copy.deepcopy(body)
        walk = _Walk(config, kind)
        collect(walk, work)
        if not self._inference_enabled:
            raise InferenceDisabled()
        for slot in walk.slots:
            # A named target that does not exist fails before any compute is spent (and billed). The
            # unnamed point vector is checked after inference: a sparse result must fail as "should be named".
            if not slot.unnamed and slot.target is not None:
                _check_name(config, slot.target)

        # One call for the whole body, each distinct object once (the engine dedups the same way).
        index_of: dict[tuple[str, ...], int] = {}
        distinct: list[EmbedRequest] = []
        for slot in walk.slots:
            key = slot.request.dedup_key()
            if key not in index_of:
                index_of[key] = len(distinct)
                distinct.append(slot.request)
        embeddings = self._embed(distinct)
        if len(embeddings.results) != len(distinct):
            raise StorageError(
                f"Service internal error: inference returned {len(embeddings.results)} vectors "
                f"for {len(distinct)} inputs"
            )

        for slot in walk.slots:
            vector = embeddings.results[index_of[slot.request.dedup_key()]].vector
            _check_inferred(config, slot, _result_shape(vector))
            slot.container[slot.key] = vector_json(vector)  # type: ignore[index]
        return Resolved(body=work, usage=dict(embeddings.usage))
