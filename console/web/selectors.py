"""Reads the web console needs on top of the console, billing and inference selectors.

Everything here only reads: it joins the catalog (what models exist and are installed), billing (prices in
force, this month's statement, the daily usage series) and the clusters into the rows the pages render.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from billing.periods import Granularity, Month, floor_to
from billing.selectors import (
    CURRENCY,
    ModelSeries,
    Statement,
    free_allowance,
    model_prices_in_force,
    statement_get,
    usage_series,
)
from console.clusters.models import ApiKey, Cluster
from console.clusters.selectors import InferenceState, cluster_inference_state, clusters_visible
from inference.catalog import CatalogEntry
from inference.engine.types import Output
from inference.selectors import ProviderEntry, model_list, provider_list

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

CHART_DAYS = 30


def cluster_url(cluster: Cluster) -> str:
    """The cluster's data-plane base URL, as clients are configured with it."""
    return f"{settings.PUBLIC_URL}/clusters/{cluster.pk}"


def grpc_url(cluster: Cluster) -> str | None:
    """Where the cluster's gRPC API answers (one port for all clusters: the API key picks the cluster)."""
    return str(settings.GRPC_PUBLIC_URL) if settings.GRPC_PORT else None


def output_label(entry: CatalogEntry) -> str:
    """What a model produces, as the model table shows it: `dense · 384 dims`, `sparse`, `multivector`."""
    spec = entry.spec
    if spec.output == Output.DENSE:
        return f"dense · {spec.dim} dims"
    if spec.output == Output.MULTIVECTOR:
        return f"multivector · {spec.dim} dims"
    return "sparse"


@dataclass(frozen=True)
class ClusterRow:
    """A line of the clusters list."""

    cluster: Cluster
    state: InferenceState
    month_cost: Decimal
    currency: str

    @property
    def inference_label(self) -> str:
        """`on`, `off`, `enabling…`, `disabling…` (while a restart applies a toggle)."""
        if self.cluster.status == Cluster.Status.RESTARTING and self.state.desired != self.state.enabled:
            return "enabling…" if self.state.desired else "disabling…"
        return "on" if self.state.enabled else "off"


def cluster_rows(*, user: AbstractBaseUser | AnonymousUser, now: datetime | None = None) -> list[ClusterRow]:
    """The clusters the user may see (their accounts'), with inference state and this month's cost."""
    month = Month.of(now or timezone.now())
    return [
        ClusterRow(
            cluster=cluster,
            state=cluster_inference_state(cluster=cluster),
            month_cost=statement_get(cluster_id=cluster.pk, month=month).cost,
            currency=CURRENCY,
        )
        for cluster in clusters_visible(user=user)
    ]


def cluster_api_keys(*, cluster: Cluster) -> QuerySet[ApiKey]:
    """The cluster's API keys, newest first, revoked ones included (for the audit trail)."""
    return ApiKey.objects.filter(cluster=cluster).order_by("-created_at", "-id")


def cluster_api_key(*, cluster: Cluster, key_id: int) -> ApiKey | None:
    """One API key of the cluster, or None (a key id of another cluster is None too)."""
    return ApiKey.objects.filter(cluster=cluster, pk=key_id).first()


@dataclass(frozen=True)
class ModelRow:
    """A line of the Inference tab's model table: the model and this month's usage of it on the cluster."""

    entry: CatalogEntry
    installed: bool
    output: str
    price_per_million: Decimal
    used_tokens: int
    free_allowance: int
    free_remaining: int
    cost: Decimal

    @property
    def name(self) -> str:
        """The canonical model name, as requests name it."""
        return self.entry.name

    @property
    def organisation(self) -> str:
        """`sentence-transformers/` of `sentence-transformers/all-minilm-l6-v2` (with the slash)."""
        head, slash, _ = self.name.rpartition("/")
        return head + slash

    @property
    def short_name(self) -> str:
        """`all-minilm-l6-v2` of `sentence-transformers/all-minilm-l6-v2`."""
        return self.name.rpartition("/")[2]


@dataclass(frozen=True)
class InferenceUsage:
    """The Inference tab's numbers: the model table, the month they cover, and its statement."""

    month: Month
    models: list[ModelRow]
    statement: Statement
    currency: str = CURRENCY


def inference_usage(*, cluster: Cluster, now: datetime | None = None) -> InferenceUsage:
    """Every catalog model with its price in force, installed state and this month's usage on the cluster."""
    now = now or timezone.now()
    month = Month.of(now)
    statement = statement_get(cluster_id=cluster.pk, month=month)
    lines = {line.model: line for line in statement.lines}
    prices = model_prices_in_force(at=now)
    rows = []
    for model in model_list():
        name = model.entry.name
        line = lines.get(name)
        allowance = line.free_allowance if line else free_allowance(model=name, month=month)
        used = line.used_tokens if line else 0
        rows.append(
            ModelRow(
                entry=model.entry,
                installed=model.installed,
                output=output_label(model.entry),
                # A model never billed yet may have no price row; the catalog's list price is what applies.
                price_per_million=prices.get(name, model.entry.price_per_million),
                used_tokens=used,
                free_allowance=allowance,
                free_remaining=max(allowance - (line.free_tokens if line else 0), 0),
                cost=line.cost if line else Decimal("0.00"),
            )
        )
    return InferenceUsage(month=month, models=rows, statement=statement)


def usage_last_days(
    *, cluster: Cluster, days: int = CHART_DAYS, now: datetime | None = None
) -> tuple[list[datetime], list[ModelSeries]]:
    """Daily token usage per model over the last `days` UTC days, today included (zeros filled in)."""
    now = now or timezone.now()
    start = floor_to(now, Granularity.DAY) - timedelta(days=days - 1)
    series = usage_series(cluster_id=cluster.pk, start=start, end=now, granularity=Granularity.DAY)
    return series.buckets, series.series


@dataclass(frozen=True)
class ProviderRow:
    """A line of the Inference tab's "External providers" section: the provider and its usage this month."""

    provider: ProviderEntry
    used_tokens: int
    models: list[tuple[str, int]]  # the provider models used this month, with their tokens


def provider_usage(*, cluster: Cluster, now: datetime | None = None) -> list[ProviderRow]:
    """Every external provider with the tokens it reported for this cluster this month (billed by them)."""
    statement = statement_get(cluster_id=cluster.pk, month=Month.of(now or timezone.now()))
    rows = []
    for provider in provider_list():
        used = sorted(
            (line.model, line.used_tokens)
            for line in statement.lines
            if line.model.lower().startswith(provider.prefix + "/")
        )
        rows.append(ProviderRow(provider=provider, used_tokens=sum(t for _, t in used), models=used))
    return rows
