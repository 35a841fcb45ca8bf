"""Reads about billing: prices in force, allowances, usage series for charts, monthly statements.

Rounding rule (the only one)
----------------------------
Amounts stay exact `Decimal`s (tokens x price per 1M / 1,000,000, computed without any rounding) until a
statement line. Each line (one model in one month) is rounded ONCE, half-up, to the cent (USD 0.01). The
statement total is the sum of its rounded lines, so the lines always add up to the total printed below them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext

from django.db.models import Count, Min, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from billing.models import (
    DEFAULT_FREE_TOKENS_PER_MONTH,
    ModelAllowance,
    ModelPrice,
    UsageRecord,
    UsageRollup,
)
from billing.periods import Granularity, Month, as_utc, bucket_starts, floor_to, step

CURRENCY = "USD"
CENT = Decimal("0.01")
ROUNDING_RULE = (
    "Amounts are exact (tokens x price per 1M tokens / 1,000,000) until a statement line; each line is "
    "rounded once, half-up, to the cent; the total is the sum of the rounded lines."
)
MAX_SERIES_BUCKETS = 5000  # a month of hours is 744 points, 5000 days is 13 years


def exact_amount(*, tokens: int, price_per_million: Decimal) -> Decimal:
    """The exact cost of `tokens` at a price per 1M tokens (no rounding at all)."""
    # Enough digits that neither the product nor the scaling can round, whatever the token count.
    with localcontext(prec=60):
        return (Decimal(tokens) * price_per_million).scaleb(-6)


def round_line(amount: Decimal) -> Decimal:
    """A statement line's cost: the exact amount rounded half-up to the cent (the one rounding rule)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


# --- prices and allowances ------------------------------------------------------------------------------


def price_in_force(*, model: str, at: datetime) -> ModelPrice | None:
    """The price row of `model` in force at `at`: the latest one whose effective_from is not after it."""
    return ModelPrice.objects.filter(model=model, effective_from__lte=at).order_by("-effective_from").first()


def model_prices_in_force(*, at: datetime | None = None) -> dict[str, Decimal]:
    """Every priced model's price per 1M tokens in force at `at` (default now), e.g. for the model list."""
    at = at or timezone.now()
    prices: dict[str, Decimal] = {}
    # Ascending effective_from: the last row seen per model is the one in force.
    for model, price in (
        ModelPrice.objects.filter(effective_from__lte=at)
        .order_by("model", "effective_from")
        .values_list("model", "price_per_million")
    ):
        prices[model] = price
    return prices


def free_allowance(*, model: str, month: Month) -> int:
    """Free tokens per cluster for `model` in `month`: the latest allowance set for that month or before."""
    allowance = (
        ModelAllowance.objects.filter(model=model, effective_month__lte=month.first_day)
        .order_by("-effective_month")
        .values_list("free_tokens_per_month", flat=True)
        .first()
    )
    return DEFAULT_FREE_TOKENS_PER_MONTH if allowance is None else allowance


# --- ledger reads -----------------------------------------------------------------------------------------


def usage_tokens_between(
    *, cluster_id: str, start: datetime, end: datetime, exclude_prefixes: Sequence[str] = ()
) -> int:
    """Tokens the ledger holds for a cluster with a time in [start, end), less models named `prefix...`."""
    records = UsageRecord.objects.filter(cluster_id=cluster_id, time__gte=start, time__lt=end)
    for prefix in exclude_prefixes:
        records = records.exclude(model__startswith=prefix)
    total = records.aggregate(tokens=Sum("tokens"))["tokens"]
    return int(total or 0)


# --- usage series for charts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UsagePoint:
    """One bucket of a series: the tokens and requests of a model in one hour, day or month."""

    start: datetime
    tokens: int
    requests: int


@dataclass(frozen=True)
class ModelSeries:
    """A model's points, one per bucket of the range (zeros included, so charts need no gap filling)."""

    model: str
    tokens: int
    requests: int
    points: list[UsagePoint]


@dataclass(frozen=True)
class UsageSeries:
    """Usage of a cluster over a range, per model, in buckets of one granularity."""

    cluster_id: str
    granularity: Granularity
    start: datetime  # the first bucket's start (the requested start floored to the granularity)
    end: datetime  # exclusive: buckets that START before it are included, whole
    model: str | None
    buckets: list[datetime]
    series: list[ModelSeries]
    tokens: int
    requests: int


