"""Reads about models: the catalog joined with what is installed here and the prices in force."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from inference import catalog, hooks
from inference.catalog import CatalogEntry


@dataclass(frozen=True)
class CatalogModel:
    """A catalog entry with its installed state and the price in force, as the API and console show it."""

    entry: CatalogEntry
    installed: bool
    price_per_million: Decimal


def model_list() -> list[CatalogModel]:
    """Every catalogued model, in catalog order, with whether its weights are installed here.

    The price is the one in force now as the meter reports it (billing's price history), else the list price.
    """
    prices = hooks.meter().prices()
    return [
        CatalogModel(
            entry=e,
            installed=catalog.is_installed(settings.MODELS_DIR, e.name),
            price_per_million=prices.get(e.name, e.price_per_million),
        )
        for e in catalog.CATALOG
    ]
