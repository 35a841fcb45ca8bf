"""The Qdrant-compatible REST data plane of a cluster, mounted at `/clusters/<id>/`.

Every view is thin: authenticate the cluster's API key, take the JSON body, make one service call, wrap
the result as Qdrant does (`{"result", "status": "ok", "time", "usage"?}`). Errors of every kind come back
as `{"status": {"error": msg}, "time": t}` with Qdrant's status codes.
"""

from __future__ import annotations

import importlib.metadata
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from django.http import HttpRequest
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.services import usage_limit_check
from console.clusters.models import Cluster
from console.clusters.selectors import api_key_for_secret
from inference.dataplane import inflight, services
from inference.dataplane.errors import DataPlaneError, describe
from inference.usage import emit_usage

RETRY_AFTER_SECONDS = 5
# The service calls that may run a model (and so are subject to the cluster's tokens-per-minute limit).
INFERENCE_CALLS = frozenset(
    {
        services.points_upsert,
        services.points_update_vectors,
        services.points_batch,
        services.points_query,
        services.points_query_batch,
        services.points_query_groups,
    }
)
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
    """Base of every data-plane view: API-key auth, cluster state, Qdrant response and error shapes."""

    authentication_classes = []  # the data plane authenticates API keys itself (see `_authenticate`)
    permission_classes = []
    parser_classes = [JSONParser]
    schema = DataPlaneSchema()
    # HTTP methods that change data need a read-write key; everything else accepts read-only keys.
    write_methods: ClassVar[frozenset[str]] = frozenset({"PUT", "DELETE"})
    write_posts: ClassVar[bool] = False  # POST is a write for this view (e.g. points/delete)

    cluster: Cluster

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """Authenticate before the handler runs; the started time is kept for the `time` field."""
        self._started = time.perf_counter()
        super().initial(request, *args, **kwargs)
        self.cluster = self._authenticate(request, kwargs["cluster_id"])

    def _authenticate(self, request: Request, cluster_id: str) -> Cluster:
        secret = _api_key_of(request)
        if not secret:
            raise DataPlaneError("Must provide an API key or an Authorization bearer token", 401)
        key = api_key_for_secret(secret)
        if key is None:
            raise DataPlaneError("Invalid API key or JWT", 401)
        if key.cluster_id != cluster_id:
            raise DataPlaneError("Forbidden: this API key belongs to another cluster", 403)
        is_write = request.method in self.write_methods or (request.method == "POST" and self.write_posts)
        if is_write and key.read_only:
            raise DataPlaneError("Forbidden: this API key is read-only", 403)
        return key.cluster

    def body(self) -> dict[str, Any]:
        """The JSON body as an object (an empty body is an empty object)."""
        try:
            data = self.request.data
        except ParseError as exc:
            raise DataPlaneError(f"Format error in JSON body: {exc.detail}", 400) from None
        if data in (None, b"", ""):
            return {}
        if not isinstance(data, dict):
            raise DataPlaneError("Format error in JSON body: expected a JSON object", 400)
        return data

    def answer(self, call: Callable[..., services.Result], **kwargs: Any) -> Response:
        """Run one service call and wrap its result and usage as Qdrant does."""
        with inflight.track(self.cluster.id):  # a restart waits for these before closing storage
            # Read the state again once counted: a restart that begins after this read will wait for us.
            self.cluster.refresh_from_db(fields=["status", "inference_enabled"])
            if self.cluster.status == Cluster.Status.RESTARTING:
                raise DataPlaneError(
                    "Service unavailable: the cluster is restarting to apply a new configuration, retry soon",
                    503,
                    {"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            if call in INFERENCE_CALLS:  # over its tokens-per-minute limit: 429 before any model runs
                usage_limit_check(cluster_id=self.cluster.id)
            result, usage = call(cluster=self.cluster, **kwargs)
        content: dict[str, Any] = {"result": result, "status": "ok", "time": self._elapsed()}
        if usage:
            request_id = self.request.headers.get("Idempotency-Key") or uuid.uuid4().hex
            emit_usage(cluster_id=self.cluster.id, request_id=request_id, usage=usage)
            content["usage"] = {"inference": {"models": {m: {"tokens": t} for m, t in usage.items()}}}
        return Response(content)

    def handle_exception(self, exc: Exception) -> Response:
        """Every error in Qdrant's shape; never a stack trace, never the request body."""
        status, message, headers = describe(exc)
        started = getattr(self, "_started", time.perf_counter())
        body = {"status": {"error": message}, "time": time.perf_counter() - started}
        return Response(body, status=status, headers=headers)

    def _elapsed(self) -> float:
        return time.perf_counter() - self._started


class RootApi(DataPlaneApi):
    """Qdrant's root: title and version (qdrant-client checks compatibility against it)."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """The root answers without a key, like Qdrant's."""
        self._started = time.perf_counter()
        if not Cluster.objects.filter(pk=kwargs["cluster_id"]).exists():
            raise DataPlaneError(f"Not found: cluster {kwargs['cluster_id']} does not exist", 404)

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
