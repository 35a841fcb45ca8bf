"""Fixtures for billing tests: clusters, recording events at chosen times, price history, console users."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from importlib import import_module
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone

from billing.models import ModelPrice
from billing.services import RecordResult, usage_record
from console.clusters.models import Cluster, Membership
from console.clusters.services import CreatedCluster, account_default_get_or_create, cluster_create
from inference.usage import UsageEvent
from tests.conftest import BM25, MINILM
from tests.helpers import DataPlaneClient

MXBAI = "mixedbread-ai/mxbai-embed-large-v1"  # a paid model (list price 0.10 per 1M tokens)

needs_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL (set DATABASE_URL=postgres://...; `make test` does when it answers): "
    "row-level locking under real concurrency is what is being tested",
)


def new_cluster(name: str = "billing") -> CreatedCluster:
    """A paid US cluster with inference on."""
    return cluster_create(name=name, region="us-east-1", tier="paid")


def two_model_events(cluster_id: str, request_id: str, tokens: int) -> list[UsageEvent]:
    """One request's usage events, as the data plane emits them: `tokens` for each of two models."""
    now = timezone.now()
    return [
        UsageEvent(cluster_id=cluster_id, model=model, tokens=tokens, request_id=request_id, time=now)
        for model in (MINILM, BM25)
    ]


@pytest.fixture
def cluster(db: None) -> Cluster:
    """A cluster in a test that rolls back (fast)."""
    return new_cluster().cluster


def record(
    cluster_id: str, model: str, tokens: int, time: datetime, request_id: str | None = None
) -> RecordResult:
    """Record one event at a chosen time, as the data-plane receiver would."""
    event = UsageEvent(
        cluster_id=cluster_id,
        model=model,
        tokens=tokens,
        request_id=request_id or uuid.uuid4().hex,
        time=time,
    )
    return usage_record(events=[event])


def set_price_history(model: str, history: list[tuple[datetime, str]]) -> list[ModelPrice]:
    """Replace a model's price history (tests write past prices directly; the service schedules ahead)."""
    ModelPrice.objects.filter(model=model).delete()
    return [
        ModelPrice.objects.create(model=model, effective_from=when, price_per_million=Decimal(price))
        for when, price in history
    ]


def console_user(username: str, role: str | None = None, *, staff: bool = False) -> User:
    """A Django user with a console role in the default account (or none)."""
    user = User.objects.create_user(username=username, password="pw-" + username, is_staff=staff)
    if role is not None:
        Membership.objects.create(user=user, account=account_default_get_or_create(), role=role)
    return user


class DataPlane(DataPlaneClient):
    """The data-plane JSON client for a created cluster."""

    def __init__(self, created: CreatedCluster) -> None:
        super().__init__(created.cluster.id, created.api_key)


def response_usage(body: dict[str, Any]) -> dict[str, int]:
    """model -> tokens from a data-plane response (empty when it reports none)."""
    models = body.get("usage", {}).get("inference", {}).get("models", {})
    return {name: int(value["tokens"]) for name, value in models.items()}


@pytest.fixture(autouse=True)
def list_prices(request: pytest.FixtureRequest) -> None:
    """The list prices migrate seeds, present for every database test here.

    A transactional test elsewhere flushes the tables, and pytest-xdist may run it first on this worker;
    the migration's own (idempotent) seeding function puts the rows back.
    """
    if request.node.get_closest_marker("django_db") or {"db", "transactional_db"} & set(request.fixturenames):
        request.getfixturevalue("_django_db_helper")  # database access as the test asked for it, first
        _seed_list_prices(django_apps, None)


_seed_list_prices = import_module("billing.migrations.0002_seed_list_prices").seed
