"""The contract every model runner (dense ONNX text, ONNX image, BM25) fulfils.

A runner owns one loaded model. The engine hands it requests that are already deduplicated and all for
that model; the runner batches them as it sees fit and returns one result per request, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .types import EmbedRequest, EmbedResult, ModelSpec


class ModelRunner(Protocol):
    """A loaded model that turns requests into vectors."""

    spec: ModelSpec

    def check(self, request: EmbedRequest) -> None:
        """Raise :class:`InvalidInput` if the request can never succeed (wrong input type, bad options).

        Cheap and side-effect free: the engine checks every request of a call before running any model, so
        a bad item fails the whole call before work (or a fetch) is done.
        """
        ...

    def embed(self, requests: Sequence[EmbedRequest], *, alone: bool = False) -> list[EmbedResult]:
        """Embed the requests (all for this model), one result per request, in order.

        `alone` says nothing else runs in the pool meanwhile (a lone query on an idle server), so a runner
        may spread this batch over more cores; runners without such a mode ignore it.
        """
        ...


def options_or_empty(options: dict[str, Any] | None) -> dict[str, Any]:
    """Options as a dict; Qdrant treats a missing `options` like an empty one when running a model."""
    return dict(options) if options else {}
