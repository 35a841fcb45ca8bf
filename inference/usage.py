"""The single seam through which inference usage leaves the data plane.

Every request that ran inference calls :func:`emit_usage` once, after it succeeded, with one event per
model. Receivers of :data:`usage_recorded` (billing connects one) persist them. Events carry counts only,
never the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.dispatch import Signal
from django.utils import timezone

usage_recorded = Signal()  # sent with events=list[UsageEvent]


@dataclass(frozen=True)
class UsageEvent:
    """Tokens one request spent on one model of one cluster."""

    cluster_id: str
    model: str
    tokens: int
    request_id: str
    time: datetime


def emit_usage(*, cluster_id: str, request_id: str, usage: dict[str, int]) -> list[UsageEvent]:
    """Turn a request's usage (model -> tokens) into events and hand them to every receiver."""
    now = timezone.now()
    events = [
        UsageEvent(cluster_id=cluster_id, model=model, tokens=tokens, request_id=request_id, time=now)
        for model, tokens in sorted(usage.items())
        if tokens > 0
    ]
    if events:
        usage_recorded.send(sender=UsageEvent, events=events)
    return events
