"""Shared fixtures: the installed models (from `make setup`) and an engine over them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from inference import catalog

MINILM = "sentence-transformers/all-minilm-l6-v2"
MINILM_L3 = "sentence-transformers/paraphrase-minilm-l3-v2"
BM25 = "qdrant/bm25"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """MODELS_DIR with the registry models installed; fails loudly (not skips) when setup was not run."""
    path = Path(settings.MODELS_DIR)
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
    from inference.embedding import resolve_model
    from inference.engine.engine import Engine
    from inference.engine.pool import InProcessPool

    pool = InProcessPool(workers=2)
    yield Engine(resolve=resolve_model, pool=pool, batch_size=16)
    pool.shutdown()
