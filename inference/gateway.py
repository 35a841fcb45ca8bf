"""The inference gateway: the one path every entry point takes to serve a cluster's request.

The REST data plane, `POST /inference` (Qdrant's inference-service protocol) and the gRPC front end only
translate their protocol to and from this module. For every request it:

1. authenticates the caller (an API key, or a cluster's inference token) through the cluster directory;
2. counts the request as in flight for its cluster, then reads the cluster's state: a cluster that is
   restarting answers "unavailable, retry after N s" (the restart drains what is already counted);
3. runs the operation with a :class:`Context` whose `embed` is the only way to run a model: the cluster's
   tokens-per-minute limit is checked there, so only requests that run a model can be limited;
4. records the tokens spent, tagged with the request id (an `Idempotency-Key`, or a fresh one), as soon
   as the models ran and before anything is written; if the operation then fails, they are refunded, so a
   failed request bills nothing and a process killed after a write leaves nothing unbilled; if it
   succeeds, they are settled (billing's usage journal folds only settled usage into the ledger).

A request with an Idempotency-Key claims the key first (`inference.idempotency`): a repeat of a request
that succeeded gets its answer again without anything running.

Errors are `inference.errors.ApiError`s (or anything `errors.from_exception` classifies); callers render them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate

from inference import catalog, hooks, idempotency, inflight, providers
from inference.embedding import get_engine, prefetch_images, provider_config
from inference.engine.engine import Embeddings
from inference.engine.types import EmbedRequest
from inference.errors import DeadlineExceeded, Forbidden, NotFound, Unauthorized, Unavailable
from inference.hooks import ClusterInfo
from inference.resolution import Resolver
from inference.usage import emit_usage, refund_usage, settle_usage

RETRY_AFTER_SECONDS = 5  # how long a client should wait while a cluster restarts
Usage = dict[str, int]
EmbedFn = Callable[[Sequence[EmbedRequest]], Embeddings]


@dataclass(frozen=True)
class Context:
    """What one operation gets from the gateway: its cluster, and the only way to run a model for it."""

    cluster: ClusterInfo
    embed: EmbedFn

    def resolver(self) -> Resolver:
        """A resolver of inference objects that embeds through this request's metered `embed`."""
        return Resolver(self.embed, inference_enabled=self.cluster.inference_enabled)


@dataclass(frozen=True)
class Served:
    """An operation's result (in its protocol-neutral form) and the tokens it spent per model."""

    result: Any
    usage: Usage = field(default_factory=dict)


Operation = Callable[Concatenate[Context, ...], tuple[Any, Usage]]


def authenticate(*, secret: str, cluster_id: str | None, write: bool) -> ClusterInfo:
    """The cluster an API key may act on, or Unauthorized/Forbidden.

    `cluster_id` is the cluster the request addressed (REST: in the path); None means the key's own cluster
    (gRPC serves every cluster on one port). `write` refuses read-only keys.
    """
    if not secret:
        raise Unauthorized("Must provide an API key or an Authorization bearer token")
    key = hooks.directory().key_for_secret(secret)
    if key is None:
        raise Unauthorized("Invalid API key or JWT")
    if cluster_id is not None and key.cluster_id != cluster_id:
        raise Forbidden("this API key belongs to another cluster")
    if write and key.read_only:
        raise Forbidden("this API key is read-only")
    return cluster_get(key.cluster_id)


def authenticate_inference_token(token: str) -> ClusterInfo:
    """The cluster of an inference-service token (a self-hosted Qdrant embedding through us)."""
    cluster = hooks.directory().cluster_for_inference_token(token) if token else None
    if cluster is None:
        raise Unauthorized("Invalid or missing inference token")
    return cluster


def cluster_get(cluster_id: str) -> ClusterInfo:
    """The cluster's current state, or NotFound."""
    cluster = hooks.directory().cluster(cluster_id)
    if cluster is None:
        raise NotFound(f"cluster {cluster_id} does not exist")
    return cluster


