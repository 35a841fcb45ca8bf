"""Django settings, read from environment variables with safe defaults.

The defaults run everything embedded under DATA_DIR (SQLite, a SQLite-backed Celery broker, Qdrant Edge
storage); set DATABASE_URL / CELERY_BROKER_URL to use PostgreSQL and Redis instead.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.management.utils import get_random_secret_key

from . import runfile
from .env import env_bool, env_float, env_int, env_list, env_path, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

# Settings `make run` recorded (DATA_DIR, PORT, PUBLIC_URL...) are defaults for every process of the same
# checkout, so `manage.py create_cluster` reaches the instance `make run` serves; the environment wins.
RUN_SETTINGS = runfile.apply(os.environ)

# --- state on disk ------------------------------------------------------------------------------------
DATA_DIR = env_path("DATA_DIR", BASE_DIR / "data")
MODELS_DIR = env_path("MODELS_DIR", DATA_DIR / "models")
DATA_DIR.mkdir(parents=True, exist_ok=True)

# Never download weights from a model hub at run time: a missing model must fail fast and clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# --- core ------------------------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept under DATA_DIR (never committed)."""
    configured = env_str("SECRET_KEY", "")
    if configured:
        return configured
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(get_random_secret_key())
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "console.clusters",
    "console.web",
    "inference",
    "billing",
]

MIDDLEWARE = [
    "console.requestid.RequestIdMiddleware",
    "console.accesslog.AccessLogMiddleware",
    "console.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# The data plane (/clusters/..., Qdrant's API: API keys and JSON) runs without the console's sessions, CSRF,
# users, messages and static files; console/wsgi.py gives it a handler of its own.
DATA_PLANE_MIDDLEWARE = [
    "console.requestid.RequestIdMiddleware",
    "console.accesslog.AccessLogMiddleware",
    "console.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database --------------------------------------------------------------------------------------------
# Persistent connections (one per server thread): opening one per request (with SQLite's PRAGMAs) cost a
# data-plane request ~2 ms of CPU; the health check replaces a connection the database dropped.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 300, minimum=0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server and the Celery worker read while the other writes. synchronous=NORMAL: in WAL
    # mode a commit survives the process being killed (what the usage ledger needs; tested with SIGKILL),
    # only a power loss may drop the last commits; and it spares every request an fsync.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
            "transaction_mode": "IMMEDIATE",
        }
    )

if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # One test database per checkout (pytest-xdist adds a per-worker suffix), so two test runs on one
    # machine, from two checkouts, never drop each other's database.
    checkout = hashlib.sha256(str(BASE_DIR).encode()).hexdigest()[:8]
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{checkout}"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- i18n / static ------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns about a missing directory before collectstatic
WHITENOISE_USE_FINDERS = True  # serve app static files (Swagger UI sidecar) even before collectstatic
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- logging: never log request bodies (they may hold raw inference inputs) ---------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "console.requestid.RequestIdFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

# Qdrant accepts request bodies up to 32 MB (max_request_size_mb); an upsert of 1,000 384-d points is ~8 MB.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_SIZE_MB", 32, minimum=1) * 1024 * 1024

# --- REST framework ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Inference console API",
    "DESCRIPTION": "Model catalog, cluster inference and Qdrant-compatible data plane.",
    "VERSION": "0.1.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery ----------------------------------------------------------------------------------------------
# The embedded default is kombu's SQLAlchemy transport on a SQLite file: no broker server to run.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", f"sqla+sqlite:///{DATA_DIR / 'celery-broker.sqlite3'}")
CELERY_TASK_IGNORE_RESULT = True  # job state lives in our own models, where the console can read it
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-task leaves the message to be redelivered
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# `make run`'s worker consumes this queue; tests use a queue of their own on a shared Redis.
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "celery")
# `make run` embeds beat in its worker (-B): the reaper puts restart jobs of dead workers back to work.
# Seconds between reaper runs (see RESTART_STALE_AFTER for the recovery bound).
RESTART_REAP_INTERVAL = env_float("RESTART_REAP_INTERVAL", 10.0)
CELERY_BEAT_SCHEDULE = {
    "reap-stale-restart-jobs": {
        "task": "console.clusters.tasks.reap_stale_restart_jobs",
        "schedule": RESTART_REAP_INTERVAL,
    },
    "purge-idempotency-keys": {"task": "inference.tasks.purge_idempotency_keys", "schedule": 3600.0},
}

