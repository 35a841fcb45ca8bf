"""What every provider client shares: its identity, the HTTP call with retries, and error translation.

A provider client only knows its own request and response JSON (see `clients.py`); this module sends it:
one POST per batch with the caller's key as a bearer token, a timeout per attempt, retries with exponential
backoff (or the provider's `Retry-After`) on 429 and 5xx within a total deadline, and every failure turned
into an `inference.errors.ApiError` whose message names the provider and its HTTP status. The key never
appears in a message: a provider's own error text is shortened and has the key blanked out before it is
shown, and nothing here logs a request, a response body or a header.

Pure Python (httpx, no Django).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from inference.engine.types import EmbedRequest, InputType, Kind
from inference.errors import ApiError, BadRequest, TooManyRequests, Unavailable

JsonObject = dict[str, Any]
FetchImage = Callable[[str], bytes]

_MAX_DETAIL = 200  # characters of a provider's own error message shown to the caller
_MAX_BACKOFF = 8.0  # seconds between two attempts at most


@dataclass(frozen=True)
class ProviderConfig:
    """Operator settings for calling providers: base URLs (never chosen by a caller) and time limits.

    `bases` maps a provider prefix (`openai`, `cohere`, `jinaai`, `openrouter`) to its API base URL.
    `timeout` bounds one attempt, `deadline` all attempts of one batch together, `attempts` how many tries a
    batch gets, `backoff` the first wait between them (doubled each time). `fetch_image` downloads an image
    URL safely for providers that take images only inline (Cohere); None refuses image URLs there.
    """

    bases: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    deadline: float = 60.0
    attempts: int = 4
    backoff: float = 0.5
    fetch_image: FetchImage | None = None


@dataclass(frozen=True)
class Batch:
    """Inputs that go to a provider in one HTTP call: same model, key, options, side and input type."""

    model: str  # the model as the caller named it, e.g. `jinaai/jina-clip-v2`
    model_id: str  # the provider's own id, e.g. `jina-clip-v2`
    kind: Kind
    input_type: InputType
    options: JsonObject  # passed through to the provider, keys removed
    requests: Sequence[EmbedRequest]


@dataclass(frozen=True)
class BatchResult:
    """The vectors of a batch (in its order) and the tokens the provider reported for it."""

    vectors: list[list[float]]
    tokens: int


class ProviderClient:
    """One provider's embeddings API. Subclasses say how a batch looks on their wire and back."""

    prefix: ClassVar[str]  # model-name prefix, without the slash
    label: ClassVar[str]  # how messages name the provider
    header: ClassVar[str]  # request header (and option) carrying the caller's key
    default_base: ClassVar[str]
    path: ClassVar[str]
    docs_url: ClassVar[str]
    example_model: ClassVar[str]  # one model of theirs, for examples only (their list is theirs to keep)
    input_types: ClassVar[frozenset[InputType]] = frozenset({InputType.TEXT})

    def max_batch(self, input_type: InputType) -> int:
        """How many inputs one call may carry."""
        raise NotImplementedError

    def body(self, batch: Batch, fetch_image: FetchImage | None) -> JsonObject:
        """The JSON body of one call."""
        raise NotImplementedError

    def parse(self, payload: Any, count: int) -> BatchResult:
        """Vectors and tokens from a successful response; raise `MalformedResponse` if it is not one."""
        raise NotImplementedError

    # -- sending ---------------------------------------------------------------------------------------

    def request(self, batch: Batch, config: ProviderConfig) -> JsonObject:
        """The body of the call for `batch`, or BadRequest for inputs this provider cannot take.

        Built before any model runs, so a bad input anywhere in a request fails it before anything is spent.
        """
        if batch.input_type not in self.input_types:
            kinds = " and ".join(sorted(t.value for t in self.input_types))
            raise BadRequest(
                f"Model `{batch.model}` is hosted by {self.label}, which embeds only {kinds} here; "
                f"a {batch.input_type.value} input cannot be sent to it."
            )
        return self.body(batch, config.fetch_image)

    def send(
        self, batch: Batch, body: JsonObject, *, key: str, config: ProviderConfig, client: httpx.Client
    ) -> BatchResult:
        """POST one batch, retrying 429/5xx and network failures while `config.deadline` allows."""
        url = config.bases.get(self.prefix, self.default_base).rstrip("/") + self.path
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        deadline = time.monotonic() + config.deadline
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            failure: ApiError
            wait = min(config.backoff * 2 ** (attempt - 1), _MAX_BACKOFF)
            try:
                response = client.post(
                    url, json=body, headers=headers, timeout=max(min(config.timeout, remaining), 0.001)
                )
            except httpx.TimeoutException:
                failure = Unavailable(f"{self.label} did not answer in time for model `{batch.model}`")
            except httpx.HTTPError:
                failure = Unavailable(f"{self.label} could not be reached for model `{batch.model}`")
            else:
                if response.status_code == 200:
                    try:
                        return self.parse(response.json(), len(batch.requests))
                    except ValueError as exc:  # MalformedResponse, or a body that is not JSON
                        reason = exc if isinstance(exc, MalformedResponse) else "not JSON"
                        raise Unavailable(
                            f"{self.label} sent an unexpected response for model `{batch.model}` "
                            f"(HTTP 200): {reason}"
                        ) from None
                failure = self._failure(response, batch.model, key)
                retry_after = _retry_after(response)
                if retry_after is not None:
                    wait = retry_after
                if not _retryable(response.status_code):
                    raise failure
            if attempt >= config.attempts or time.monotonic() + wait >= deadline:
                raise failure
            time.sleep(wait)

    def _failure(self, response: httpx.Response, model: str, key: str) -> ApiError:
        status = response.status_code
        detail = _provider_detail(response, key)
        said = f": {detail}" if detail else ""
        if status == 429:
            return TooManyRequests(
                f"{self.label} is rate-limiting requests for model `{model}` (HTTP 429){said}",
                retry_after=_retry_after_seconds(response),
            )
        if status in (401, 403):
            return BadRequest(
                f"{self.label} refused the API key (HTTP {status}){said}. "
                f"Check the `{self.header}` header or option."
            )
        if 400 <= status < 500:
            return BadRequest(f"{self.label} rejected the request for model `{model}` (HTTP {status}){said}")
        return Unavailable(f"{self.label} failed for model `{model}` (HTTP {status}){said}")


