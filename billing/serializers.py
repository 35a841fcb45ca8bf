"""Input and output serializers of the billing API, and the CSV form of a statement."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.periods import Granularity, Month, bucket_starts
from billing.selectors import MAX_SERIES_BUCKETS, Statement
from inference import catalog

# When `from` is not given, a series covers this much before `to`.
DEFAULT_SPANS = {
    Granularity.HOUR: timedelta(hours=24),
    Granularity.DAY: timedelta(days=30),
    Granularity.MONTH: timedelta(days=365),
}


class UsageQuerySerializer(serializers.Serializer):
    """`?from=&to=&granularity=hour|day|month&model=`: ISO 8601 datetimes or dates (UTC when no offset)."""

    # `from` is a Python keyword, hence the explicit field map below.
    to = serializers.DateTimeField(required=False, help_text="Exclusive end (default: now).")
    granularity = serializers.ChoiceField(
        choices=[g.value for g in Granularity], default=Granularity.DAY.value
    )
    model = serializers.CharField(required=False, help_text="One model's series only (case-insensitive).")

    def get_fields(self) -> dict[str, serializers.Field]:
        """Add the `from` field, which cannot be a class attribute."""
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(
            required=False, help_text="Start, floored to the granularity (default: a day, 30 days or a year)."
        )
        return fields

    def validate_model(self, value: str) -> str:
        """A catalogued model, by its canonical name."""
        entry = catalog.find(value)
        if entry is None:
            raise serializers.ValidationError(f"Unknown model {value!r}.")
        return entry.name

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Defaults, `from` before `to`, and a bounded number of points."""
        granularity = Granularity(attrs["granularity"])
        end: datetime = attrs.get("to") or timezone.now()
        start: datetime = attrs.get("from") or end - DEFAULT_SPANS[granularity]
        if start >= end:
            raise serializers.ValidationError({"from": "`from` must be before `to`."})
        try:
            bucket_starts(start, end, granularity, MAX_SERIES_BUCKETS)
        except ValueError:
            raise serializers.ValidationError(
                {
                    "granularity": f"More than {MAX_SERIES_BUCKETS} {granularity} points: shorten the range "
                    "or use a coarser granularity."
                }
            ) from None
        return {"start": start, "end": end, "granularity": granularity, "model": attrs.get("model")}


@extend_schema_field({"type": "string", "pattern": r"^\d{4}-\d{2}$", "example": "2025-03"})
class MonthField(serializers.Field):
    """A UTC month written `YYYY-MM`."""

    def to_internal_value(self, data: Any) -> Month:
        """Parse `YYYY-MM`."""
        try:
            return Month.parse(str(data))
        except ValueError as exc:
            raise serializers.ValidationError(str(exc).capitalize() + ".") from None

    def to_representation(self, value: Month) -> str:
        """`YYYY-MM`."""
        return str(value)


class StatementQuerySerializer(serializers.Serializer):
    """The month of a statement, from the URL."""

    month = MonthField()


# --- output ------------------------------------------------------------------------------------------------


@extend_schema_field({"type": "string", "format": "decimal", "example": "0.0123456"})
class ExactAmountField(serializers.Field):
    """An exact (unrounded) amount as a string with no trailing zeros, e.g. "0.0123456"."""

    def to_representation(self, value: Decimal) -> str:
        """Every significant digit, never an exponent."""
        with localcontext(prec=60):  # normalize() rounds to the context's precision: make that moot
            return f"{value.normalize():f}"

    def to_internal_value(self, data: Any) -> Decimal:
        """Output only."""
        raise NotImplementedError("ExactAmountField is read-only")


class UsagePointSerializer(serializers.Serializer):
    """One bucket of a series."""

    start = serializers.DateTimeField()
    tokens = serializers.IntegerField()
    requests = serializers.IntegerField()


class ModelSeriesSerializer(serializers.Serializer):
    """One model's points."""

    model = serializers.CharField()
    tokens = serializers.IntegerField()
    requests = serializers.IntegerField()
    points = UsagePointSerializer(many=True)


class UsageSeriesSerializer(serializers.Serializer):
    """Usage of a cluster per model over a range, bucketed."""

    cluster = serializers.CharField(source="cluster_id")
    granularity = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    model = serializers.CharField(allow_null=True)
    tokens = serializers.IntegerField()
    requests = serializers.IntegerField()
    series = ModelSeriesSerializer(many=True)


class PriceSegmentSerializer(serializers.Serializer):
    """The part of a line recorded under one price; `amount` is exact (unrounded)."""

    price_per_million = serializers.DecimalField(max_digits=12, decimal_places=6)
    effective_from = serializers.DateTimeField(allow_null=True)
    used_tokens = serializers.IntegerField()
    free_tokens = serializers.IntegerField()
    billable_tokens = serializers.IntegerField()
    amount = ExactAmountField()


class StatementLineSerializer(serializers.Serializer):
    """One model on a statement."""

    model = serializers.CharField()
    requests = serializers.IntegerField()
    used_tokens = serializers.IntegerField()
    free_allowance = serializers.IntegerField()
    free_tokens = serializers.IntegerField()
    billable_tokens = serializers.IntegerField()
    amount = ExactAmountField()
    cost = serializers.DecimalField(max_digits=None, decimal_places=2)
    prices = PriceSegmentSerializer(many=True, source="segments")


class StatementSerializer(serializers.Serializer):
    """A cluster's monthly statement."""

    cluster = serializers.CharField(source="cluster_id")
    month = MonthField()
    period_start = serializers.DateTimeField(source="month.start")
    period_end = serializers.DateTimeField(source="month.end")
    currency = serializers.CharField()
    rounding = serializers.CharField()
    lines = StatementLineSerializer(many=True)
    requests = serializers.IntegerField()
    used_tokens = serializers.IntegerField()
    free_tokens = serializers.IntegerField()
    billable_tokens = serializers.IntegerField()
    cost = serializers.DecimalField(max_digits=None, decimal_places=2)


CSV_HEADER = (
    "cluster",
    "month",
    "model",
    "requests",
    "used_tokens",
    "free_allowance",
    "free_tokens",
    "billable_tokens",
    "prices_per_million",
    "cost",
    "currency",
)


def statement_csv(statement: Statement) -> str:
    """The statement as CSV: one row per model, then a `total` row (the same figures as the JSON)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    month = str(statement.month)
    for line in statement.lines:
        prices = "; ".join(
            f"{s.price_per_million} x {s.billable_tokens}"
            + (f" from {s.effective_from.isoformat()}" if s.effective_from else "")
            for s in line.segments
        )
        writer.writerow(
            (
                statement.cluster_id,
                month,
                line.model,
                line.requests,
                line.used_tokens,
                line.free_allowance,
                line.free_tokens,
                line.billable_tokens,
                prices,
                f"{line.cost:.2f}",
                statement.currency,
            )
        )
    writer.writerow(
        (
            statement.cluster_id,
            month,
            "total",
            statement.requests,
            statement.used_tokens,
            "",
            statement.free_tokens,
            statement.billable_tokens,
            "",
            f"{statement.cost:.2f}",
            statement.currency,
        )
    )
    return out.getvalue()
