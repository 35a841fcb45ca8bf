"""Qdrant's gRPC services (`qdrant.Qdrant`, `qdrant.Collections`, `qdrant.Points`, `qdrant.Snapshots`).

Each RPC is one call of the inference gateway, exactly as the REST data plane makes it: authenticate the
`api-key` metadata (or `authorization: Bearer`), whose key names the cluster (one port serves every
cluster); turn the request into the REST body (`inference.grpc.convert`); `gateway.serve` the operation of
`inference.dataplane.services` with the `idempotency-key` metadata as request id; turn the result back.
Every error leaves through `inference.grpc.errors.abort`, so gRPC and REST callers get the same messages.

RPCs the REST data plane has no operation for (the legacy search / recommend / discover family, aliases,
cluster setup, shard keys, snapshots) answer UNIMPLEMENTED, as Qdrant answers features it does not serve.
"""

from __future__ import annotations

import importlib.metadata
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from django.core.signals import request_finished, request_started
from pydantic import ValidationError
from qdrant_client import grpc as pb

from inference import gateway, idempotency, providers
from inference.dataplane import services
from inference.errors import DeadlineExceeded, Unsupported
from inference.gateway import Operation, Served
from inference.grpc import convert
from inference.grpc.errors import abort

QDRANT_VERSION = importlib.metadata.version("qdrant-client")  # a server version the clients accept
M = TypeVar("M")
Build = Callable[[], dict[str, Any]]
Respond = Callable[[Served, float], M]


def metadata_of(context: grpc.ServicerContext) -> dict[str, str]:
    """The invocation metadata as a dict of text values (keys are lower-case on the wire)."""
    return {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}


def api_key_of(metadata: dict[str, str]) -> str:
    """The key from `api-key` or `authorization: Bearer`, as Qdrant accepts both."""
    key = metadata.get("api-key", "").strip()
    if key:
        return key
    auth = metadata.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else ""


class GrpcCall:
    """The sender of Django's request signals for an RPC."""


def _request_started() -> None:
    # An RPC is a request in Django's sense, so what Django does around each HTTP request happens around it
    # too: stale database connections closed (these threads are not Django's own), and the receivers that
    # scope state to one request (the caches' shared generation, read once per call, not once per read).
    request_started.send(sender=GrpcCall)


def _request_finished() -> None:
    request_finished.send(sender=GrpcCall)


def serve_rpc(
    context: grpc.ServicerContext,
    *,
    write: bool,
    operation: Operation,
    build: Build,
    respond: Respond[M],
) -> M:
    """One RPC through the gateway: authenticate, convert, check the deadline, serve, convert back."""
    started = time.perf_counter()
    _request_started()
    try:
        metadata = metadata_of(context)
        cluster = gateway.authenticate(secret=api_key_of(metadata), cluster_id=None, write=write)
        try:
            kwargs = build()
        except ValidationError:
            raise  # classified by errors.from_exception, with an input-free summary
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise convert.bad_request(exc) from None
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("Deadline Exceeded")
        key = metadata.get("idempotency-key") or None
        served = gateway.serve(
            cluster_id=cluster.id,
            operation=operation,
            request_id=key,
            # What the request is, for the key's replay-or-refuse decision (only its digest is kept).
            fingerprint=idempotency.fingerprint(
                "grpc", operation.__name__, json.dumps(kwargs, sort_keys=True, default=str)
            )
            if key is not None
            else None,
            provider_keys={k: v for k, v in metadata.items() if k in providers.KEY_HEADERS and v},
            deadline=None if remaining is None else time.monotonic() + remaining,
            **kwargs,
        )
        return respond(served, time.perf_counter() - started)
    except Exception as exc:
        abort(context, exc)
    finally:
        _request_finished()


def refuse(context: grpc.ServicerContext, what: str) -> Any:
    """An RPC this server does not offer: authenticated like any other, then UNIMPLEMENTED."""
    _request_started()
    try:
        gateway.authenticate(secret=api_key_of(metadata_of(context)), cluster_id=None, write=False)
        raise Unsupported(f"{what} is not supported by this server")
    except Exception as exc:
        abort(context, exc)
    finally:
        _request_finished()


