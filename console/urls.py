"""URL routes of the whole project."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from console.views import health
from inference.apis import ModelListApi

urlpatterns = [
    path("healthz", health, name="health"),
    path("api/v1/models", ModelListApi.as_view(), name="model-list"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("admin/", admin.site.urls),
]
