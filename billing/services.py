"""Writes about billing: recording usage exactly once, price and allowance changes, limits, roll-up rebuilds.

Recording usage
---------------
`usage_record` turns the usage events of one request into ledger rows in ONE short transaction, after the
inference already ran (no transaction is ever open while a model runs). Exactly-once is the database's job:
rows are inserted with ON CONFLICT (cluster, request_id, model) DO NOTHING RETURNING, so a retried request
(same Idempotency-Key) or a redelivered event inserts nothing, however many race, and the roll-ups are
incremented (with F(), in the same transaction) only for the rows that were actually inserted. Lock order is
always ledger rows, then roll-up rows, each sorted, so concurrent recorders never deadlock.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import F, Field, Model
from django.utils import timezone

from billing.limits import forget_limit
from billing.models import (
    LIST_PRICE_EPOCH,
    REQUEST_ID_LENGTH,
    ClusterLimit,
    ModelAllowance,
    ModelPrice,
    UsageRecord,
    UsageRollup,
)
from billing.periods import Granularity, Month, as_utc, floor_to
from billing.selectors import (
    RollupComparison,
    price_in_force,
    rollup_comparison,
    rollups_from_ledger,
)
from inference import catalog
from inference.errors import BadRequest
from inference.providers import is_provider_model
from inference.usage import UsageEvent

logger = logging.getLogger(__name__)

# A price change takes effect at least this far in the future, so it can never apply to usage that was
# already recorded, or that is being recorded while the change commits, under the previous price.
PRICE_CHANGE_LEAD = timedelta(seconds=60)
_INSERT_CHUNK = 500  # rows per INSERT statement (well under every backend's parameter limit)
# Statements kept per shape (row count): a request records one or two rows, group commits a few more; a
# large batch's statement is rebuilt rather than kept (up to 500 rows, ~20 KB each).
_SQL_CACHE_SIZE = 64


class BillingError(BadRequest):
    """A billing change was refused; the message says why."""


# --- recording usage ------------------------------------------------------------------------------------

RecordKey = tuple[str, str, str]  # cluster_id, request_id, model


@dataclass(frozen=True)
class RecordResult:
    """What `usage_record` did: events received, rows inserted, duplicates dropped, tokens billed.

    `duplicates` counts events with tokens whose key was already in the ledger or earlier in the same batch.
    """

    received: int
    inserted: int
    duplicates: int
    tokens: int
    inserted_models: frozenset[str] = frozenset()
    inserted_keys: frozenset[RecordKey] = frozenset()  # (cluster_id, stored request id, model)


def normalize_request_id(request_id: str) -> str:
    """The request id as stored: itself, or a SHA-256 digest when a client's Idempotency-Key is too long.

    Hashing (instead of truncating) keeps distinct long keys distinct and the same key the same on retry.
    """
    if len(request_id) <= REQUEST_ID_LENGTH:
        return request_id
    return "sha256:" + hashlib.sha256(request_id.encode()).hexdigest()


class _NewRow(NamedTuple):
    """A ledger row about to be inserted: the columns, without a model instance (recording usage is on every
    request's path, and building and preparing instances was a third of its CPU)."""

    cluster_id: str
    model: str
    tokens: int
    request_id: str
    time: datetime
    price_id: int | None
    recorded_at: datetime


def usage_record(*, events: Sequence[UsageEvent]) -> RecordResult:
    """Persist usage events exactly once each and bump the hourly and daily roll-ups of those inserted.

    Safe to call again with the same events (a redelivery): nothing is inserted or counted twice.
    """
    billable = [e for e in events if e.tokens > 0]  # zero is nothing to bill (the ledger refuses such rows)
    if not billable:
        return RecordResult(received=len(events), inserted=0, duplicates=0, tokens=0)
    now = timezone.now()
    unique: dict[RecordKey, _NewRow] = {}
    for event in billable:
        request_id = normalize_request_id(event.request_id)
        key = (event.cluster_id, request_id, event.model)
        if key in unique:
            continue
        at = as_utc(event.time)
        # Prices are read before the transaction: they change only PRICE_CHANGE_LEAD ahead, so this is safe.
        price = _price_for(model=event.model, at=at)
        price_id = None if price is None else price.pk
        unique[key] = _NewRow(event.cluster_id, event.model, event.tokens, request_id, at, price_id, now)
    # Sorted, so concurrent inserts of overlapping keys (retries) take row locks in the same order.
    records = [unique[key] for key in sorted(unique)]
    with transaction.atomic():
        inserted_keys = _insert_ignoring_duplicates(records)
        inserted = [r for r in records if (r.cluster_id, r.request_id, r.model) in inserted_keys]
        _rollups_increment(inserted)
    return RecordResult(
        received=len(events),
        inserted=len(inserted),
        duplicates=len(billable) - len(inserted),
        tokens=sum(r.tokens for r in inserted),
        inserted_models=frozenset(r.model for r in inserted),
        inserted_keys=frozenset((r.cluster_id, r.request_id, r.model) for r in inserted),
    )


def usage_refund(*, cluster_id: str, request_id: str, models: Iterable[str]) -> int:
    """Remove a failed request's ledger rows for `models` and take them out of the roll-ups; tokens removed.

    Only the rows the failed attempt itself inserted are named by the caller, so a refund never removes
    usage an earlier, successful attempt with the same request id recorded.
    """
    stored_id = normalize_request_id(request_id)
    with transaction.atomic():
        rows = list(
            UsageRecord.objects.select_for_update()
            .filter(cluster_id=cluster_id, request_id=stored_id, model__in=sorted(set(models)))
            .order_by("model")
        )
        if not rows:
            return 0
        _rollups_increment(rows, sign=-1)
        UsageRecord.objects.filter(pk__in=[r.pk for r in rows]).delete()
    return sum(r.tokens for r in rows)


# A model's price history, kept per process for less than PRICE_CHANGE_LEAD: a change always starts at least
# that far ahead, so every process has read it before it takes effect, and recording usage (every request
# that ran a model) needs no price query.
_PRICE_CACHE_SECONDS = 30.0
_price_histories: dict[str, tuple[float, list[ModelPrice]]] = {}


def forget_prices(model: str | None = None) -> None:
    """Drop this process's cached price history of `model` (all models: None); a price row changed."""
    if model is None:
        _price_histories.clear()
    else:
        _price_histories.pop(model, None)


def _price_history(model: str) -> list[ModelPrice]:
    cached = _price_histories.get(model)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    history = list(ModelPrice.objects.filter(model=model).order_by("effective_from"))
    _price_histories[model] = (time.monotonic() + _PRICE_CACHE_SECONDS, history)
    return history


def _price_for(*, model: str, at: datetime) -> ModelPrice | None:
    """The price in force for a record; a catalog model without any price history gets its list price."""
    if is_provider_model(model):
        # Hosted by OpenAI, Cohere, Jina AI or OpenRouter: the provider bills the caller, we record at 0.
        return None
    in_force = [p for p in _price_history(model) if p.effective_from <= at]
    if in_force:
        return in_force[-1]
    price = price_in_force(model=model, at=at)  # a history begun since it was cached: ask the database
    if price is not None:
        return price
    entry = catalog.find(model)
    if entry is None or ModelPrice.objects.filter(model=model).exists():
        # Unknown to the catalog, or priced only from later on: recorded unpriced (billed 0), and said so.
        logger.warning("billing: no price in force for model %s at %s; recorded at 0", model, at.isoformat())
        return None
    # A model added to the catalog after the seeding migration: start its history at the list price.
    price, _ = ModelPrice.objects.get_or_create(
        model=model, effective_from=LIST_PRICE_EPOCH, defaults={"price_per_million": entry.price_per_million}
    )
    return price


# The ledger's columns in _NewRow's order.
_RECORD_FIELDS = ("cluster", "model", "tokens", "request_id", "time", "price", "recorded_at")


def _insert_ignoring_duplicates(records: list[_NewRow]) -> set[RecordKey]:
    """Insert the records whose key is not in the ledger yet; return the keys of those actually inserted."""
    if connection.vendor in ("postgresql", "sqlite") and connection.features.can_return_rows_from_bulk_insert:
        inserted: set[RecordKey] = set()
        for offset in range(0, len(records), _INSERT_CHUNK):
            inserted |= _insert_returning(records[offset : offset + _INSERT_CHUNK])
        return inserted
    return _insert_one_by_one(records)


def _concrete_field(model: type[Model], name: str) -> Field[Any, Any]:
    """A concrete field of a model by name (its `column` is then always set)."""
    field = model._meta.get_field(name)
    if not isinstance(field, Field) or not field.column:
        raise TypeError(f"{model.__name__}.{name} is not a concrete field")
    return field


@functools.lru_cache(maxsize=_SQL_CACHE_SIZE)
def _ledger_insert_sql(vendor: str, rows: int) -> str:
    """INSERT ... ON CONFLICT (cluster, request_id, model) DO NOTHING RETURNING the inserted keys, for `rows`
    rows (built once per row count: the statement is the same for every request)."""
    qn = connection.ops.quote_name
    columns = ", ".join(qn(_concrete_field(UsageRecord, name).column) for name in _RECORD_FIELDS)
    row = "(" + ", ".join(["%s"] * len(_RECORD_FIELDS)) + ")"
    keys = ", ".join(qn(_concrete_field(UsageRecord, n).column) for n in ("cluster", "request_id", "model"))
    return (
        f"INSERT INTO {qn(UsageRecord._meta.db_table)} ({columns}) VALUES {', '.join([row] * rows)} "
        f"ON CONFLICT ({keys}) DO NOTHING RETURNING {keys}"
    )


def _insert_returning(records: list[_NewRow]) -> set[RecordKey]:
    """One statement, and the database decides: concurrent inserts of a key wait for each other and exactly
    one of them returns it. (Django's bulk_create(ignore_conflicts=True) cannot say which rows went in.)"""
    db = connections[DEFAULT_DB_ALIAS]
    adapt_time = db.ops.adapt_datetimefield_value  # what DateTimeField does with an aware datetime
    params: list[Any] = []
    for r in records:
        params += [r.cluster_id, r.model, r.tokens, r.request_id, adapt_time(r.time), r.price_id]
        params.append(adapt_time(r.recorded_at))
    with db.cursor() as cursor:
        cursor.execute(_ledger_insert_sql(db.vendor, len(records)), params)
        return {(str(c), str(q), str(m)) for c, q, m in cursor.fetchall()}


def _insert_one_by_one(records: list[_NewRow]) -> set[RecordKey]:
    """Portable fallback: each row in a savepoint; a unique-key conflict means it was already billed."""
    inserted: set[RecordKey] = set()
    for row in records:
        key = (row.cluster_id, row.request_id, row.model)
        try:
            with transaction.atomic():
                UsageRecord(**row._asdict()).save(force_insert=True)
        except IntegrityError:
            # Only the idempotency key may conflict; anything else is a real error and must surface.
            if not UsageRecord.objects.filter(cluster_id=key[0], request_id=key[1], model=key[2]).exists():
                raise
            continue
        inserted.add(key)
    return inserted


class _Billed(Protocol):
    """What a roll-up needs of a ledger row (a stored UsageRecord, or a row being inserted)."""

    @property
    def cluster_id(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def tokens(self) -> int: ...
    @property
    def time(self) -> datetime: ...


def _rollups_increment(records: Iterable[_Billed], sign: int = 1) -> None:
    """Add ledger rows to their hour and day roll-ups, or with `sign=-1` take them out (in the caller's
    transaction)."""
    increments: dict[tuple[str, str, str, datetime], list[int]] = defaultdict(lambda: [0, 0])
    for record in records:
        for granularity in (UsageRollup.Granularity.HOUR, UsageRollup.Granularity.DAY):
            key = (
                record.cluster_id,
                record.model,
                str(granularity),
                floor_to(record.time, Granularity(granularity)),
            )
            increments[key][0] += sign * record.tokens
            increments[key][1] += sign
    if not increments:
        return
    keys = sorted(increments)  # one lock order for every recorder
    if sign > 0 and connection.vendor in ("postgresql", "sqlite"):
        # (Not for refunds: a negative candidate row would fail the columns' CHECK before the conflict.)
        _rollups_upsert(keys, increments)
        return
    # Make sure each bucket's row exists (a concurrent creator wins harmlessly), then add with F(): the
    # UPDATE locks the row and reads the committed value, so concurrent increments are never lost.
    UsageRollup.objects.bulk_create(
        [
            UsageRollup(cluster_id=c, model=m, granularity=g, period_start=p, tokens=0, records=0)
            for c, m, g, p in keys
        ],
        ignore_conflicts=True,
    )
    for key in keys:
        cluster_id, model, stored, period_start = key
        tokens, count = increments[key]
        updated = UsageRollup.objects.filter(
            cluster_id=cluster_id, model=model, granularity=stored, period_start=period_start
        ).update(tokens=F("tokens") + tokens, records=F("records") + count)
        if updated != 1:  # cannot happen after the insert above; refuse to lose tokens silently if it does
            raise RuntimeError(f"roll-up row missing for {cluster_id} {model} {stored} {period_start}")


@functools.lru_cache(maxsize=_SQL_CACHE_SIZE)
def _rollups_upsert_sql(vendor: str, rows: int) -> str:
    """The roll-up upsert for `rows` buckets (built once per bucket count)."""
    qn = connection.ops.quote_name
    table = qn(UsageRollup._meta.db_table)
    columns = [qn(_concrete_field(UsageRollup, n).column) for n in ("cluster", "model", "granularity")]
    columns.append(qn(_concrete_field(UsageRollup, "period_start").column))
    row = "(" + ", ".join(["%s"] * 6) + ")"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}, {qn('tokens')}, {qn('records')}) "
        f"VALUES {', '.join([row] * rows)} "
        f"ON CONFLICT ({', '.join(columns)}) DO UPDATE SET "
        f"{qn('tokens')} = {table}.{qn('tokens')} + excluded.{qn('tokens')}, "
        f"{qn('records')} = {table}.{qn('records')} + excluded.{qn('records')}"
    )