def serve(
    *,
    cluster_id: str,
    operation: Operation,
    request_id: str | None = None,
    fingerprint: str | None = None,
    provider_keys: Mapping[str, str] | None = None,
    deadline: float | None = None,
    **kwargs: Any,
) -> Served:
    """Run one operation for a cluster under the gateway's rules (see the module docstring).

    `request_id` is the client's Idempotency-Key, if it sent one, and `fingerprint` identifies the request
    (`idempotency.fingerprint` of its method, path and body); without a fingerprint the key only tags usage.
    `provider_keys` are the request's `<provider>-api-key` headers (lower-case names): the keys of the
    caller's accounts at external providers, used for this request only and never kept. `deadline` (a
    `time.monotonic()` instant, gRPC's) is checked once the models ran: past it, nothing is written.
    """
    with inflight.track(cluster_id):
        # Read the state once counted: a restart that begins after this read waits for us to finish.
        cluster = cluster_get(cluster_id)
        if cluster.restarting:
            raise Unavailable(
                "the cluster is restarting to apply a new configuration, retry soon",
                retry_after=RETRY_AFTER_SECONDS,
            )
        key: str | None = None  # a key without a fingerprint only tags usage
        if request_id is not None and fingerprint is not None:
            key = request_id
            replay = idempotency.claim(cluster_id=cluster.id, key=key, fingerprint=fingerprint)
            if replay is not None:
                return Served(result=replay.result, usage=replay.usage)
        metering = _Metering(cluster, request_id or uuid.uuid4().hex, provider_keys or {}, deadline)
        try:
            result, usage = operation(Context(cluster=cluster, embed=metering.embed), **kwargs)
        except BaseException:
            metering.refund()
            if key is not None:
                idempotency.release(cluster_id=cluster.id, key=key)
            raise
        metering.settle()
    if key is not None:
        idempotency.complete(cluster_id=cluster.id, key=key, result=result, usage=usage)
    return Served(result=result, usage=usage)


class _Metering:
    """The embed of one request, its usage recorded as soon as the models ran.

    Local models run on the engine behind the cluster's limit; provider models (`openai/...` and the like)
    at their providers with the caller's keys. Recording right after the models ran, before the operation
    writes anything, means a process killed after the write leaves no written point unbilled; a request
    that fails afterwards is refunded. The limit is checked only when a local model is about to run, so
    requests with vectors only are never limited.
    """

    def __init__(
        self, cluster: ClusterInfo, request_id: str, provider_keys: Mapping[str, str], deadline: float | None
    ) -> None:
        self.cluster = cluster
        self.request_id = request_id
        self.provider_keys = provider_keys
        self.deadline = deadline
        self.attempt = uuid.uuid4().hex  # this run of the request (a retry reuses its request id)
        self.recorded: frozenset[str] = frozenset()

    def embed(self, requests: Sequence[EmbedRequest]) -> Embeddings:
        """Embed locally and at providers, and record the tokens spent."""
        if not requests:
            return Embeddings(results=[], usage={})
        embeddings = providers.embed_split(
            requests, local=self._local, keys=self.provider_keys, config=provider_config()
        )
        self.recorded |= emit_usage(
            cluster_id=self.cluster.id,
            request_id=self.request_id,
            usage=embeddings.usage,
            attempt=self.attempt,
        )
        if self.deadline is not None and time.monotonic() >= self.deadline:
            # The caller gave up: fail before the operation writes anything (the usage is refunded).
            raise DeadlineExceeded("Deadline Exceeded")
        return embeddings

    def _local(self, requests: Sequence[EmbedRequest]) -> Embeddings:
        """Models this server runs: behind the cluster's limit (provider models are billed by the provider,
        so they are neither limited nor priced here)."""
        # Over the limit: refused before any model runs. The bound is reserved atomically, so concurrent
        # requests cannot all pass one check and overshoot the limit together.
        requests = catalog.cut_texts(requests)  # a huge text costs what its context window bills
        reservation = hooks.meter().reserve(self.cluster.id, catalog.token_bound(requests))
        try:
            # Image URLs are fetched here, in a bounded pool, so that no ONNX worker waits on the network.
            embeddings = get_engine().embed(prefetch_images(requests))
        except BaseException:
            reservation.settle(0)
            raise
        reservation.settle(sum(embeddings.usage.values()))
        return embeddings

    def refund(self) -> None:
        """Withdraw what this request recorded (it failed, so it bills nothing)."""
        refund_usage(
            cluster_id=self.cluster.id, request_id=self.request_id, models=self.recorded, attempt=self.attempt
        )

    def settle(self) -> None:
        """The request answered: what it recorded stands."""
        if self.recorded:
            settle_usage(attempt=self.attempt)
