"""A request id on every request's response (`X-Request-Id`) and on every log line written while serving it.

An incoming `X-Request-Id` (from a proxy or a client) is kept when it is a short token of safe characters,
so one id follows a request across services; otherwise a new one is made. Log lines carry only this id,
never the request's body, query or headers (they may hold inputs or keys).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-Id"
_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_current: ContextVar[str] = ContextVar("request_id", default="-")


def current() -> str:
    """The id of the request being served by this thread ("-" outside a request)."""
    return _current.get()


class RequestIdMiddleware:
    """Give each request an id, expose it to logging while it is served, and return it in `X-Request-Id`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Serve `request` under its id."""
        incoming = request.headers.get(HEADER, "")
        request_id = incoming if _SAFE.fullmatch(incoming) else uuid.uuid4().hex
        # Not reset on return: Django logs 4xx/5xx responses after the middleware chain; the id is cleared
        # when the response is closed (request_finished), in this same thread.
        _current.set(request_id)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response


def _clear(**kwargs: Any) -> None:
    _current.set("-")


request_finished.connect(_clear, dispatch_uid="console.requestid.clear")


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (for the `%(request_id)s` format field)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate, never drop."""
        record.request_id = current()
        return True
