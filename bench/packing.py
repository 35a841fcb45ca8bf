"""Benchmark: padding-free batches (inference/engine/packing.py) against padded ones, and the constant of
packing's cost model, on this machine.

1. Runs the packed MiniLM-L6 int8 graph on one onnxruntime thread (as each ONNX worker does) for a grid of
   `rows x width` shapes, every row made of 19-token inputs, and prints the CPU time per token of each.
   It fits `time = a + b * rows * width + c * rows * width^2` by least squares and prints `b / c`: the row
   width at which a token's attention work equals the rest of its layer's, by this grid.
2. Embeds the bench sentences in batches of 2 to 32 with the packed runner under each `--widths` value of
   packing.ATTENTION_WIDTH, alternating, and prints the CPU time per text of each and its ratio to the
   constant's (lower is better). Real batches, not the grid's fit, decide the constant: with denormals
   flushed the grid fits ~1400, yet on the bench sentences 250-1400 all run within +-3% of 420.
3. Embeds batches of 2 to 32 short sentences (bench/dataplane.py's: 11-29 tokens, mixed) with the padded
   runner (the baseline: the original graph, one input per row, padded to the longest) and the packed
   runner, alternating `--rounds` times, and prints the CPU time per text of each and the ratio
   packed/padded (lower is better), median over the rounds.

CPU time of the calling thread, not wall-clock time: onnxruntime runs on it, and other load on a shared
machine disturbs it less. The thread flushes denormals as the runners' threads do (denormals.py). Run from
the root of the checkout to measure (the venv's editable install imports the working directory's code):
`HF_HUB_OFFLINE=1 MODELS_DIR=$PWD/data/models .venv/bin/python bench/packing.py [--rounds N]
[--widths W ...]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import django

django.setup()

from dataplane import MODEL, sentences  # noqa: E402  (the serving bench's sentences)

from inference.embedding import resolve_model  # noqa: E402
from inference.engine import packing  # noqa: E402
from inference.engine.denormals import flush_denormals  # noqa: E402
from inference.engine.packing import ATTENTION_WIDTH, BIAS_INPUT, MASKED, POSITION_INPUT  # noqa: E402
from inference.engine.text import OnnxTextRunner  # noqa: E402
from inference.engine.types import EmbedRequest, InputType, Kind  # noqa: E402

SEGMENT = 19  # tokens per input in the shape grid: the sentences' mean
SHAPES = [(r, w) for w in (19, 38, 76, 152) for r in (1, 2, 4, 8) if r * w <= 304] + [(1, 304), (2, 128)]
BATCHES = (2, 4, 6, 8, 16, 32)
TEXTS = 192  # sentences per batch size, runner and round


def thread_ms(fn: Callable[[], object], repeat: int, runs: int = 3) -> float:
    """The calling thread's CPU time per call, in ms: the best of `runs` runs of `repeat` calls, after one
    call to warm up (onnxruntime plans each new shape on its first run)."""
    fn()
    best = float("inf")
    for _ in range(runs):
        start = time.thread_time()
        for _ in range(repeat):
            fn()
        best = min(best, (time.thread_time() - start) / repeat)
    return best * 1000.0


def shape_feeds(runner: OnnxTextRunner, rows: int, width: int) -> dict[str, np.ndarray]:
    """Packed-graph inputs of `rows` rows of `width` tokens, each row cut into SEGMENT-token inputs."""
    rng = np.random.default_rng(rows * 1000 + width)
    segment = np.arange(width) // SEGMENT
    bias = (segment[:, None] != segment[None, :]) * np.float32(MASKED)
    ids = rng.integers(1000, 20000, size=(rows, width), dtype=np.int64)
    feeds = {
        "input_ids": ids,
        POSITION_INPUT: np.tile(np.arange(width) % SEGMENT, (rows, 1)).astype(np.int64),
        BIAS_INPUT: np.tile(bias.astype(np.float32), (rows, 1, 1, 1)),
    }
    if "token_type_ids" in {i.name for i in runner.session.get_inputs()}:
        feeds["token_type_ids"] = np.zeros_like(ids)
    return feeds


def fit_shapes(runner: OnnxTextRunner) -> None:
    """Time the shape grid; print each shape's cost per token and the fitted attention width."""
    rows_of_fit, times = [], []
    output = runner.session.get_outputs()[0].name
    for rows, width in SHAPES:
        feeds = shape_feeds(runner, rows, width)
        ms = thread_ms(partial(runner.session.run, [output], feeds), repeat=max(3, 600 // (rows * width)))
        print(f"  {rows} x {width}: {ms:.2f} ms, {ms / (rows * width) * 1000:.0f} us/token")
        rows_of_fit.append([1.0, rows * width, rows * width * width])
        times.append(ms)
    (_, per_token, per_square), *_ = np.linalg.lstsq(np.array(rows_of_fit), np.array(times), rcond=None)
    fitted = per_token / per_square
    print(f"fitted attention width b/c: {fitted:.0f} (packing.py's ATTENTION_WIDTH: {ATTENTION_WIDTH})")


def embed_all(runner: OnnxTextRunner, batches: Sequence[Sequence[EmbedRequest]]) -> None:
    """Embed each batch as one run."""
    for batch in batches:
        runner.embed(batch)


def compare_widths(packed: OnnxTextRunner, widths: Sequence[float], rounds: int) -> None:
    """Alternate packing.ATTENTION_WIDTH over `widths` on batches of each size; print medians and the ratio
    of each to the module's own constant."""
    requests = [EmbedRequest(MODEL, Kind.QUERY, InputType.TEXT, t) for t in sentences(TEXTS, seed=103)]
    candidates = [ATTENTION_WIDTH, *(w for w in widths if w != ATTENTION_WIDTH)]
    per_text: dict[tuple[float, int], list[float]] = {}
    try:
        for round_ in range(rounds):
            for size in BATCHES:
                batches = [requests[i : i + size] for i in range(0, TEXTS, size)]
                for width in candidates if round_ % 2 == 0 else reversed(candidates):
                    packing.ATTENTION_WIDTH = width
                    ms = thread_ms(partial(embed_all, packed, batches), repeat=1, runs=1)
                    per_text.setdefault((width, size), []).append(ms / TEXTS)
    finally:
        packing.ATTENTION_WIDTH = ATTENTION_WIDTH
    for size in BATCHES:
        base = per_text[(ATTENTION_WIDTH, size)]
        cells = [f"{ATTENTION_WIDTH:.0f}: {statistics.median(base):.2f} ms/text"]
        for width in candidates[1:]:
            ours = per_text[(width, size)]
            ratio = statistics.median(b / a for a, b in zip(base, ours, strict=True))
            cells.append(f"{width:.0f}: {statistics.median(ours):.2f} ({ratio:.3f})")
        print(f"  batch {size:2d}: " + ", ".join(cells))


def compare_batches(padded: OnnxTextRunner, packed: OnnxTextRunner, rounds: int) -> None:
    """Alternate the two runners over batches of each size; print medians and the ratio."""
    requests = [EmbedRequest(MODEL, Kind.QUERY, InputType.TEXT, t) for t in sentences(TEXTS, seed=101)]
    per_text: dict[tuple[str, int], list[float]] = {}
    runners = {"padded": padded, "packed": packed}
    for round_ in range(rounds):
        for size in BATCHES:
            batches = [requests[i : i + size] for i in range(0, TEXTS, size)]
            order = ("padded", "packed") if round_ % 2 == 0 else ("packed", "padded")
            for name in order:
                ms = thread_ms(partial(embed_all, runners[name], batches), repeat=1, runs=1)
                per_text.setdefault((name, size), []).append(ms / TEXTS)
    for size in BATCHES:
        base, ours = per_text[("padded", size)], per_text[("packed", size)]
        ratio = statistics.median(b / a for a, b in zip(base, ours, strict=True))
        print(
            f"  batch {size:2d}: padded {statistics.median(base):.2f} ms/text, packed "
            f"{statistics.median(ours):.2f} ms/text, packed/padded {ratio:.2f}"
        )


def main() -> None:
    """Fit the cost model, then compare padded and packed batches."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of padded and packed")
    parser.add_argument(
        "--widths", type=float, nargs="*", default=[250.0, 800.0, 1400.0], help="ATTENTION_WIDTH candidates"
    )
    args = parser.parse_args()
    spec, model_dir = resolve_model(MODEL)
    packed = OnnxTextRunner(spec, model_dir, threads=1)
    if not packed.packed:
        sys.exit(f"{MODEL}'s graph was not packed (see the log)")
    padded = OnnxTextRunner(spec, model_dir, threads=1, packing=False)
    flush_denormals()  # as the runners do in their threads: the grid runs the session directly
    print(f"model: {MODEL} ({model_dir}), one onnxruntime thread")
    print("packed graph, shapes of 19-token inputs (CPU time per run):")
    fit_shapes(packed)
    if args.widths:
        print(f"ATTENTION_WIDTH candidates on batches of bench sentences, {args.rounds} alternating rounds")
        print("(CPU time per text, median; in brackets the ratio to the constant's, lower is better):")
        compare_widths(packed, args.widths, args.rounds)
    print(f"batches of bench sentences, {args.rounds} alternating rounds (CPU time, median):")
    compare_batches(padded, packed, args.rounds)


if __name__ == "__main__":
    main()
