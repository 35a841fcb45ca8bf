"""The Qdrant-compatible REST data plane of a cluster, mounted at `/clusters/<id>/`.

Every view is thin: authenticate the cluster's API key, take the JSON body, make one service call, wrap
the result as Qdrant does (`{"result", "status": "ok", "time", "usage"?}`). Errors of every kind come back
as `{"status": {"error": msg}, "time": t}` with Qdrant's status codes.

The views are DRF classes for their routes, `OPTIONS` and the OpenAPI schema, but serve requests without
DRF's request wrapper, negotiation and rendering (`DataPlaneApi.dispatch`): the data plane takes and
answers JSON only, so those cost CPU on every request and decided nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from django.http import HttpRequest, HttpResponse
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from rest_framework.response import Response
from rest_framework.views import APIView

from inference import gateway, idempotency, providers
from inference.dataplane import catchall, services, wire
from inference.dataplane.wire import QdrantJSONParser, QdrantJSONRenderer
from inference.errors import BadRequest, FormatError, MethodNotAllowed, NotFound, Unsupported
from inference.hooks import ClusterInfo
from inference.http import qdrant_error

# The Qdrant version the root reports. The routes follow Qdrant 1.20's OpenAPI; 1.19 is the version every
# official client from 1.18 to 1.20 accepts (qdrant-client and js-client-rest both warn when the minor
# versions differ by more than one), so neither the Python client 1.20 nor the JS client 1.18/1.19 warns.
QDRANT_VERSION = "1.19.0"


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
    write_methods: ClassVar[frozenset[str]] = frozenset({"PUT", "PATCH", "DELETE"})
    write_posts: ClassVar[bool] = False  # POST is a write for this view (e.g. points/delete)

    cluster: ClusterInfo

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """Serve one request: `initial`, the method's handler, any error in Qdrant's shape; JSON out.

        DRF's own dispatch wraps the request, negotiates a renderer, checks (empty) authenticators,
        permissions and throttles, and renders through a template response: ~0.1 ms of CPU a request that
        decided nothing here (the gateway authenticates API keys; the answer is always JSON).
        """
        self.args, self.kwargs = args, kwargs
        self.request = request  # type: ignore[assignment]  # Django's request: DRF's wrapper is skipped
        try:
            self.initial(request, *args, **kwargs)
            method = (request.method or "").lower()
            handler = getattr(self, method, None) if method in self.http_method_names else None
            if handler is None:
                raise MethodNotAllowed(f'Method "{request.method}" not allowed.')  # DRF's words
            response = handler(request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        if isinstance(response, Response):  # an error (`qdrant_error`), or `OPTIONS` (DRF's metadata)
            headers = {k: v for k, v in response.items() if k.lower() != "content-type"}  # Retry-After...
            response = wire.json_response(response.data, status=response.status_code, headers=headers)
        if response.status_code == 405:
            response["Allow"] = ", ".join(self.allowed_methods)
        return response

    def initial(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        """Authenticate before the handler runs; the started time is kept for the `time` field."""
        self._started = time.perf_counter()
        is_write = request.method in self.write_methods or (request.method == "POST" and self.write_posts)
        self.cluster = gateway.authenticate(
            secret=_api_key_of(request), cluster_id=kwargs["cluster_id"], write=is_write
        )
        self._idempotency_key = request.headers.get("Idempotency-Key") or None
        self._fingerprint: str | None = None
        if self._idempotency_key is not None:
            # Only the digest of the body is kept.
            self._fingerprint = idempotency.fingerprint(request.method or "", request.path, request.body)

    def body(self) -> dict[str, Any]:
        """The JSON body as an object (an empty body is an empty object)."""
        data = wire.parse_body(self.request)  # malformed: ParseError, a 400 in `handle_exception`
        if data is None or data == "":  # a JSON `null` or `""` body, as an absent one
            return {}
        if not isinstance(data, dict):
            raise FormatError("expected a JSON object")
        catchall.check_depth(data)
        return data

    def answer(self, call: Callable[..., services.Result], **kwargs: Any) -> HttpResponse:
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
        return wire.json_response(content)

    def handle_exception(self, exc: Exception) -> Response:
        """Every error in Qdrant's shape; never a stack trace, never the request body."""
        return qdrant_error(exc, elapsed=self._elapsed())

    def _elapsed(self) -> float:
        return time.perf_counter() - getattr(self, "_started", time.perf_counter())


