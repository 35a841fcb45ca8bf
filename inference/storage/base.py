"""The storage interface every backend of a cluster's vector data implements, and its errors.

The data-plane API parses Qdrant REST request bodies into ``qdrant_client.http.models`` and calls a
:class:`VectorStore`; results come back as JSON-ready values in the shape of Qdrant's REST ``result``
field, so the API can wrap them as ``{"result": ..., "status": "ok", "time": t}`` and qdrant-client can
parse them. Errors are :class:`StorageError` with the HTTP status and message Qdrant would answer with;
the API wraps them as ``{"status": {"error": message}, "time": t}``.

Nothing here imports Django: the storage layer is usable from workers, scripts and tests alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

from qdrant_client.http import models

JsonDict: TypeAlias = dict[str, Any]
PointId: TypeAlias = int | str | uuid.UUID
WithPayload: TypeAlias = bool | Sequence[str] | models.PayloadSelectorInclude | models.PayloadSelectorExclude
WithVector: TypeAlias = bool | Sequence[str]
# A points selector as the REST API accepts it, or a bare list of ids for callers that have one at hand.
Selector: TypeAlias = models.PointIdsList | models.FilterSelector | Sequence[PointId]

# Qdrant's name of the unnamed ("default") vector; a collection created with `vectors: {size, distance}`
# stores its vectors under this name, and Qdrant Edge uses the same name.
DEFAULT_VECTOR_NAME = ""

MAX_COLLECTION_NAME_LENGTH = 255
# Same set as Qdrant's `validate_collection_name` (lib/common/common/src/validation.rs).
_FORBIDDEN_NAME_CHARS = ("<", ">", ":", '"', "/", "\\", "|", "?", "*", "\0", "\u001f")


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class StorageError(Exception):
    """A failed storage operation, carrying the HTTP status and the message Qdrant would answer with.

    ``message`` already holds Qdrant's prefix ("Wrong input: ", "Not found: ", "Bad request: ",
    "Service internal error: "), so the API layer can put it into ``{"status": {"error": message}}``
    unchanged.
    """

    default_status = 500

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code if status_code is not None else self.default_status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code}, message={self.message!r})"


class CollectionNotFound(StorageError):
    """The collection does not exist: 404 "Not found: Collection `NAME` doesn't exist!"."""

    default_status = 404

    def __init__(self, name: str) -> None:
        # Text from Qdrant's `Checker::validate_collection_exists` (lib/storage/src/content_manager/
        # collections_ops.rs) behind the "Not found: " prefix of `StorageError::NotFound`.
        super().__init__(f"Not found: Collection `{name}` doesn't exist!")
        self.name = name


class CollectionExists(StorageError):
    """Creating an existing collection: 400 "Wrong input: Collection `NAME` already exists!" as in Qdrant."""

    default_status = 400

    def __init__(self, name: str) -> None:
        # Qdrant raises `StorageError::BadInput` here (`validate_collection_not_exists`), hence 400.
        super().__init__(f"Wrong input: Collection `{name}` already exists!")
        self.name = name


class BadRequest(StorageError):
    """Invalid input (unknown vector name, wrong dimension, malformed id ...): 400 unless told otherwise."""

    default_status = 400


class PointNotFound(StorageError):
    """An operation referenced a point id that does not exist: 404 "Not found: No point with id X found"."""

    default_status = 404

    def __init__(self, point_id: PointId) -> None:
        super().__init__(f"Not found: No point with id {point_id} found")
        self.point_id = point_id


class Unsupported(BadRequest):
    """A Qdrant feature this backend cannot serve (e.g. ``lookup_from`` on the embedded storage): 400."""

    def __init__(self, feature: str, backend: str = "the embedded storage") -> None:
        super().__init__(f"Bad request: {feature} is not supported by {backend}")
        self.feature = feature


class StoreClosed(StorageError):
    """The store was closed; a programming error in the caller rather than a client error."""

    default_status = 503

    def __init__(self) -> None:
        super().__init__("Service internal error: the vector storage is closed")


# --------------------------------------------------------------------------------------------------
# Vector configuration summary
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenseVectorSpec:
    """One dense vector of a collection: its dimension, distance and whether it holds multivectors."""

    size: int
    distance: str
    multivector: bool = False


@dataclass(frozen=True)
class SparseVectorSpec:
    """One sparse vector of a collection; ``modifier`` is ``"idf"`` or ``None``."""

    modifier: str | None = None


@dataclass(frozen=True)
class VectorConfig:
    """The vectors a collection accepts, so the API layer can check names and dimensions before writing.

    The unnamed vector of a collection created with ``vectors: {size, distance}`` is under
    :data:`DEFAULT_VECTOR_NAME` (``""``) in ``dense``.
    """

    dense: dict[str, DenseVectorSpec] = field(default_factory=dict)
    sparse: dict[str, SparseVectorSpec] = field(default_factory=dict)

    @classmethod
    def from_params(
        cls,
        vectors: models.VectorParams | dict[str, models.VectorParams] | None,
        sparse_vectors: dict[str, models.SparseVectorParams] | None,
    ) -> VectorConfig:
        """Build the summary from a collection's ``vectors`` / ``sparse_vectors`` params."""
        if isinstance(vectors, models.VectorParams):
            named: dict[str, models.VectorParams] = {DEFAULT_VECTOR_NAME: vectors}
        else:
            named = dict(vectors or {})
        dense = {
            name: DenseVectorSpec(
                size=params.size,
                distance=str(params.distance.value),
                multivector=params.multivector_config is not None,
            )
            for name, params in named.items()
        }
        sparse = {
            name: SparseVectorSpec(
                modifier=(
                    params.modifier.value
                    if params.modifier is not None and params.modifier != models.Modifier.NONE
                    else None
                )
            )
            for name, params in (sparse_vectors or {}).items()
        }
        return cls(dense=dense, sparse=sparse)