# How long a web process keeps an API key or a cluster's state (console/clusters/directory.py); changes made
# in the process apply at once, and in every other process too when they share Redis (CACHE_REDIS_URL);
# without it, others (the restart worker's last step) within this.
DIRECTORY_CACHE_SECONDS = env_float("DIRECTORY_CACHE_SECONDS", 1.0)

# --- /metrics (console/metrics.py): a bearer token; empty = loopback clients only --------------------------
METRICS_TOKEN = env_str("METRICS_TOKEN", "")

# --- tokens-per-minute limits (billing/limits.py) -----------------------------------------------------
# Redis shared by every web process for the limit's counters; empty = this process's memory.
LIMITS_REDIS_URL = env_str("LIMITS_REDIS_URL", "")
LIMIT_CACHE_SECONDS = env_float("LIMIT_CACHE_SECONDS", 2.0)  # how long a process keeps a cluster's limit
# In-flight requests per cluster shared by every web process (replica), so a restart drains them all
# (inference/inflight.py); empty = LIMITS_REDIS_URL, and empty both = this process's memory.
INFLIGHT_REDIS_URL = env_str("INFLIGHT_REDIS_URL", LIMITS_REDIS_URL)
# A serving web process makes each request's usage durable with one append to a journal file of its own
# under USAGE_JOURNAL_DIR and folds it into the ledger in the background (billing/journal.py), instead of a
# transaction per request. The directory must outlive the process (a killed one's entries are replayed at
# the next start): keep it on a volume where replicas are replaced. false: record in the database directly.
USAGE_JOURNAL = env_bool("USAGE_JOURNAL", True)
USAGE_JOURNAL_DIR = env_path("USAGE_JOURNAL_DIR", DATA_DIR / "usage-journal")
INFLIGHT_TTL = env_float("INFLIGHT_TTL", 15.0)  # a dead replica's counts stop counting after this long
# Where a change of a key, a cluster or a limit is announced to every web process (replica), so each drops
# its cached copy on its next request (console/clusters/sharedcache.py); empty = INFLIGHT_REDIS_URL, and
# empty all = changes are seen at once in the process that made them, elsewhere within the cache lifetimes.
CACHE_REDIS_URL = env_str("CACHE_REDIS_URL", INFLIGHT_REDIS_URL)

# --- Idempotency-Key (inference/idempotency.py) --------------------------------------------------------
IDEMPOTENCY_TTL_HOURS = env_float("IDEMPOTENCY_TTL_HOURS", 24.0)
# A key whose first request has not finished after this long (its process died) may be used again.
IDEMPOTENCY_IN_PROGRESS_SECONDS = env_float("IDEMPOTENCY_IN_PROGRESS_SECONDS", 60.0)

# --- cluster restart jobs (console/clusters/tasks.py) and the web process's control endpoint -------------
# Where the worker reaches the web process; empty = PUBLIC_URL. Calls carry a token signed with
# CONTROL_TOKEN (empty = SECRET_KEY, so web and worker agree with no extra config).
CONTROL_URL = env_str("CONTROL_URL", "")
CONTROL_TOKEN = env_str("CONTROL_TOKEN", "")
# Seconds: how long in-flight requests may take to finish; per control call (warming loads models); tries of
# a step on transient errors; the first pause between tries (it doubles).
RESTART_DRAIN_TIMEOUT = env_float("RESTART_DRAIN_TIMEOUT", 30.0)
RESTART_CONTROL_TIMEOUT = env_float("RESTART_CONTROL_TIMEOUT", 60.0)
RESTART_STEP_ATTEMPTS = env_int("RESTART_STEP_ATTEMPTS", 3, minimum=1)
RESTART_RETRY_BACKOFF = env_float("RESTART_RETRY_BACKOFF", 1.0)
# A running job whose heartbeat is older than this is presumed dead (its worker was killed) and is claimed
# again. The worker beats every RESTART_HEARTBEAT_INTERVAL for as long as it runs the job, control calls in
# flight included, so this only has to outlast a few missed beats (a slow database), not a step. A killed
# worker's job is re-claimed at most STALE_AFTER + HEARTBEAT_INTERVAL + REAP_INTERVAL (35 s) after the kill,
# and finished within 60 s when a worker is running.
RESTART_STALE_AFTER = env_float("RESTART_STALE_AFTER", 20.0)
RESTART_HEARTBEAT_INTERVAL = env_float("RESTART_HEARTBEAT_INTERVAL", min(5.0, RESTART_STALE_AFTER / 4))
RESTART_MAX_ATTEMPTS = env_int("RESTART_MAX_ATTEMPTS", 3, minimum=1)  # claims before a job is failed

