"""JSON in and out of the data plane, with the limits of Qdrant's own parser.

Both directions use orjson. It is several times faster than the standard library on the shapes the data
plane carries (a 384-float vector was parsed one float at a time through a finiteness hook), and it parses
as Qdrant's serde_json does:
- `NaN`, `Infinity` and numbers that overflow an f64 (`1e999`) are refused: a 400. Python's parser would
  turn `1e999` into infinity, which Qdrant Edge then stores and every later read fails to serialise.
- An integer beyond 64 bits becomes a float.
- A lone UTF-16 surrogate in a string is refused.
Nesting is bounded by `catchall.check_depth` (orjson itself stops at 1024 levels).

The data-plane views call `parse_body` and `json_response` directly (see `DataPlaneApi.dispatch`); the DRF
parser and renderer classes stay for the OpenAPI schema, which names the media types from them.

The renderer never fails on a non-finite float that is already stored (written before these checks
existed): orjson writes it as `null`, as JSON can carry no infinity, instead of a 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

# Anything orjson cannot write natively (Decimal, lazy strings...) and datetimes, written as the rest of
# the API writes them (DRF's encoder: "...Z" for UTC).
_DEFAULT = JSONEncoder().default
_DUMP_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


JSON = "application/json"


def loads(raw: bytes, encoding: str = "utf-8") -> Any:
    """Parse a JSON body as Qdrant does; ParseError (a 400) for what Qdrant would not accept."""
    try:
        return orjson.loads(raw if encoding.lower().replace("-", "") == "utf8" else raw.decode(encoding))
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"JSON parse error - {exc}") from None
    except (UnicodeDecodeError, LookupError) as exc:
        raise ParseError(f"JSON parse error - {exc}") from None


def parse_body(request: HttpRequest) -> Any:
    """The request's JSON body, with the rules DRF's request parsing applied before this module replaced it.

    No body, or no `Content-Type`, is no data (an empty object); a content type other than JSON is a 415.
    A body over `DATA_UPLOAD_MAX_MEMORY_SIZE` raises Django's RequestDataTooBig (a 413) before it is read.
    """
    content_type = request.META.get("CONTENT_TYPE", "")
    if not content_type or _content_length(request) <= 0:
        return {}
    if content_type.split(";")[0].strip().lower() != JSON:
        raise UnsupportedMediaType(content_type)
    return loads(request.body, request.encoding or settings.DEFAULT_CHARSET)


def _content_length(request: HttpRequest) -> int:
    """The declared body length; a malformed header counts as no body, as DRF and Django count it."""
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except (TypeError, ValueError):
        return 0


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON; a non-finite float (stored before numbers were checked) is written as null."""
    return orjson.dumps(data, default=_DEFAULT, option=_DUMP_OPTIONS)


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> HttpResponse:
    """A JSON answer of the data plane (no body for `None`, as DRF's renderer)."""
    body = b"" if data is None else dumps(data)
    return HttpResponse(body, status=status, headers=headers, content_type=JSON)


class QdrantJSONParser(JSONParser):
    """A JSON parser refusing non-finite and overflowing numbers as Qdrant's parser does."""

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        """The body as Python data; ParseError (a 400) for what Qdrant would not accept."""
        return loads(stream.read(), (parser_context or {}).get("encoding", "utf-8"))


class QdrantJSONRenderer(JSONRenderer):
    """Compact UTF-8 JSON; a non-finite float (stored before numbers were checked) is written as null."""

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        """The response body (empty for no data, as DRF's renderer)."""
        return b"" if data is None else dumps(data)
