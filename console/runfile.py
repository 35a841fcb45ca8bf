"""The run file: the settings `make run` last served with, so `manage.py` finds the same instance.

`make run` (`console/serve.py`) writes the effective DATA_DIR, PORT, PUBLIC_URL (and the other settings
that say *which* instance: database, broker, models, vector storage) to `.run-settings.json` at the
checkout's root (git-ignored, mode 0600: DATABASE_URL may carry a password). `console/settings.py` reads it
as defaults: an environment variable always wins, and a process started with a DIFFERENT `DATA_DIR` is
another instance and ignores the file altogether (tests, a second `make run`). `RUN_SETTINGS_FILE` moves
the file (tests). Pure Python, no Django.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What identifies the running instance. Secrets other than DATABASE_URL's stay out (QDRANT_API_KEY,
# SECRET_KEY: the latter lives in DATA_DIR anyway).
KEYS = (
    "DATA_DIR",
    "MODELS_DIR",
    "PORT",
    "GRPC_PORT",
    "PUBLIC_URL",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "QDRANT_URL",
    "LIMITS_REDIS_URL",
    "CACHE_REDIS_URL",  # so a key revoked from `manage.py shell` is announced to the web processes too
)


def path(env: Mapping[str, str] | None = None) -> Path:
    """Where the run file is: `RUN_SETTINGS_FILE`, else `.run-settings.json` at the checkout's root."""
    env = os.environ if env is None else env
    configured = (env.get("RUN_SETTINGS_FILE") or "").strip()
    return Path(configured).expanduser() if configured else ROOT / ".run-settings.json"


def effective(env: Mapping[str, str]) -> dict[str, str]:
    """The settings `make run` serves with: those set in `env`, with DATA_DIR and PUBLIC_URL made explicit."""
    values = {key: env[key].strip() for key in KEYS if (env.get(key) or "").strip()}
    values["DATA_DIR"] = str(Path(values.get("DATA_DIR") or ROOT / "data").expanduser().resolve())
    values.setdefault("PORT", "8000")
    values.setdefault("PUBLIC_URL", f"http://127.0.0.1:{values['PORT']}")
    return values


def write(env: Mapping[str, str]) -> Path:
    """Record `env`'s effective settings in the run file; return its path."""
    target = path(env)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(effective(env), indent=2) + "\n")
    temporary.chmod(0o600)
    temporary.replace(target)
    return target


def apply(env: MutableMapping[str, str]) -> dict[str, str]:
    """Fill `env`'s unset settings from the run file (if of the same DATA_DIR); return those used."""
    try:
        recorded = json.loads(path(env).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(recorded, dict):
        return {}
    own = (env.get("DATA_DIR") or "").strip()
    if own and Path(own).expanduser().resolve() != Path(str(recorded.get("DATA_DIR", ""))).resolve():
        return {}  # another instance
    used = {}
    for key in KEYS:
        value = recorded.get(key)
        if isinstance(value, str) and value and not (env.get(key) or "").strip():
            env[key] = value
            used[key] = value
    return used
