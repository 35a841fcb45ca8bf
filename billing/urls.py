"""Billing API routes, mounted under `api/v1/` by `console/urls.py`."""

from __future__ import annotations

from django.urls import path

from billing.apis import ClusterStatementApi, ClusterStatementCsvApi, ClusterUsageApi

urlpatterns = [
    path("clusters/<str:cluster_id>/usage", ClusterUsageApi.as_view(), name="cluster-usage"),
    # The CSV route first: `<str:month>` would otherwise swallow the `.csv` suffix.
    path(
        "clusters/<str:cluster_id>/statements/<str:month>.csv",
        ClusterStatementCsvApi.as_view(),
        name="cluster-statement-csv",
    ),
    path(
        "clusters/<str:cluster_id>/statements/<str:month>",
        ClusterStatementApi.as_view(),
        name="cluster-statement",
    ),
]
