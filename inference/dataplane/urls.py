"""Routes of the data plane, relative to `/clusters/<cluster_id>/`: every path of Qdrant's REST API.

Order matters: fixed paths come before the `{collection}` / `{id}` placeholders that would capture them
(`collections/aliases` before `collections/{name}`, `points/search` before `points/{id}`), and the last
route answers every other path with a JSON 404 (`UnknownPathApi`). The points routes come first: nothing else
starts with `collections/{name}/points`.
"""

from __future__ import annotations

from django.urls import path, re_path

from inference.dataplane import apis

C = "collections/<str:collection>"
P = f"{C}/points"
SHARD = f"{C}/shards/<int:shard_id>"

urlpatterns = [
    path("", apis.RootApi.as_view(), name="dataplane-root"),
    # --- points: first, as Django tries routes in order and these carry nearly all traffic (points/query
    # came 55th) ---
    path(P, apis.PointsApi.as_view()),
    path(f"{P}/delete", apis.PointsDeleteApi.as_view()),
    path(f"{P}/vectors", apis.VectorsApi.as_view()),
    path(f"{P}/vectors/delete", apis.VectorsDeleteApi.as_view()),
    path(f"{P}/payload", apis.PayloadApi.as_view()),
    path(f"{P}/payload/delete", apis.PayloadDeleteApi.as_view()),
    path(f"{P}/payload/clear", apis.PayloadClearApi.as_view()),
    path(f"{P}/batch", apis.PointsBatchApi.as_view()),
    path(f"{P}/scroll", apis.ScrollApi.as_view()),
    path(f"{P}/count", apis.CountApi.as_view()),
    path(f"{P}/query", apis.QueryApi.as_view()),
    path(f"{P}/query/batch", apis.QueryBatchApi.as_view()),
    path(f"{P}/query/groups", apis.QueryGroupsApi.as_view()),
    path(f"{P}/search", apis.SearchApi.as_view()),
    path(f"{P}/search/batch", apis.SearchBatchApi.as_view()),
    path(f"{P}/search/groups", apis.SearchGroupsApi.as_view()),
    path(f"{P}/search/matrix/pairs", apis.MatrixPairsApi.as_view()),
    path(f"{P}/search/matrix/offsets", apis.MatrixOffsetsApi.as_view()),
    path(f"{P}/recommend", apis.RecommendApi.as_view()),
    path(f"{P}/recommend/batch", apis.RecommendBatchApi.as_view()),
    path(f"{P}/recommend/groups", apis.RecommendGroupsApi.as_view()),
    path(f"{P}/discover", apis.DiscoverApi.as_view()),
    path(f"{P}/discover/batch", apis.DiscoverBatchApi.as_view()),
    path(f"{P}/<str:point_id>", apis.PointApi.as_view()),
    # --- service ---
    path("healthz", apis.HealthApi.as_view()),
    path("livez", apis.HealthApi.as_view()),
    path("readyz", apis.HealthApi.as_view()),
    path("issues", apis.IssuesApi.as_view()),
    path("telemetry", apis.unsupported_view("telemetry", ("GET",)).as_view()),
    path("metrics", apis.unsupported_view("Prometheus metrics", ("GET",)).as_view()),
    path("quotas", apis.unsupported_view("quotas", ("GET", "PUT")).as_view()),
    # --- distributed (a single node: distributed mode disabled) ---
    path("cluster", apis.ClusterApi.as_view()),
    path("cluster/recover", apis.unsupported_view("cluster recovery", ("POST",), status=400).as_view()),
    path("cluster/telemetry", apis.unsupported_view("cluster telemetry", ("GET",), status=400).as_view()),
    path("cluster/metadata/keys", apis.unsupported_view("cluster metadata", ("GET",), status=400).as_view()),
    path(
        "cluster/peer/<str:peer_id>",
        apis.unsupported_view("removing peers", ("DELETE",), status=400).as_view(),
    ),
    # --- snapshots of the whole storage ---
    path("snapshots", apis.SnapshotListApi.as_view()),
    path("snapshots/<str:snapshot_name>", apis.SnapshotApi.as_view()),
    # --- aliases ---
    path("aliases", apis.AliasesApi.as_view()),
    path("collections/aliases", apis.AliasesUpdateApi.as_view()),
    # --- collections ---
    path("collections", apis.CollectionsApi.as_view()),
    path(C, apis.CollectionApi.as_view()),
    path(f"{C}/exists", apis.CollectionExistsApi.as_view()),
    path(f"{C}/aliases", apis.CollectionAliasesApi.as_view()),
    path(f"{C}/vectors/<str:vector_name>", apis.VectorNameApi.as_view()),
    path(f"{C}/index", apis.PayloadIndexApi.as_view()),
    path(f"{C}/index/<str:field_name>", apis.PayloadIndexFieldApi.as_view()),
    path(f"{C}/optimizations", apis.unsupported_view("optimization progress", ("GET",)).as_view()),
    path(f"{C}/cluster", apis.CollectionClusterApi.as_view()),
    path(f"{C}/shards", apis.ShardsApi.as_view()),
    path(f"{C}/shards/delete", apis.ShardsDeleteApi.as_view()),
    path(f"{C}/snapshots", apis.SnapshotListApi.as_view()),
    path(f"{C}/snapshots/upload", apis.SnapshotUploadApi.as_view()),
    path(f"{C}/snapshots/recover", apis.SnapshotRecoverApi.as_view()),
    path(f"{C}/snapshots/<str:snapshot_name>", apis.SnapshotApi.as_view()),
    path(f"{SHARD}/snapshot", apis.unsupported_view("shard snapshot streaming", ("GET",)).as_view()),
    path(f"{SHARD}/snapshots", apis.SnapshotListApi.as_view()),
    path(f"{SHARD}/snapshots/upload", apis.SnapshotUploadApi.as_view()),
    path(f"{SHARD}/snapshots/recover", apis.SnapshotRecoverApi.as_view()),
    path(f"{SHARD}/snapshots/<str:snapshot_name>", apis.SnapshotApi.as_view()),
    path(f"{C}/facet", apis.FacetApi.as_view()),
    # --- everything else: a JSON 404, never the console's HTML page ---
    re_path(r"^(?P<rest>.*)$", apis.UnknownPathApi.as_view(), name="dataplane-unknown"),
]
