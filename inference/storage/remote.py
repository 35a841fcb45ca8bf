"""Remote backend: the same interface on a real Qdrant server, through qdrant-client's REST API.

Requests are the REST models the API layer already parsed, so they go to the server unchanged through
qdrant-client's generated REST client (``client.http``), and results come back as
``model_dump(mode="json")``. Server errors keep their status code and Qdrant's message.

The API key is handed to qdrant-client and not kept here; ``repr()`` and every error message this
module produces mention only the URL without credentials.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from qdrant_client import QdrantClient
from qdrant_client.http import models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from .base import (
    BadRequest,
    CollectionExists,
    CollectionNotFound,
    JsonDict,
    PointId,
    Selector,
    StorageError,
    StoreClosed,
    VectorConfig,
    WithPayload,
    WithVector,
    validate_collection_name,
)

_NOT_FOUND = re.compile(r"^Not found: Collection `(.*)` doesn't exist!$", re.DOTALL)
_EXISTS = re.compile(r"^Wrong input: Collection `(.*)` already exists!$", re.DOTALL)


def _public_url(url: str) -> str:
    """``url`` without user info, query or fragment, safe to show in logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def error_from_response(status_code: int | None, content: bytes, reason: str = "") -> StorageError:
    """The :class:`StorageError` for a Qdrant error response, with its status and message."""
    status = status_code or 500
    message = ""
    try:
        body = json.loads(content)
        error = body.get("status", {}).get("error") if isinstance(body, dict) else None
        if isinstance(error, str):
            message = error
    except (ValueError, AttributeError):
        pass
    if not message:
        text = content.decode("utf-8", "replace").strip()
        message = text or reason or f"HTTP {status}"
    if status == 404 and (m := _NOT_FOUND.match(message)):
        return CollectionNotFound(m.group(1))
    if status == 400 and (m := _EXISTS.match(message)):
        return CollectionExists(m.group(1))
    if 400 <= status < 500:
        return BadRequest(message, status_code=status)
    return StorageError(message, status_code=status)


def _selector(selector: Selector) -> models.PointIdsList | models.FilterSelector:
    if isinstance(selector, models.PointIdsList | models.FilterSelector):
        return selector
    if isinstance(selector, models.Filter):
        return models.FilterSelector(filter=selector)
    return models.PointIdsList(points=list(selector))


