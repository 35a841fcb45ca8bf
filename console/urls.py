"""URL routes of the whole project."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from console import metrics
from console.clusters import control
from console.clusters.apis import ClusterInferenceApi, RestartJobApi, RestartJobRetryApi
from console.web.views import health
from inference.apis import InferenceServiceApi, ModelListApi, ProviderListApi
from inference.dataplane.apis import RootApi

urlpatterns = [
    path("healthz", health, name="health"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("api/v1/models", ModelListApi.as_view(), name="model-list"),
    path("api/v1/providers", ProviderListApi.as_view(), name="provider-list"),
    path("api/v1/", include("billing.urls")),
    path("inference", InferenceServiceApi.as_view(), name="inference-service"),
    # qdrant-client asks for the root without a trailing slash ("{url}" itself).
    path("clusters/<str:cluster_id>", RootApi.as_view(schema=None)),
    path("clusters/<str:cluster_id>/", include("inference.dataplane.urls")),
    # --- cluster inference toggle, restart jobs, and the web process's restart control endpoint ---
    path(
        "api/v1/clusters/<str:cluster_id>/inference", ClusterInferenceApi.as_view(), name="cluster-inference"
    ),
    path("api/v1/jobs/<int:job_id>", RestartJobApi.as_view(), name="restart-job"),
    path("api/v1/jobs/<int:job_id>/retry", RestartJobRetryApi.as_view(), name="restart-job-retry"),
    path(
        "internal/clusters/<str:cluster_id>/restart/<str:step>",
        control.restart_step,
        name="console-restart-step",
    ),
    # --- end of cluster inference toggle ---
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("admin/", admin.site.urls),
    path("", include("console.web.urls")),
]