# --- replicas: every web process registers itself and its own control listener (console/clusters/replicas.py)
# Several web processes share the public port (the web server's workers, replicas behind a load balancer),
# so a call to it reaches one of them at random; each process therefore also listens on a port of its own
# (ephemeral) on CONTROL_BIND, and registers `http://{CONTROL_ADVERTISE_HOST}:{port}` in the database so the
# restart worker calls every live one. Bind 0.0.0.0 when the worker runs on another machine or container;
# the advertised host then defaults to this machine's hostname (a container's, in compose).
CONTROL_BIND = env_str("CONTROL_BIND", "127.0.0.1")
CONTROL_ADVERTISE_HOST = env_str("CONTROL_ADVERTISE_HOST", "")
# Seconds: how often a web process beats its registration; after how long without a beat it counts as dead
# (a restart stops waiting for it); after how long a dead one's row is deleted (the admin lists it till then).
REPLICA_HEARTBEAT_SECONDS = env_float("REPLICA_HEARTBEAT_SECONDS", 5.0)
REPLICA_STALE_AFTER = env_float("REPLICA_STALE_AFTER", 15.0)
REPLICA_PRUNE_AFTER = env_float("REPLICA_PRUNE_AFTER", 3600.0)

# --- inference engine ----------------------------------------------------------------------------------
INFERENCE_WORKERS = env_int("INFERENCE_WORKERS", 2, minimum=1)  # in-process ONNX worker threads
INFERENCE_ONNX_THREADS = env_int("INFERENCE_ONNX_THREADS", 1, minimum=1)  # intra-op threads per session
# A text batch that runs while every other worker idles (a lone query) runs on a second session spread over
# this many threads (default: every core); 0 or <= INFERENCE_ONNX_THREADS turns that session off.
INFERENCE_SOLO_THREADS = env_int("INFERENCE_SOLO_THREADS", os.cpu_count() or 1, minimum=0)
INFERENCE_BATCH_SIZE = env_int("INFERENCE_BATCH_SIZE", 32, minimum=1)  # inputs per model run, at most
# Dynamic batching: inputs of concurrent requests for one model are merged into one run. A worker holds a
# partial batch open this long for more to join (0: run at once; requests still merge while workers are busy).
INFERENCE_BATCH_WAIT_MS = env_float("INFERENCE_BATCH_WAIT_MS", 0.0)
# Padded tokens per run (inputs x longest input): bounds the largest tensors, hence onnxruntime's arena.
INFERENCE_TOKEN_BUDGET = env_int("INFERENCE_TOKEN_BUDGET", 1024, minimum=1)
# Inputs waiting for a worker, at most; beyond that requests get 429 with Retry-After at once.
INFERENCE_QUEUE_MAX = env_int("INFERENCE_QUEUE_MAX", 1024, minimum=1)
INFERENCE_ONNX_ARENA = env_bool("INFERENCE_ONNX_ARENA", True)  # onnxruntime's CPU memory arena
# Text batches packed end to end without padding where a model allows it (inference/engine/packing.py).
INFERENCE_PACKING = env_bool("INFERENCE_PACKING", True)
# Nice value of the ONNX worker threads (0-19; Linux applies it per thread): under load the request threads
# and Edge's search thread run first and the models take the rest of the CPU, so a thread holding the GIL
# is not preempted by model compute (an Edge query's p99 under two busy cores: 4.2 ms at 0, 0.18 ms at 10).
INFERENCE_WORKER_NICE = env_int("INFERENCE_WORKER_NICE", 10, minimum=0)
IMAGE_FETCH_ALLOW_HOSTS = env_list("IMAGE_FETCH_ALLOW_HOSTS", [])  # host[:port] allowed to be private
IMAGE_FETCH_MAX_BYTES = env_int("IMAGE_FETCH_MAX_BYTES", 10 * 1024 * 1024, minimum=1)
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 40_000_000, minimum=1)
IMAGE_FETCH_CONNECT_TIMEOUT = env_float("IMAGE_FETCH_CONNECT_TIMEOUT", 5.0)
IMAGE_FETCH_READ_TIMEOUT = env_float("IMAGE_FETCH_READ_TIMEOUT", 10.0)
IMAGE_FETCH_TOTAL_TIMEOUT = env_float("IMAGE_FETCH_TOTAL_TIMEOUT", 15.0)  # one request's images, all hops
# Requests fetching image URLs at once (more answer 503 at once); keep it under the web server's threads.
IMAGE_FETCH_CONCURRENCY = env_int("IMAGE_FETCH_CONCURRENCY", 4, minimum=1)

