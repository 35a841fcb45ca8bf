"""End to end in a real headless browser: Debian's chromium driven by Playwright, a real Celery worker.

An admin signs in, opens the Inference tab of a cluster whose inference is off, enables it through the
confirmation dialog and watches the restart job's step and progress change on the page (no reload) while a
worker on the local Redis runs it; then a request through the data plane shows up in the model table and the
chart. A viewer sees the same tab without the toggle. Screenshots go to `artifacts/ui/` (git-ignored).

Needs PostgreSQL (the worker thread and the live server share the test database) and Redis, like
tests/console/test_worker_redis.py; `make test` provides both when they answer locally.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import LazySettings, settings

from console.clusters.models import Cluster
from console.clusters.services import CreatedCluster, CreatedUser
from inference import inflight
from tests.conftest import MINILM
from tests.fixtures import TEST_REDIS_URL
from tests.ui.conftest import ADMIN_PASSWORD, VIEWER_PASSWORD

pytestmark = [
    pytest.mark.skipif(
        not TEST_REDIS_URL,
        reason="TEST_REDIS_URL is not set (make test sets it when Redis answers on 127.0.0.1:6379)",
    ),
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(settings.BASE_DIR) / "artifacts" / "ui"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium under Playwright; skipped, with the reason, only if it cannot be started."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (make browser installs Debian's chromium)")
    # Playwright's sync API keeps an asyncio loop running in this thread, which makes Django refuse every
    # ORM call of the test ("async context"). The test's own calls are plain synchronous code; Django's
    # documented switch for this case (notebooks, Playwright) is this variable.
    with pytest.MonkeyPatch.context() as patch, sync_api.sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:  # any launch failure means no browser here, not a console bug
            pytest.skip(f"chromium could not be started: {exc}")
        yield chromium
        chromium.close()


def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(browser: Any, base_url: str, username: str, password: str) -> Any:
    """A new browser context signed in through the sign-in form; returns its page."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.goto(f"{base_url}/console/")
    assert "/accounts/login/" in page.url  # anonymous: sent to sign in first
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/console/$"))
    return page


def row_cell(page: Any, model: str, column: str) -> str:
    return str(page.inner_text(f'#models tr[data-model="{model}"] td[data-col="{column}"]')).strip()


@pytest.mark.usefixtures("redis_worker")
def test_admin_enables_inference_watches_the_restart_and_sees_usage_then_viewer_sees_no_toggle(
    browser: Any,
    control: str,
    live_server: Any,
    settings: LazySettings,
    admin: CreatedUser,
    viewer: CreatedUser,
    make_cluster: Callable[..., CreatedCluster],
    models_dir: Path,
) -> None:
    settings.PUBLIC_URL = live_server.url
    created = make_cluster()  # paid, us-east-1, created before 2025-07-07: inference starts off
    cluster_id = created.cluster.pk

    # --- the admin signs in and opens the Inference tab --------------------------------------------------
    page = sign_in(browser, live_server.url, "ada", ADMIN_PASSWORD)
    page.click(f'tr[data-cluster="{cluster_id}"] a >> nth=0')
    page.click("nav.tabs >> text=Inference")
    page.wait_for_selector("#inference-switch")
    assert page.get_attribute("#inference-switch", "aria-checked") == "false"
    assert page.inner_text("#inference-pill") == "Disabled"
    shot(page, "01-admin-inference-off")

    # --- enable: the dialog says the cluster restarts; the job's progress shows live ---------------------
    with inflight.track(cluster_id):  # a data-plane request in flight holds the restart at its drain step
        page.click("#inference-switch")
        dialog = page.locator("#confirm-dialog")
        dialog.wait_for(state="visible")
        assert "restart of your cluster" in dialog.inner_text()
        shot(page, "02-admin-confirm-dialog")
        page.click("#confirm-dialog [data-confirm-ok]")
        page.wait_for_selector("#restart-job[data-poll-url]")
        assert "Restarting to turn inference on" in page.inner_text("#restart-job")
        # The page polls: the worker's step and percentage appear without a reload.
        page.wait_for_function(
            "document.querySelector('[data-job-step]').textContent === 'Draining in-flight requests'",
            timeout=30_000,
        )
        assert page.inner_text("[data-job-percent]") == "10%"
        assert page.eval_on_selector("[data-job-progress]", "el => el.value") == 10
        page.evaluate("window.__sameDocument = true")  # gone after a reload: proves no reload happened
        shot(page, "03-admin-restart-in-progress")
    seen: set[str] = set()
    for _ in range(600):  # record the steps the page shows until the job finishes (and the page reloads)
        try:
            if page.evaluate("window.__sameDocument !== true"):
                break
            seen.add(page.inner_text("[data-job-step]"))
        except Exception:  # the reload happened between the two calls
            break
        page.wait_for_timeout(50)
    page.wait_for_selector('#inference-pill:text("Enabled")', timeout=90_000)
    assert page.get_attribute("#inference-switch", "aria-checked") == "true"
    assert "Last restart: inference turned on" in page.inner_text("#restart-job")
    assert seen & {"Reopening storage", "Warming the ONNX workers", "Health check", "Done"}, seen
    cluster = Cluster.objects.get(pk=cluster_id)
    assert cluster.inference_enabled and cluster.status == Cluster.Status.RUNNING

    # --- a request through the data plane: its usage appears in the table and the chart ------------------
    assert row_cell(page, MINILM, "tokens") == "0"
    dataplane = httpx.Client(
        base_url=f"{live_server.url}/clusters/{cluster_id}", headers={"api-key": created.api_key}, timeout=60
    )
    assert dataplane.put(
        "/collections/docs", json={"vectors": {"size": 384, "distance": "Cosine"}}
    ).is_success
    upsert = dataplane.put(
        "/collections/docs/points?wait=true",
        json={"points": [{"id": 1, "vector": {"text": "The Eiffel Tower is in Paris.", "model": MINILM}}]},
    )
    assert upsert.status_code == 200, upsert.text
    tokens = upsert.json()["usage"]["inference"]["models"][MINILM]["tokens"]
    assert tokens > 0
    page.reload()
    assert row_cell(page, MINILM, "tokens") == f"{tokens:,}"
    assert row_cell(page, MINILM, "free") == f"{5_000_000 - tokens:,}"
    chart = page.locator(f'svg.chart[data-model="{MINILM}"]')
    assert chart.get_attribute("data-total") == str(tokens)
    today = chart.locator("g.day.today")
    bar_height = float(today.locator("rect.bar").get_attribute("height") or 0)
    assert bar_height > 50  # the only day with usage reaches up the chart
    assert f"{tokens:,} tokens in 1 request" in (today.locator("title").text_content() or "")
    page.locator(f'#examples .example[data-model="{MINILM}"]').scroll_into_view_if_needed()
    shot(page, "04-admin-usage-after-request")
    page.context.close()

    # --- a viewer sees usage, pricing and examples, but no toggle ----------------------------------------
    page = sign_in(browser, live_server.url, "vic", VIEWER_PASSWORD)
    page.goto(f"{live_server.url}/console/clusters/{cluster_id}/inference/")
    assert page.locator("#inference-switch").count() == 0
    assert page.locator("#inference-toggle").count() == 0
    assert "Only admins can change it" in page.inner_text("#inference-state")
    assert row_cell(page, MINILM, "tokens") == f"{tokens:,}"
    assert page.locator(f'code[data-snippet="python"][data-model="{MINILM}"]').count() == 1
    shot(page, "05-viewer-inference")
    page.context.close()
