"""App config for billing (usage records, pricing, statements)."""

from django.apps import AppConfig


class BillingConfig(AppConfig):
    """Token-metered usage and pricing, plugged into inference through its seams (`inference.hooks`)."""

    name = "billing"

    def ready(self) -> None:
        """Record every usage event inference emits, and meter requests before models run."""
        # Imported here: these import models, which need the app registry to be ready.
        from django.db.models.signals import post_delete, post_save

        from billing.limits import connect_invalidation
        from billing.meter import BillingMeter
        from billing.models import ModelPrice
        from billing.receivers import on_usage_recorded, on_usage_refunded, on_usage_settled
        from billing.services import forget_prices
        from inference import hooks
        from inference.usage import usage_recorded, usage_refunded, usage_settled

        def price_changed(sender: object, instance: ModelPrice, **kwargs: object) -> None:
            forget_prices(instance.model)  # this process sees a price change at once

        post_save.connect(price_changed, sender=ModelPrice, dispatch_uid="billing.price_saved", weak=False)
        post_delete.connect(
            price_changed, sender=ModelPrice, dispatch_uid="billing.price_deleted", weak=False
        )
        usage_recorded.connect(on_usage_recorded, dispatch_uid="billing.record_usage")
        usage_refunded.connect(on_usage_refunded, dispatch_uid="billing.refund_usage")
        usage_settled.connect(on_usage_settled, dispatch_uid="billing.settle_usage")
        hooks.register_meter(BillingMeter())
        connect_invalidation()  # a changed limit applies on the next request, in every process