def _rollups_upsert(
    keys: list[tuple[str, str, str, datetime]], increments: dict[tuple[str, str, str, datetime], list[int]]
) -> None:
    """Every bucket's increment in ONE statement: INSERT ... ON CONFLICT DO UPDATE adding to the row.

    The database adds to the committed value under the row's lock, so concurrent recorders never lose an
    increment; rows are touched in `keys` order, the one lock order of every recorder. One statement
    instead of an insert and an update per bucket is most of what recording usage costs a request.
    """
    db = connections[DEFAULT_DB_ALIAS]
    adapt_time = db.ops.adapt_datetimefield_value  # what DateTimeField does with an aware datetime
    params: list[Any] = []
    for cluster_id, model, stored, period_start in keys:
        tokens, count = increments[(cluster_id, model, stored, period_start)]
        params += [cluster_id, model, stored, adapt_time(period_start), tokens, count]
    with db.cursor() as cursor:
        cursor.execute(_rollups_upsert_sql(db.vendor, len(keys)), params)


# --- prices, allowances, limits --------------------------------------------------------------------------


def _catalog_name(model: str) -> str:
    """A model's canonical catalog name; BillingError for a model the catalog does not know."""
    entry = catalog.find(model)
    if entry is None:
        raise BillingError(f"Unknown model {model!r}")
    return entry.name


