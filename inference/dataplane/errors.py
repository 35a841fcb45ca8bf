"""Errors of the data plane and their Qdrant-shaped HTTP form: `{"status": {"error": msg}, "time": t}`."""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from pydantic import ValidationError

from billing.services import RateLimited
from inference.engine.types import EngineError
from inference.storage import StorageError

logger = logging.getLogger(__name__)


class DataPlaneError(Exception):
    """An error answered with a given status and message (auth, cluster state, bad JSON)."""

    def __init__(self, message: str, status_code: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.headers = headers or {}


def describe(exc: Exception) -> tuple[int, str, dict[str, str]]:
    """Map any exception raised while serving a request to (status, Qdrant error message, headers).

    Domain errors keep their own status; anything unexpected is logged (without the request body, which
    may hold raw inference inputs) and answered as a 500 with no internals.
    """
    if isinstance(exc, DataPlaneError):
        return exc.status_code, exc.message, exc.headers
    if isinstance(exc, StorageError):
        return exc.status_code, exc.message, {}
    if isinstance(exc, EngineError):
        if exc.status_code >= 500:
            logger.error("inference failed: %s", exc)
            return exc.status_code, f"Service internal error: Inference service error: {exc}", {}
        return exc.status_code, f"Bad request: Inference request validation failed: {exc}", {}
    if isinstance(exc, RateLimited):
        return 429, f"Too many requests: {exc}", {"Retry-After": str(exc.retry_after_seconds)}
    if isinstance(exc, RequestDataTooBig):
        return 413, "Payload too large: the request body exceeds the server's limit", {}
    if isinstance(exc, ValidationError):
        return 400, f"Format error in JSON body: {_pydantic_summary(exc)}", {}
    logger.exception("unexpected error in the data plane")
    return 500, "Service internal error: unexpected error, see the server log", {}


def _pydantic_summary(exc: ValidationError) -> str:
    """A short, input-free account of what did not validate (pydantic's own text echoes the input)."""
    parts = []
    for error in exc.errors(include_input=False)[:5]:
        location = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{location}: {error.get('msg')}" if location else str(error.get("msg")))
    return "; ".join(parts)
