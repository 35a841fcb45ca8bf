"""JSON in and out of the data plane, with the limits of Qdrant's own parser.

Qdrant (serde_json) refuses numbers that overflow an f64 and `NaN`/`Infinity`; Python's parser would turn
`1e999` into infinity, which Qdrant Edge then stores and every later read fails to serialise. So the
parser refuses non-finite numbers with a 400, and nesting deeper than Python's recursion allows is a 400
too (`errors.from_exception` maps the RecursionError). The renderer never fails on a non-finite float that
is already stored (written before this check existed): it answers it as `null`, as JSON can carry no
infinity, instead of a 500.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:32]} is out of range for a 64-bit float")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number")


class QdrantJSONParser(JSONParser):
    """DRF's JSON parser, refusing non-finite and overflowing numbers as Qdrant's parser does."""

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        """The body as Python data; ParseError (a 400) for what Qdrant would not accept."""
        encoding = (parser_context or {}).get("encoding", "utf-8")
        try:
            text = stream.read().decode(encoding)
            return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply") from None
        except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
            raise ParseError(f"JSON parse error - {exc}") from None


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


class QdrantJSONRenderer(JSONRenderer):
    """DRF's JSON renderer; a non-finite float (stored before numbers were checked) is answered as null."""

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        """Strict JSON; the slow path that replaces non-finite numbers runs only when there is one."""
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except ValueError:  # "Out of range float values are not JSON compliant"
            return super().render(_finite_or_none(data), accepted_media_type, renderer_context)
