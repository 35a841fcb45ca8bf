"""The project's one error vocabulary: what went wrong, with an HTTP status and Qdrant's message text.

Every refusal the project answers with is an :class:`ApiError` (or is turned into one by
:func:`from_exception`): the storage adapters and the engine raise their own errors (they are libraries
that know nothing of the web), the services raise these classes directly, and anything unexpected becomes
an :class:`InternalError` that hides its internals. Each wire protocol renders an `ApiError` in exactly one
place: HTTP in `inference.http` (Qdrant's `{"status": {"error": ...}, "time": ...}`, the inference-service
`{"error": ...}`, the console API's `{"detail": ...}`) and gRPC status codes in `inference.grpc`.

Pure Python (no Django), so every layer may use it.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import ValidationError

from inference.engine.types import EngineError
from inference.storage.base import StorageError

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A request refused on purpose: `status` (HTTP), `message` (Qdrant's text, with its prefix) and a hint.

    `detail` is the message without Qdrant's prefix, for protocols that do not use it (the inference-service
    protocol answers `{"error": detail}`). `retry_after` (seconds) is set when trying again later can work.
    """

    status: ClassVar[int] = 500
    prefix: ClassVar[str] = ""

    def __init__(self, detail: str, *, retry_after: int | None = None, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        if status is not None:
            self.status = status  # type: ignore[misc]  # an instance may narrow its class's status

    @property
    def message(self) -> str:
        """The text Qdrant answers with: the class's prefix, then the detail (unless it already has one)."""
        if not self.prefix or self.detail.startswith(self.prefix):
            return self.detail
        return f"{self.prefix}{self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, message={self.message!r})"


class BadRequest(ApiError):
    """400: the request cannot be served as sent."""

    status = 400
    prefix = "Bad request: "


class WrongInput(BadRequest):
    """400 with Qdrant's "Wrong input: " prefix (malformed vectors, ids, shapes)."""

    prefix = "Wrong input: "


class FormatError(BadRequest):
    """400: the body is not the JSON the endpoint takes."""

    prefix = "Format error in JSON body: "


class Unauthorized(ApiError):
    """401: no credentials, or credentials that are not valid."""

    status = 401


class Forbidden(ApiError):
    """403: valid credentials that may not do this (another cluster's key, a read-only key writing)."""

    status = 403
    prefix = "Forbidden: "


class NotFound(ApiError):
    """404: the cluster, collection, point or path does not exist."""

    status = 404
    prefix = "Not found: "


class MethodNotAllowed(ApiError):
    """405: the path exists but not with this method."""

    status = 405
    prefix = "Method not allowed: "


class Conflict(ApiError):
    """409: valid, but the resource's current state does not allow it."""

    status = 409


class PayloadTooLarge(ApiError):
    """413: the body is larger than the server accepts."""

    status = 413
    prefix = "Payload too large: "


class UnsupportedMediaType(ApiError):
    """415: the body is not JSON."""

    status = 415
    prefix = "Unsupported media type: "


class TooManyRequests(ApiError):
    """429: over a limit; `retry_after` says when trying again can succeed."""

    status = 429
    prefix = "Too many requests: "


class InternalError(ApiError):
    """500: our fault. The message never carries internals (they go to the log)."""

    status = 500
    prefix = "Service internal error: "


class Unsupported(ApiError):
    """501: a Qdrant feature this server does not offer (for example with embedded storage)."""

    status = 501
    prefix = "Not implemented: "


class DeadlineExceeded(ApiError):
    """504: the caller's deadline passed before the request could finish; nothing was written."""

    status = 504


class Unavailable(ApiError):
    """503: the cluster cannot serve right now (restarting, overloaded); `retry_after` says when to retry."""

    status = 503
    prefix = "Service unavailable: "


def from_exception(exc: BaseException) -> ApiError:
    """Classify anything raised while serving a request as an `ApiError`.

    Our own errors pass through; the storage adapters' and the engine's errors keep their status and get
    Qdrant's wording; client mistakes caught by pydantic or the JSON parser become 400s. Anything else is a
    bug: it is logged here (never with the request body, which may hold raw inputs) and answered as a 500
    that shows no internals.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, StorageError):
        return ApiError(exc.message, status=exc.status_code)
    if isinstance(exc, EngineError):
        retry_after = getattr(exc, "retry_after", None)
        if exc.status_code == 503:  # busy, not broken: retry shortly
            return Unavailable(str(exc), retry_after=retry_after)
        if exc.status_code >= 500:
            logger.error("inference failed: %s", exc)
            return InternalError(f"Inference service error: {exc}", status=exc.status_code)
        if exc.status_code == 429:
            return TooManyRequests(str(exc), retry_after=retry_after)
        return BadRequest(f"Inference request validation failed: {exc}", status=exc.status_code)
    if isinstance(exc, ValidationError):
        return FormatError(pydantic_summary(exc))
    if isinstance(exc, RecursionError):
        return FormatError("the JSON body is nested too deeply")
    if isinstance(exc, OverflowError):  # a number too large for the storage's integer types
        return BadRequest("a number in the request is out of range")
    logger.error("unexpected error while serving a request", exc_info=exc)
    return InternalError("unexpected error, see the server log")


def pydantic_summary(exc: ValidationError) -> str:
    """A short, input-free account of what did not validate (pydantic's own text echoes the input)."""
    parts = []
    for error in exc.errors(include_input=False)[:5]:
        location = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{location}: {error.get('msg')}" if location else str(error.get("msg")))
    return "; ".join(parts)
