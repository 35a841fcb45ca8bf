"""The Qdrant-compatible REST data plane of a cluster, mounted at `/clusters/<id>/`.

Every view is thin: authenticate the cluster's API key, take the JSON body, make one service call, wrap
the result as Qdrant does (`{"result", "status": "ok", "time", "usage"?}`). Errors of every kind come back
as `{"status": {"error": msg}, "time": t}` with Qdrant's status codes.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable
from typing import Any, ClassVar

from django.http import HttpRequest
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inference import gateway, idempotency, providers
from inference.dataplane import services
from inference.dataplane.wire import QdrantJSONParser, QdrantJSONRenderer
from inference.errors import FormatError
from inference.hooks import ClusterInfo
from inference.http import qdrant_error

QDRANT_VERSION = importlib.metadata.version("qdrant-client")  # a server version the client accepts


def _api_key_of(request: HttpRequest) -> str:
    """The key from `api-key` or `Authorization: Bearer`, as Qdrant accepts both."""
    key = request.headers.get("api-key", "")
    if key:
        return key.strip()
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return ""


def _provider_keys_of(request: HttpRequest) -> dict[str, str]:
    """The caller's external-provider keys from `openai-api-key`, `cohere-api-key`... (used, never kept)."""
    keys = {}
    for name in providers.KEY_HEADERS:
        value = request.headers.get(name, "").strip()
        if value:
            keys[name] = value
    return keys


class DataPlaneSchema(AutoSchema):
    """OpenAPI for the data plane: bodies are Qdrant's REST shapes (see Qdrant's own OpenAPI for detail)."""

    def get_tags(self) -> list[str]:
        """One tag for every data-plane route."""
        return ["data plane (Qdrant REST)"]

    def get_request_serializer(self) -> Any:
        """Request bodies are free-form Qdrant JSON, inference objects allowed wherever vectors are."""
        return OpenApiTypes.OBJECT if self.method in ("PUT", "POST", "PATCH") else None

    def get_response_serializers(self) -> Any:
        """`{"result", "status", "time", "usage"?}` as Qdrant answers."""
        return OpenApiTypes.OBJECT

    def get_operation_id(self) -> str:
        """Named after the Qdrant path, so every route gets a distinct, readable id."""
        parts = [p.strip("{}") for p in self.path.split("/") if p][2:]  # drop clusters/{cluster_id}
        return "_".join([*parts, self.method.lower()]) if parts else "root_get"


class DataPlaneApi(APIView):
    """Base of every data-plane view: translate HTTP to one gateway call and its result or error back."""

    authentication_classes = []  # the gateway authenticates API keys (see `initial`)
    permission_classes = []
    parser_classes = [QdrantJSONParser]
    renderer_classes = [QdrantJSONRenderer]
    schema = DataPlaneSchema()
    # HTTP methods that change data need a read-write key; everything else accepts read-only keys.
    write_methods: ClassVar[frozenset[str]] = frozenset({"PUT", "DELETE"})
    write_posts: ClassVar[bool] = False  # POST is a write for this view (e.g. points/delete)

    cluster: ClusterInfo

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """Authenticate before the handler runs; the started time is kept for the `time` field."""
        self._started = time.perf_counter()
        super().initial(request, *args, **kwargs)
        is_write = request.method in self.write_methods or (request.method == "POST" and self.write_posts)
        self.cluster = gateway.authenticate(
            secret=_api_key_of(request), cluster_id=kwargs["cluster_id"], write=is_write
        )
        self._idempotency_key = request.headers.get("Idempotency-Key") or None
        self._fingerprint: str | None = None
        if self._idempotency_key is not None:
            # Read before the body is parsed (the parser consumes the stream); only the digest is kept.
            raw = request._request.body
            self._fingerprint = idempotency.fingerprint(request.method or "", request.path, raw)

    def body(self) -> dict[str, Any]:
        """The JSON body as an object (an empty body is an empty object)."""
        data = self.request.data  # a malformed body raises ParseError: a 400 in `handle_exception`
        if data in (None, b"", ""):
            return {}
        if not isinstance(data, dict):
            raise FormatError("expected a JSON object")
        return data

    def answer(self, call: Callable[..., services.Result], **kwargs: Any) -> Response:
        """Serve one operation through the gateway and wrap its result and usage as Qdrant does."""
        served = gateway.serve(
            cluster_id=self.cluster.id,
            operation=call,
            request_id=self._idempotency_key,
            fingerprint=self._fingerprint,
            provider_keys=_provider_keys_of(self.request),
            **kwargs,
        )
        content: dict[str, Any] = {"result": served.result, "status": "ok", "time": self._elapsed()}
        if served.usage:
            models = {model: {"tokens": tokens} for model, tokens in served.usage.items()}
            content["usage"] = {"inference": {"models": models}}
        return Response(content)

    def handle_exception(self, exc: Exception) -> Response:
        """Every error in Qdrant's shape; never a stack trace, never the request body."""
        return qdrant_error(exc, elapsed=self._elapsed())

    def _elapsed(self) -> float:
        return time.perf_counter() - getattr(self, "_started", time.perf_counter())


