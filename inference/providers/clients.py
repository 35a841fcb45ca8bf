"""The four providers, each in its own request and response shape.

What the shapes are based on (checked against the providers' published API references where found; what
could not be confirmed is said so):

- OpenAI `POST {base}/embeddings`: `{"input": [str], "model", "dimensions"?, "encoding_format": "float"}` ->
  `{"data": [{"index", "embedding"}], "usage": {"prompt_tokens", "total_tokens"}}`. At most 2048 inputs per
  call (the OpenAPI schema's `maxItems`); the 300,000-tokens-per-call cap is not counted here.
- Cohere `POST {base}/v2/embed`: `{"model", "input_type", "embedding_types": ["float"], "texts": [str]}` or
  `"images": [data URI]` (one kind per call) -> `{"embeddings": {"float": [[...]]}, "meta": {"billed_units":
  {"input_tokens", "image_tokens"?}}}`. At most 96 texts, and 1 image, per call (API reference v2).
- Jina AI `POST {base}/embeddings`: `{"model", "input": [str | {"text"} | {"image": url|base64}], "task"?,
  "dimensions"?, "embedding_type": "float"}` -> OpenAI-shaped `data` and `usage.total_tokens`. The batch limit
  used (2048 inputs) is an assumption: not confirmed from Jina's documentation.
- OpenRouter `POST {base}/embeddings`: OpenAI's shape. Its batch limit is not documented where searched;
  OpenAI's 2048 is assumed.
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar

from inference.engine.types import InputType, Kind
from inference.errors import BadRequest
from inference.providers.base import (
    Batch,
    BatchResult,
    FetchImage,
    JsonObject,
    MalformedResponse,
    ProviderClient,
    image_bytes,
    image_media_type,
    int_field,
    openai_data,
    vectors_of,
)


class OpenAIClient(ProviderClient):
    """OpenAI's embeddings API (text only)."""

    prefix = "openai"
    label = "OpenAI"
    header = "openai-api-key"
    default_base = "https://api.openai.com/v1"
    path = "/embeddings"
    docs_url = "https://platform.openai.com/docs/api-reference/embeddings"
    example_model = "openai/text-embedding-3-small"
    max_inputs: ClassVar[int] = 2048

    def max_batch(self, input_type: InputType) -> int:
        """2048 inputs per call."""
        return self.max_inputs

    def body(self, batch: Batch, fetch_image: FetchImage | None) -> JsonObject:
        """`input`, `model`, the caller's options (`dimensions`, `user`...), floats back."""
        return {
            **batch.options,
            "model": batch.model_id,
            "input": [r.data for r in batch.requests],
            "encoding_format": "float",  # vectors are stored as floats; base64 would need decoding
        }

    def parse(self, payload: Any, count: int) -> BatchResult:
        """`data[].embedding` by `index`; tokens from `usage.total_tokens` (or `prompt_tokens`)."""
        tokens = int_field(payload, "usage", "total_tokens") or int_field(payload, "usage", "prompt_tokens")
        return BatchResult(vectors=openai_data(payload, count), tokens=tokens)


class OpenRouterClient(OpenAIClient):
    """OpenRouter's OpenAI-compatible embeddings API (model ids like `openai/text-embedding-3-small`)."""

    prefix = "openrouter"
    label = "OpenRouter"
    header = "openrouter-api-key"
    default_base = "https://openrouter.ai/api/v1"
    docs_url = "https://openrouter.ai/docs/api_reference/embeddings"
    example_model = "openrouter/openai/text-embedding-3-small"


