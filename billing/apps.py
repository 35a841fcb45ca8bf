"""App config for billing (usage records, pricing, statements)."""

from django.apps import AppConfig


class BillingConfig(AppConfig):
    """Token-metered usage and pricing."""

    name = "billing"
