"""One access line per request, written by the app so that it carries the request id.

The web server's own access log (granian's) can name only what the client sent; the id this project gives a
request that came without one exists only inside the app. So the line is written here, inside
`RequestIdMiddleware` (the log format adds `[request id]`): the client's address, the method, the path
WITHOUT its query string (a query could carry an input), the status and the time taken. Never headers or
bodies: they may hold keys or inputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

logger = logging.getLogger("console.access")


class AccessLogMiddleware:
    """Log `addr "METHOD /path" status 1.2ms` once per request, at INFO on the `console.access` logger."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Serve `request`, then log its line."""
        started = time.perf_counter()
        response = self.get_response(request)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                '%s "%s %s" %d %.1fms',
                request.META.get("REMOTE_ADDR", "-"),
                request.method,
                request.path,
                response.status_code,
                (time.perf_counter() - started) * 1000.0,
            )
        return response
