"""Benchmark: the engine vs fastembed directly on the same model files, in the same run.

Embeds 2,000 texts (1,000 short, 1,000 of mixed length up to ~250 words) with all-MiniLM-L6-v2 through
our engine (in-process pool) and through fastembed's TextEmbedding, best of 3 each, and prints
sentences/s and `ratio engine/fastembed` (higher is better). Run: `make bench` or
`.venv/bin/python bench/engine.py [--model NAME] [--workers N] [--threads N]`.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import django

django.setup()

from django.conf import settings  # noqa: E402

from inference import catalog  # noqa: E402
from inference.embedding import resolve_model  # noqa: E402
from inference.engine.engine import Engine  # noqa: E402
from inference.engine.pool import InProcessPool, RunnerSettings  # noqa: E402
from inference.engine.types import EmbedRequest, InputType, Kind  # noqa: E402

WORDS = (
    "vector database search embedding model query point payload filter cluster region token price "
    "inference image text dense sparse index segment shard replica collection distance cosine dot "
    "the a of and to in is for on with as by at from that this be are was it an or"
).split()


def make_texts(count: int, seed: int = 7) -> list[str]:
    """Half short sentences, half of mixed length, deterministic."""
    rng = random.Random(seed)
    texts = []
    for i in range(count):
        n = rng.randint(5, 15) if i % 2 == 0 else rng.choice([5, 20, 60, 120, 250])
        texts.append(" ".join(rng.choice(WORDS) for _ in range(n)) + f" #{i}")
    return texts


def best_of(runs: int, fn: object) -> float:
    """The fastest of `runs` timings (least disturbed by other load on a noisy machine)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Run both, print the figures and the ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="sentence-transformers/all-minilm-l6-v2")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=settings.INFERENCE_WORKERS)
    parser.add_argument("--threads", type=int, default=settings.INFERENCE_ONNX_THREADS)
    parser.add_argument("--batch", type=int, default=settings.INFERENCE_BATCH_SIZE)
    args = parser.parse_args()

    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    entry = catalog.find(args.model)
    assert entry is not None and entry.spec.dim is not None
    model_dir = catalog.installed_path(settings.MODELS_DIR, entry.name)
    if model_dir is None:
        sys.exit(f"{entry.name} is not installed: run `make setup` first")
    texts = make_texts(args.count)

    pool = InProcessPool(args.workers, RunnerSettings(onnx_threads=args.threads))
    engine = Engine(resolve=resolve_model, pool=pool, batch_size=args.batch)
    requests = [EmbedRequest(entry.name, Kind.DOCUMENT, InputType.TEXT, t) for t in texts]
    engine.embed(requests[:64])  # load and warm up

    name = f"bench/{entry.name}"
    TextEmbedding.add_custom_model(
        model=name,
        pooling=PoolingType.MEAN,
        normalization=True,
        sources=ModelSource(hf=name),
        dim=entry.spec.dim,
        model_file="model.onnx",
        **({"output_name": entry.spec.onnx_output} if entry.spec.onnx_output else {}),  # type: ignore[arg-type]
    )
    cores = os.cpu_count() or 1
    fastembed = TextEmbedding(name, specific_model_path=str(model_dir), threads=cores)
    # fastembed truncates at the tokenizer's 512; the catalog's context window is what both must process.
    if entry.spec.context_window:
        fastembed.model.tokenizer.enable_truncation(max_length=entry.spec.context_window)  # type: ignore[attr-defined]
    list(fastembed.embed(texts[:64], batch_size=args.batch))

    engine_s = best_of(3, lambda: engine.embed(requests))
    fastembed_s = best_of(3, lambda: list(fastembed.embed(texts, batch_size=args.batch)))
    pool.shutdown()

    engine_rate = len(texts) / engine_s
    fastembed_rate = len(texts) / fastembed_s
    print(f"model: {entry.name}, texts: {len(texts)}, batch: {args.batch}, cores: {cores}")
    print(f"engine (workers={args.workers}, onnx threads={args.threads}): {engine_rate:.0f} sentences/s")
    print(f"fastembed (threads={cores}): {fastembed_rate:.0f} sentences/s")
    print(f"ratio engine/fastembed: {engine_rate / fastembed_rate:.2f}")


if __name__ == "__main__":
    main()
