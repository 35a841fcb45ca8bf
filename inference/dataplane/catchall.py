"""What the data plane answers outside its routes and for bodies Qdrant would not parse.

Every answer is JSON in Qdrant's error shape (`{"status": {"error": msg}, "time": t}`), never Django's HTML
404 page and never a 500:

* a path Qdrant's REST API does not have -> 404 (`UnknownPathApi`, the last route of
  `inference/dataplane/urls.py`); a method the path does not take -> 405 and a body that is not JSON -> 415
  (DRF raises those, `inference.http.classify` maps them);
* JSON nested deeper than Qdrant's parser accepts -> 400 (:func:`check_depth`);
* content negotiation never picks anything but the JSON renderer, whatever `Accept` says.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

from inference.errors import FormatError, NotFound

# serde_json's default recursion limit, which Qdrant inherits: deeper bodies are refused as malformed.
MAX_JSON_DEPTH = 128


class JsonOnlyNegotiation(BaseContentNegotiation):
    """Always the first (JSON) renderer and the view's parsers: Qdrant answers JSON whatever `Accept` is."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        """The parser matching the request's content type, if any (None makes DRF answer 415)."""
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        for parser in parsers:
            if parser.media_type == content_type:
                return parser
        return None

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        """The JSON renderer, never a 406."""
        renderer = next(iter(renderers))
        return renderer, str(renderer.media_type)


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
