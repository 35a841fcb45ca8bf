"""One cluster's namespace on a Qdrant server that several clusters share (`QDRANT_URL`).

Each cluster's collections are stored on the shared server as ``<cluster id>__<name>``. Cluster ids are
lower-case letters and digits, never ``_``, so the prefix is unambiguous: a cluster lists, opens,
references (``lookup_from``, ``with_lookup``) and deletes only names under its own prefix, and the prefix
is stripped from every answer and error message, so a client sees exactly the names it chose. No payload
field is added: points are stored as sent. Pure Python, no Django.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from qdrant_client.http import models

from .base import (
    MAX_COLLECTION_NAME_LENGTH,
    BadRequest,
    JsonDict,
    PointId,
    Selector,
    StorageError,
    VectorConfig,
    VectorStore,
    WithPayload,
    WithVector,
    validate_collection_name,
)

SEPARATOR = "__"
_Request = TypeVar("_Request", bound=Any)


def namespace_prefix(cluster_id: str) -> str:
    """The prefix of a cluster's collections on a shared server."""
    if not cluster_id or SEPARATOR in cluster_id or "_" in cluster_id[-1:]:
        raise ValueError(f"cluster id {cluster_id!r} cannot name a namespace")
    return f"{cluster_id}{SEPARATOR}"


