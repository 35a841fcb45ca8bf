"""App config for inference (catalog, engine, data-plane API)."""

from django.apps import AppConfig


class InferenceConfig(AppConfig):
    """Model catalog, inference-object resolution and the data-plane API."""

    name = "inference"
