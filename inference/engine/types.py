"""Value types shared by every part of the engine.

The engine knows nothing about Django, clusters or billing: callers describe what to embed with
:class:`EmbedRequest` and get :class:`EmbedResult` back, in the same order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """Which side of retrieval an input is on; models such as E5 and BM25 embed the two differently."""

    DOCUMENT = "document"
    QUERY = "query"


class InputType(StrEnum):
    """What the raw input is, mirroring Qdrant's `data_type` (Document, Image, Object)."""

    TEXT = "text"
    IMAGE = "image"
    OBJECT = "object"


class Output(StrEnum):
    """The shape of vector a model produces."""

    DENSE = "dense"
    SPARSE = "sparse"
    MULTIVECTOR = "multivector"


class Runtime(StrEnum):
    """Which loader in the engine runs a model."""

    ONNX_TEXT = "onnx_text"  # transformer encoder over a HF tokenizer (MiniLM, E5, CLIP text)
    ONNX_IMAGE = "onnx_image"  # CLIP-style vision encoder over preprocessed pixels
    BM25 = "bm25"  # Qdrant's server-side BM25, no weights
    SPLADE = "splade"  # catalogued, no runner in this build
    COLBERT = "colbert"  # catalogued, no runner in this build


@dataclass(frozen=True)
class ModelSpec:
    """Everything the engine needs to load and run one model from a directory on disk."""

    name: str  # canonical catalog name, lower case
    runtime: Runtime
    output: Output
    input_type: InputType
    dim: int | None  # None for sparse models
    context_window: int | None  # max tokens the model processes; None = unlimited (BM25)
    pooling: str = "mean"  # "mean" | "cls" | "none" (ONNX output is already pooled)
    normalize: bool = True
    onnx_output: str | None = None  # name of the ONNX output to read; None = the first one
    query_prefix: str = ""  # E5-style prefixes, added once
    document_prefix: str = ""
    tokens_per_image: int = 0  # what an image counts as in usage (ViT patches + class token)


@dataclass(frozen=True)
class EmbedRequest:
    """One input to embed: which model, which side, the raw input and the model options.

    `data` is the text for text input, and a URL / base64 string (or data URL) for images.
    Requests are hashable: identical requests in one call are computed once.
    """

    model: str
    kind: Kind
    input_type: InputType
    data: Any
    options: dict[str, Any] | None = None

    def dedup_key(self) -> tuple[str, str, str, str, str]:
        """A key equal for requests that must give the same vector (options compared order-free)."""
        options = "null" if self.options is None else json.dumps(self.options, sort_keys=True, default=str)
        data = self.data if isinstance(self.data, str) else json.dumps(self.data, sort_keys=True, default=str)
        return (self.model.lower(), self.kind.value, self.input_type.value, data, options)


@dataclass(frozen=True)
class SparseVector:
    """A sparse vector with sorted, unique indices."""

    indices: list[int]
    values: list[float]


Vector = list[float] | SparseVector | list[list[float]]


def vector_json(vector: Vector) -> Any:
    """A vector in Qdrant's JSON form: a list of floats, `{"indices", "values"}`, or a list of lists.

    Always a fresh object: callers put it into request bodies that must not share lists with results.
    """
    if isinstance(vector, SparseVector):
        return {"indices": list(vector.indices), "values": list(vector.values)}
    if vector and isinstance(vector[0], list):  # a multivector: a list of rows
        return [list(row) for row in vector]  # type: ignore[arg-type]  # every row is a list
    return list(vector)  # dense: floats only (one copy in C, not a type check per float)


@dataclass(frozen=True)
class EmbedResult:
    """The vector for one request and the number of tokens the model actually processed for it."""

    vector: Vector
    tokens: int


class EngineError(Exception):
    """Base of every error the engine raises on purpose. Messages are safe to show to API users."""

    status_code = 400


class ModelNotFound(EngineError):
    """The model is not in the catalog at all."""


class ModelNotInstalled(EngineError):
    """The model is catalogued, but its weights are not installed on this server."""

    status_code = 400


class InvalidInput(EngineError):
    """The input does not fit the model (wrong type, undecodable image, bad options)."""


class ImageFetchError(InvalidInput):
    """An image URL could not be fetched safely (blocked address, too large, timeout, not an image)."""


class EngineUnavailable(EngineError):
    """The model could not run for a reason that is not the caller's fault (e.g. a broken model file)."""

    status_code = 500


class EngineOverloaded(EngineError):
    """The inference queue is full: the caller should retry after `retry_after` seconds (answered as 429)."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
