"""Billing's side of the inference seams: the limit checked before a model runs, and the catalog's prices."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from billing import limits
from billing.selectors import model_prices_in_force
from inference.hooks import Reservation


class BillingMeter:
    """The `inference.hooks.Meter` that billing registers at start-up."""

    def reserve(self, cluster_id: str, tokens: int) -> Reservation:
        """Hold `tokens` against the cluster's tokens-per-minute limit; `RateLimited` (a 429) when spent."""
        return limits.reserve(cluster_id, tokens)

    def prices(self) -> Mapping[str, Decimal]:
        """Price per 1M tokens in force now, by model."""
        return model_prices_in_force()
