"""The one interface the rest of the code calls: :meth:`Engine.embed`.

It resolves model names, checks every request before any work is done, computes identical requests once,
groups the rest by model into length-sorted batches, runs them on a worker pool and fans the results back
out in request order, with token usage counted once per distinct input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .pool import BatchJob, WorkerPool
from .types import EmbedRequest, EmbedResult, ModelSpec

# Resolves a model name as the caller wrote it to its spec and the directory of its files, raising
# ModelNotFound / ModelNotInstalled. Supplied by the app (catalog + MODELS_DIR); the engine has no catalog.
ModelResolver = Callable[[str], tuple[ModelSpec, Path]]


@dataclass
class Embeddings:
    """The result of one :meth:`Engine.embed` call.

    `results[i]` answers `requests[i]`. `usage` maps each model's canonical (catalog) name to the tokens
    processed, counting identical requests once: that is what is billed.
    """

    results: list[EmbedResult]
    usage: dict[str, int] = field(default_factory=dict)


class Engine:
    """Embeds requests with deduplication and batching on a :class:`WorkerPool`."""

    def __init__(self, *, resolve: ModelResolver, pool: WorkerPool, batch_size: int = 32) -> None:
        self.resolve = resolve
        self.pool = pool
        self.batch_size = batch_size

    def embed(self, requests: Sequence[EmbedRequest]) -> Embeddings:
        """Embed every request; raise an EngineError (nothing partially computed is returned) on bad input."""
        unique: dict[tuple[str, ...], int] = {}  # dedup key -> index into `distinct`
        distinct: list[EmbedRequest] = []
        slots: list[int] = []
        for request in requests:
            key = request.dedup_key()
            index = unique.get(key)
            if index is None:
                index = unique[key] = len(distinct)
                distinct.append(request)
            slots.append(index)

        # Resolve and check everything first: a bad last item must fail the call before any model runs.
        by_model: dict[str, tuple[ModelSpec, Path, list[int]]] = {}
        model_of: list[str] = []
        for index, request in enumerate(distinct):
            spec, model_dir = self.resolve(request.model)
            by_model.setdefault(spec.name, (spec, model_dir, []))[2].append(index)
            model_of.append(spec.name)
        for spec, model_dir, indices in by_model.values():
            self.pool.check(spec, model_dir, [distinct[i] for i in indices])

        jobs: list[BatchJob] = []
        job_indices: list[list[int]] = []
        for spec, model_dir, indices in by_model.values():
            # Sorting by length puts similar lengths in one batch, so little compute goes into padding.
            ordered = sorted(indices, key=lambda i: _length(distinct[i]))
            for start in range(0, len(ordered), self.batch_size):
                chunk = ordered[start : start + self.batch_size]
                jobs.append(BatchJob(spec, model_dir, tuple(distinct[i] for i in chunk)))
                job_indices.append(chunk)

        computed: dict[int, EmbedResult] = {}
        for chunk, job_results in zip(job_indices, self.pool.run(jobs), strict=True):
            computed.update(zip(chunk, job_results, strict=True))

        usage: dict[str, int] = {}
        for index, name in enumerate(model_of):
            usage[name] = usage.get(name, 0) + computed[index].tokens
        return Embeddings(results=[computed[slot] for slot in slots], usage=usage)

    def warm(self, model: str) -> None:
        """Load a model in the workers ahead of traffic (used when a cluster restarts)."""
        spec, model_dir = self.resolve(model)
        self.pool.warm(spec, model_dir)


def _length(request: EmbedRequest) -> int:
    """A cheap proxy for token length: characters of text (images all cost the same)."""
    return len(request.data) if isinstance(request.data, str) else 0
