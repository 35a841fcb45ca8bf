"""Dense text embeddings from a transformer encoder exported to ONNX (MiniLM, E5, CLIP text).

We run onnxruntime and the HF `tokenizers` library directly rather than through fastembed's wrapper so that
one tokenization pass gives both the model inputs and the exact token count that usage is billed on, and
so that truncation follows the catalog's context window. The vectors equal fastembed's for the same files
(tests check cosine >= 0.9999).
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from .denormals import flush_denormals
from .packing import BIAS_INPUT, POSITION_INPUT, pack, pool_spans, write_packed_graph_apart
from .runner import options_or_empty
from .types import EmbedRequest, EmbedResult, EngineUnavailable, InputType, InvalidInput, Kind, ModelSpec

logger = logging.getLogger(__name__)

# Texts the packed graph must embed as the original does before it is used (OnnxTextRunner's check):
# different lengths, so that one packed row holds several inputs with their positions restarting.
PACKING_PROBE = (
    "a",
    "The quick brown fox jumps over the lazy dog while the vector database answers another query.",
    "vector search",
)
PACKING_MIN_COSINE = 0.99999


def make_session(
    path: Path, threads: int, *, memory_arena: bool = True, spinning: bool = True
) -> ort.InferenceSession:
    """An onnxruntime CPU session with explicit thread and memory settings.

    One intra-op thread per session by default: the worker pool runs several batches side by side, and
    letting each session also spread over every core would oversubscribe the CPU. onnxruntime's CPU memory
    arena keeps the buffers of the largest batch shape run so far for the life of the process; it is on by
    default because it is faster for long inputs (measured: 20 vs 14 long texts/s on 2 workers), and the
    pool's token budget bounds the shapes it can grow to. Without it (INFERENCE_ONNX_ARENA=false) memory is
    returned after each run, but the peak is the same.

    onnxruntime's SkipLayerNormalization fusion is off: its CPU kernel takes ~4x as long as the Add and
    LayerNormalization it replaces (onnxruntime 1.31's profile, MiniLM-L6 int8 packed, 16 sentences, one
    thread: 12% of the kernel time against 3% unfused), so runs are 5-10% faster without it; the outputs
    differ by float rounding only.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = memory_arena
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 1:  # its pool threads flush denormals too; callers flush their own thread (denormals.py)
        # (lone batches of 4-8 packed sentences on the solo session: 6-8% less wall time)
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    if not spinning:  # idle intra-op threads sleep instead of spinning (a spinning one burns a core)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(
            str(path),
            sess_options=options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=["SkipLayerNormFusion"],
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for a broken file
        raise EngineUnavailable(f"Model file {path.name} could not be loaded: {exc}") from exc


