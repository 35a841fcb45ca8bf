"""Fixtures of the operations tests."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import django.apps
import pytest


@pytest.fixture(autouse=True)
def reseed_list_prices(request: pytest.FixtureRequest, django_db_blocker: object) -> Iterator[None]:
    """Put back the list prices migrations seed, after a transactional test's flush removed them.

    Billing's non-transactional tests read those rows (they expect migrate's data), and pytest-xdist may
    run them on the same worker after these files; this fixture is set up first, so it is torn down after
    the flush.
    """
    yield
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or bool(
        marker and marker.kwargs.get("transaction")
    )
    if not transactional:
        return
    seeding = importlib.import_module("billing.migrations.0002_seed_list_prices")
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        seeding.seed(django.apps.apps, None)
