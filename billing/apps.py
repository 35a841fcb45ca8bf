"""App config for billing (usage records, pricing, statements)."""

from django.apps import AppConfig


class BillingConfig(AppConfig):
    """Token-metered usage and pricing; connects the receiver that turns usage events into ledger rows."""

    name = "billing"

    def ready(self) -> None:
        """Persist every usage event the data plane emits (`inference.usage.usage_recorded`)."""
        # Imported here: receivers import models, which need the app registry to be ready.
        from billing.receivers import on_usage_recorded
        from inference.usage import usage_recorded

        usage_recorded.connect(on_usage_recorded, dispatch_uid="billing.record_usage")
