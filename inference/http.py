"""Errors on the HTTP wire: the one place an exception becomes a status, headers and a body.

Three body shapes share the same classification (`inference.errors.from_exception`):
- the Qdrant data plane: `{"status": {"error": message}, "time": seconds}`;
- Qdrant's inference-service protocol (`POST /inference`): `{"error": detail}`;
- the console's JSON API: `{"detail": detail}` (DRF's shape).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions as drf
from rest_framework.response import Response

from inference.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    FormatError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    from_exception,
)


def classify(exc: BaseException) -> ApiError:
    """`errors.from_exception`, plus the errors Django and DRF raise before a view's code runs."""
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge("the request body exceeds the server's limit")
    if isinstance(exc, drf.ParseError):
        return FormatError(str(exc.detail))
    if isinstance(exc, drf.UnsupportedMediaType):
        return UnsupportedMediaType(f"{exc.detail} Send `Content-Type: application/json`.")
    if isinstance(exc, drf.MethodNotAllowed):
        return MethodNotAllowed(str(exc.detail))
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        return Unauthorized(str(exc.detail))
    if isinstance(exc, drf.PermissionDenied):
        return Forbidden(str(exc.detail))
    if isinstance(exc, drf.NotFound):
        return NotFound(str(exc.detail))
    if isinstance(exc, drf.ValidationError):
        return BadRequest(_first_error(exc.detail))
    if isinstance(exc, drf.APIException):
        return ApiError(str(exc.detail), status=exc.status_code)
    return from_exception(exc)


def headers_of(error: ApiError) -> dict[str, str]:
    """HTTP headers an error carries (`Retry-After` when trying again later can work)."""
    return {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}


def qdrant_error(exc: BaseException, *, elapsed: float) -> Response:
    """The data plane's answer to an error, in Qdrant's shape."""
    error = classify(exc)
    body = {"status": {"error": error.message}, "time": elapsed}
    return Response(body, status=error.status, headers=headers_of(error))


def inference_service_error(exc: BaseException) -> Response:
    """The inference-service protocol's answer to an error: `{"error": ...}` with the status Qdrant maps."""
    error = classify(exc)
    return Response({"error": error.detail}, status=error.status, headers=headers_of(error))


def console_error(exc: BaseException, **extra: Any) -> Response:
    """The console API's answer to an error: DRF's `{"detail": ...}` (plus any fields the error adds)."""
    error = classify(exc)
    body: dict[str, Any] = {"detail": error.detail, **extra}
    return Response(body, status=error.status, headers=headers_of(error))


def _first_error(errors: Any) -> str:
    """Flatten DRF's nested validation errors into one readable line."""
    if isinstance(errors, dict):
        for name, value in errors.items():
            return f"{name}: {_first_error(value)}"
    if isinstance(errors, list) and errors:
        return _first_error(errors[0])
    return str(errors)
