"""The seams through which the rest of the project plugs into inference (inference imports no other app).

Inference serves clusters but does not own them, and meters tokens but does not bill them. What it needs
from outside comes through the hooks below, registered once at start-up by the app that owns the data
(each app's `AppConfig.ready`):

- :class:`Directory` (registered by `console.clusters`): API keys, clusters and their state.
- :class:`Meter` (registered by `billing`): the tokens-per-minute limit, held (reserved) before a model
  runs and settled after, and the prices shown in the catalog. Usage itself leaves through
  `inference.usage.usage_recorded`.

Unregistered hooks fail loudly (a directory) or do nothing (a meter), so inference runs, and its tests run,
without billing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class ClusterInfo:
    """What serving a cluster needs to know about it, read fresh for every request."""

    id: str
    restarting: bool
    inference_enabled: bool
    remote_url: str = ""  # empty: embedded storage (Qdrant Edge) in this process
    remote_api_key: str = ""  # never logged, never put in repr()

    def __repr__(self) -> str:
        return (
            f"ClusterInfo(id={self.id!r}, restarting={self.restarting}, inference={self.inference_enabled})"
        )


@dataclass(frozen=True)
class KeyInfo:
    """An active data-plane API key: the cluster it belongs to and whether it may write."""

    cluster_id: str
    read_only: bool


class Directory(Protocol):
    """Where clusters and their credentials live (the cluster domain implements it)."""

    def key_for_secret(self, secret: str) -> KeyInfo | None:
        """The active key with this secret, or None (unknown or revoked)."""

    def cluster(self, cluster_id: str) -> ClusterInfo | None:
        """The cluster's current state, or None if it does not exist."""

    def cluster_for_inference_token(self, token: str) -> ClusterInfo | None:
        """The cluster whose inference-service token this is, or None."""


class Reservation(Protocol):
    """Tokens held against a cluster's limit while its models run."""

    def settle(self, tokens: int) -> None:
        """Replace the reserved bound by the tokens the models actually processed."""


class Meter(Protocol):
    """What billing adds to serving: a limit held before models run, and prices for the catalog."""

    def reserve(self, cluster_id: str, tokens: int) -> Reservation:
        """Hold `tokens` (an upper bound) against the cluster's limit, or raise
        `inference.errors.TooManyRequests` when the cluster may not run a model now."""

    def prices(self) -> Mapping[str, Decimal]:
        """Price per 1M tokens in force now, by model name (models absent: their list price)."""


class _NoReservation:
    """Nothing was held."""

    def settle(self, tokens: int) -> None:
        """Nothing to settle."""


class _NoMeter:
    """Nothing is limited and the catalog shows list prices: inference without billing installed."""

    def reserve(self, cluster_id: str, tokens: int) -> Reservation:
        """No limit."""
        return _NoReservation()

    def prices(self) -> Mapping[str, Decimal]:
        """No price overrides."""
        return {}


_directory: Directory | None = None
_meter: Meter = _NoMeter()


def register_directory(directory: Directory) -> None:
    """Install the cluster directory (called by the cluster domain's app config)."""
    global _directory
    _directory = directory


def register_meter(meter: Meter) -> None:
    """Install the meter (called by billing's app config)."""
    global _meter
    _meter = meter


def directory() -> Directory:
    """The registered cluster directory."""
    if _directory is None:
        raise RuntimeError("no cluster directory registered: is `console.clusters` in INSTALLED_APPS?")
    return _directory


def meter() -> Meter:
    """The registered meter (a no-op one when billing is not installed)."""
    return _meter
