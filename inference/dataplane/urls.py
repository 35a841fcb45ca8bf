"""Routes of the data plane, relative to `/clusters/<cluster_id>/` (Qdrant's REST paths)."""

from __future__ import annotations

from django.urls import path

from inference.dataplane import apis

C = "collections/<str:collection>"

urlpatterns = [
    path("", apis.RootApi.as_view(), name="dataplane-root"),
    path("collections", apis.CollectionsApi.as_view()),
    path(C, apis.CollectionApi.as_view()),
    path(f"{C}/exists", apis.CollectionExistsApi.as_view()),
    path(f"{C}/index", apis.PayloadIndexApi.as_view()),
    path(f"{C}/index/<str:field_name>", apis.PayloadIndexFieldApi.as_view()),
    path(f"{C}/points", apis.PointsApi.as_view()),
    path(f"{C}/points/delete", apis.PointsDeleteApi.as_view()),
    path(f"{C}/points/vectors", apis.VectorsApi.as_view()),
    path(f"{C}/points/vectors/delete", apis.VectorsDeleteApi.as_view()),
    path(f"{C}/points/payload", apis.PayloadApi.as_view()),
    path(f"{C}/points/payload/delete", apis.PayloadDeleteApi.as_view()),
    path(f"{C}/points/payload/clear", apis.PayloadClearApi.as_view()),
    path(f"{C}/points/batch", apis.PointsBatchApi.as_view()),
    path(f"{C}/points/scroll", apis.ScrollApi.as_view()),
    path(f"{C}/points/count", apis.CountApi.as_view()),
    path(f"{C}/facet", apis.FacetApi.as_view()),
    path(f"{C}/points/query", apis.QueryApi.as_view()),
    path(f"{C}/points/query/batch", apis.QueryBatchApi.as_view()),
    path(f"{C}/points/query/groups", apis.QueryGroupsApi.as_view()),
    path(f"{C}/points/<str:point_id>", apis.PointApi.as_view()),
]
