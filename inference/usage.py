"""The single seam through which inference usage leaves the serving path.

The gateway reports a request's tokens with :func:`emit_usage` as soon as its models ran, before anything
is written: so a process killed after a write never leaves written points unbilled. If the request then
fails, :func:`refund_usage` withdraws what it recorded, so a failed request bills nothing; if it answered,
:func:`settle_usage` says so. Receivers of :data:`usage_recorded` (billing connects one) make the events
durable and return the models they recorded (a repeat of a request id records nothing new); receivers of
:data:`usage_refunded` withdraw them, and of :data:`usage_settled` let them stand. Every signal carries the
request's `attempt`, an id of this one run of it (an Idempotency-Key names every retry of a request alike).
Events carry counts only, never the inputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.dispatch import Signal
from django.utils import timezone

usage_recorded = Signal()  # sent with events=list[UsageEvent], attempt=str
usage_refunded = Signal()  # sent with cluster_id=str, request_id=str, models=frozenset[str], attempt=str
usage_settled = Signal()  # sent with attempt=str


@dataclass(frozen=True)
class UsageEvent:
    """Tokens one request spent on one model of one cluster."""

    cluster_id: str
    model: str
    tokens: int
    request_id: str
    time: datetime


def emit_usage(
    *, cluster_id: str, request_id: str, usage: dict[str, int], attempt: str = ""
) -> frozenset[str]:
    """Hand a request's usage (model -> tokens) to every receiver; the models they recorded."""
    now = timezone.now()
    events = [
        UsageEvent(cluster_id=cluster_id, model=model, tokens=tokens, request_id=request_id, time=now)
        for model, tokens in sorted(usage.items())
        if tokens > 0
    ]
    if not events:
        return frozenset()
    recorded: set[str] = set()
    for _receiver, models in usage_recorded.send(sender=UsageEvent, events=events, attempt=attempt):
        if isinstance(models, Iterable) and not isinstance(models, str | bytes):
            recorded.update(str(m) for m in models)
    return frozenset(recorded)


def refund_usage(*, cluster_id: str, request_id: str, models: frozenset[str], attempt: str = "") -> None:
    """Withdraw the usage a failed request recorded for `models` (what `emit_usage` returned)."""
    if models:
        usage_refunded.send(
            sender=UsageEvent, cluster_id=cluster_id, request_id=request_id, models=models, attempt=attempt
        )


def settle_usage(*, attempt: str) -> None:
    """The request that recorded usage under `attempt` answered: what it recorded stands."""
    usage_settled.send(sender=UsageEvent, attempt=attempt)