# --------------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class VectorStore(Protocol):
    """One cluster's vector data: collections and their points, in Qdrant REST shapes.

    Every method raises :class:`StorageError` (or a subclass) on failure; results are plain
    dicts/lists ready for ``json.dumps`` and equal to what Qdrant returns in ``result``.
    """

    # Collections ------------------------------------------------------------------------------

    def list_collections(self) -> list[str]:
        """Names of all collections (``GET /collections`` lists them as ``{"name": ...}``)."""
        ...

    def collection_exists(self, name: str) -> bool:
        """Whether the collection exists (``GET /collections/{name}/exists``)."""
        ...

    def create_collection(self, name: str, config: models.CreateCollection) -> None:
        """Create a collection (``PUT /collections/{name}``); :class:`CollectionExists` if it exists."""
        ...

    def get_collection(self, name: str) -> JsonDict:
        """``CollectionInfo`` of ``GET /collections/{name}``."""
        ...

    def delete_collection(self, name: str) -> bool:
        """Drop a collection and its data; ``False`` if it did not exist (Qdrant answers 200 false)."""
        ...

    def vector_config(self, name: str) -> VectorConfig:
        """The dense / sparse / multivector configuration, for checks before writing."""
        ...

    def create_payload_index(
        self, name: str, field_name: str, field_schema: models.PayloadFieldSchema
    ) -> JsonDict:
        """Index a payload field (``PUT /collections/{name}/index``); needed by ``order_by`` and facets."""
        ...

    def delete_payload_index(self, name: str, field_name: str) -> JsonDict:
        """Drop a payload index (``DELETE /collections/{name}/index/{field_name}``)."""
        ...

    def update_collection(self, name: str, req: models.UpdateCollection) -> None:
        """Apply a collection update (``PATCH /collections/{name}``)."""
        ...

    def create_vector(self, name: str, vector_name: str, config: models.VectorNameConfig) -> JsonDict:
        """Add a named vector to a collection (``PUT /collections/{name}/vectors/{vector_name}``)."""
        ...

    def delete_vector(self, name: str, vector_name: str) -> JsonDict:
        """Drop a named vector and its data (``DELETE /collections/{name}/vectors/{vector_name}``)."""
        ...

    def update_aliases(self, actions: Sequence[models.AliasOperations]) -> None:
        """Create / delete / rename aliases atomically (``POST /collections/aliases``)."""
        ...

    def list_aliases(self, collection: str | None = None) -> list[JsonDict]:
        """``[{"alias_name", "collection_name"}]`` of one collection or of all (``GET /aliases``)."""
        ...

    def cluster_info(self, name: str) -> JsonDict:
        """``CollectionClusterInfo`` (``GET /collections/{name}/cluster``)."""
        ...

    # Points -----------------------------------------------------------------------------------

    def upsert(
        self,
        name: str,
        points: Sequence[models.PointStruct],
        *,
        update_filter: models.Filter | None = None,
        update_mode: models.UpdateMode | None = None,
    ) -> JsonDict:
        """Insert or replace points; ``UpdateResult`` ``{"operation_id", "status": "completed"}``."""
        ...

    def retrieve(
        self,
        name: str,
        ids: Sequence[PointId],
        *,
        with_payload: WithPayload = True,
        with_vector: WithVector = False,
    ) -> list[JsonDict]:
        """``Record`` dicts of the points that exist, in the order of ``ids`` (``POST .../points``)."""
        ...

    def scroll(self, name: str, req: models.ScrollRequest) -> JsonDict:
        """``{"points": [Record], "next_page_offset": id | None}`` (``POST .../points/scroll``)."""
        ...

    def count(self, name: str, req: models.CountRequest) -> JsonDict:
        """``{"count": n}`` (``POST .../points/count``)."""
        ...

    def delete_points(self, name: str, selector: Selector) -> JsonDict:
        """Delete points by ids or filter; ``UpdateResult``."""
        ...

    def set_payload(self, name: str, req: models.SetPayload) -> JsonDict:
        """Merge keys into payloads (``POST .../points/payload``); ``UpdateResult``."""
        ...

    def overwrite_payload(self, name: str, req: models.SetPayload) -> JsonDict:
        """Replace payloads (``PUT .../points/payload``); ``UpdateResult``."""
        ...

    def delete_payload(self, name: str, req: models.DeletePayload) -> JsonDict:
        """Remove payload keys (``POST .../points/payload/delete``); ``UpdateResult``."""
        ...

    def clear_payload(self, name: str, selector: Selector) -> JsonDict:
        """Remove whole payloads (``POST .../points/payload/clear``); ``UpdateResult``."""
        ...

    def update_vectors(
        self,
        name: str,
        points: Sequence[models.PointVectors],
        *,
        update_filter: models.Filter | None = None,
    ) -> JsonDict:
        """Replace some named vectors of existing points (``PUT .../points/vectors``); ``UpdateResult``."""
        ...

    def delete_vectors(self, name: str, req: models.DeleteVectors) -> JsonDict:
        """Remove named vectors from points (``POST .../points/vectors/delete``); ``UpdateResult``."""
        ...

    # Queries ----------------------------------------------------------------------------------

    def query(self, name: str, req: models.QueryRequest) -> JsonDict:
        """``{"points": [ScoredPoint]}`` (``POST .../points/query``)."""
        ...

    def query_batch(self, name: str, reqs: Sequence[models.QueryRequest]) -> list[JsonDict]:
        """One ``{"points": [...]}`` per request (``POST .../points/query/batch``)."""
        ...

    def query_groups(self, name: str, req: models.QueryGroupsRequest) -> JsonDict:
        """``{"groups": [{"id", "hits"}]}`` (``POST .../points/query/groups``)."""
        ...

    def facet(self, name: str, req: models.FacetRequest) -> JsonDict:
        """``{"hits": [{"value", "count"}]}`` (``POST .../facet``)."""
        ...

    def close(self) -> None:
        """Release every resource; later calls fail with :class:`StoreClosed`."""
        ...


