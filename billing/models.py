"""Billing data: the usage ledger, its hourly and daily roll-ups, price history, free allowances and limits.

The ledger (`UsageRecord`) is the source of truth: one row per request x model, made unique by a database
constraint so a retried request or a redelivered event can never be billed twice. Roll-ups are derived from
it (kept in step in the same transaction, and provably rebuildable with `billing_rebuild_rollups`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import models
from django.db.models import Q
from django.utils import timezone

from console.clusters.models import Cluster

MODEL_NAME_LENGTH = 200
REQUEST_ID_LENGTH = 128
DEFAULT_FREE_TOKENS_PER_MONTH = 5_000_000
# Catalog list prices are in force from this instant on (seeded by migration 0002 and on a model's first use).
LIST_PRICE_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ModelPrice(models.Model):
    """One step of a model's price history: its price per 1,000,000 tokens from `effective_from` on.

    The price in force at an instant is the row with the latest `effective_from` not after it. Rows are never
    edited: a price change is a new row, so past usage keeps the price it was recorded under.
    """

    model = models.CharField(max_length=MODEL_NAME_LENGTH)
    price_per_million = models.DecimalField(max_digits=12, decimal_places=6)  # USD per 1M tokens
    effective_from = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("model", "effective_from")
        constraints = [
            models.UniqueConstraint(fields=["model", "effective_from"], name="model_price_one_per_instant"),
            models.CheckConstraint(condition=Q(price_per_million__gte=0), name="model_price_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.model}: {self.price_per_million}/1M from {self.effective_from.isoformat()}"


class ModelAllowance(models.Model):
    """A model's free tokens per cluster per UTC month, from `effective_month` (a first day of month) on.

    Models without a row get DEFAULT_FREE_TOKENS_PER_MONTH. Allowances change only at month boundaries, so a
    month's statement has exactly one allowance per model.
    """

    model = models.CharField(max_length=MODEL_NAME_LENGTH)
    free_tokens_per_month = models.PositiveBigIntegerField()
    effective_month = models.DateField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("model", "effective_month")
        constraints = [
            models.UniqueConstraint(
                fields=["model", "effective_month"], name="model_allowance_one_per_month"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model}: {self.free_tokens_per_month} free tokens/month from {self.effective_month}"


class UsageRecord(models.Model):
    """The ledger: tokens one request spent on one model of one cluster, priced by the price in force.

    The unique constraint on (cluster, request_id, model) is what makes billing exactly-once: inserts use
    ON CONFLICT DO NOTHING, so a second delivery of the same request is dropped by the database itself.
    """

    # PROTECT: billed usage must outlive any attempt to delete its cluster by accident.
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="usage_records")
    model = models.CharField(max_length=MODEL_NAME_LENGTH)
    tokens = models.PositiveBigIntegerField()
    request_id = models.CharField(max_length=REQUEST_ID_LENGTH)
    time = models.DateTimeField()  # when the request's inference succeeded
    # The price in force at `time` (null only for a model with no price at all, which is then billed 0).
    price = models.ForeignKey(ModelPrice, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(default=timezone.now)  # when the row was written (audit)

    class Meta:
        ordering = ("time", "id")
        constraints = [
            models.UniqueConstraint(
                fields=["cluster", "request_id", "model"], name="usage_record_once_per_request_model"
            ),
            models.CheckConstraint(condition=Q(tokens__gt=0), name="usage_record_tokens_positive"),
        ]
        indexes = [
            models.Index(fields=["cluster", "time"], name="usage_record_time"),
            models.Index(fields=["cluster", "model", "time"], name="usage_record_model_time"),
        ]

    def __str__(self) -> str:
        return f"{self.cluster_id} {self.model} {self.tokens} tokens ({self.request_id})"


class UsageRollup(models.Model):
    """Tokens and requests of one cluster x model in one UTC hour or day, for charts.

    Incremented with F() in the transaction that inserts the ledger rows it sums, so it never drifts from the
    ledger; `billing_rebuild_rollups` recomputes and compares them to prove it.
    """

    class Granularity(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="usage_rollups")
    model = models.CharField(max_length=MODEL_NAME_LENGTH)
    granularity = models.CharField(max_length=8, choices=Granularity.choices)
    period_start = models.DateTimeField()
    tokens = models.PositiveBigIntegerField(default=0)
    records = models.PositiveBigIntegerField(default=0)  # ledger rows summed: requests that used the model

    class Meta:
        ordering = ("cluster", "granularity", "period_start", "model")
        constraints = [
            models.UniqueConstraint(
                fields=["cluster", "model", "granularity", "period_start"], name="usage_rollup_one_per_bucket"
            ),
        ]
        indexes = [
            models.Index(fields=["cluster", "granularity", "period_start"], name="usage_rollup_series"),
        ]

    def __str__(self) -> str:
        return f"{self.cluster_id} {self.model} {self.granularity} {self.period_start:%Y-%m-%d %H:00}"


class ClusterLimit(models.Model):
    """An optional cap on a cluster's tokens per UTC minute (over it, the data plane answers 429)."""

    cluster = models.OneToOneField(
        Cluster, on_delete=models.CASCADE, primary_key=True, related_name="usage_limit"
    )
    tokens_per_minute = models.PositiveBigIntegerField()
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(tokens_per_minute__gt=0), name="cluster_limit_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.cluster_id}: {self.tokens_per_minute} tokens/minute"