class MalformedResponse(ValueError):
    """A provider's 200 response that does not have the shape its API documents."""


def vectors_of(items: Any, count: int) -> list[list[float]]:
    """`count` float vectors from a JSON list, or `MalformedResponse`."""
    if not isinstance(items, list) or len(items) != count:
        got = len(items) if isinstance(items, list) else type(items).__name__
        raise MalformedResponse(f"expected {count} embeddings, got {got}")
    vectors = []
    for item in items:
        if not isinstance(item, list) or not item or not all(_is_number(x) for x in item):
            raise MalformedResponse("an embedding is not a list of numbers")
        vectors.append([float(x) for x in item])
    return vectors


def openai_data(payload: Any, count: int) -> list[list[float]]:
    """Vectors from an OpenAI-shaped `data: [{index, embedding}]`, put in input order by `index`."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or len(data) != count:
        raise MalformedResponse(f"expected {count} items in `data`")
    ordered: list[Any] = [None] * count
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise MalformedResponse("an item of `data` is not an object")
        index = item.get("index", position)
        if not isinstance(index, int) or not 0 <= index < count or ordered[index] is not None:
            raise MalformedResponse("the items of `data` do not index the inputs one to one")
        ordered[index] = item.get("embedding")
    return vectors_of(ordered, count)


def int_field(payload: Any, *path: str) -> int:
    """An integer nested in a JSON object (0 when absent): providers report usage in different places."""
    value = payload
    for name in path:
        if not isinstance(value, dict):
            return 0
        value = value.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def image_bytes(data: object, fetch_image: FetchImage | None, provider: str) -> bytes:
    """The bytes of an image input (URL, data URL or base64), for providers that take images inline."""
    if not isinstance(data, str) or not data.strip():
        raise BadRequest("Image input must be a non-empty string: an http(s) URL, a data URL or base64 data.")
    text = data.strip()
    lowered = text[:8].lower()
    if lowered.startswith(("http://", "https://")):
        if fetch_image is None:
            raise BadRequest(f"{provider} takes images as base64 data here; send the image inline.")
        return fetch_image(text)
    if lowered.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.lower().endswith(";base64"):
            raise BadRequest("The image data URL must be base64-encoded (`data:image/png;base64,...`).")
    compact = "".join(text.split()).replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("Image data is not valid base64.") from None
    if not raw:
        raise BadRequest("Image data is empty.")
    return raw


def image_media_type(raw: bytes) -> str:
    """The media type of PNG, JPEG, GIF or WebP bytes (what providers accept), else BadRequest."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if raw.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if raw.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    raise BadRequest("The image is not a PNG, JPEG, GIF or WebP image.")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _retry_after(response: httpx.Response) -> float | None:
    """The provider's `Retry-After` in seconds (a number; HTTP dates are ignored), if any."""
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _retry_after_seconds(response: httpx.Response) -> int | None:
    seconds = _retry_after(response)
    return None if seconds is None else max(1, int(seconds + 0.999))


def _provider_detail(response: httpx.Response, key: str) -> str:
    """A provider's own error message, shortened, with the caller's key blanked out wherever it appears."""
    try:
        payload = response.json()
    except ValueError:
        return ""
    message: Any = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        message = message or payload.get("message") or payload.get("detail")
    if not isinstance(message, str):
        return ""
    if key:
        message = message.replace(key, "***")
    message = " ".join(message.split())
    return message if len(message) <= _MAX_DETAIL else message[: _MAX_DETAIL - 1] + "…"
