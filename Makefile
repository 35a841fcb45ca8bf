# Two entry points: `make run` and `make test`; both start with an idempotent `make setup`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
GRPC_PORT ?= 6334
DATA_DIR ?= $(CURDIR)/data
MODELS_DIR ?= $(DATA_DIR)/models
PG_URL ?= postgres://postgres@127.0.0.1:5432/inference_console
REDIS_URL ?= redis://127.0.0.1:6379/0
export DATA_DIR MODELS_DIR PORT GRPC_PORT
export HF_HUB_OFFLINE := 1

.PHONY: setup install migrate models browser js run test lint bench clean

setup: install migrate models browser js

# Reinstall only when pyproject.toml changes.
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

migrate: install
	$(PY) manage.py migrate --noinput

models: install
	$(PY) manage.py models install

# Debian's chromium for the console's browser tests (Playwright drives it; it never downloads a browser).
# Skipped when already there, so `make setup` stays fast; a machine without apt only loses those tests.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			--no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null \
		|| echo "make browser: could not install chromium; the browser tests will be skipped"; \
	else echo "make browser: no apt-get; the browser tests will be skipped"; fi

# The official JavaScript clients (gRPC, REST) for the JS tests, pinned by tests/js/package-lock.json.
# Reinstalled only when the lock file changes; a machine without node or npm only loses that test.
js: tests/js/node_modules/.installed
tests/js/node_modules/.installed: tests/js/package-lock.json
	@if command -v npm >/dev/null; then \
		npm install --prefix tests/js --no-audit --no-fund --loglevel error && touch $@; \
	else echo "make js: npm is not installed; the JavaScript client tests will be skipped"; fi

# Web server and Celery worker on the embedded defaults (SQLite, SQLite-backed broker, Qdrant Edge).
# One web process with threads: Qdrant Edge allows one opener per shard directory (WEB_CONCURRENCY>1 is
# refused unless QDRANT_URL names a Qdrant server). The same process serves Qdrant's gRPC API on GRPC_PORT.
# console/serve.py supervises both: Ctrl-C or SIGTERM stops them gracefully within SHUTDOWN_TIMEOUT (8 s),
# and it records the settings in .run-settings.json so `manage.py` finds this instance without exports.
run: setup
	$(PY) manage.py collectstatic --noinput -v 0
	$(PY) manage.py demo_cluster
	exec $(PY) -m console.serve

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports --no-cache

# Uses PostgreSQL and Redis when they answer on 127.0.0.1, and says so; otherwise the embedded defaults.
test: setup lint
	@if $(PY) -c "import socket; socket.create_connection(('127.0.0.1', 5432), 1)" 2>/dev/null; then \
		echo "make test: PostgreSQL answers on 127.0.0.1:5432: database tests use it"; \
		export DATABASE_URL="$(PG_URL)"; \
	else echo "make test: PostgreSQL is not answering: database tests use SQLite"; fi; \
	if $(PY) -c "import socket; socket.create_connection(('127.0.0.1', 6379), 1)" 2>/dev/null; then \
		echo "make test: Redis answers on 127.0.0.1:6379: Celery tests use it"; \
		export TEST_REDIS_URL="$(REDIS_URL)"; \
	else echo "make test: Redis is not answering: Redis-backed tests are skipped"; fi; \
	RUN_SETTINGS_FILE=/dev/null $(VENV)/bin/pytest -n $${PYTEST_WORKERS:-2} --dist loadfile && \
	echo "make test: the data-plane tests again on remote storage (QDRANT_URL: a second data-plane server)" && \
	RUN_SETTINGS_FILE=/dev/null TEST_STORAGE=remote $(VENV)/bin/pytest -n $${PYTEST_WORKERS:-2} --dist loadfile \
		tests/dataplane tests/grpc tests/billing/test_dataplane.py tests/providers/test_dataplane.py

bench: setup
	$(PY) bench/engine.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