# --------------------------------------------------------------------------------------------------
# Helpers shared by the backends
# --------------------------------------------------------------------------------------------------


def validate_collection_name(name: str) -> None:
    """Apply Qdrant's collection-name rules: 1..255 characters, none of ``<>:"/\\|?*``, NUL or 0x1F.

    Qdrant rejects such names while validating the path, with 422 and
    ``Validation error in path parameters: [name: collection name cannot contain "/" char]``.
    """
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_COLLECTION_NAME_LENGTH:
        raise BadRequest(
            "Validation error in path parameters: "
            f"[name: length must be between 1 and {MAX_COLLECTION_NAME_LENGTH} characters]",
            status_code=422,
        )
    for char in _FORBIDDEN_NAME_CHARS:
        if char in name:
            raise BadRequest(
                f'Validation error in path parameters: [name: collection name cannot contain "{char}" char]',
                status_code=422,
            )


def normalize_point_id(point_id: object) -> int | str:
    """A point id as Qdrant accepts it: an unsigned integer or a UUID (returned in canonical form).

    Qdrant accepts any UUID spelling (hyphenated, simple, braced, URN) and answers with the hyphenated
    lower-case form; anything else is rejected before it reaches the engine.
    """
    if isinstance(point_id, bool):
        raise _bad_point_id(point_id)
    if isinstance(point_id, int):
        if point_id < 0 or point_id >= 2**64:
            raise _bad_point_id(point_id)
        return point_id
    if isinstance(point_id, uuid.UUID):
        return str(point_id)
    if isinstance(point_id, str):
        try:
            return str(uuid.UUID(point_id))
        except ValueError:
            raise _bad_point_id(point_id) from None
    raise _bad_point_id(point_id)


def _bad_point_id(point_id: object) -> BadRequest:
    return BadRequest(
        f"Wrong input: value {point_id!r} is not a valid point ID, "
        "valid values are either an unsigned integer or a UUID"
    )


def normalize_point_ids(ids: Sequence[object]) -> list[PointId]:
    """:func:`normalize_point_id` over a list (typed as the engine's id union)."""
    return [normalize_point_id(p) for p in ids]


def selector_parts(selector: Selector) -> tuple[list[PointId] | None, models.Filter | None]:
    """Split a points selector into (ids, filter); exactly one of them is not ``None``."""
    if isinstance(selector, models.PointIdsList):
        return normalize_point_ids(selector.points), None
    if isinstance(selector, models.FilterSelector):
        return None, selector.filter
    if isinstance(selector, models.Filter):
        return None, selector
    return normalize_point_ids(selector), None


def points_or_filter(
    points: Sequence[PointId] | None, flt: models.Filter | None
) -> tuple[list[PointId] | None, models.Filter | None]:
    """The target of a payload / vector operation given as ``points`` or ``filter`` (ids win if both)."""
    if points is not None:
        return normalize_point_ids(points), None
    if flt is not None:
        return None, flt
    raise BadRequest("Bad request: either `points` or `filter` must be provided")


def update_result(operation_id: int | None) -> JsonDict:
    """Qdrant's ``UpdateResult`` for a write that has been applied (``wait=true`` semantics)."""
    return {"operation_id": operation_id, "status": "completed"}
