"""Shared fixtures: the installed models (from `make setup`) and an engine over them.

This file imports no Django, so the engine tests also run without it (`pytest -p no:django tests/engine`).
The fixtures of the Django tests live in `tests/fixtures.py`, registered as a plugin only when pytest-django
has set Django up (it does so before this file is imported).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import django.apps
import pytest

from inference import catalog

MINILM = "sentence-transformers/all-minilm-l6-v2"
MINILM_L3 = "sentence-transformers/paraphrase-minilm-l3-v2"
BM25 = "qdrant/bm25"
ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.drip", *(["tests.fixtures", "tests.processes"] if django.apps.apps.ready else [])]


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """MODELS_DIR with the registry models installed; fails loudly (not skips) when setup was not run.

    Read as the settings read it (MODELS_DIR, else DATA_DIR/models, else ./data/models), without Django.
    """
    data_dir = Path(os.environ.get("DATA_DIR") or ROOT / "data")
    path = Path(os.environ.get("MODELS_DIR") or data_dir / "models")
    missing = [m for m in (MINILM, MINILM_L3, BM25) if not catalog.is_installed(path, m)]
    if missing:
        pytest.fail(
            f"Models not installed in {path}: {missing}. Run `make setup` (manage.py models install)."
        )
    return path


@pytest.fixture(scope="session")
def minilm_dir(models_dir: Path) -> Path:
    """The installed all-MiniLM-L6-v2 directory."""
    path = catalog.installed_path(models_dir, MINILM)
    assert path is not None
    return path


@pytest.fixture(scope="session")
def engine(models_dir: Path) -> Iterator[object]:
    """A real engine over the installed models with a two-worker in-process pool."""
    from inference.engine.engine import Engine
    from inference.engine.pool import InProcessPool

    pool = InProcessPool(workers=2)
    yield Engine(resolve=lambda name: catalog.resolve(models_dir, name), pool=pool, batch_size=16)
    pool.shutdown()