def _unsupported(name: str, what: str) -> Callable[[Any, Any, grpc.ServicerContext], Any]:
    def rpc(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        return refuse(context, what)

    rpc.__name__ = name
    rpc.__doc__ = f"UNIMPLEMENTED: {what} is not served here."
    return rpc


def _operation_response(served: Served, elapsed: float) -> pb.PointsOperationResponse:
    return pb.PointsOperationResponse(
        result=convert.update_result(served.result), time=elapsed, usage=convert.usage_of(served.usage)
    )


class QdrantServicer(pb.QdrantServicer):
    """`qdrant.Qdrant`: the health check (answered without a key, as Qdrant does)."""

    def HealthCheck(
        self, request: pb.HealthCheckRequest, context: grpc.ServicerContext
    ) -> pb.HealthCheckReply:
        """Server title and version."""
        return pb.HealthCheckReply(title="qdrant - vector search engine", version=QDRANT_VERSION)


class CollectionsServicer(pb.CollectionsServicer):
    """`qdrant.Collections`: create, get, list, exist, delete."""

    def Get(self, request: pb.GetCollectionInfoRequest, context: grpc.ServicerContext) -> Any:
        """Collection info."""
        return serve_rpc(
            context,
            write=False,
            operation=services.collection_get,
            build=lambda: {"collection": request.collection_name},
            respond=lambda s, t: pb.GetCollectionInfoResponse(
                result=convert.collection_info(s.result), time=t
            ),
        )

    def List(self, request: pb.ListCollectionsRequest, context: grpc.ServicerContext) -> Any:
        """Names of every collection of the key's cluster."""
        return serve_rpc(
            context,
            write=False,
            operation=services.collection_list,
            build=dict,
            respond=lambda s, t: pb.ListCollectionsResponse(
                collections=[pb.CollectionDescription(name=c["name"]) for c in s.result["collections"]],
                time=t,
            ),
        )

    def Create(self, request: pb.CreateCollection, context: grpc.ServicerContext) -> Any:
        """Create a collection (dense, named, sparse, multivector)."""
        return serve_rpc(
            context,
            write=True,
            operation=services.collection_create,
            build=lambda: {"collection": request.collection_name, "body": convert.create_collection(request)},
            respond=lambda s, t: pb.CollectionOperationResponse(result=bool(s.result), time=t),
        )

    def Delete(self, request: pb.DeleteCollection, context: grpc.ServicerContext) -> Any:
        """Delete a collection."""
        return serve_rpc(
            context,
            write=True,
            operation=services.collection_delete,
            build=lambda: {"collection": request.collection_name},
            respond=lambda s, t: pb.CollectionOperationResponse(result=bool(s.result), time=t),
        )

    def CollectionExists(self, request: pb.CollectionExistsRequest, context: grpc.ServicerContext) -> Any:
        """Whether a collection exists."""
        return serve_rpc(
            context,
            write=False,
            operation=services.collection_exists,
            build=lambda: {"collection": request.collection_name},
            respond=lambda s, t: pb.CollectionExistsResponse(
                result=pb.CollectionExists(exists=bool(s.result["exists"])), time=t
            ),
        )

    Update = _unsupported("Update", "Updating collection parameters")
    UpdateAliases = _unsupported("UpdateAliases", "Collection aliases")
    ListCollectionAliases = _unsupported("ListCollectionAliases", "Collection aliases")
    ListAliases = _unsupported("ListAliases", "Collection aliases")
    CollectionClusterInfo = _unsupported("CollectionClusterInfo", "Distributed mode")
    UpdateCollectionClusterSetup = _unsupported("UpdateCollectionClusterSetup", "Distributed mode")
    CreateShardKey = _unsupported("CreateShardKey", "Custom sharding")
    DeleteShardKey = _unsupported("DeleteShardKey", "Custom sharding")
    ListShardKeys = _unsupported("ListShardKeys", "Custom sharding")


class PointsServicer(pb.PointsServicer):
    """`qdrant.Points`: every point operation the REST data plane serves, inference objects included."""

    def Upsert(self, request: pb.UpsertPoints, context: grpc.ServicerContext) -> Any:
        """Upsert points; vectors may be Documents / Images / Objects."""
        return self._write(
            context, services.points_upsert, request.collection_name, lambda: convert.upsert(request)
        )

    def Delete(self, request: pb.DeletePoints, context: grpc.ServicerContext) -> Any:
        """Delete points by ids or filter."""
        return self._write(
            context, services.points_delete, request.collection_name, lambda: convert.delete_points(request)
        )

    def UpdateVectors(self, request: pb.UpdatePointVectors, context: grpc.ServicerContext) -> Any:
        """Update vectors of existing points (inference objects allowed)."""
        return self._write(
            context,
            services.points_update_vectors,
            request.collection_name,
            lambda: convert.update_vectors(request),
        )

    def DeleteVectors(self, request: pb.DeletePointVectors, context: grpc.ServicerContext) -> Any:
        """Delete named vectors of points."""
        return self._write(
            context, services.vectors_delete, request.collection_name, lambda: convert.delete_vectors(request)
        )

    def SetPayload(self, request: pb.SetPayloadPoints, context: grpc.ServicerContext) -> Any:
        """Merge payload keys into points."""
        return self._write(
            context, services.payload_set, request.collection_name, lambda: convert.set_payload(request)
        )

    def OverwritePayload(self, request: pb.SetPayloadPoints, context: grpc.ServicerContext) -> Any:
        """Replace the payload of points."""
        return self._write(
            context, services.payload_overwrite, request.collection_name, lambda: convert.set_payload(request)
        )

    def DeletePayload(self, request: pb.DeletePayloadPoints, context: grpc.ServicerContext) -> Any:
        """Delete payload keys."""
        return self._write(
            context, services.payload_delete, request.collection_name, lambda: convert.delete_payload(request)
        )

    def ClearPayload(self, request: pb.ClearPayloadPoints, context: grpc.ServicerContext) -> Any:
        """Remove the whole payload of points."""
        return self._write(
            context, services.payload_clear, request.collection_name, lambda: convert.clear_payload(request)
        )

    def CreateFieldIndex(self, request: pb.CreateFieldIndexCollection, context: grpc.ServicerContext) -> Any:
        """Create a payload index."""
        return self._write(
            context,
            services.payload_index_create,
            request.collection_name,
            lambda: convert.create_field_index(request),
        )

    def DeleteFieldIndex(self, request: pb.DeleteFieldIndexCollection, context: grpc.ServicerContext) -> Any:
        """Delete a payload index."""
        return serve_rpc(
            context,
            write=True,
            operation=services.payload_index_delete,
            build=lambda: {"collection": request.collection_name, "field_name": request.field_name},
            respond=_operation_response,
        )

    def UpdateBatch(self, request: pb.UpdateBatchPoints, context: grpc.ServicerContext) -> Any:
        """Several update operations, all resolved (and checked) before the first runs."""
        return serve_rpc(
            context,
            write=True,
            operation=services.points_batch,
            build=lambda: {"collection": request.collection_name, "body": convert.update_batch(request)},
            respond=lambda s, t: pb.UpdateBatchResponse(
                result=[convert.update_result(r) for r in s.result], time=t, usage=convert.usage_of(s.usage)
            ),
        )

    def Get(self, request: pb.GetPoints, context: grpc.ServicerContext) -> Any:
        """Points by id."""
        return self._read(
            context,
            services.points_retrieve,
            request.collection_name,
            lambda: convert.get_points(request),
            lambda s, t: pb.GetResponse(
                result=convert.records(s.result), time=t, usage=convert.usage_of(s.usage)
            ),
        )

    def Scroll(self, request: pb.ScrollPoints, context: grpc.ServicerContext) -> Any:
        """A page of points."""

        def respond(served: Served, elapsed: float) -> pb.ScrollResponse:
            offset = served.result.get("next_page_offset")
            return pb.ScrollResponse(
                result=convert.records(served.result["points"]),
                next_page_offset=convert.point_id(offset) if offset is not None else None,
                time=elapsed,
                usage=convert.usage_of(served.usage),
            )

        return self._read(
            context, services.points_scroll, request.collection_name, lambda: convert.scroll(request), respond
        )

    def Count(self, request: pb.CountPoints, context: grpc.ServicerContext) -> Any:
        """How many points match."""
        return self._read(
            context,
            services.points_count,
            request.collection_name,
            lambda: convert.count(request),
            lambda s, t: pb.CountResponse(
                result=pb.CountResult(count=s.result["count"]), time=t, usage=convert.usage_of(s.usage)
            ),
        )

    def Facet(self, request: pb.FacetCounts, context: grpc.ServicerContext) -> Any:
        """Counts of payload values."""
        return self._read(
            context,
            services.points_facet,
            request.collection_name,
            lambda: convert.facet(request),
            lambda s, t: pb.FacetResponse(
                hits=convert.facet_hits(s.result), time=t, usage=convert.usage_of(s.usage)
            ),
        )

    def Query(self, request: pb.QueryPoints, context: grpc.ServicerContext) -> Any:
        """Universal query; inference objects in the query and every prefetch are embedded."""
        return self._read(
            context,
            services.points_query,
            request.collection_name,
            lambda: convert.query(request),
            lambda s, t: pb.QueryResponse(
                result=convert.scored_points(s.result["points"]), time=t, usage=convert.usage_of(s.usage)
            ),
        )

    def QueryBatch(self, request: pb.QueryBatchPoints, context: grpc.ServicerContext) -> Any:
        """Several queries; their inference objects are embedded in one call."""
        return self._read(
            context,
            services.points_query_batch,
            request.collection_name,
            lambda: convert.query_batch(request),
            lambda s, t: pb.QueryBatchResponse(
                result=[pb.BatchResult(result=convert.scored_points(r["points"])) for r in s.result],
                time=t,
                usage=convert.usage_of(s.usage),
            ),
        )

    def QueryGroups(self, request: pb.QueryPointGroups, context: grpc.ServicerContext) -> Any:
        """Query grouped by a payload field."""
        return self._read(
            context,
            services.points_query_groups,
            request.collection_name,
            lambda: convert.query_groups(request),
            lambda s, t: pb.QueryGroupsResponse(
                result=convert.groups(s.result), time=t, usage=convert.usage_of(s.usage)
            ),
        )

    CreateVectorName = _unsupported("CreateVectorName", "Adding vector names")
    DeleteVectorName = _unsupported("DeleteVectorName", "Deleting vector names")
    Search = _unsupported("Search", "Search (use Query)")
    SearchBatch = _unsupported("SearchBatch", "SearchBatch (use QueryBatch)")
    SearchGroups = _unsupported("SearchGroups", "SearchGroups (use QueryGroups)")
    Recommend = _unsupported("Recommend", "Recommend (use Query with a recommend query)")
    RecommendBatch = _unsupported("RecommendBatch", "RecommendBatch (use QueryBatch)")
    RecommendGroups = _unsupported("RecommendGroups", "RecommendGroups (use QueryGroups)")
    Discover = _unsupported("Discover", "Discover (use Query with a discover query)")
    DiscoverBatch = _unsupported("DiscoverBatch", "DiscoverBatch (use QueryBatch)")
    SearchMatrixPairs = _unsupported("SearchMatrixPairs", "The distance matrix")
    SearchMatrixOffsets = _unsupported("SearchMatrixOffsets", "The distance matrix")

    @staticmethod
    def _write(context: grpc.ServicerContext, operation: Operation, collection: str, body: Build) -> Any:
        return serve_rpc(
            context,
            write=True,
            operation=operation,
            build=lambda: {"collection": collection, "body": body()},
            respond=_operation_response,
        )

    @staticmethod
    def _read(
        context: grpc.ServicerContext, operation: Operation, collection: str, body: Build, respond: Respond[M]
    ) -> M:
        return serve_rpc(
            context,
            write=False,
            operation=operation,
            build=lambda: {"collection": collection, "body": body()},
            respond=respond,
        )


class SnapshotsServicer(pb.SnapshotsServicer):
    """`qdrant.Snapshots`: not offered (embedded storage has no snapshots); UNIMPLEMENTED, as Qdrant."""

    Create = _unsupported("Create", "Snapshots")
    List = _unsupported("List", "Snapshots")
    Delete = _unsupported("Delete", "Snapshots")
    CreateFull = _unsupported("CreateFull", "Snapshots")
    ListFull = _unsupported("ListFull", "Snapshots")
    DeleteFull = _unsupported("DeleteFull", "Snapshots")