def model_price_check(
    *, model: str, price_per_million: Decimal, effective_from: datetime | None = None
) -> tuple[str, datetime]:
    """The canonical model name and start of a price change, or BillingError saying why it is refused.

    History is append-only and never retroactive: the change must start at least PRICE_CHANGE_LEAD from now,
    so every record keeps the price that was in force when it was recorded.
    """
    name = _catalog_name(model)
    if (
        not isinstance(price_per_million, Decimal)
        or not price_per_million.is_finite()
        or price_per_million < 0
    ):
        raise BillingError("The price must be a finite, non-negative Decimal")
    if price_per_million.as_tuple().exponent < -6:  # type: ignore[operator]
        raise BillingError("The price per 1M tokens has at most 6 decimal places")
    earliest = timezone.now() + PRICE_CHANGE_LEAD
    when = as_utc(effective_from) if effective_from is not None else earliest
    if when < earliest:
        raise BillingError(
            f"A price change must take effect at least {int(PRICE_CHANGE_LEAD.total_seconds())} seconds from "
            "now: past usage keeps the price it was recorded under"
        )
    return name, when


def model_price_set(
    *, model: str, price_per_million: Decimal, effective_from: datetime | None = None
) -> ModelPrice:
    """Schedule a new price per 1M tokens for a model from `effective_from` (default: one minute from now)."""
    name, when = model_price_check(
        model=model, price_per_million=price_per_million, effective_from=effective_from
    )
    try:
        with transaction.atomic():
            return ModelPrice.objects.create(
                model=name, price_per_million=price_per_million, effective_from=when
            )
    except IntegrityError:
        raise BillingError(f"{name} already has a price from {when.isoformat()}") from None


