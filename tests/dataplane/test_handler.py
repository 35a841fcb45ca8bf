"""The WSGI application (console/wsgi.py): the data plane through its own handler, the console through
Django's full middleware, both served by the live test server as the web server serves them."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import LazySettings
from django.core.exceptions import ImproperlyConfigured

from console.clusters.services import CreatedCluster
from console.wsgi import DataPlaneHandler

pytestmark = pytest.mark.django_db(transaction=True)


def test_data_plane_requests_skip_the_console_middleware(base_url: str, cluster: CreatedCluster) -> None:
    response = httpx.get(f"{base_url}/collections", headers={"api-key": cluster.api_key})

    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.headers["X-Request-Id"]  # the data plane's own middleware ran
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # SecurityMiddleware too
    # Neither sessions, CSRF, messages nor frame headers: those are the console's.
    assert "Set-Cookie" not in response.headers
    assert "X-Frame-Options" not in response.headers
    assert "Cookie" not in response.headers.get("Vary", "")


def test_one_access_line_per_request_with_its_id_and_without_its_query(
    base_url: str, cluster: CreatedCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="console.access")
    headers = {"api-key": cluster.api_key, "X-Request-Id": "r-1"}
    response = httpx.get(f"{base_url}/collections?secret=do-not-log", headers=headers)

    assert response.status_code == 200
    lines = [r for r in caplog.records if r.name == "console.access"]
    assert len(lines) == 1
    line = lines[0].getMessage()
    assert f'"GET {urlsplit(base_url).path}/collections" 200 ' in line
    assert "do-not-log" not in line and cluster.api_key not in line
    assert lines[0].request_id == "r-1"  # type: ignore[attr-defined]  # set by RequestIdFilter


def test_data_plane_errors_keep_qdrant_shape(base_url: str, cluster: CreatedCluster) -> None:
    unknown = httpx.post(f"{base_url}/no/such/route", headers={"api-key": cluster.api_key}, json={})
    no_key = httpx.get(f"{base_url}/collections")
    bad_json = httpx.post(
        f"{base_url}/collections/c/points/query",
        headers={"api-key": cluster.api_key, "Content-Type": "application/json"},
        content=b"{not json",
    )

    assert unknown.status_code == 404 and "error" in unknown.json()["status"]
    assert no_key.status_code == 401 and "error" in no_key.json()["status"]
    assert bad_json.status_code == 400 and "error" in bad_json.json()["status"]


def test_console_keeps_its_middleware(live_server: Any) -> None:
    login = httpx.get(f"{live_server.url}/accounts/login/")
    forged = httpx.post(f"{live_server.url}/accounts/login/", data={"username": "a", "password": "b"})

    assert login.status_code == 200
    assert login.headers["X-Frame-Options"] == "DENY"
    assert "csrftoken" in login.cookies
    assert forged.status_code == 403  # no CSRF token: refused, as before


def test_middleware_with_view_hooks_is_refused(settings: LazySettings) -> None:
    # A process_view hook (CSRF's) would be silently skipped by the data plane's chain: refuse it instead.
    settings.DATA_PLANE_MIDDLEWARE = ["django.middleware.csrf.CsrfViewMiddleware"]

    with pytest.raises(ImproperlyConfigured, match="process_view"):
        DataPlaneHandler()