class RootApi(DataPlaneApi):
    """Qdrant's root: title and version (qdrant-client checks compatibility against it)."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """The root answers without a key, like Qdrant's."""
        self._started = time.perf_counter()
        gateway.cluster_get(kwargs["cluster_id"])  # NotFound for an unknown cluster

    def get(self, request: Request, cluster_id: str) -> Response:
        """Server title and version."""
        return Response({"title": "qdrant - vector search engine", "version": QDRANT_VERSION, "commit": None})


class CollectionsApi(DataPlaneApi):
    """`GET /collections`."""

    def get(self, request: Request, cluster_id: str) -> Response:
        """List collections."""
        return self.answer(services.collection_list)


class CollectionApi(DataPlaneApi):
    """`GET|PUT|DELETE /collections/{name}`."""

    def get(self, request: Request, cluster_id: str, collection: str) -> Response:
        """Collection info."""
        return self.answer(services.collection_get, collection=collection)

    def put(self, request: Request, cluster_id: str, collection: str) -> Response:
        """Create a collection."""
        return self.answer(services.collection_create, collection=collection, body=self.body())

    def delete(self, request: Request, cluster_id: str, collection: str) -> Response:
        """Delete a collection."""
        return self.answer(services.collection_delete, collection=collection)


class CollectionExistsApi(DataPlaneApi):
    """`GET /collections/{name}/exists`."""

    def get(self, request: Request, cluster_id: str, collection: str) -> Response:
        """Whether the collection exists."""
        return self.answer(services.collection_exists, collection=collection)


class PayloadIndexApi(DataPlaneApi):
    """`PUT /collections/{name}/index`."""

    def put(self, request: Request, cluster_id: str, collection: str) -> Response:
        """Create a payload index."""
        return self.answer(services.payload_index_create, collection=collection, body=self.body())


class PayloadIndexFieldApi(DataPlaneApi):
    """`DELETE /collections/{name}/index/{field}`."""

    def delete(self, request: Request, cluster_id: str, collection: str, field_name: str) -> Response:
        """Delete a payload index."""
        return self.answer(services.payload_index_delete, collection=collection, field_name=field_name)


class PointsApi(DataPlaneApi):
    """`PUT /points` (upsert) and `POST /points` (retrieve by ids)."""

    def put(self, request: Request, cluster_id: str, collection: str) -> Response:
        """Upsert points; vectors may be inference objects."""
        return self.answer(services.points_upsert, collection=collection, body=self.body())

    def post(self, request: Request, cluster_id: str, collection: str) -> Response:
        """Retrieve points by id."""
        return self.answer(services.points_retrieve, collection=collection, body=self.body())


class PointApi(DataPlaneApi):
    """`GET /points/{id}`."""

    def get(self, request: Request, cluster_id: str, collection: str, point_id: str) -> Response:
        """One point."""
        parsed: int | str = int(point_id) if point_id.isdigit() else point_id
        return self.answer(services.point_get, collection=collection, point_id=parsed)


class VectorsApi(DataPlaneApi):
    """`PUT /points/vectors`: update vectors (may be inference objects)."""

    def put(self, request: Request, cluster_id: str, collection: str) -> Response:
        """Update vectors."""
        return self.answer(services.points_update_vectors, collection=collection, body=self.body())


class PayloadApi(DataPlaneApi):
    """`POST /points/payload` (set) and `PUT /points/payload` (overwrite)."""

    write_posts = True

    def post(self, request: Request, cluster_id: str, collection: str) -> Response:
        """Set payload keys."""
        return self.answer(services.payload_set, collection=collection, body=self.body())

    def put(self, request: Request, cluster_id: str, collection: str) -> Response:
        """Overwrite payload."""
        return self.answer(services.payload_overwrite, collection=collection, body=self.body())


def _post_view(call: Callable[..., services.Result], *, write: bool, doc: str) -> type[DataPlaneApi]:
    """A view class answering POST with one service call (most Qdrant point endpoints are like that)."""

    def post(self: DataPlaneApi, request: Request, cluster_id: str, collection: str) -> Response:
        return self.answer(call, collection=collection, body=self.body())

    post.__doc__ = doc
    name = "".join(part.title() for part in call.__name__.split("_")) + "Api"
    return type(name, (DataPlaneApi,), {"__doc__": doc, "write_posts": write, "post": post})


PointsDeleteApi = _post_view(services.points_delete, write=True, doc="Delete points by ids or filter.")
PayloadDeleteApi = _post_view(services.payload_delete, write=True, doc="Delete payload keys.")
PayloadClearApi = _post_view(services.payload_clear, write=True, doc="Clear payload.")
VectorsDeleteApi = _post_view(services.vectors_delete, write=True, doc="Delete named vectors.")
PointsBatchApi = _post_view(services.points_batch, write=True, doc="Run several update operations.")
ScrollApi = _post_view(services.points_scroll, write=False, doc="Page through points.")
CountApi = _post_view(services.points_count, write=False, doc="Count points.")
FacetApi = _post_view(services.points_facet, write=False, doc="Facet counts of a payload key.")
QueryApi = _post_view(services.points_query, write=False, doc="Universal query (inference objects allowed).")
QueryBatchApi = _post_view(services.points_query_batch, write=False, doc="Several queries at once.")
QueryGroupsApi = _post_view(services.points_query_groups, write=False, doc="Query grouped by a field.")
