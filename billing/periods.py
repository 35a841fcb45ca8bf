"""UTC calendar arithmetic for billing: hours, days and months are always UTC, whatever the server's zone.

Bills must not depend on where a server runs, so every bucket boundary is computed here, once, in UTC. A
naive datetime is taken to be UTC (the project runs with USE_TZ and TIME_ZONE="UTC").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum


class Granularity(StrEnum):
    """The bucket sizes of usage series; hour and day are stored as roll-ups, month is summed from days."""

    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


def as_utc(value: datetime) -> datetime:
    """The same instant expressed in UTC (a naive value is taken to already be UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def floor_to(value: datetime, granularity: Granularity) -> datetime:
    """The start of the UTC hour, day or month that contains `value`."""
    value = as_utc(value)
    if granularity == Granularity.HOUR:
        return value.replace(minute=0, second=0, microsecond=0)
    if granularity == Granularity.DAY:
        return value.replace(hour=0, minute=0, second=0, microsecond=0)
    return value.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def step(start: datetime, granularity: Granularity) -> datetime:
    """The start of the bucket after the one starting at `start` (months have uneven lengths)."""
    if granularity == Granularity.HOUR:
        return start + timedelta(hours=1)
    if granularity == Granularity.DAY:
        return start + timedelta(days=1)
    return Month.of(start).next().start


def bucket_starts(start: datetime, end: datetime, granularity: Granularity, limit: int) -> list[datetime]:
    """Starts of the buckets that begin in [floor(start), end), at most `limit` of them.

    Raises ValueError when the range holds more than `limit` buckets, so a caller cannot ask for a year of
    hourly points by accident.
    """
    current, end = floor_to(start, granularity), as_utc(end)
    starts: list[datetime] = []
    while current < end:
        if len(starts) == limit:
            raise ValueError(f"more than {limit} {granularity} buckets")
        starts.append(current)
        current = step(current, granularity)
    return starts


_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True)
class Month:
    """A UTC calendar month: the unit of free allowances and statements."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12:
            raise ValueError(f"month must be 01-12, got {self.month:02d}")
        if not 1970 <= self.year <= 9998:
            raise ValueError(f"year must be 1970-9998, got {self.year}")

    @classmethod
    def parse(cls, text: str) -> Month:
        """Parse `YYYY-MM` (e.g. 2025-03); ValueError with a readable message otherwise."""
        match = _MONTH_RE.match(text)
        if not match:
            raise ValueError(f"expected a month as YYYY-MM (e.g. 2025-03), got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def of(cls, value: datetime | date) -> Month:
        """The UTC month containing a datetime (or the month of a date)."""
        if isinstance(value, datetime):
            value = as_utc(value)
        return cls(value.year, value.month)

    @property
    def start(self) -> datetime:
        """The first instant of the month, UTC."""
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant of the next month (exclusive end)."""
        return self.next().start

    @property
    def first_day(self) -> date:
        """The month's first day, as allowances store it."""
        return date(self.year, self.month, 1)

    def next(self) -> Month:
        """The following month."""
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"
