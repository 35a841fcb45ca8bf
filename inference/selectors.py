"""Reads about models: the catalog joined with what is installed on this server."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from inference import catalog
from inference.catalog import CatalogEntry


@dataclass(frozen=True)
class CatalogModel:
    """A catalog entry with its installed state, as the API and console show it."""

    entry: CatalogEntry
    installed: bool


def model_list() -> list[CatalogModel]:
    """Every catalogued model, in catalog order, with whether its weights are installed here."""
    return [
        CatalogModel(entry=e, installed=catalog.is_installed(settings.MODELS_DIR, e.name))
        for e in catalog.CATALOG
    ]
