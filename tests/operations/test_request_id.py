"""Every response carries `X-Request-Id`, and log lines written while serving it carry the same id."""

from __future__ import annotations

import logging
import re

import pytest
from django.test import Client

from console.requestid import RequestIdFilter


@pytest.mark.django_db
def test_request_id_is_made_or_kept_and_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    client = Client()
    made = client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", made["X-Request-Id"])
    assert client.get("/healthz")["X-Request-Id"] != made["X-Request-Id"]

    assert client.get("/healthz", HTTP_X_REQUEST_ID="lb-123.abc")["X-Request-Id"] == "lb-123.abc"
    # Anything but a short safe token is replaced (it goes into log lines verbatim).
    replaced = client.get("/healthz", HTTP_X_REQUEST_ID="evil\nINFO forged line")["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)

    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.WARNING, logger="django.request"):
        missing = client.get("/no/such/page", HTTP_X_REQUEST_ID="trace-42")
    assert missing.status_code == 404 and missing["X-Request-Id"] == "trace-42"
    assert [r.request_id for r in caplog.records if r.name == "django.request"] == ["trace-42"]  # type: ignore[attr-defined]
