"""Fixtures of the web console tests.

The shared fixtures (clusters, the admin and viewer users with passwords, the in-memory broker, a storage
root per test) come from `tests/fixtures.py`; these add signed-in browser-like clients.
"""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.conf import LazySettings
from django.test import Client

from console.clusters.services import CreatedUser

ADMIN_PASSWORD = "pw-admin-1"  # what tests/console's `admin` fixture sets
VIEWER_PASSWORD = "pw-viewer-1"


@pytest.fixture
def signed_in_admin(admin: CreatedUser) -> Client:
    """A browser-like client signed in as the console admin (CSRF checks on, as for a real browser)."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin.user)
    return client


@pytest.fixture
def signed_in_viewer(viewer: CreatedUser) -> Client:
    """A client signed in as a console viewer (CSRF checks on)."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer.user)
    return client


@pytest.fixture
def public_url(settings: LazySettings) -> str:
    """A fixed PUBLIC_URL, so pages and snippets show a known cluster URL."""
    settings.PUBLIC_URL = "http://console.test:8000"
    return "http://console.test:8000"


def csrf_token(client: Client, url: str) -> str:
    """GET a page and read the CSRF token of its first form, as a browser submitting that form would."""
    html = client.get(url).content.decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, f"no CSRF token in {url}"
    return match.group(1)


def post_form(client: Client, page: str, action: str, data: dict[str, str] | None = None) -> object:
    """POST a form found on `page` to `action` with the page's CSRF token."""
    return client.post(action, {"csrfmiddlewaretoken": csrf_token(client, page), **(data or {})})


def snippets(html: str, lang: str) -> dict[str, str]:
    """model -> the `lang` snippet shown on an Inference tab, as a person would copy it."""
    found = re.findall(
        rf'<code data-snippet="{lang}" data-model="([^"]+)">(.*?)</code>', html, flags=re.DOTALL
    )
    return {unescape(model): unescape(code) for model, code in found}