def _json(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


class RemoteStore:
    """The :class:`~inference.storage.base.VectorStore` of a cluster served by a Qdrant server."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        self._url = _public_url(url)
        self._has_key = api_key is not None
        self._closed = False
        # `check_compatibility=False`: no version request at construction, so building the store
        # never blocks on (or fails because of) the network.
        self._client = QdrantClient(
            url=url,
            api_key=api_key,
            prefer_grpc=False,
            timeout=max(1, math.ceil(timeout)),
            check_compatibility=False,
        )
        self._api = self._client.http

    def __repr__(self) -> str:
        return f"RemoteStore(url={self._url!r}, api_key={'***' if self._has_key else None})"

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Server errors keep status + message; transport errors become 502 without any secret."""
        if self._closed:
            raise StoreClosed()
        try:
            yield
        except UnexpectedResponse as exc:
            raise error_from_response(exc.status_code, exc.content, exc.reason_phrase) from None
        except (ResponseHandlingException, httpx.HTTPError) as exc:
            source = exc.source if isinstance(exc, ResponseHandlingException) else exc
            raise StorageError(
                f"Service internal error: Qdrant at {self._url} did not answer ({type(source).__name__})",
                status_code=502,
            ) from None

    # Collections ------------------------------------------------------------------------------

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        with self._errors():
            result = self._api.collections_api.get_collections().result
        return sorted(c.name for c in result.collections) if result else []

    def collection_exists(self, name: str) -> bool:
        """Whether the collection exists on the server."""
        validate_collection_name(name)
        with self._errors():
            result = self._api.collections_api.collection_exists(collection_name=name).result
        return bool(result and result.exists)

    def create_collection(self, name: str, config: models.CreateCollection) -> None:
        """``PUT /collections/{name}``."""
        validate_collection_name(name)
        with self._errors():
            self._api.collections_api.create_collection(collection_name=name, create_collection=config)

    def get_collection(self, name: str) -> JsonDict:
        """``CollectionInfo`` as the server reports it."""
        validate_collection_name(name)
        with self._errors():
            return _json(self._api.collections_api.get_collection(collection_name=name).result)

    def delete_collection(self, name: str) -> bool:
        """``DELETE /collections/{name}``; the server's boolean result."""
        validate_collection_name(name)
        with self._errors():
            return bool(self._api.collections_api.delete_collection(collection_name=name).result)

    def vector_config(self, name: str) -> VectorConfig:
        """Vector configuration read from the server (not cached: it may change remotely)."""
        validate_collection_name(name)
        with self._errors():
            info = self._api.collections_api.get_collection(collection_name=name).result
        params = info.config.params if info else None
        return VectorConfig.from_params(
            params.vectors if params else None, params.sparse_vectors if params else None
        )

    def create_payload_index(
        self, name: str, field_name: str, field_schema: models.PayloadFieldSchema
    ) -> JsonDict:
        """``PUT /collections/{name}/index?wait=true``."""
        with self._errors():
            return _json(
                self._api.indexes_api.create_field_index(
                    collection_name=name,
                    wait=True,
                    create_field_index=models.CreateFieldIndex(
                        field_name=field_name, field_schema=field_schema
                    ),
                ).result
            )

    def delete_payload_index(self, name: str, field_name: str) -> JsonDict:
        """``DELETE /collections/{name}/index/{field_name}?wait=true``."""
        with self._errors():
            return _json(
                self._api.indexes_api.delete_field_index(
                    collection_name=name, field_name=field_name, wait=True
                ).result
            )

    def update_collection(self, name: str, req: models.UpdateCollection) -> None:
        """``PATCH /collections/{name}``."""
        validate_collection_name(name)
        with self._errors():
            self._api.collections_api.update_collection(collection_name=name, update_collection=req)

    def create_vector(self, name: str, vector_name: str, config: models.VectorNameConfig) -> JsonDict:
        """``PUT /collections/{name}/vectors/{vector_name}?wait=true``."""
        with self._errors():
            return _json(
                self._api.collections_api.create_vector_name(
                    collection_name=name, vector_name=vector_name, wait=True, vector_name_config=config
                ).result
            )

    def delete_vector(self, name: str, vector_name: str) -> JsonDict:
        """``DELETE /collections/{name}/vectors/{vector_name}?wait=true``."""
        with self._errors():
            return _json(
                self._api.collections_api.delete_vector_name(
                    collection_name=name, vector_name=vector_name, wait=True
                ).result
            )

    def update_aliases(self, actions: Sequence[models.AliasOperations]) -> None:
        """``POST /collections/aliases``."""
        with self._errors():
            self._api.aliases_api.update_aliases(
                change_aliases_operation=models.ChangeAliasesOperation(actions=list(actions))
            )

    def list_aliases(self, collection: str | None = None) -> list[JsonDict]:
        """``GET /aliases`` or ``GET /collections/{name}/aliases``."""
        with self._errors():
            if collection is None:
                result = self._api.aliases_api.get_collections_aliases().result
            else:
                validate_collection_name(collection)
                result = self._api.aliases_api.get_collection_aliases(collection_name=collection).result
        return [_json(a) for a in result.aliases] if result else []

    def cluster_info(self, name: str) -> JsonDict:
        """``GET /collections/{name}/cluster``."""
        validate_collection_name(name)
        with self._errors():
            return _json(self._api.distributed_api.collection_cluster_info(collection_name=name).result)

    # Points -----------------------------------------------------------------------------------

    def upsert(
        self,
        name: str,
        points: Sequence[models.PointStruct],
        *,
        update_filter: models.Filter | None = None,
        update_mode: models.UpdateMode | None = None,
    ) -> JsonDict:
        """``PUT .../points?wait=true``."""
        body = models.PointsList(points=list(points), update_filter=update_filter, update_mode=update_mode)
        with self._errors():
            return _json(
                self._api.points_api.upsert_points(
                    collection_name=name, wait=True, point_insert_operations=body
                ).result
            )

    def retrieve(
        self,
        name: str,
        ids: Sequence[PointId],
        *,
        with_payload: WithPayload = True,
        with_vector: WithVector = False,
    ) -> list[JsonDict]:
        """``POST .../points``."""
        request = models.PointRequest(
            ids=list(ids),
            with_payload=(
                with_payload
                if isinstance(
                    with_payload, bool | models.PayloadSelectorInclude | models.PayloadSelectorExclude
                )
                else list(with_payload)
            ),
            with_vector=with_vector if isinstance(with_vector, bool) else list(with_vector),
        )
        with self._errors():
            result = self._api.points_api.get_points(collection_name=name, point_request=request).result
        return [_json(r) for r in result or []]

    def scroll(self, name: str, req: models.ScrollRequest) -> JsonDict:
        """``POST .../points/scroll``."""
        with self._errors():
            return _json(self._api.points_api.scroll_points(collection_name=name, scroll_request=req).result)

    def count(self, name: str, req: models.CountRequest) -> JsonDict:
        """``POST .../points/count``."""
        with self._errors():
            return _json(self._api.points_api.count_points(collection_name=name, count_request=req).result)

    def delete_points(self, name: str, selector: Selector) -> JsonDict:
        """``POST .../points/delete?wait=true``."""
        with self._errors():
            return _json(
                self._api.points_api.delete_points(
                    collection_name=name, wait=True, points_selector=_selector(selector)
                ).result
            )

    def set_payload(self, name: str, req: models.SetPayload) -> JsonDict:
        """``POST .../points/payload?wait=true``."""
        with self._errors():
            return _json(
                self._api.points_api.set_payload(collection_name=name, wait=True, set_payload=req).result
            )

    def overwrite_payload(self, name: str, req: models.SetPayload) -> JsonDict:
        """``PUT .../points/payload?wait=true``."""
        with self._errors():
            return _json(
                self._api.points_api.overwrite_payload(
                    collection_name=name, wait=True, set_payload=req
                ).result
            )

    def delete_payload(self, name: str, req: models.DeletePayload) -> JsonDict:
        """``POST .../points/payload/delete?wait=true``."""
        with self._errors():
            return _json(
                self._api.points_api.delete_payload(
                    collection_name=name, wait=True, delete_payload=req
                ).result
            )

    def clear_payload(self, name: str, selector: Selector) -> JsonDict:
        """``POST .../points/payload/clear?wait=true``."""
        with self._errors():
            return _json(
                self._api.points_api.clear_payload(
                    collection_name=name, wait=True, points_selector=_selector(selector)
                ).result
            )

    def update_vectors(
        self,
        name: str,
        points: Sequence[models.PointVectors],
        *,
        update_filter: models.Filter | None = None,
    ) -> JsonDict:
        """``PUT .../points/vectors?wait=true``."""
        body = models.UpdateVectors(points=list(points), update_filter=update_filter)
        with self._errors():
            return _json(
                self._api.points_api.update_vectors(
                    collection_name=name, wait=True, update_vectors=body
                ).result
            )

    def delete_vectors(self, name: str, req: models.DeleteVectors) -> JsonDict:
        """``POST .../points/vectors/delete?wait=true``."""
        with self._errors():
            return _json(
                self._api.points_api.delete_vectors(
                    collection_name=name, wait=True, delete_vectors=req
                ).result
            )

    # Queries ----------------------------------------------------------------------------------

    def query(self, name: str, req: models.QueryRequest) -> JsonDict:
        """``POST .../points/query``."""
        with self._errors():
            return _json(self._api.search_api.query_points(collection_name=name, query_request=req).result)

    def query_batch(self, name: str, reqs: Sequence[models.QueryRequest]) -> list[JsonDict]:
        """``POST .../points/query/batch``."""
        body = models.QueryRequestBatch(searches=list(reqs))
        with self._errors():
            result = self._api.search_api.query_batch_points(
                collection_name=name, query_request_batch=body
            ).result
        return [_json(r) for r in result or []]

    def query_groups(self, name: str, req: models.QueryGroupsRequest) -> JsonDict:
        """``POST .../points/query/groups``."""
        with self._errors():
            return _json(
                self._api.search_api.query_points_groups(
                    collection_name=name, query_groups_request=req
                ).result
            )

    def facet(self, name: str, req: models.FacetRequest) -> JsonDict:
        """``POST .../facet``."""
        with self._errors():
            return _json(self._api.points_api.facet(collection_name=name, facet_request=req).result)

    def close(self) -> None:
        """Close the HTTP connections."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._client.close()