# --- external providers (models named `openai/...`, `cohere/...`, `jinaai/...`, `openrouter/...`) ---------
# Where their APIs are: the operator's choice only, never a caller's (keys are sent there).
OPENAI_API_BASE = env_str("OPENAI_API_BASE", "https://api.openai.com/v1")
COHERE_API_BASE = env_str("COHERE_API_BASE", "https://api.cohere.com")
JINA_API_BASE = env_str("JINA_API_BASE", "https://api.jina.ai/v1")
OPENROUTER_API_BASE = env_str("OPENROUTER_API_BASE", "https://openrouter.ai/api/v1")
PROVIDER_TIMEOUT = env_float("PROVIDER_TIMEOUT", 30.0)  # one attempt of one provider call, seconds
PROVIDER_DEADLINE = env_float("PROVIDER_DEADLINE", 60.0)  # all attempts of one call (retries included)
PROVIDER_ATTEMPTS = env_int("PROVIDER_ATTEMPTS", 4, minimum=1)  # tries per call on 429 / 5xx / network errors
PROVIDER_RETRY_BACKOFF = env_float("PROVIDER_RETRY_BACKOFF", 0.5)  # first wait between tries, then doubled

# --- public address ------------------------------------------------------------------------------------
PORT = env_int("PORT", 8000, minimum=1)
PUBLIC_URL = env_str("PUBLIC_URL", f"http://127.0.0.1:{PORT}").rstrip("/")  # shown in cluster URLs
# Qdrant's gRPC API for every cluster on one port (the API key names the cluster); 0 turns it off. It runs
# inside the web process (see inference/grpc/server.py); GRPC_PUBLIC_URL is what users are shown.
GRPC_PORT = env_int("GRPC_PORT", 6334, minimum=0)
GRPC_WORKERS = env_int("GRPC_WORKERS", 32, minimum=1)  # RPC threads: 16 concurrent streams and headroom
_public = urlsplit(PUBLIC_URL)
GRPC_PUBLIC_URL = env_str("GRPC_PUBLIC_URL", f"{_public.scheme}://{_public.hostname}:{GRPC_PORT}").rstrip("/")
CLUSTERS_DIR = DATA_DIR / "clusters"  # embedded storage: one directory per cluster
# Threads of each new Edge collection's search pool (0: one per CPU). One thread serves a small collection
# as fast, and fewer threads to wait for shorten the time an Edge query holds the GIL under load.
EDGE_SEARCH_THREADS = env_int("EDGE_SEARCH_THREADS", 1, minimum=0)

# --- remote vector storage (inference/stores.py) -----------------------------------------------------------
# A Qdrant server shared by every cluster (each in its own collection namespace); empty = embedded Qdrant
# Edge per cluster under DATA_DIR. Needed for more than one web process (WEB_CONCURRENCY, replicas).
QDRANT_URL = env_str("QDRANT_URL", "")
QDRANT_API_KEY = env_str("QDRANT_API_KEY", "")
WEB_CONCURRENCY = env_int("WEB_CONCURRENCY", 1, minimum=1)  # web worker processes (console/serve.py)