class CohereClient(ProviderClient):
    """Cohere's Embed API v2: texts, or images as data URIs (one per call)."""

    prefix = "cohere"
    label = "Cohere"
    header = "cohere-api-key"
    default_base = "https://api.cohere.com"
    path = "/v2/embed"
    docs_url = "https://docs.cohere.com/reference/embed"
    example_model = "cohere/embed-v4.0"
    input_types = frozenset({InputType.TEXT, InputType.IMAGE})

    def max_batch(self, input_type: InputType) -> int:
        """96 texts or 1 image per call."""
        return 1 if input_type == InputType.IMAGE else 96

    def body(self, batch: Batch, fetch_image: FetchImage | None) -> JsonObject:
        """`texts` or `images`, `input_type` from the side (unless the caller set it), floats back.

        A generic `dimensions` option becomes Cohere's `output_dimension`.
        """
        options = dict(batch.options)
        if "dimensions" in options and "output_dimension" not in options:
            options["output_dimension"] = options.pop("dimensions")
        if batch.input_type == InputType.IMAGE:
            images = []
            for request in batch.requests:
                raw = image_bytes(request.data, fetch_image, self.label)
                images.append(f"data:{image_media_type(raw)};base64,{base64.b64encode(raw).decode()}")
            inputs: JsonObject = {"images": images}
            input_type = "image"
        else:
            inputs = {"texts": [r.data for r in batch.requests]}
            input_type = "search_query" if batch.kind == Kind.QUERY else "search_document"
        return {
            "input_type": input_type,
            **options,
            "model": batch.model_id,
            **inputs,
            "embedding_types": ["float"],
        }

    def parse(self, payload: Any, count: int) -> BatchResult:
        """`embeddings.float`; tokens from `meta.billed_units` (input and image tokens)."""
        embeddings = payload.get("embeddings") if isinstance(payload, dict) else None
        if not isinstance(embeddings, dict):
            raise MalformedResponse("no `embeddings` object")
        tokens = int_field(payload, "meta", "billed_units", "input_tokens") + int_field(
            payload, "meta", "billed_units", "image_tokens"
        )
        return BatchResult(vectors=vectors_of(embeddings.get("float"), count), tokens=tokens)


class JinaClient(ProviderClient):
    """Jina AI's embeddings API: text, and images (URL or base64) for its multimodal models."""

    prefix = "jinaai"
    label = "Jina AI"
    header = "jina-api-key"
    default_base = "https://api.jina.ai/v1"
    path = "/embeddings"
    docs_url = "https://jina.ai/embeddings/"
    example_model = "jinaai/jina-clip-v2"
    input_types = frozenset({InputType.TEXT, InputType.IMAGE})
    max_inputs: ClassVar[int] = 2048  # assumed, see the module docstring

    def max_batch(self, input_type: InputType) -> int:
        """2048 inputs per call (assumed)."""
        return self.max_inputs

    def body(self, batch: Batch, fetch_image: FetchImage | None) -> JsonObject:
        """`input` (strings, or `{"image": ...}` objects), `task` from the side unless set, floats back."""
        if batch.input_type == InputType.IMAGE:
            inputs: list[Any] = [{"image": _jina_image(r.data)} for r in batch.requests]
        else:
            inputs = [r.data for r in batch.requests]
        body: JsonObject = {
            "task": "retrieval.query" if batch.kind == Kind.QUERY else "retrieval.passage",
            **batch.options,
            "model": batch.model_id,
            "input": inputs,
            "embedding_type": "float",
        }
        if body.get("task") is None:  # `"task": null` in the options: send none
            del body["task"]
        return body

    def parse(self, payload: Any, count: int) -> BatchResult:
        """OpenAI-shaped `data`; tokens from `usage.total_tokens`."""
        tokens = int_field(payload, "usage", "total_tokens") or int_field(payload, "usage", "prompt_tokens")
        return BatchResult(vectors=openai_data(payload, count), tokens=tokens)


def _jina_image(data: object) -> str:
    """A URL as is; a data URL reduced to its base64 payload (Jina takes a URL or bare base64)."""
    if not isinstance(data, str) or not data.strip():
        raise BadRequest("Image input must be a non-empty string: an http(s) URL, a data URL or base64 data.")
    text = data.strip()
    if text[:5].lower() == "data:":
        return text.partition(",")[2]
    return text


PROVIDERS: dict[str, ProviderClient] = {
    client.prefix: client for client in (OpenAIClient(), CohereClient(), JinaClient(), OpenRouterClient())
}
