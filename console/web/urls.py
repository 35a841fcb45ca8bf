"""Routes of the web console (HTML pages), mounted at the site root by `console/urls.py`.

Pages live under `console/` because `clusters/<id>/` is the cluster's data plane (Qdrant's REST API).
"""

from __future__ import annotations

from django.contrib.auth.views import LogoutView
from django.urls import path

from console.web import views

app_name = "console"

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", views.ConsoleLoginView.as_view(), name="login"),
    path("accounts/logout/", LogoutView.as_view(next_page="console:login"), name="logout"),
    path("console/", views.cluster_list, name="cluster-list"),
    path("console/clusters/<str:cluster_id>/", views.cluster_overview, name="cluster-overview"),
    path("console/clusters/<str:cluster_id>/keys/", views.cluster_keys, name="cluster-keys"),
    path("console/clusters/<str:cluster_id>/keys/new", views.api_key_create_view, name="api-key-create"),
    path(
        "console/clusters/<str:cluster_id>/keys/<int:key_id>/revoke",
        views.api_key_revoke_view,
        name="api-key-revoke",
    ),
    path("console/clusters/<str:cluster_id>/inference/", views.cluster_inference, name="cluster-inference"),
    path(
        "console/clusters/<str:cluster_id>/inference/toggle",
        views.inference_toggle_view,
        name="inference-toggle",
    ),
    path(
        "console/clusters/<str:cluster_id>/jobs/<int:job_id>/retry",
        views.restart_retry_view,
        name="restart-retry",
    ),
]
