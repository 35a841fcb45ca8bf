"""The inference gateway: the one path every entry point takes to serve a cluster's request.

The REST data plane, `POST /inference` (Qdrant's inference-service protocol) and the gRPC front end only
translate their protocol to and from this module. For every request it:

1. authenticates the caller (an API key, or a cluster's inference token) through the cluster directory;
2. counts the request as in flight for its cluster, then reads the cluster's state: a cluster that is
   restarting answers "unavailable, retry after N s" (the restart drains what is already counted);
3. runs the operation with a :class:`Context` whose `embed` is the only way to run a model: the cluster's
   tokens-per-minute limit is checked there, so only requests that run a model can be limited;
4. reports the tokens spent, tagged with the request id (an `Idempotency-Key`, or a fresh one), once the
   operation succeeded: a failed request bills nothing.

Errors are `inference.errors.ApiError`s (or anything `errors.from_exception` classifies); callers render them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate

from inference import hooks, inflight, providers
from inference.embedding import get_engine, provider_config
from inference.engine.engine import Embeddings
from inference.engine.types import EmbedRequest
from inference.errors import Forbidden, NotFound, Unauthorized, Unavailable
from inference.hooks import ClusterInfo
from inference.resolution import Resolver
from inference.usage import emit_usage

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
    provider_keys: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Served:
    """Run one operation for a cluster under the gateway's rules (see the module docstring).

    `provider_keys` are the request's `<provider>-api-key` headers (lower-case names): the keys of the
    caller's accounts at external providers, used for this request only and never kept.
    """
    with inflight.track(cluster_id):
        # Read the state once counted: a restart that begins after this read waits for us to finish.
        cluster = cluster_get(cluster_id)
        if cluster.restarting:
            raise Unavailable(
                "the cluster is restarting to apply a new configuration, retry soon",
                retry_after=RETRY_AFTER_SECONDS,
            )
        context = Context(cluster=cluster, embed=_metered_embed(cluster, provider_keys or {}))
        result, usage = operation(context, **kwargs)
    if usage:
        emit_usage(cluster_id=cluster.id, request_id=request_id or uuid.uuid4().hex, usage=usage)
    return Served(result=result, usage=usage)


def _metered_embed(cluster: ClusterInfo, provider_keys: Mapping[str, str]) -> EmbedFn:
    """The embed of one request: local models on the engine behind the cluster's limit, the others at
    their providers with the caller's keys.

    The tokens-per-minute limit is checked only when a local model runs: provider models are billed to the
    caller by the provider, so they are neither limited nor priced here.
    """

    def local(requests: Sequence[EmbedRequest]) -> Embeddings:
        hooks.meter().check_limit(cluster.id)  # over the limit: refused before any model runs
        return get_engine().embed(requests)

    def embed(requests: Sequence[EmbedRequest]) -> Embeddings:
        if not requests:
            return Embeddings(results=[], usage={})
        return providers.embed_split(requests, local=local, keys=provider_keys, config=provider_config())

    return embed