class NamespacedStore:
    """A :class:`~inference.storage.base.VectorStore` that confines another one to a name prefix."""

    def __init__(self, inner: VectorStore, prefix: str) -> None:
        self._inner = inner
        self._prefix = prefix

    def __repr__(self) -> str:
        return f"NamespacedStore({self._inner!r}, prefix={self._prefix!r})"

    # --- names in, names out ------------------------------------------------------------------------

    def _name(self, name: str) -> str:
        validate_collection_name(name)
        limit = MAX_COLLECTION_NAME_LENGTH - len(self._prefix)
        if len(name) > limit:
            raise BadRequest(
                "Validation error in path parameters: "
                f"[name: length must be between 1 and {limit} characters]",
                status_code=422,
            )
        return self._prefix + name

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Errors keep their type and status; their text loses the prefix (the client's own names only)."""
        try:
            yield
        except StorageError as exc:
            if self._prefix in exc.message:
                exc.message = exc.message.replace(self._prefix, "")
                exc.args = (exc.message,)
            name = getattr(exc, "name", None)
            if isinstance(name, str) and name.startswith(self._prefix):
                exc.name = name[len(self._prefix) :]  # type: ignore[attr-defined]
            raise

    def _lookup(self, location: Any) -> Any:
        """A `lookup_from` / `with_lookup` naming another collection, moved into the namespace."""
        if location is None:
            return None
        if isinstance(location, str):
            return self._name(location)
        collection = getattr(location, "collection", None)
        if isinstance(collection, str):
            return location.model_copy(update={"collection": self._name(collection)})
        return location

    def _query(self, req: _Request) -> _Request:
        update: dict[str, Any] = {}
        if getattr(req, "lookup_from", None) is not None:
            update["lookup_from"] = self._lookup(req.lookup_from)
        prefetch = getattr(req, "prefetch", None)
        if isinstance(prefetch, list):
            update["prefetch"] = [self._query(p) for p in prefetch]
        elif prefetch is not None:
            update["prefetch"] = self._query(prefetch)
        if getattr(req, "with_lookup", None) is not None:
            update["with_lookup"] = self._lookup(req.with_lookup)
        return req.model_copy(update=update) if update else req

    def _call(self, method: Callable[..., Any], name: str, *args: Any, **kwargs: Any) -> Any:
        full = self._name(name)
        with self._errors():
            return method(full, *args, **kwargs)

    # --- the VectorStore interface ----------------------------------------------------------------------

    def list_collections(self) -> list[str]:
        """This cluster's collections, without the prefix, sorted."""
        with self._errors():
            names = self._inner.list_collections()
        return sorted(n[len(self._prefix) :] for n in names if n.startswith(self._prefix))

    def collection_exists(self, name: str) -> bool:
        """Whether this cluster has the collection."""
        return bool(self._call(self._inner.collection_exists, name))

    def create_collection(self, name: str, config: models.CreateCollection) -> None:
        """Create it in the namespace."""
        self._call(self._inner.create_collection, name, config)

    def get_collection(self, name: str) -> JsonDict:
        """``CollectionInfo`` (it holds no name)."""
        result: JsonDict = self._call(self._inner.get_collection, name)
        return result

    def delete_collection(self, name: str) -> bool:
        """Delete it from the namespace."""
        return bool(self._call(self._inner.delete_collection, name))

    def update_collection(self, name: str, req: models.UpdateCollection) -> None:
        """Apply a collection update."""
        self._call(self._inner.update_collection, name, req)

    def create_vector(self, name: str, vector_name: str, config: models.VectorNameConfig) -> JsonDict:
        """Add a named vector."""
        result: JsonDict = self._call(self._inner.create_vector, name, vector_name, config)
        return result

    def delete_vector(self, name: str, vector_name: str) -> JsonDict:
        """Drop a named vector."""
        result: JsonDict = self._call(self._inner.delete_vector, name, vector_name)
        return result

    def update_aliases(self, actions: Sequence[models.AliasOperations]) -> None:
        """Alias operations with both the aliases and their collections moved into the namespace."""
        moved: list[models.AliasOperations] = []
        for action in actions:
            if isinstance(action, models.CreateAliasOperation):
                op = action.create_alias
                moved.append(
                    models.CreateAliasOperation(
                        create_alias=models.CreateAlias(
                            collection_name=self._name(op.collection_name),
                            alias_name=self._name(op.alias_name),
                        )
                    )
                )
            elif isinstance(action, models.DeleteAliasOperation):
                alias = self._name(action.delete_alias.alias_name)
                moved.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
            elif isinstance(action, models.RenameAliasOperation):
                old, new = action.rename_alias.old_alias_name, action.rename_alias.new_alias_name
                rename = models.RenameAlias(old_alias_name=self._name(old), new_alias_name=self._name(new))
                moved.append(models.RenameAliasOperation(rename_alias=rename))
            else:
                raise BadRequest(f"Bad request: unsupported alias operation {type(action).__name__}")
        with self._errors():
            self._inner.update_aliases(moved)

    def list_aliases(self, collection: str | None = None) -> list[JsonDict]:
        """This cluster's aliases (of one collection, or all), without the prefix."""
        with self._errors():
            found = self._inner.list_aliases(None if collection is None else self._name(collection))
        cut = len(self._prefix)
        return [
            {"alias_name": a["alias_name"][cut:], "collection_name": a["collection_name"][cut:]}
            for a in found
            if str(a.get("alias_name", "")).startswith(self._prefix)
            and str(a.get("collection_name", "")).startswith(self._prefix)
        ]

    def cluster_info(self, name: str) -> JsonDict:
        """Shard placement of the collection (holds no name)."""
        result: JsonDict = self._call(self._inner.cluster_info, name)
        return result

    def vector_config(self, name: str) -> VectorConfig:
        """Its vector configuration."""
        result: VectorConfig = self._call(self._inner.vector_config, name)
        return result

    def create_payload_index(
        self, name: str, field_name: str, field_schema: models.PayloadFieldSchema
    ) -> JsonDict:
        """Index a payload field."""
        result: JsonDict = self._call(self._inner.create_payload_index, name, field_name, field_schema)
        return result

    def delete_payload_index(self, name: str, field_name: str) -> JsonDict:
        """Drop a payload index."""
        result: JsonDict = self._call(self._inner.delete_payload_index, name, field_name)
        return result

    def upsert(
        self,
        name: str,
        points: Sequence[models.PointStruct],
        *,
        update_filter: models.Filter | None = None,
        update_mode: models.UpdateMode | None = None,
    ) -> JsonDict:
        """Write points."""
        result: JsonDict = self._call(
            self._inner.upsert, name, points, update_filter=update_filter, update_mode=update_mode
        )
        return result

    def retrieve(
        self,
        name: str,
        ids: Sequence[PointId],
        *,
        with_payload: WithPayload = True,
        with_vector: WithVector = False,
    ) -> list[JsonDict]:
        """Points by id."""
        result: list[JsonDict] = self._call(
            self._inner.retrieve, name, ids, with_payload=with_payload, with_vector=with_vector
        )
        return result

    def scroll(self, name: str, req: models.ScrollRequest) -> JsonDict:
        """A page of points."""
        result: JsonDict = self._call(self._inner.scroll, name, req)
        return result

    def count(self, name: str, req: models.CountRequest) -> JsonDict:
        """Count points."""
        result: JsonDict = self._call(self._inner.count, name, req)
        return result

    def delete_points(self, name: str, selector: Selector) -> JsonDict:
        """Delete points."""
        result: JsonDict = self._call(self._inner.delete_points, name, selector)
        return result

    def set_payload(self, name: str, req: models.SetPayload) -> JsonDict:
        """Set payload keys."""
        result: JsonDict = self._call(self._inner.set_payload, name, req)
        return result

    def overwrite_payload(self, name: str, req: models.SetPayload) -> JsonDict:
        """Replace payloads."""
        result: JsonDict = self._call(self._inner.overwrite_payload, name, req)
        return result

    def delete_payload(self, name: str, req: models.DeletePayload) -> JsonDict:
        """Delete payload keys."""
        result: JsonDict = self._call(self._inner.delete_payload, name, req)
        return result

    def clear_payload(self, name: str, selector: Selector) -> JsonDict:
        """Clear payloads."""
        result: JsonDict = self._call(self._inner.clear_payload, name, selector)
        return result

    def update_vectors(
        self,
        name: str,
        points: Sequence[models.PointVectors],
        *,
        update_filter: models.Filter | None = None,
    ) -> JsonDict:
        """Replace named vectors of points."""
        result: JsonDict = self._call(self._inner.update_vectors, name, points, update_filter=update_filter)
        return result

    def delete_vectors(self, name: str, req: models.DeleteVectors) -> JsonDict:
        """Delete named vectors of points."""
        result: JsonDict = self._call(self._inner.delete_vectors, name, req)
        return result

    def query(self, name: str, req: models.QueryRequest) -> JsonDict:
        """Query, with any `lookup_from` moved into the namespace."""
        result: JsonDict = self._call(self._inner.query, name, self._query(req))
        return result

    def query_batch(self, name: str, reqs: Sequence[models.QueryRequest]) -> list[JsonDict]:
        """Several queries."""
        result: list[JsonDict] = self._call(self._inner.query_batch, name, [self._query(r) for r in reqs])
        return result

    def query_groups(self, name: str, req: models.QueryGroupsRequest) -> JsonDict:
        """Grouped query, with `with_lookup` and `lookup_from` moved into the namespace."""
        result: JsonDict = self._call(self._inner.query_groups, name, self._query(req))
        return result

    def facet(self, name: str, req: models.FacetRequest) -> JsonDict:
        """Facet counts."""
        result: JsonDict = self._call(self._inner.facet, name, req)
        return result

    def close(self) -> None:
        """Close the connection to the server."""
        self._inner.close()
