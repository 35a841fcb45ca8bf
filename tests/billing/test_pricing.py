"""Prices in force, free allowances, statements: splits at price changes, boundaries, UTC months, rounding."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.utils import timezone

from billing.models import (
    DEFAULT_FREE_TOKENS_PER_MONTH,
    LIST_PRICE_EPOCH,
    ModelAllowance,
    ModelPrice,
    UsageRecord,
)
from billing.periods import Month
from billing.selectors import Statement, free_allowance, model_prices_in_force, price_in_force, statement_get
from billing.services import BillingError, model_allowance_set, model_price_set
from console.clusters.models import Cluster
from inference.catalog import CATALOG
from tests.billing.conftest import MXBAI, record, set_price_history
from tests.conftest import MINILM

MARCH = Month(2025, 3)
MID_MARCH = datetime(2025, 3, 15, tzinfo=UTC)


def seed_migration() -> object:
    import importlib

    return importlib.import_module("billing.migrations.0002_seed_list_prices")


def test_the_seeding_migration_copies_the_catalog_list_prices() -> None:
    migration = seed_migration()
    assert {e.name: e.price_per_million for e in CATALOG} == migration.LIST_PRICES  # type: ignore[attr-defined]
    assert migration.LIST_PRICE_EPOCH == LIST_PRICE_EPOCH  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_every_catalog_model_has_its_list_price_in_force_after_migrate() -> None:
    # Non-transactional tests run before any transactional one flushes the tables: these are migrate's rows.
    prices = model_prices_in_force()
    assert prices == {e.name: e.price_per_million for e in CATALOG}


@pytest.mark.django_db
def test_price_in_force_is_the_latest_step_not_after_the_instant() -> None:
    old, new = set_price_history(MXBAI, [(LIST_PRICE_EPOCH, "0.10"), (MID_MARCH, "0.20")])
    assert price_in_force(model=MXBAI, at=MID_MARCH - timedelta(microseconds=1)) == old
    assert price_in_force(model=MXBAI, at=MID_MARCH) == new
    assert price_in_force(model=MXBAI, at=datetime(1969, 12, 31, tzinfo=UTC)) is None
    assert model_prices_in_force(at=MID_MARCH)[MXBAI] == Decimal("0.20")


def line(statement: Statement, model: str) -> dict[str, object]:
    (found,) = [ln for ln in statement.lines if ln.model == model]
    return {
        "used": found.used_tokens,
        "free": found.free_tokens,
        "billable": found.billable_tokens,
        "cost": found.cost,
        "segments": [
            (s.price_per_million, s.used_tokens, s.free_tokens, s.billable_tokens) for s in found.segments
        ],
    }


def test_a_mid_month_price_change_splits_the_cost(cluster: Cluster) -> None:
    set_price_history(MXBAI, [(LIST_PRICE_EPOCH, "0.10"), (MID_MARCH, "0.20")])
    ModelAllowance.objects.create(
        model=MXBAI, free_tokens_per_month=1_000_000, effective_month=date(2025, 3, 1)
    )
    record(cluster.id, MXBAI, 3_000_000, datetime(2025, 3, 10, tzinfo=UTC))  # at 0.10
    record(cluster.id, MXBAI, 4_000_000, MID_MARCH)  # the change's very instant: at 0.20
    # Allowance first (time order): 1M free of the 3M at 0.10 -> 2M x 0.10 + 4M x 0.20 = 0.20 + 0.80.
    assert line(statement_get(cluster_id=cluster.id, month=MARCH), MXBAI) == {
        "used": 7_000_000,
        "free": 1_000_000,
        "billable": 6_000_000,
        "cost": Decimal("1.00"),
        "segments": [
            (Decimal("0.10"), 3_000_000, 1_000_000, 2_000_000),
            (Decimal("0.20"), 4_000_000, 0, 4_000_000),
        ],
    }


def test_the_allowance_can_outlast_the_first_price(cluster: Cluster) -> None:
    set_price_history(MXBAI, [(LIST_PRICE_EPOCH, "0.10"), (MID_MARCH, "0.20")])
    record(cluster.id, MXBAI, 3_000_000, datetime(2025, 3, 1, tzinfo=UTC))
    record(cluster.id, MXBAI, 4_000_000, datetime(2025, 3, 31, 23, tzinfo=UTC))
    # Default 5M allowance: all 3M at 0.10 free, then 2M of the 4M at 0.20 -> 2M x 0.20.
    assert line(statement_get(cluster_id=cluster.id, month=MARCH), MXBAI)["segments"] == [
        (Decimal("0.10"), 3_000_000, 3_000_000, 0),
        (Decimal("0.20"), 4_000_000, 2_000_000, 2_000_000),
    ]
    assert line(statement_get(cluster_id=cluster.id, month=MARCH), MXBAI)["cost"] == Decimal("0.40")


@pytest.mark.parametrize(("used", "billable", "cost"), [(5_000_000, 0, "0.00"), (5_000_001, 1, "0.01")])
def test_the_free_allowance_boundary(cluster: Cluster, used: int, billable: int, cost: str) -> None:
    set_price_history(MXBAI, [(LIST_PRICE_EPOCH, "10000")])  # a cent per token makes one token visible
    record(cluster.id, MXBAI, used - 1, datetime(2025, 3, 2, tzinfo=UTC))
    record(cluster.id, MXBAI, 1, datetime(2025, 3, 3, tzinfo=UTC))
    got = line(statement_get(cluster_id=cluster.id, month=MARCH), MXBAI)
    assert (got["used"], got["free"], got["billable"], got["cost"]) == (
        used,
        DEFAULT_FREE_TOKENS_PER_MONTH,
        billable,
        Decimal(cost),
    )


def test_months_are_utc_and_the_allowance_renews(cluster: Cluster) -> None:
    set_price_history(MXBAI, [(LIST_PRICE_EPOCH, "10000")])
    record(cluster.id, MXBAI, 5_000_000, datetime(2025, 1, 31, 23, 59, 59, 999_000, tzinfo=UTC))
    record(cluster.id, MXBAI, 7, datetime(2025, 2, 1, tzinfo=UTC))
    # 00:30 on Feb 1st in Paris (+01:00) is still January in UTC: it goes over January's allowance.
    paris = timezone.get_fixed_timezone(60)
    record(cluster.id, MXBAI, 3, datetime(2025, 2, 1, 0, 30, tzinfo=paris))
    january = line(statement_get(cluster_id=cluster.id, month=Month(2025, 1)), MXBAI)
    february = line(statement_get(cluster_id=cluster.id, month=Month(2025, 2)), MXBAI)
    assert (january["used"], january["billable"], january["cost"]) == (5_000_003, 3, Decimal("0.03"))
    assert (february["used"], february["free"], february["billable"], february["cost"]) == (
        7,
        7,
        0,
        Decimal("0"),
    )


def test_a_line_is_rounded_half_up_once(cluster: Cluster) -> None:
    set_price_history(MXBAI, [(LIST_PRICE_EPOCH, "0.10"), (MID_MARCH, "0.08")])
    ModelAllowance.objects.create(model=MXBAI, free_tokens_per_month=0, effective_month=date(2025, 3, 1))
    record(cluster.id, MXBAI, 40_000, datetime(2025, 3, 1, tzinfo=UTC))  # 0.004 exactly
    record(cluster.id, MXBAI, 12_500, datetime(2025, 3, 20, tzinfo=UTC))  # 0.001 exactly
    got = statement_get(cluster_id=cluster.id, month=MARCH)
    # 0.005 -> 0.01 half-up (banker's rounding would say 0.00; rounding each price would say 0.00 + 0.00).
    assert [s.amount for s in got.lines[0].segments] == [Decimal("0.004"), Decimal("0.001")]
    assert (got.lines[0].amount, got.lines[0].cost, got.cost) == (
        Decimal("0.005"),
        Decimal("0.01"),
        Decimal("0.01"),
    )


def oracle(records: list[UsageRecord], allowances: dict[str, int]) -> dict[str, tuple[int, int, Decimal]]:
    """Walk every record in time order, one by one: model -> (used, billable, cost rounded once)."""
    remaining = dict(allowances)
    exact: dict[str, Decimal] = {}
    used: dict[str, int] = {}
    billable: dict[str, int] = {}
    for rec in sorted(records, key=lambda r: (r.time, r.pk)):
        free = min(remaining[rec.model], rec.tokens)
        remaining[rec.model] -= free
        price = price_in_force(model=rec.model, at=rec.time)
        assert price is not None and rec.price_id == price.pk  # the record kept the price of its time
        used[rec.model] = used.get(rec.model, 0) + rec.tokens
        billable[rec.model] = billable.get(rec.model, 0) + rec.tokens - free
        exact[rec.model] = (
            exact.get(rec.model, Decimal(0)) + (rec.tokens - free) * price.price_per_million / 10**6
        )
    return {
        m: (used[m], billable[m], exact[m].quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)) for m in exact
    }


def test_a_statement_reconciles_with_the_ledger_to_the_cent(cluster: Cluster) -> None:
    rng = random.Random(5)
    clip = "qdrant/clip-vit-b-32-text"
    set_price_history(MXBAI, [(LIST_PRICE_EPOCH, "0.123457"), (datetime(2025, 3, 9, 13, tzinfo=UTC), "0.1")])
    ModelPrice.objects.create(
        model=MXBAI, effective_from=datetime(2025, 3, 21, tzinfo=UTC), price_per_million=3
    )
    set_price_history(clip, [(LIST_PRICE_EPOCH, "0.05"), (datetime(2025, 3, 31, 23, tzinfo=UTC), "0.333333")])
    ModelAllowance.objects.create(model=clip, free_tokens_per_month=250_000, effective_month=date(2025, 1, 1))
    start = MARCH.start - timedelta(hours=2)  # some usage falls in February and April, outside the statement
    span = (MARCH.end + timedelta(hours=2) - start).total_seconds()
    for _ in range(400):
        model = rng.choice([MXBAI, clip, MINILM])
        when = start + timedelta(seconds=rng.uniform(0, span))
        record(cluster.id, model, rng.randint(1, 40_000), when)
    in_march = list(UsageRecord.objects.filter(time__gte=MARCH.start, time__lt=MARCH.end))
    statement = statement_get(cluster_id=cluster.id, month=MARCH)
    expected = oracle(in_march, {m: free_allowance(model=m, month=MARCH) for m in (MXBAI, clip, MINILM)})
    assert {ln.model: (ln.used_tokens, ln.billable_tokens, ln.cost) for ln in statement.lines} == expected
    assert statement.used_tokens == sum(r.tokens for r in in_march)  # every ledger token is on the statement
    assert statement.requests == len(in_march)
    assert statement.cost == sum(cost for _, _, cost in expected.values())
    assert statement.cost > Decimal("0.10")  # the walk really went over allowances at several prices
    assert all(ln.used_tokens == ln.free_tokens + ln.billable_tokens for ln in statement.lines)


def test_allowances_are_per_model_and_change_at_month_starts(cluster: Cluster) -> None:
    ModelAllowance.objects.create(model=MXBAI, free_tokens_per_month=10, effective_month=date(2025, 2, 1))
    assert free_allowance(model=MXBAI, month=Month(2025, 1)) == DEFAULT_FREE_TOKENS_PER_MONTH
    assert free_allowance(model=MXBAI, month=Month(2025, 2)) == 10
    assert free_allowance(model=MXBAI, month=MARCH) == 10
    assert free_allowance(model=MINILM, month=MARCH) == DEFAULT_FREE_TOKENS_PER_MONTH


@pytest.mark.django_db
def test_allowance_service_refuses_closed_months_and_mid_month_starts() -> None:
    this_month = Month.of(timezone.now())
    allowance = model_allowance_set(model="MixedBread-AI/mxbai-embed-large-v1", free_tokens_per_month=7)
    assert (allowance.model, allowance.effective_month) == (MXBAI, this_month.first_day)
    assert free_allowance(model=MXBAI, month=this_month) == 7
    assert model_allowance_set(model=MXBAI, free_tokens_per_month=8).pk == allowance.pk  # updated in place
    with pytest.raises(BillingError, match="is closed"):
        model_allowance_set(model=MXBAI, free_tokens_per_month=1, effective_month=date(2020, 1, 1))
    with pytest.raises(BillingError, match="first day"):
        model_allowance_set(
            model=MXBAI, free_tokens_per_month=1, effective_month=this_month.next().first_day.replace(day=2)
        )
    with pytest.raises(BillingError, match="Unknown model"):
        model_allowance_set(model="no/such", free_tokens_per_month=1)


@pytest.mark.django_db
def test_price_changes_are_scheduled_ahead_never_retroactive() -> None:
    scheduled = model_price_set(model=MXBAI, price_per_million=Decimal("0.25"))
    assert scheduled.effective_from > timezone.now()
    assert price_in_force(model=MXBAI, at=timezone.now()).price_per_million != Decimal("0.25")  # type: ignore[union-attr]
    later = timezone.now() + timedelta(days=3)
    assert (
        model_price_set(model=MXBAI, price_per_million=Decimal("0.3"), effective_from=later).effective_from
        == later
    )
    with pytest.raises(BillingError, match="at least 60 seconds from now"):
        model_price_set(model=MXBAI, price_per_million=Decimal("1"), effective_from=timezone.now())
    with pytest.raises(BillingError, match="already has a price"):
        model_price_set(model=MXBAI, price_per_million=Decimal("0.4"), effective_from=later)
    with pytest.raises(BillingError, match="non-negative"):
        model_price_set(model=MXBAI, price_per_million=Decimal("-1"))
    with pytest.raises(BillingError, match="6 decimal places"):
        model_price_set(model=MXBAI, price_per_million=Decimal("0.0000001"))


def test_month_parsing() -> None:
    assert str(Month.parse("2025-03")) == "2025-03"
    assert Month(2024, 12).next() == Month(2025, 1)
    assert Month(2024, 2).end - Month(2024, 2).start == timedelta(days=29)
    for bad in ("2025-13", "2025-3", "2025-00", "25-03", "2025-03-01", ""):
        with pytest.raises(ValueError):
            Month.parse(bad)
