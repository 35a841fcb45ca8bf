"""Billing's side of the inference seams: the limit checked before a model runs, and the catalog's prices."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from billing.selectors import model_prices_in_force
from billing.services import usage_limit_check


class BillingMeter:
    """The `inference.hooks.Meter` that billing registers at start-up."""

    def check_limit(self, cluster_id: str) -> None:
        """Raise `RateLimited` (a 429) when the cluster spent its tokens of this minute."""
        usage_limit_check(cluster_id=cluster_id)

    def prices(self) -> Mapping[str, Decimal]:
        """Price per 1M tokens in force now, by model."""
        return model_prices_in_force()