def usage_series(
    *, cluster_id: str, start: datetime, end: datetime, granularity: Granularity, model: str | None = None
) -> UsageSeries:
    """The cluster's usage per model from the roll-ups, in whole UTC buckets that start in [start, end).

    Hours and days come straight from their roll-ups; months are sums of day roll-ups (UTC days tile UTC
    months exactly). Raises ValueError when the range holds more than MAX_SERIES_BUCKETS buckets.
    """
    buckets = bucket_starts(start, end, granularity, MAX_SERIES_BUCKETS)
    stored = UsageRollup.Granularity.HOUR if granularity == Granularity.HOUR else UsageRollup.Granularity.DAY
    sums: dict[str, dict[datetime, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    if buckets:
        rows = UsageRollup.objects.filter(
            cluster_id=cluster_id,
            granularity=stored,
            period_start__gte=buckets[0],
            period_start__lt=step(buckets[-1], granularity),
        )
        if model is not None:
            rows = rows.filter(model=model)
        for name, period_start, tokens, records in rows.values_list(
            "model", "period_start", "tokens", "records"
        ):
            bucket = sums[name][floor_to(period_start, granularity)]
            bucket[0] += tokens
            bucket[1] += records
    names = sorted(sums) if model is None else [model]
    series = []
    for name in names:
        by_bucket = sums.get(name, {})
        points = [UsagePoint(b, *by_bucket.get(b, (0, 0))) for b in buckets]
        series.append(
            ModelSeries(
                model=name,
                tokens=sum(p.tokens for p in points),
                requests=sum(p.requests for p in points),
                points=points,
            )
        )
    return UsageSeries(
        cluster_id=cluster_id,
        granularity=granularity,
        start=buckets[0] if buckets else floor_to(start, granularity),
        end=as_utc(end),
        model=model,
        buckets=buckets,
        series=series,
        tokens=sum(s.tokens for s in series),
        requests=sum(s.requests for s in series),
    )


# --- statements ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceSegment:
    """The part of a statement line recorded under one price (a line has several after a price change)."""

    price_per_million: Decimal
    effective_from: datetime | None  # None: the model had no price at all (billed 0)
    used_tokens: int
    free_tokens: int
    billable_tokens: int
    amount: Decimal  # exact: billable_tokens x price / 1,000,000, never rounded


@dataclass(frozen=True)
class StatementLine:
    """One model on a monthly statement: used, free, billable tokens and the cost (rounded once)."""

    model: str
    requests: int
    used_tokens: int
    free_allowance: int
    free_tokens: int
    billable_tokens: int
    amount: Decimal  # exact sum of the segments' amounts
    cost: Decimal  # `amount` rounded half-up to the cent
    segments: list[PriceSegment]


@dataclass(frozen=True)
class Statement:
    """A cluster's bill for one UTC month: lines per model and totals that are sums of the lines."""

    cluster_id: str
    month: Month
    lines: list[StatementLine]
    currency: str = CURRENCY
    rounding: str = ROUNDING_RULE
    requests: int = field(init=False)
    used_tokens: int = field(init=False)
    free_tokens: int = field(init=False)
    billable_tokens: int = field(init=False)
    cost: Decimal = field(init=False)

    def __post_init__(self) -> None:
        # Totals are derived, never stored, so they cannot disagree with the lines.
        object.__setattr__(self, "requests", sum(line.requests for line in self.lines))
        object.__setattr__(self, "used_tokens", sum(line.used_tokens for line in self.lines))
        object.__setattr__(self, "free_tokens", sum(line.free_tokens for line in self.lines))
        object.__setattr__(self, "billable_tokens", sum(line.billable_tokens for line in self.lines))
        object.__setattr__(self, "cost", sum((line.cost for line in self.lines), Decimal("0.00")))


def statement_get(*, cluster_id: str, month: Month) -> Statement:
    """The cluster's statement for a UTC month, computed from the ledger.

    The free allowance is consumed in time order and billable tokens are priced with the price each record
    was recorded under (the price in force at its time). Records under one price form one contiguous stretch
    of time, so summing per price and walking the prices in time order is the same as walking every record:
    only which price the allowance runs out under matters, never where within it.
    """
    groups = (
        UsageRecord.objects.filter(cluster_id=cluster_id, time__gte=month.start, time__lt=month.end)
        .values("model", "price_id")
        .annotate(tokens=Sum("tokens"), records=Count("id"), first=Min("time"))
        .order_by("model", "first", "price_id")
    )
    by_model: dict[str, list[dict[str, object]]] = defaultdict(list)
    for group in groups:
        by_model[str(group["model"])].append(group)
    price_ids = [g["price_id"] for gs in by_model.values() for g in gs if g["price_id"] is not None]
    prices = ModelPrice.objects.in_bulk(price_ids)

    lines = []
    for model in sorted(by_model):
        allowance = free_allowance(model=model, month=month)
        remaining = allowance
        segments = []
        for group in by_model[model]:
            tokens = int(group["tokens"])  # type: ignore[call-overload]
            price = prices.get(group["price_id"])
            free = min(remaining, tokens)
            remaining -= free
            price_per_million = price.price_per_million if price else Decimal("0")
            segments.append(
                PriceSegment(
                    price_per_million=price_per_million,
                    effective_from=price.effective_from if price else None,
                    used_tokens=tokens,
                    free_tokens=free,
                    billable_tokens=tokens - free,
                    amount=exact_amount(tokens=tokens - free, price_per_million=price_per_million),
                )
            )
        amount = sum((s.amount for s in segments), Decimal("0"))
        lines.append(
            StatementLine(
                model=model,
                requests=sum(int(g["records"]) for g in by_model[model]),  # type: ignore[call-overload]
                used_tokens=sum(s.used_tokens for s in segments),
                free_allowance=allowance,
                free_tokens=sum(s.free_tokens for s in segments),
                billable_tokens=sum(s.billable_tokens for s in segments),
                amount=amount,
                cost=round_line(amount),
                segments=segments,
            )
        )
    return Statement(cluster_id=cluster_id, month=month, lines=lines)


# --- roll-ups versus the ledger ----------------------------------------------------------------------------

RollupKey = tuple[str, str, str, datetime]  # cluster_id, model, granularity, period_start (UTC)


@dataclass(frozen=True)
class RollupDifference:
    """A bucket whose stored roll-up disagrees with the sum of its ledger rows."""

    cluster_id: str
    model: str
    granularity: str
    period_start: datetime
    ledger_tokens: int
    ledger_records: int
    rollup_tokens: int
    rollup_records: int


@dataclass(frozen=True)
class RollupComparison:
    """The ledger's totals, the roll-ups it implies, and every bucket where the stored ones differ."""

    ledger_records: int
    ledger_tokens: int
    expected: dict[RollupKey, tuple[int, int]]
    differences: list[RollupDifference]

    @property
    def equal(self) -> bool:
        """Whether every stored roll-up equals the ledger's sum (and none exists without ledger rows)."""
        return not self.differences


def rollups_from_ledger() -> dict[RollupKey, tuple[int, int]]:
    """Every hour and day roll-up recomputed from the ledger: key -> (tokens, records)."""
    expected: dict[RollupKey, tuple[int, int]] = {}
    for granularity, trunc in (
        (UsageRollup.Granularity.HOUR, TruncHour("time", tzinfo=UTC)),
        (UsageRollup.Granularity.DAY, TruncDay("time", tzinfo=UTC)),
    ):
        rows = (
            UsageRecord.objects.annotate(period=trunc)
            .values("cluster_id", "model", "period")
            .annotate(tokens=Sum("tokens"), records=Count("id"))
            .order_by()
        )
        for row in rows:
            key = (row["cluster_id"], row["model"], str(granularity), row["period"].astimezone(UTC))
            expected[key] = (int(row["tokens"]), int(row["records"]))
    return expected


def rollup_comparison() -> RollupComparison:
    """Compare the stored roll-ups with the ledger (callers wanting a consistent cut hold a lock)."""
    totals = UsageRecord.objects.aggregate(tokens=Sum("tokens"), records=Count("id"))
    expected = rollups_from_ledger()
    stored: dict[RollupKey, tuple[int, int]] = {}
    for cluster_id, model, granularity, period_start, tokens, records in UsageRollup.objects.values_list(
        "cluster_id", "model", "granularity", "period_start", "tokens", "records"
    ):
        if tokens or records:  # an all-zero row says the same as no row
            stored[(cluster_id, model, granularity, period_start.astimezone(UTC))] = (tokens, records)
    differences = [
        RollupDifference(
            cluster_id=key[0],
            model=key[1],
            granularity=key[2],
            period_start=key[3],
            ledger_tokens=expected.get(key, (0, 0))[0],
            ledger_records=expected.get(key, (0, 0))[1],
            rollup_tokens=stored.get(key, (0, 0))[0],
            rollup_records=stored.get(key, (0, 0))[1],
        )
        for key in sorted(expected.keys() | stored.keys())
        if expected.get(key) != stored.get(key)
    ]
    return RollupComparison(
        ledger_records=int(totals["records"] or 0),
        ledger_tokens=int(totals["tokens"] or 0),
        expected=expected,
        differences=differences,
    )
