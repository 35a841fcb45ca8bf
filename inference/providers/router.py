"""Split one request's embeddings between the local engine and the providers, and join the results.

Every provider input is checked and its call body built before anything runs (a missing key or an input a
provider cannot take fails the request before a model is spent), then the local models run, then each
provider batch is sent. Identical inputs (same model, side, input, options and key) reach a provider once.
Keys are looked up per provider only: a key is sent to the provider it is named for and to no other, and
every `*-api-key` option is removed from what a provider receives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx

from inference.engine.engine import Embeddings
from inference.engine.types import EmbedRequest, EmbedResult, Vector
from inference.errors import BadRequest
from inference.providers.base import Batch, JsonObject, ProviderClient, ProviderConfig
from inference.providers.clients import PROVIDERS

LocalEmbed = Callable[[Sequence[EmbedRequest]], Embeddings]

# Request headers (lower case) that may carry a provider key, one per provider.
KEY_HEADERS: frozenset[str] = frozenset(client.header for client in PROVIDERS.values())


def provider_of(model: str) -> ProviderClient | None:
    """The provider hosting `model` (by its prefix, case-insensitive), or None for a local model."""
    prefix, slash, rest = model.partition("/")
    if not slash or not rest:
        return None
    return PROVIDERS.get(prefix.lower())


def is_provider_model(model: str) -> bool:
    """Whether `model` is hosted by a provider (billing prices these at 0: the provider bills the caller)."""
    return provider_of(model) is not None


def usage_name(model: str) -> str:
    """The name a provider model is reported and billed under: lower-case prefix, the id as written."""
    prefix, _, rest = model.partition("/")
    return f"{prefix.lower()}/{rest}"


def _is_key_option(name: str) -> bool:
    lowered = name.lower()
    return lowered.endswith("-api-key") or lowered in ("api_key", "api-key", "apikey")


@dataclass
class _Group:
    client: ProviderClient
    key: str
    batch_of: tuple[str, str, str, str, str]  # model, kind, input type, options (json), key
    requests: list[EmbedRequest]
    options: JsonObject
    positions: list[int]  # index into the distinct provider inputs


def embed_split(
    requests: Sequence[EmbedRequest],
    *,
    local: LocalEmbed,
    keys: Mapping[str, str],
    config: ProviderConfig,
    client: httpx.Client | None = None,
) -> Embeddings:
    """Embed `requests` in order: local models through `local`, provider models through their APIs.

    `keys` holds the request's provider-key headers (lower-case names); an object's own `<provider>-api-key`
    option wins over the header. `local` is called only when a local model is asked for (so the cluster's
    token limit, checked there, never applies to provider-only requests). Usage maps each model to the
    tokens spent: the engine's count for local models, the provider's report for the others.
    """
    local_positions: list[int] = []
    distinct: dict[tuple[str, ...], int] = {}  # dedup key -> index into `slot_vectors`
    slot_of: dict[int, int] = {}  # request index -> distinct provider input
    groups: dict[tuple[str, str, str, str, str], _Group] = {}
    for index, request in enumerate(requests):
        client_for = provider_of(request.model)
        if client_for is None:
            local_positions.append(index)
            continue
        options = dict(request.options or {})
        key = options.get(client_for.header)
        if not isinstance(key, str) or not key.strip():
            key = keys.get(client_for.header, "")
        key = key.strip()
        if not key:
            raise BadRequest(
                f"Model `{request.model}` is hosted by {client_for.label}: send your {client_for.label} API "
                f"key in the `{client_for.header}` header (or the `{client_for.header}` option)."
            )
        passthrough = {k: v for k, v in options.items() if not _is_key_option(k)}
        options_json = json.dumps(passthrough, sort_keys=True, default=str)
        group_key = (request.model, request.kind.value, request.input_type.value, options_json, key)
        data = request.data if isinstance(request.data, str) else json.dumps(request.data, sort_keys=True)
        dedup = (*group_key, data)
        position = distinct.get(dedup)
        if position is None:
            position = distinct[dedup] = len(distinct)
            group = groups.get(group_key)
            if group is None:
                group = groups[group_key] = _Group(client_for, key, group_key, [], passthrough, [])
            group.requests.append(request)
            group.positions.append(position)
        slot_of[index] = position

    # Build every provider call before anything runs: bad inputs fail the request while nothing is spent.
    calls: list[tuple[_Group, Batch, JsonObject, list[int]]] = []
    for group in groups.values():
        first = group.requests[0]
        limit = group.client.max_batch(first.input_type)
        model_id = first.model.partition("/")[2]
        for start in range(0, len(group.requests), limit):
            batch = Batch(
                model=first.model,
                model_id=model_id,
                kind=first.kind,
                input_type=first.input_type,
                options=group.options,
                requests=group.requests[start : start + limit],
            )
            body = group.client.request(batch, config)
            calls.append((group, batch, body, group.positions[start : start + limit]))

    results: list[EmbedResult | None] = [None] * len(requests)
    usage: dict[str, int] = {}
    if local_positions:
        embedded = local([requests[i] for i in local_positions])
        for index, result in zip(local_positions, embedded.results, strict=True):
            results[index] = result
        for model, tokens in embedded.usage.items():
            usage[model] = usage.get(model, 0) + tokens

    vectors: list[Vector | None] = [None] * len(distinct)
    if calls:
        owned = client is None
        http = client or httpx.Client(follow_redirects=False)  # a redirect must not carry a key elsewhere
        try:
            for group, batch, body, positions in calls:
                answer = group.client.send(batch, body, key=group.key, config=config, client=http)
                for position, vector in zip(positions, answer.vectors, strict=True):
                    vectors[position] = vector
                name = usage_name(batch.model)
                usage[name] = usage.get(name, 0) + answer.tokens
        finally:
            if owned:
                http.close()
    for index, position in slot_of.items():
        found = vectors[position]
        assert found is not None  # every distinct input belongs to exactly one sent batch
        results[index] = EmbedResult(vector=found, tokens=0)  # providers report tokens per call only
    final = [r for r in results if r is not None]
    assert len(final) == len(requests)
    return Embeddings(results=final, usage={m: t for m, t in usage.items() if t > 0})