def model_allowance_check(
    *, model: str, free_tokens_per_month: int, effective_month: date | None = None
) -> tuple[str, Month]:
    """The canonical model name and first month of an allowance change, or BillingError saying why not.

    Past months are closed: their statements must not change, so only this month or later may be set.
    """
    name = _catalog_name(model)
    if free_tokens_per_month < 0:
        raise BillingError("The free allowance cannot be negative")
    current = Month.of(timezone.now())
    month = Month.of(effective_month) if effective_month is not None else current
    if effective_month is not None and effective_month.day != 1:
        raise BillingError("An allowance starts on the first day of a month")
    if month < current:
        raise BillingError(f"{month} is closed; set the allowance from {current} on")
    return name, month


def model_allowance_set(
    *, model: str, free_tokens_per_month: int, effective_month: date | None = None
) -> ModelAllowance:
    """Set a model's free tokens per cluster per month, from `effective_month` (default: this month) on."""
    name, month = model_allowance_check(
        model=model, free_tokens_per_month=free_tokens_per_month, effective_month=effective_month
    )
    allowance, _ = ModelAllowance.objects.update_or_create(
        model=name,
        effective_month=month.first_day,
        defaults={"free_tokens_per_month": free_tokens_per_month},
    )
    return allowance


def cluster_limit_set(*, cluster_id: str, tokens_per_minute: int | None) -> ClusterLimit | None:
    """Set (or with None, remove) a cluster's tokens-per-minute limit.

    It applies to the next request: of every process once committed (`billing.limits` drops the cached limit
    on commit, everywhere when Redis is shared), and at once to this connection's own reads.
    """
    if tokens_per_minute is not None and tokens_per_minute <= 0:
        raise BillingError("The limit must be a positive number of tokens per minute (None removes it)")
    limit: ClusterLimit | None = None
    if tokens_per_minute is None:
        ClusterLimit.objects.filter(cluster_id=cluster_id).delete()
    else:
        limit, _ = ClusterLimit.objects.update_or_create(
            cluster_id=cluster_id,
            defaults={"tokens_per_minute": tokens_per_minute, "updated_at": timezone.now()},
        )
    # Also now, not only on commit: reads later in the same transaction (and in a test that never commits)
    # must see the new limit.
    forget_limit(cluster_id)
    return limit


