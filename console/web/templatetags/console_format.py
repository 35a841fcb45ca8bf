"""Number formatting for the console templates (django.contrib.humanize is not installed)."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def thousands(value: int | None) -> str:
    """`1234567` -> `1,234,567` (the console's numbers are token counts, always whole)."""
    if value is None or value == "":
        return ""
    return f"{int(value):,}"


@register.filter
def price(value: Decimal | None) -> str:
    """A price per 1M tokens: `0.100000` -> `0.10`, `0.012500` -> `0.0125` (cents, or as precise as set)."""
    if value is None:
        return ""
    text = f"{Decimal(value).normalize():f}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"
