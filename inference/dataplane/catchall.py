"""What the data plane answers outside its routes and for bodies Qdrant would not parse.

Every answer is JSON in Qdrant's error shape (`{"status": {"error": msg}, "time": t}`), never Django's HTML
404 page and never a 500:

* a path Qdrant's REST API does not have -> 404 (`UnknownPathApi`, the last route of
  `inference/dataplane/urls.py`); a method the path does not take -> 405 (`DataPlaneApi.dispatch`) and a
  body that is not JSON -> 415 (`wire.parse_body`); `inference.http.classify` maps them;
* JSON nested deeper than Qdrant's parser accepts -> 400 (:func:`check_depth`);
* whatever `Accept` says, the answer is JSON (`DataPlaneApi.dispatch` negotiates nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from inference.errors import FormatError, NotFound

# serde_json's default recursion limit, which Qdrant inherits: deeper bodies are refused as malformed.
MAX_JSON_DEPTH = 128


def unknown_path(method: str, path: str) -> NotFound:
    """404 for a path that is not part of Qdrant's REST API."""
    shown = path if len(path) <= 200 else path[:200] + "..."
    return NotFound(f"no route for {method} /{shown}")


_CONTAINERS: frozenset[type] = frozenset({dict, list})


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than `limit` (iteratively, so the check itself cannot overflow)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise FormatError(f"recursion limit exceeded (more than {limit} nested levels)")
        children: Iterable[Any] = item.values() if type(item) is dict else item if type(item) is list else ()
        # Only containers are pushed, and a vector's floats are only looked at by their types, in C.
        # (Parsed JSON holds exactly dicts and lists, never subclasses.)
        if not _CONTAINERS.isdisjoint(map(type, children)):
            stack.extend((v, depth + 1) for v in children if type(v) in _CONTAINERS)