# --- roll-up verification and rebuild ----------------------------------------------------------------------


@dataclass(frozen=True)
class RollupRebuild:
    """What a rebuild wrote, and the comparison made right after it (in the same transaction)."""

    written: int
    comparison: RollupComparison


def _lock_ledger() -> None:
    """Hold new ledger rows back until the transaction ends, so ledger and roll-ups are read as one cut.

    PostgreSQL: SHARE mode blocks INSERTs (recorders wait, briefly) but not reads. SQLite: the transaction
    already holds the database's write lock (the project opens them IMMEDIATE).
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"LOCK TABLE {connection.ops.quote_name(UsageRecord._meta.db_table)} IN SHARE MODE"
            )


def rollups_verify() -> RollupComparison:
    """Compare every stored roll-up with the ledger, as one consistent cut."""
    with transaction.atomic():
        _lock_ledger()
        return rollup_comparison()


def rollups_rebuild() -> RollupRebuild:
    """Recompute every roll-up from the ledger, replace the stored ones, and prove them equal."""
    with transaction.atomic():
        _lock_ledger()
        expected = rollups_from_ledger()
        UsageRollup.objects.all().delete()
        UsageRollup.objects.bulk_create(
            [
                UsageRollup(
                    cluster_id=cluster_id,
                    model=model,
                    granularity=granularity,
                    period_start=period_start,
                    tokens=tokens,
                    records=records,
                )
                for (cluster_id, model, granularity, period_start), (tokens, records) in expected.items()
            ],
            batch_size=1000,
        )
        return RollupRebuild(written=len(expected), comparison=rollup_comparison())