class RootApi(DataPlaneApi):
    """Qdrant's root: title and version (qdrant-client checks compatibility against it)."""

    def initial(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        """The root answers without a key, like Qdrant's."""
        self._started = time.perf_counter()
        gateway.cluster_get(kwargs["cluster_id"])  # NotFound for an unknown cluster

    def get(self, request: HttpRequest, cluster_id: str) -> HttpResponse:
        """Server title and version."""
        return wire.json_response(
            {"title": "qdrant - vector search engine", "version": QDRANT_VERSION, "commit": None}
        )


class CollectionsApi(DataPlaneApi):
    """`GET /collections`."""

    def get(self, request: HttpRequest, cluster_id: str) -> HttpResponse:
        """List collections."""
        return self.answer(services.collection_list)


class CollectionApi(DataPlaneApi):
    """`GET|PUT|DELETE /collections/{name}`."""

    def get(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Collection info."""
        return self.answer(services.collection_get, collection=collection)

    def put(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Create a collection."""
        return self.answer(services.collection_create, collection=collection, body=self.body())

    def patch(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Update a collection's parameters."""
        return self.answer(services.collection_update, collection=collection, body=self.body())

    def delete(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Delete a collection."""
        return self.answer(services.collection_delete, collection=collection)


class CollectionExistsApi(DataPlaneApi):
    """`GET /collections/{name}/exists`."""

    def get(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Whether the collection exists."""
        return self.answer(services.collection_exists, collection=collection)


class PayloadIndexApi(DataPlaneApi):
    """`PUT /collections/{name}/index`."""

    def put(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Create a payload index."""
        return self.answer(services.payload_index_create, collection=collection, body=self.body())


class PayloadIndexFieldApi(DataPlaneApi):
    """`DELETE /collections/{name}/index/{field}`."""

    def delete(self, request: HttpRequest, cluster_id: str, collection: str, field_name: str) -> HttpResponse:
        """Delete a payload index."""
        return self.answer(services.payload_index_delete, collection=collection, field_name=field_name)


class PointsApi(DataPlaneApi):
    """`PUT /points` (upsert) and `POST /points` (retrieve by ids)."""

    def put(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Upsert points; vectors may be inference objects."""
        return self.answer(services.points_upsert, collection=collection, body=self.body())

    def post(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Retrieve points by id."""
        return self.answer(services.points_retrieve, collection=collection, body=self.body())


class PointApi(DataPlaneApi):
    """`GET /points/{id}`."""

    def get(self, request: HttpRequest, cluster_id: str, collection: str, point_id: str) -> HttpResponse:
        """One point."""
        parsed: int | str = int(point_id) if point_id.isdigit() else point_id
        return self.answer(services.point_get, collection=collection, point_id=parsed)


class VectorsApi(DataPlaneApi):
    """`PUT /points/vectors`: update vectors (may be inference objects)."""

    def put(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Update vectors."""
        return self.answer(services.points_update_vectors, collection=collection, body=self.body())


class PayloadApi(DataPlaneApi):
    """`POST /points/payload` (set) and `PUT /points/payload` (overwrite)."""

    write_posts = True

    def post(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Set payload keys."""
        return self.answer(services.payload_set, collection=collection, body=self.body())

    def put(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Overwrite payload."""
        return self.answer(services.payload_overwrite, collection=collection, body=self.body())


def _post_view(call: Callable[..., services.Result], *, write: bool, doc: str) -> type[DataPlaneApi]:
    """A view class answering POST with one service call (most Qdrant point endpoints are like that)."""

    def post(self: DataPlaneApi, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
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

# --- legacy search / recommend / discover (rewritten as universal queries by the services) ---------------

SearchApi = _post_view(services.points_search, write=False, doc="Legacy nearest-neighbour search.")
SearchBatchApi = _post_view(services.points_search_batch, write=False, doc="Several legacy searches.")
SearchGroupsApi = _post_view(
    services.points_search_groups, write=False, doc="Legacy search grouped by a field."
)
RecommendApi = _post_view(services.points_recommend, write=False, doc="Legacy recommendation by examples.")
RecommendBatchApi = _post_view(services.points_recommend_batch, write=False, doc="Several recommendations.")
RecommendGroupsApi = _post_view(
    services.points_recommend_groups, write=False, doc="Legacy recommendation grouped by a field."
)
DiscoverApi = _post_view(services.points_discover, write=False, doc="Legacy discovery / context search.")
DiscoverBatchApi = _post_view(services.points_discover_batch, write=False, doc="Several discovery searches.")
MatrixPairsApi = _post_view(services.search_matrix_pairs, write=False, doc="Distance matrix as pairs.")
MatrixOffsetsApi = _post_view(services.search_matrix_offsets, write=False, doc="Distance matrix as offsets.")


class VectorNameApi(DataPlaneApi):
    """`PUT|DELETE /collections/{name}/vectors/{vector_name}`: add or drop a named vector."""

    def put(self, request: HttpRequest, cluster_id: str, collection: str, vector_name: str) -> HttpResponse:
        """Add a named vector."""
        body = self.body()
        return self.answer(services.vector_create, collection=collection, vector_name=vector_name, body=body)

    def delete(
        self, request: HttpRequest, cluster_id: str, collection: str, vector_name: str
    ) -> HttpResponse:
        """Drop a named vector and its data."""
        return self.answer(services.vector_delete, collection=collection, vector_name=vector_name)


class AliasesUpdateApi(DataPlaneApi):
    """`POST /collections/aliases`: create / delete / rename aliases atomically."""

    write_posts = True

    def post(self, request: HttpRequest, cluster_id: str) -> HttpResponse:
        """Apply alias actions."""
        return self.answer(services.aliases_update, body=self.body())


class AliasesApi(DataPlaneApi):
    """`GET /aliases`: every alias of the cluster."""

    def get(self, request: HttpRequest, cluster_id: str) -> HttpResponse:
        """List aliases."""
        return self.answer(services.aliases_list)


class CollectionAliasesApi(DataPlaneApi):
    """`GET /collections/{name}/aliases`."""

    def get(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Aliases of one collection."""
        return self.answer(services.aliases_list, collection=collection)


DISTRIBUTED_DISABLED = "Distributed mode disabled."


class ClusterApi(DataPlaneApi):
    """`GET /cluster`: a single-node Qdrant reports distributed mode as disabled."""

    def get(self, request: HttpRequest, cluster_id: str) -> HttpResponse:
        """Cluster status."""
        return wire.json_response({"result": {"status": "disabled"}, "status": "ok", "time": self._elapsed()})


class CollectionClusterApi(DataPlaneApi):
    """`GET|POST /collections/{name}/cluster`: one local shard; no shard moves on a single node."""

    write_posts = True

    def get(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Shard distribution of the collection."""
        return self.answer(services.collection_cluster, collection=collection)

    def post(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Shard operations need a distributed deployment."""
        raise BadRequest(DISTRIBUTED_DISABLED)


class ShardsApi(DataPlaneApi):
    """`GET|PUT /collections/{name}/shards`: no shard keys (collections use automatic sharding)."""

    def get(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Shard keys of the collection (none)."""
        return self.answer(services.collection_shard_keys, collection=collection)

    def put(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """Creating shard keys needs custom sharding, which the embedded storage does not have."""
        raise BadRequest(_SHARD_KEYS_UNSUPPORTED)


_SHARD_KEYS_UNSUPPORTED = (
    "Bad request: shard keys need custom sharding mode, which this data plane does not support"
)


class ShardsDeleteApi(DataPlaneApi):
    """`POST /collections/{name}/shards/delete`."""

    write_posts = True

    def post(self, request: HttpRequest, cluster_id: str, collection: str) -> HttpResponse:
        """No shard keys to delete."""
        raise BadRequest(_SHARD_KEYS_UNSUPPORTED)


class HealthApi(DataPlaneApi):
    """`GET /healthz|livez|readyz`: plain text, without a key, as Qdrant answers."""

    def initial(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        """No key needed; the cluster must exist."""
        self._started = time.perf_counter()
        gateway.cluster_get(kwargs["cluster_id"])  # NotFound for an unknown cluster

    def get(self, request: HttpRequest, cluster_id: str) -> HttpResponse:
        """Health check text."""
        return HttpResponse("healthz check passed", content_type="text/plain")


class IssuesApi(DataPlaneApi):
    """`GET|DELETE /issues`: no performance issues are collected, so the report is empty."""

    def get(self, request: HttpRequest, cluster_id: str) -> HttpResponse:
        """Empty issue report."""
        return wire.json_response({"result": {"issues": []}, "status": "ok", "time": self._elapsed()})

    def delete(self, request: HttpRequest, cluster_id: str) -> HttpResponse:
        """Nothing to clear."""
        return wire.json_response({"result": True, "status": "ok", "time": self._elapsed()})


class SnapshotListApi(DataPlaneApi):
    """`GET|POST` on a snapshot list: none exist, and the embedded storage cannot create them."""

    write_posts = True

    def get(self, request: HttpRequest, cluster_id: str, **kwargs: str) -> HttpResponse:
        """No snapshots."""
        return self.answer(services.snapshots_list, collection=kwargs.get("collection"))

    def post(self, request: HttpRequest, cluster_id: str, **kwargs: str) -> HttpResponse:
        """Snapshot creation is not available."""
        raise _snapshots_unsupported()


class SnapshotApi(DataPlaneApi):
    """`GET|DELETE` one snapshot: there are none."""

    def get(self, request: HttpRequest, cluster_id: str, snapshot_name: str, **kwargs: str) -> HttpResponse:
        """Not found."""
        raise NotFound(f"Snapshot {snapshot_name} not found")

    def delete(
        self, request: HttpRequest, cluster_id: str, snapshot_name: str, **kwargs: str
    ) -> HttpResponse:
        """Not found."""
        raise NotFound(f"Snapshot {snapshot_name} not found")


class SnapshotUploadApi(DataPlaneApi):
    """`POST .../snapshots/upload`: not available."""

    write_posts = True

    def post(self, request: HttpRequest, cluster_id: str, **kwargs: str) -> HttpResponse:
        """Not available."""
        raise _snapshots_unsupported()


class SnapshotRecoverApi(DataPlaneApi):
    """`PUT .../snapshots/recover`: not available."""

    def put(self, request: HttpRequest, cluster_id: str, **kwargs: str) -> HttpResponse:
        """Not available."""
        raise _snapshots_unsupported()


def _snapshots_unsupported() -> Unsupported:
    return Unsupported(
        "snapshots (create, upload, recover) are not supported by this data plane's embedded storage"
    )


def unsupported_view(feature: str, methods: tuple[str, ...], *, status: int = 501) -> type[DataPlaneApi]:
    """A view answering `methods` with a clear error saying `feature` is not available here."""

    def refuse(self: DataPlaneApi, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        error = Unsupported if status == 501 else BadRequest
        raise error(f"{feature} is not supported by this data plane")

    handlers: dict[str, Any] = {m.lower(): refuse for m in methods}
    name = "".join(w.title() for w in feature.split() if w.isalpha()) + "UnsupportedApi"
    return type(
        name, (DataPlaneApi,), {"__doc__": f"{feature}: not supported.", "write_posts": True, **handlers}
    )


class UnknownPathApi(DataPlaneApi):
    """The last data-plane route: any path Qdrant's API does not have is a JSON 404, whatever the method."""

    def _refuse(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Response:
        raise catchall.unknown_path(str(request.method), kwargs.get("rest", ""))

    get = post = put = patch = delete = head = options = _refuse
