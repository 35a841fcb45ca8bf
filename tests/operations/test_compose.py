"""compose.yaml is a valid Compose file (the specification's own JSON schema), runs the whole stack, and
every variable it gives the app is one console/settings.py reads (no Docker engine here to run it)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"  # source and version: compose-spec.SOURCE.md


def load_compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())  # merges `<<: *anchor` keys, as Compose does


# Variables the app passes on to a library that reads them itself (prometheus_client: console/metrics.py).
READ_BY_LIBRARIES = {"PROMETHEUS_MULTIPROC_DIR"}


def settings_variables() -> set[str]:
    """The environment variables console/settings.py (and the modules it reads them with) consults."""
    source = (ROOT / "console" / "settings.py").read_text()
    names = set(re.findall(r'env_\w+\(\s*"([A-Z0-9_]+)"', source))
    names |= set(re.findall(r'os\.environ\.setdefault\(\s*"([A-Z0-9_]+)"', source))
    return names


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    compose = load_compose()
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert errors == [], [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]

    # The schema really checks: a misspelt key or a wrong type is refused.
    broken = load_compose()
    broken["services"]["web"]["healthcheck"]["intervall"] = "5s"
    assert not validator.is_valid(broken)
    broken = load_compose()
    broken["services"]["web"]["depends_on"]["postgres"] = {"condition": "service_ready"}
    assert not validator.is_valid(broken)


def test_compose_runs_the_whole_stack() -> None:
    services = load_compose()["services"]
    assert {"web", "worker", "beat", "postgres", "redis", "qdrant", "migrate"} <= set(services)
    assert services["web"]["deploy"]["replicas"] == 2
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:")
    for name in ("web", "worker", "beat", "postgres", "redis", "qdrant"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("web", "worker", "beat"):
        assert services[name]["build"] == "."
        env = services[name]["environment"]
        assert env["QDRANT_URL"] == "http://qdrant:6333" and env["HF_HUB_OFFLINE"] == "1"
        assert env["DATABASE_URL"].startswith("postgres://") and env["CELERY_BROKER_URL"].startswith(
            "redis://"
        )
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["worker"]["command"][:4] == ["celery", "-A", "console", "worker"]
    # The web command is `make run`'s (console/serve.py), with the workers WEB_CONCURRENCY names.
    from console.serve import web_argv

    web = services["web"]["environment"]
    expected = web_argv(
        Path("/bin"), host="0.0.0.0", port="8000", workers=int(web["WEB_CONCURRENCY"]), threads=16, grace=8
    )
    assert services["web"]["command"] == ["granian", *expected[1:]]
    assert services["beat"]["command"][:4] == ["celery", "-A", "console", "beat"]
    # Replicas share one secret (sessions, the control token) and one Qdrant key, both required.
    web_env = services["web"]["environment"]
    # A replica's web worker processes aggregate their metrics in a directory empty at each start.
    assert web_env["PROMETHEUS_MULTIPROC_DIR"] in services["web"]["tmpfs"]
    assert web_env["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert web_env["QDRANT_API_KEY"] == services["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"]
    # Named volumes for every service that keeps state.
    volumes = load_compose()["volumes"]
    for service, volume in (("postgres", "pgdata"), ("redis", "redisdata"), ("qdrant", "qdrantdata")):
        assert any(v.startswith(f"{volume}:") for v in services[service]["volumes"]) and volume in volumes


def test_every_variable_compose_gives_the_app_is_read_by_the_settings() -> None:
    read = settings_variables()
    assert {"DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY", "WEB_CONCURRENCY", "METRICS_TOKEN"} <= read
    services = load_compose()["services"]
    for name, service in services.items():
        if service.get("build") != ".":
            continue  # third-party images read their own variables
        unknown = set(service.get("environment", {})) - read - READ_BY_LIBRARIES
        assert unknown == set(), f"{name} sets {sorted(unknown)}, which console/settings.py never reads"


def test_dockerfile_installs_project_and_models_at_build_time_and_runs_offline() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    assert "manage.py models install" in dockerfile
    run_env = dockerfile.split("manage.py models install", 1)[1]
    assert "ENV HF_HUB_OFFLINE=1" in run_env  # set after the models were fetched: offline from then on
    assert "data" in (ROOT / ".dockerignore").read_text().split()
