"""Provider-shaped HTTP servers on 127.0.0.1: OpenAI, Cohere v2, Jina AI and OpenRouter embeddings APIs.

One threaded server answers all four, each under its own path prefix (the tests point the `*_API_BASE`
settings at them). Each implements its provider's request and response JSON, checks the bearer key and
the request shape the way the real API documents it (batch limits included), records every call with its
headers and body, and can be told to fail the next calls with a given status.

Vectors are deterministic per (model, input): unit vectors derived from a hash, of the requested size.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VALID_KEYS = {
    "openai": "sk-openai-test-key-123",
    "cohere": "co-test-key-456",
    "jina": "jina_test_key_789",
    "openrouter": "sk-or-test-key-000",
}
DEFAULT_DIMS = {"openai": 16, "cohere": 16, "jina": 1024, "openrouter": 16}
PATHS = {
    "/openai/v1/embeddings": "openai",
    "/cohere/v2/embed": "cohere",
    "/jina/v1/embeddings": "jina",
    "/openrouter/api/v1/embeddings": "openrouter",
}
BASES = {
    "OPENAI_API_BASE": "/openai/v1",
    "COHERE_API_BASE": "/cohere",
    "JINA_API_BASE": "/jina/v1",
    "OPENROUTER_API_BASE": "/openrouter/api/v1",
}


def fake_vector(model: str, data: str, dims: int) -> list[float]:
    """The unit vector the fake providers answer for an input."""
    values: list[float] = []
    counter = 0
    while len(values) < dims:
        digest = hashlib.sha256(f"{model}|{data}|{counter}".encode()).digest()
        values.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    values = values[:dims]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def text_tokens(text: str) -> int:
    """What the fakes bill for a text: one token per word, at least one."""
    return max(1, len(text.split()))


IMAGE_TOKENS = 1000  # what the fakes bill per image


@dataclass
class Call:
    """One request a fake provider received."""

    provider: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeProviders:
    """The running server: its URL, the calls it received, and failures scheduled per provider."""

    url: str
    calls: list[Call] = field(default_factory=list)
    failures: dict[str, list[tuple[int, dict[str, str], Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(
        self,
        provider: str,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """Answer the next `times` calls to `provider` with `status` (and a provider-shaped error body)."""
        with self.lock:
            self.failures.setdefault(provider, []).extend([(status, headers or {}, body)] * times)

    def calls_to(self, provider: str) -> list[Call]:
        """The calls one provider received, in order."""
        return [c for c in self.calls if c.provider == provider]

    def settings(self) -> dict[str, str]:
        """The base-URL settings pointing at this server."""
        return {name: self.url + path for name, path in BASES.items()}


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_body(provider: str, message: str) -> Any:
    if provider in ("openai", "openrouter"):
        return {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    if provider == "cohere":
        return {"message": message}
    return {"detail": message}


def _check_key(provider: str, headers: dict[str, str]) -> None:
    auth = headers.get("authorization", "")
    if not auth.startswith("Bearer "):
        raise _Refused(401, "Missing bearer token")
    key = auth[7:]
    if key != VALID_KEYS[provider]:
        # Real providers echo (part of) a wrong key; the fakes echo all of it, to prove it is redacted.
        raise _Refused(401, f"Incorrect API key provided: {key}")


def _openai(provider: str, body: Any) -> Any:
    if not isinstance(body, dict) or "model" not in body or "input" not in body:
        raise _Refused(400, "'model' and 'input' are required")
    unknown = set(body) - {"model", "input", "dimensions", "encoding_format", "user"}
    if unknown:
        raise _Refused(400, f"Unrecognized request argument supplied: {sorted(unknown)[0]}")
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    if not 1 <= len(inputs) <= 2048 or not all(isinstance(t, str) and t for t in inputs):
        raise _Refused(400, "'input' must be 1 to 2048 non-empty strings")
    if body.get("encoding_format", "float") != "float":
        raise _Refused(400, "the fake answers floats only")
    dims = body.get("dimensions", DEFAULT_DIMS[provider])
    data = [
        {"object": "embedding", "index": i, "embedding": fake_vector(body["model"], t, dims)}
        for i, t in enumerate(inputs)
    ]
    data.reverse()  # the API indexes its items; clients must not rely on their order
    tokens = sum(text_tokens(t) for t in inputs)
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _cohere(body: Any) -> Any:
    if not isinstance(body, dict) or "model" not in body:
        raise _Refused(400, "model is required")
    if body.get("input_type") not in (
        "search_document",
        "search_query",
        "classification",
        "clustering",
        "image",
    ):
        raise _Refused(400, "invalid input_type")
    if body.get("embedding_types") != ["float"]:
        raise _Refused(400, "the fake answers float embeddings only")
    texts, images = body.get("texts"), body.get("images")
    if (texts is None) == (images is None):
        raise _Refused(400, "exactly one of texts or images must be given")
    dims = body.get("output_dimension", DEFAULT_DIMS["cohere"])
    meta: dict[str, Any] = {"api_version": {"version": "2"}, "billed_units": {}}
    if texts is not None:
        if not 1 <= len(texts) <= 96:
            raise _Refused(400, "invalid request: total number of texts must be at most 96")
        vectors = [fake_vector(body["model"], t, dims) for t in texts]
        meta["billed_units"]["input_tokens"] = sum(text_tokens(t) for t in texts)
    else:
        if len(images) != 1:
            raise _Refused(400, "invalid request: max number of images is 1")
        if not all(isinstance(i, str) and i.startswith("data:image/") and ";base64," in i for i in images):
            raise _Refused(400, "images must be data URIs")
        vectors = [fake_vector(body["model"], i, dims) for i in images]
        meta["billed_units"]["image_tokens"] = IMAGE_TOKENS * len(images)
    return {
        "id": "fake",
        "embeddings": {"float": vectors},
        "texts": texts or [],
        "meta": meta,
        "response_type": "embeddings_by_type",
    }


def _jina(body: Any) -> Any:
    if not isinstance(body, dict) or "model" not in body or not isinstance(body.get("input"), list):
        raise _Refused(422, "model and input are required")
    inputs = body["input"]
    if not 1 <= len(inputs) <= 2048:
        raise _Refused(422, "input must hold 1 to 2048 items")
    dims = body.get("dimensions", DEFAULT_DIMS["jina"])
    data, tokens = [], 0
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            content, tokens = item, tokens + text_tokens(item)
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            content, tokens = item["text"], tokens + text_tokens(item["text"])
        elif isinstance(item, dict) and isinstance(item.get("image"), str):
            content, tokens = "image:" + item["image"], tokens + IMAGE_TOKENS
        else:
            raise _Refused(422, "each input is a string, {text} or {image}")
        data.append(
            {"object": "embedding", "index": i, "embedding": fake_vector(body["model"], content, dims)}
        )
    return {
        "model": body["model"],
        "object": "list",
        "data": data,
        "usage": {"total_tokens": tokens, "prompt_tokens": tokens},
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        fake = self.server.fake
        provider = PATHS.get(self.path)
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if provider is None:
            self._send(404, {"detail": "not found"})
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with fake.lock:
            fake.calls.append(Call(provider, self.path, headers, body))
            scheduled = fake.failures.get(provider)
            failure = scheduled.pop(0) if scheduled else None
        if failure is not None:
            status, extra, error = failure
            self._send(
                status, error if error is not None else _error_body(provider, f"fake failure {status}"), extra
            )
            return
        try:
            _check_key(provider, headers)
            if provider in ("openai", "openrouter"):
                answer = _openai(provider, body)
            elif provider == "cohere":
                answer = _cohere(body)
            else:
                answer = _jina(body)
        except _Refused as refused:
            self._send(refused.status, _error_body(provider, refused.message))
            return
        self._send(200, answer)

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeProviders


@contextmanager
def running() -> Iterator[FakeProviders]:
    """Start the fake providers on a free 127.0.0.1 port; stop them on exit."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = FakeProviders(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