def load_tokenizer(model_dir: Path, max_length: int | None) -> Tokenizer:
    """The model's fast tokenizer, truncating to the context window and padding to the longest in a batch."""
    try:
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    except Exception as exc:
        raise EngineUnavailable(f"Tokenizer of {model_dir.name} could not be loaded: {exc}") from exc
    if max_length is not None:
        tokenizer.enable_truncation(max_length=max_length)
    pad_token = _pad_token(model_dir)
    pad_id = tokenizer.token_to_id(pad_token)
    if pad_id is None:
        pad_id = 0
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def _pad_token(model_dir: Path) -> str:
    """The padding token named by the model's tokenizer files ([PAD] for BERT-style models)."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            data = json.loads((model_dir / name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        token = data.get("pad_token")
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str):
            return token
    return "[PAD]"


# Characters of text tokenized first, per token of the context window. English runs ~4-5 characters a token,
# so the head of a long text nearly always holds more tokens than the window and the rest is never read.
HEAD_CHARS_PER_TOKEN = 8
# Past this many characters per token of the window the rest of a text is not read: only runs of whitespace
# or of words too long for the vocabulary (one [UNK] each) spread a window's tokens that thin.
MAX_CHARS_PER_TOKEN = 128


def head_tokens(tokenizer: Tokenizer, text: str, window: int | None) -> Encoding:
    """The text's encoding truncated to `window` tokens, tokenizing only as much of its head as that needs.

    Tokenizing costs ~0.9 us a character whatever the truncation (10 MiB: 9 s of CPU, with the GIL held),
    so a long text is encoded from its head: `window * HEAD_CHARS_PER_TOKEN` characters ending at whitespace,
    four times more while that head still fits the window, up to `window * MAX_CHARS_PER_TOKEN` characters.
    A head that ends between words tokenizes to a prefix of the whole text's tokens, so once it overflows the
    window the result is the whole text's. A run without whitespace longer than half the head is cut inside.
    """
    if window is None:
        return tokenizer.encode(text)
    size, most = window * HEAD_CHARS_PER_TOKEN, window * MAX_CHARS_PER_TOKEN
    while len(text) > size:
        head = text[:size]
        boundary = max(head.rfind(" "), head.rfind("\n"), head.rfind("\t"), head.rfind("\r"))
        if boundary > size // 2:
            head = head[:boundary]
        encoding = tokenizer.encode(head)
        if encoding.overflowing or size >= most:  # the window is full before the head ends, or read enough
            return encoding
        size = min(size * 4, most)
    return tokenizer.encode(text)


def with_prefix(text: str, prefix: str) -> str:
    """Add an instruction prefix (E5's "query: ") unless the caller already did: never doubled."""
    if not prefix or text.startswith(prefix):
        return text
    return prefix + text


class OnnxTextRunner:
    """Runs one dense text model; thread-safe (onnxruntime sessions and tokenizers may be shared)."""

    def __init__(
        self,
        spec: ModelSpec,
        model_dir: Path,
        *,
        threads: int = 1,
        memory_arena: bool = True,
        solo_threads: int = 0,
        packing: bool = True,
    ) -> None:
        self.spec = spec
        path = model_dir / "model.onnx"
        self.session = make_session(path, threads, memory_arena=memory_arena)
        self.tokenizer = load_tokenizer(model_dir, spec.context_window)
        self._pad_id = int((self.tokenizer.padding or {}).get("pad_id", 0))
        self._input_names = {i.name for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if spec.onnx_output is not None and spec.onnx_output not in outputs:
            raise EngineUnavailable(f"Model {spec.name} has no output {spec.onnx_output!r} (has {outputs})")
        self._output = spec.onnx_output or outputs[0]
        # Padding-free batches (packing.py) when the graph can be rewired for them and the rewired graph
        # embeds the probe texts as the original does; otherwise padded batches, as before.
        with tempfile.TemporaryDirectory(prefix="packed-graph-") as scratch:
            graph = (
                self._swap_in_packed_graph(path, Path(scratch), threads, memory_arena) if packing else None
            )
            self.packed = graph is not None
            self.solo_session = self._solo_session(graph or path, threads, solo_threads, memory_arena)

    @staticmethod
    def _solo_session(
        model: Path, threads: int, solo_threads: int, memory_arena: bool
    ) -> ort.InferenceSession | None:
        # A second session of the same graph spread over `solo_threads` cores, for a batch that runs while
        # the rest of the pool is idle: a lone short query is latency-bound, and one thread leaves the
        # other cores idle (MiniLM-L6 int8, one sentence, quiet machine: 6.3 ms on one thread, 3.4 ms on
        # two). Its threads spin between runs, as onnxruntime's do by default: waking sleeping ones cost a
        # lone query ~1.2 ms (4.35 -> 3.13 ms p50). Under load lone batches are rare (~1.5/s with 16
        # clients), so the spinning showed no CPU cost there (bench/dataplane.py's concurrent phase).
        return (
            make_session(model, solo_threads, memory_arena=memory_arena) if solo_threads > threads else None
        )

    def _swap_in_packed_graph(
        self, path: Path, scratch: Path, threads: int, memory_arena: bool
    ) -> Path | None:
        """Replace the session by one of the packed graph if it fits and agrees with the original; the
        packed graph's file (in `scratch`) when it did.

        The graph is rewritten in a child process and loaded from a file, not from bytes in memory: either
        way this process's peak memory would rise by the parsed model (~60 MiB for MiniLM-L6 in a server).
        """
        if self.spec.pooling not in ("mean", "cls"):
            return None
        graph = scratch / "model.onnx"
        try:
            fits = write_packed_graph_apart(path, self._output, graph)
        except (OSError, subprocess.SubprocessError) as exc:  # no room for the copy, say: padded batches work
            logger.warning("Model %s: packed graph not written (%s); padded batches", self.spec.name, exc)
            return None
        if not fits:
            logger.info("Model %s: graph does not fit padding-free batches; padded batches", self.spec.name)
            return None
        probe = [EmbedRequest(self.spec.name, Kind.DOCUMENT, InputType.TEXT, text) for text in PACKING_PROBE]
        expected = np.array([r.vector for r in self._embed_padded(self.session, probe)])
        # The original session goes before the packed one loads: both at once would raise the process's
        # peak memory by a copy of the weights.
        del self.session
        try:
            self.session = make_session(graph, threads, memory_arena=memory_arena)
            self._input_names = {i.name for i in self.session.get_inputs()}
            got = np.array([r.vector for r in self._embed_packed(self.session, probe)])
            norms = np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1)
            cosine = float(np.min(np.sum(expected * got, axis=1) / np.clip(norms, 1e-12, None)))
            problem = None if cosine >= PACKING_MIN_COSINE else f"disagrees with the original ({cosine=:.6f})"
        except Exception as exc:  # a rewired graph onnxruntime cannot load or run: onnxruntime's own errors
            problem = f"failed ({exc})"
        if problem is not None:
            logger.warning("Model %s: packed graph %s; padded batches", self.spec.name, problem)
            self.session = make_session(path, threads, memory_arena=memory_arena)
            self._input_names = {i.name for i in self.session.get_inputs()}
            return None
        return graph

    def check(self, request: EmbedRequest) -> None:
        """Text only, and no options: these models take none, and a typo should not pass silently."""
        if request.input_type is not InputType.TEXT or not isinstance(request.data, str):
            raise InvalidInput(f"Only text input is supported for {request.model}.")
        unknown = sorted(options_or_empty(request.options))
        if unknown:
            raise InvalidInput(f"Model {request.model} does not accept options, got: {', '.join(unknown)}")

    def embed(self, requests: Sequence[EmbedRequest], *, alone: bool = False) -> list[EmbedResult]:
        """Embed one batch: tokenize (truncating), run the encoder, pool, normalize."""
        if not requests:
            return []
        flush_denormals()  # masked attention scores are denormal floats in Softmax: slow unless flushed
        session = self.solo_session if alone and self.solo_session is not None else self.session
        if self.packed:
            return self._embed_packed(session, requests)
        return self._embed_padded(session, requests)

    def _encode(self, requests: Sequence[EmbedRequest]) -> list[Encoding]:
        # One text at a time, not `encode_batch`: that hands even a few short texts to the tokenizers'
        # thread pool and waits for it, which under load cost ~1 ms a batch (14% of a worker's samples)
        # for ~0.04 ms of work per text.
        window = self.spec.context_window
        return [head_tokens(self.tokenizer, self._prepare(r), window) for r in requests]

    def _embed_packed(
        self, session: ort.InferenceSession, requests: Sequence[EmbedRequest]
    ) -> list[EmbedResult]:
        encodings = self._encode(requests)
        batch = pack([e.ids for e in encodings], self._pad_id)
        feeds: dict[str, Any] = {
            "input_ids": batch.input_ids,
            POSITION_INPUT: batch.position_ids,
            BIAS_INPUT: batch.attention_bias,
        }
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(batch.input_ids)
        (output,) = session.run([self._output], feeds)
        pooled = pool_spans(np.asarray(output, dtype=np.float32), batch.spans, self.spec.pooling)
        vectors = self._normalize(pooled)
        return [
            EmbedResult(vector=v.tolist(), tokens=len(e.ids)) for v, e in zip(vectors, encodings, strict=True)
        ]

    def _embed_padded(
        self, session: ort.InferenceSession, requests: Sequence[EmbedRequest]
    ) -> list[EmbedResult]:
        encodings = self._encode(requests)  # right-padded to the longest here, as `encode_batch` would
        longest = max(len(e.ids) for e in encodings)
        input_ids = np.full((len(encodings), longest), self._pad_id, dtype=np.int64)
        attention = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            attention[row, : len(encoding.ids)] = encoding.attention_mask
        feeds: dict[str, Any] = {"input_ids": input_ids}
        if "attention_mask" in self._input_names:
            feeds["attention_mask"] = attention
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (output,) = session.run([self._output], feeds)
        vectors = self._normalize(self._pool(np.asarray(output, dtype=np.float32), attention))
        tokens = attention.sum(axis=1)
        return [EmbedResult(vector=v.tolist(), tokens=int(t)) for v, t in zip(vectors, tokens, strict=True)]

    def _prepare(self, request: EmbedRequest) -> str:
        prefix = self.spec.query_prefix if request.kind is Kind.QUERY else self.spec.document_prefix
        return with_prefix(str(request.data), prefix)

    def _pool(self, output: np.ndarray, attention: np.ndarray) -> np.ndarray:
        if output.ndim == 3:
            if self.spec.pooling == "cls":
                pooled = output[:, 0]
            else:  # mean over real tokens only, as sentence-transformers does
                mask = attention[:, :, None].astype(np.float32)
                pooled = (output * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        else:
            pooled = output
        return pooled

    def _normalize(self, pooled: np.ndarray) -> np.ndarray:
        if not self.spec.normalize:
            return pooled
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
