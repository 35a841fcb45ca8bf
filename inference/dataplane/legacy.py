"""Qdrant's legacy search / recommend / discover bodies, rewritten as universal query bodies.

Qdrant still serves `points/search`, `search/batch`, `search/groups`, `recommend`, `recommend/batch`,
`recommend/groups`, `discover` and `discover/batch` (the JS client's `search()` uses them), and answers them
through the same machinery as `points/query`. Here each body becomes the equivalent `QueryRequest` /
`QueryGroupsRequest` JSON, so it then takes exactly the query path: the same Resolver (inference objects
are embedded where a vector may stand), the same storage call, on both backends.

Pure functions on JSON; errors are `BadRequest` with Qdrant's "Format error in JSON body" wording.
"""

from __future__ import annotations

from typing import Any

from inference.storage.base import BadRequest

# Keys every legacy request shares with the universal query, passed through unchanged.
_COMMON = ("filter", "params", "limit", "with_payload", "with_vector", "score_threshold", "shard_key")
_GROUPS = ("group_by", "group_size", "with_lookup")


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"Format error in JSON body: {what} must be a JSON object")
    return body


def _require(body: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if body.get(key) is None:
            raise BadRequest(f"Format error in JSON body: missing field `{key}`")


def _copy(body: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = {k: body[k] for k in keys if k in body}
    # Qdrant's legacy bodies also accept `with_vectors` (serde alias of `with_vector`).
    if "with_vector" not in out and "with_vectors" in body:
        out["with_vector"] = body["with_vectors"]
    return out


def _search_vector(vector: Any) -> tuple[Any, str | None]:
    """`(query, using)` from a legacy `vector`: a raw vector, `{"name", "vector"}` or an inference object."""
    if vector is None:
        raise BadRequest("Format error in JSON body: missing field `vector`")
    if isinstance(vector, dict) and "name" in vector and "vector" in vector:
        name = vector["name"]
        if not isinstance(name, str):
            raise BadRequest("Format error in JSON body: `vector.name` must be a string")
        return vector["vector"], name
    return vector, None


def search(body: Any) -> dict[str, Any]:
    """`SearchRequest` -> `QueryRequest` (nearest to `vector`, on its named vector)."""
    body = _object(body, "the search request")
    _require(body, "limit")
    query, using = _search_vector(body.get("vector"))
    out = _copy(body, (*_COMMON, "offset"))
    out["query"] = query
    if using is not None:
        out["using"] = using
    return out


def search_groups(body: Any) -> dict[str, Any]:
    """`SearchGroupsRequest` -> `QueryGroupsRequest`."""
    body = _object(body, "the search request")
    _require(body, "limit", "group_by", "group_size")
    query, using = _search_vector(body.get("vector"))
    out = _copy(body, (*_COMMON, *_GROUPS))
    out["query"] = query
    if using is not None:
        out["using"] = using
    return out


def _recommend_query(body: dict[str, Any]) -> dict[str, Any]:
    recommend: dict[str, Any] = {
        "positive": body.get("positive") or [],
        "negative": body.get("negative") or [],
    }
    if body.get("strategy") is not None:
        recommend["strategy"] = body["strategy"]
    return {"recommend": recommend}


def recommend(body: Any) -> dict[str, Any]:
    """`RecommendRequest` -> `QueryRequest` with a `recommend` query."""
    body = _object(body, "the recommend request")
    _require(body, "limit")
    out = _copy(body, (*_COMMON, "offset", "using", "lookup_from"))
    out["query"] = _recommend_query(body)
    return out


def recommend_groups(body: Any) -> dict[str, Any]:
    """`RecommendGroupsRequest` -> `QueryGroupsRequest` with a `recommend` query."""
    body = _object(body, "the recommend request")
    _require(body, "limit", "group_by", "group_size")
    out = _copy(body, (*_COMMON, *_GROUPS, "using", "lookup_from"))
    out["query"] = _recommend_query(body)
    return out


def discover(body: Any) -> dict[str, Any]:
    """`DiscoverRequest` -> `QueryRequest`: `discover` with a target, `context` without one."""
    body = _object(body, "the discover request")
    _require(body, "limit")
    out = _copy(body, (*_COMMON, "offset", "using", "lookup_from"))
    context = body.get("context") or []
    target = body.get("target")
    out["query"] = (
        {"context": context} if target is None else {"discover": {"target": target, "context": context}}
    )
    return out


def batch(body: Any, translate: Any) -> list[dict[str, Any]]:
    """The `searches` of a legacy batch body, each translated with `translate`."""
    body = _object(body, "the batch request")
    searches = body.get("searches")
    if not isinstance(searches, list):
        raise BadRequest("Format error in JSON body: missing field `searches`")
    return [translate(item) for item in searches]
