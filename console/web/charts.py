"""Daily usage bar charts, laid out in Python and drawn as inline SVG by a template (no chart library).

The layout is plain numbers (bar rectangles, grid lines, labels) so the template only places elements and
Django's autoescaping covers every label; nothing here builds markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from billing.selectors import UsagePoint

WIDTH = 640
HEIGHT = 180
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 12, 26  # room for the y-axis labels and the dates under the bars
BAR_GAP = 0.25  # fraction of a day's slot left empty between bars


def compact(value: int) -> str:
    """`950`, `1.2k`, `3.4M`: short enough for an axis label."""
    for limit, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if value >= limit:
            text = f"{value / limit:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return str(value)


def _count(value: int, noun: str) -> str:
    return f"{value:,} {noun}{'' if value == 1 else 's'}"


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2, 2.5 or 5 x 10^n >= value (at least 10), so grid lines fall on round numbers."""
    if value <= 10:
        return 10
    magnitude = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        candidate = int(factor * magnitude)
        if candidate >= value:
            return candidate
    return 10 * magnitude  # unreachable: factor 10 always fits


@dataclass(frozen=True)
class Bar:
    """One day: its rectangle and the tooltip text."""

    x: float
    y: float
    width: float
    height: float
    slot_x: float  # the day's whole column: a faint track behind the bar and a wide hover target
    slot_width: float
    title: str
    today: bool


@dataclass(frozen=True)
class GridLine:
    """A horizontal grid line with its value label."""

    y: float
    label: str


@dataclass(frozen=True)
class DateLabel:
    """A date under the x axis."""

    x: float
    label: str
    anchor: str = "middle"  # the last label ends at its bar, so it never runs past the edge


@dataclass(frozen=True)
class BarChart:
    """Everything the SVG template draws."""

    width: int
    height: int
    left: int
    right: float  # x of the plot's right edge
    top: int
    baseline: float  # y of the x axis
    bars: list[Bar]
    grid: list[GridLine]
    dates: list[DateLabel]
    total_tokens: int
    total_requests: int
    peak_tokens: int
    peak_day: date | None

    @property
    def plot_height(self) -> float:
        """Height of the plot area (grid lines span it)."""
        return self.baseline - self.top

    @property
    def center_x(self) -> float:
        """The middle of the plot, where the no-usage note goes."""
        return (self.left + self.right) / 2

    @property
    def center_y(self) -> float:
        """The vertical middle of the plot."""
        return (self.top + self.baseline) / 2

    @property
    def empty(self) -> bool:
        """No usage at all in the window."""
        return self.total_tokens == 0


def daily_bar_chart(points: Sequence[UsagePoint], *, today: date) -> BarChart:
    """Lay out one bar per day; the y axis runs from 0 to a round number above the busiest day."""
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_height
    peak = max((p.tokens for p in points), default=0)
    scale_max = nice_ceiling(peak)
    slot = plot_width / max(len(points), 1)
    bars = []
    for index, point in enumerate(points):
        height = plot_height * point.tokens / scale_max
        if point.tokens and height < 1.5:
            height = 1.5  # a day with any usage stays visible next to a much busier one
        day = point.start.date()
        bars.append(
            Bar(
                x=round(LEFT + index * slot + slot * BAR_GAP / 2, 2),
                y=round(baseline - height, 2),
                width=round(slot * (1 - BAR_GAP), 2),
                height=round(height, 2),
                slot_x=round(LEFT + index * slot, 2),
                slot_width=round(slot, 2),
                title=f"{day:%a %d %b}: "
                f"{_count(point.tokens, 'token')} in {_count(point.requests, 'request')}",
                today=day == today,
            )
        )
    grid = [
        GridLine(y=round(baseline - plot_height * fraction, 2), label=compact(int(scale_max * fraction)))
        for fraction in (0, 0.5, 1)
    ]
    # A date every week, counted back from today so the last label is always today's.
    dates = [
        DateLabel(x=round(LEFT + index * slot + slot / 2, 2), label=f"{points[index].start:%d %b}")
        for index in range(len(points) - 1, -1, -7)
    ]
    if dates:
        dates[0] = DateLabel(x=round(LEFT + len(points) * slot, 2), label=dates[0].label, anchor="end")
    peak_point = max(points, key=lambda p: p.tokens) if peak else None
    return BarChart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=WIDTH - RIGHT,
        top=TOP,
        baseline=baseline,
        bars=bars,
        grid=grid,
        dates=dates,
        total_tokens=sum(p.tokens for p in points),
        total_requests=sum(p.requests for p in points),
        peak_tokens=peak,
        peak_day=peak_point.start.date() if peak_point else None,
    )
