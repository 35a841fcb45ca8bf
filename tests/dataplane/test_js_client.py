"""The official JS REST client (`@qdrant/js-client-rest` 1.19) against the live data plane.

Needs node and the packages `make js` installs in tests/js (no network at test time); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from console.clusters.services import CreatedCluster

pytestmark = pytest.mark.django_db(transaction=True)

JS_DIR = Path(__file__).resolve().parent.parent / "js"


@pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "@qdrant" / "js-client-rest").is_dir(),
    reason="node or @qdrant/js-client-rest not installed (make js)",
)
def test_js_client_works_without_version_warnings(base_url: str, cluster: CreatedCluster) -> None:
    env = {**os.environ, "QDRANT_URL": base_url, "QDRANT_API_KEY": cluster.api_key}
    done = subprocess.run(
        ["node", "rest_check.mjs"],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["warnings"] == []
    assert seen["version"] == "1.19.0"
    assert seen["query"] == [1, 3]
    assert seen["groups"] == ["a", "b"]
    assert seen["aliases"] == [{"alias_name": "jsa", "collection_name": "js"}]
    assert seen["byAlias"] == 3
    assert seen["matrix"] == 3
    assert seen["updated"] is True
    assert seen["cluster"] == 1
    assert seen["search"] == {"status": 200, "ids": [1, 3]}
    assert seen["missing"]["status"] == 404 and "doesn't exist" in seen["missing"]["error"]
