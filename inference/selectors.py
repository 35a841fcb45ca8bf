"""Reads about models: the catalog joined with what is installed here and the prices in force."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from inference import catalog, hooks, providers
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


@dataclass(frozen=True)
class ProviderEntry:
    """An external provider as the API and console list it: how to name its models and send its key."""

    prefix: str  # model names start with `<prefix>/`
    name: str
    key_header: str  # request header, and `options` key, carrying the caller's key
    input_types: list[str]
    example_model: str
    docs_url: str


def provider_list() -> list[ProviderEntry]:
    """The external providers whose models requests may name, without their model lists (theirs to keep)."""
    return [
        ProviderEntry(
            prefix=client.prefix,
            name=client.label,
            key_header=client.header,
            input_types=sorted(t.value for t in client.input_types),
            example_model=client.example_model,
            docs_url=client.docs_url,
        )
        for client in providers.PROVIDERS.values()
    ]
