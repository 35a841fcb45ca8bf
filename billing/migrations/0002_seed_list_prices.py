"""Seed the price history with the catalog's list prices, in force since LIST_PRICE_EPOCH.

The prices are copied here rather than read from `inference.catalog` so this migration means the same thing
forever; `tests/billing/test_pricing.py` checks that the copy still equals the catalog. A model added to the
catalog later gets its list price on first use (see `billing.services._price_for`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

LIST_PRICE_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

LIST_PRICES: dict[str, Decimal] = {
    "sentence-transformers/all-minilm-l6-v2": Decimal("0"),
    "sentence-transformers/paraphrase-minilm-l3-v2": Decimal("0"),
    "intfloat/multilingual-e5-small": Decimal("0"),
    "mixedbread-ai/mxbai-embed-large-v1": Decimal("0.10"),
    "qdrant/clip-vit-b-32-text": Decimal("0.05"),
    "qdrant/clip-vit-b-32-vision": Decimal("0.10"),
    "qdrant/bm25": Decimal("0"),
    "prithivida/splade_pp_en_v1": Decimal("0.05"),
    "answerdotai/answerai-colbert-small-v1": Decimal("0"),
}


def seed(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Insert one list-price row per catalogued model (idempotent)."""
    model_price = apps.get_model("billing", "ModelPrice")
    for model, price in LIST_PRICES.items():
        model_price.objects.get_or_create(
            model=model, effective_from=LIST_PRICE_EPOCH, defaults={"price_per_million": price}
        )


def unseed(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Remove the seeded rows (fails, as it should, if usage was already billed at them)."""
    model_price = apps.get_model("billing", "ModelPrice")
    model_price.objects.filter(model__in=list(LIST_PRICES), effective_from=LIST_PRICE_EPOCH).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
