"""Embedded backend: a cluster's collections as Qdrant Edge shards inside this process.

Qdrant Edge (``qdrant-edge-py`` 0.9.0) runs Qdrant's own shard engine in-process, one shard per
directory, with no notion of collections. :class:`EdgeStore` adds what the server would have:

* a collection registry (``registry.json``: name -> shard directory, the original ``CreateCollection``
  and the payload indexes), written atomically, so names, configs and ``GET /collections/{c}`` survive
  restarts (Edge itself only keeps ``edge_config.json``);
* shards that stay open for the life of the store, because Edge allows a single opener per directory,
  with a per-collection user count so ``delete_collection`` never closes a shard under a running query;
* an exclusive lock on the storage root, so a second process cannot open the same data;
* translation of REST models to Edge objects (the sibling modules of this package) and of Edge errors
  to Qdrant's status codes and messages.

``optimize()`` is exposed as an explicit maintenance call only: it holds the GIL for the whole run and
would freeze every request thread, so nothing on a request path calls it. Until it runs, searches are
exact (brute force), which stays in the low milliseconds up to ~100k points.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import qdrant_edge as qe
from qdrant_client.http import models

from ..base import (
    DEFAULT_VECTOR_NAME,
    BadRequest,
    CollectionExists,
    CollectionNotFound,
    JsonDict,
    PointId,
    PointNotFound,
    Selector,
    StorageError,
    StoreClosed,
    Unsupported,
    VectorConfig,
    WithPayload,
    WithVector,
    normalize_point_id,
    points_or_filter,
    selector_parts,
    update_result,
    validate_collection_name,
)
from .common import edge_enum, edge_enum_name
from .config import (
    PAYLOAD_ONLY_VECTOR,
    collection_config_json,
    edge_config,
    edge_index_schema,
    index_schema_json,
)
from .filters import edge_filter
from .points import (
    edge_point,
    edge_point_vectors,
    edge_with_payload,
    edge_with_vector,
    json_id,
    json_vector,
    record_json,
    scored_point_json,
)
from .query import DEFAULT_QUERY_LIMIT, QueryBuilder, VectorFetcher, VectorKey, edge_order_by, group_values

REGISTRY_FILE = "registry.json"
SHARDS_DIR = "shards"
LOCK_FILE = ".lock"
REGISTRY_FORMAT = 1
SINGLE_PEER_ID = 1  # the peer id a single-node Qdrant reports for its only peer

DEFAULT_SCROLL_LIMIT = 10
DEFAULT_GROUP_SIZE = 3
# query_groups searches limit * group_size * factor candidates first and grows the candidate set
# (x4 per round) until the groups are full or the cap is reached, like Qdrant's own grouping loop.
GROUP_CANDIDATE_FACTOR = 4
MIN_GROUP_CANDIDATES = 64
MAX_GROUP_CANDIDATES = 10_000

# Edge raises plain exceptions carrying the text of Qdrant's `OperationError`; these are the ones
# Qdrant turns into `CollectionError::BadInput`, i.e. HTTP 400 "Wrong input: ...".
_BAD_INPUT_PREFIXES = (
    "Vector dimension error",
    "Not existing vector name error",
    "Missed vector name error",
    "Payload type does not match",
    "Unable to infer type",
    "Validation failed",
    "Wrong usage of sparse vectors",
    "Wrong usage of multi vectors",
    "Wrong key of payload",
    "No range index for `order_by`",
    "No appropriate index for faceting",
    "Conversion between",
    "Non-finite number",
    "Expected number value",
)
_NO_POINT = re.compile(r"^No point with id (\S+?)(?: found)?$")


def map_edge_error(exc: BaseException) -> StorageError:
    """The Qdrant-style error for an exception raised by Qdrant Edge."""
    if isinstance(exc, StorageError):
        return exc
    message = str(exc)
    if type(exc).__name__ == "PanicException":
        # A Rust panic inside Edge: never the client's fault as far as we can tell.
        return StorageError(f"Service internal error: the embedded storage engine failed: {message}")
    if match := _NO_POINT.match(message):
        return PointNotFound(match.group(1))
    if "vector data config for vector" in message:
        # What Edge says for a query kind the named vector's type does not have (e.g. MMR on sparse).
        return BadRequest(f"Bad request: {message.split('error: ', 1)[-1]}")
    if message.startswith(_BAD_INPUT_PREFIXES):
        return BadRequest(f"Wrong input: {message}")
    if message.startswith("Wrong input: "):
        return BadRequest(message)
    if message.startswith("Bad request: "):
        return BadRequest(message)
    if isinstance(exc, ValueError | TypeError | OverflowError):
        # Raised by the bindings while converting arguments (bad UUID, negative id ...).
        return BadRequest(f"Wrong input: {message}")
    return StorageError(f"Service internal error: {message}")


@contextlib.contextmanager
def _edge_errors() -> Iterator[None]:
    """Convert whatever Edge raises, including pyo3's ``PanicException`` (a BaseException)."""
    try:
        yield
    except (StorageError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        raise map_edge_error(exc) from exc


def _merged(current: Any, diff: Any) -> Any:
    """``current`` (a pydantic model or None) with the set fields of ``diff`` applied."""
    update = diff.model_dump(exclude_none=True)
    if current is None:
        return diff
    return current.model_copy(update={k: getattr(diff, k) for k in update})


def _merge_vector_diffs(
    vectors: models.VectorParams | dict[str, models.VectorParams] | None,
    diffs: dict[str, models.VectorParamsDiff],
) -> models.VectorParams | dict[str, models.VectorParams]:
    """Dense vector params with ``VectorParamsDiff`` s applied (``""`` names the unnamed vector)."""
    named = (
        {DEFAULT_VECTOR_NAME: vectors} if isinstance(vectors, models.VectorParams) else dict(vectors or {})
    )
    for vector_name, diff in diffs.items():
        params = named.get(vector_name)
        if params is None:
            raise BadRequest(f"Wrong input: Not existing vector name error: {vector_name}")
        update: dict[str, Any] = {}
        if diff.hnsw_config is not None:
            update["hnsw_config"] = _merged(params.hnsw_config, diff.hnsw_config)
        if diff.quantization_config is not None:
            disabled = isinstance(diff.quantization_config, models.Disabled)
            update["quantization_config"] = None if disabled else diff.quantization_config
        if diff.on_disk is not None:
            update["on_disk"] = diff.on_disk
        named[vector_name] = params.model_copy(update=update)
    if isinstance(vectors, models.VectorParams):
        return named[DEFAULT_VECTOR_NAME]
    return named


@contextlib.contextmanager
def _formula_errors(*reqs: Any) -> Iterator[None]:
    """A formula Edge cannot evaluate for some point is the client's error (400), as in Qdrant.

    Edge reports it only as a cancelled operation, without the reason; Qdrant answers 400 for a variable
    that has no value and no default, or a result that is not a finite number.
    """
    try:
        yield
    except StorageError as exc:
        if "Operation cancelled" in exc.message and any(_has_formula(r) for r in reqs):
            raise BadRequest(
                "Bad request: the formula could not be evaluated for a point: a variable has no value and no "
                "default, or the result is not a finite number (e.g. ln or sqrt of a negative number, or a "
                "division by zero)"
            ) from None
        raise


def _has_formula(level: Any) -> bool:
    if isinstance(getattr(level, "query", None), models.FormulaQuery):
        return True
    prefetch = getattr(level, "prefetch", None)
    return any(
        _has_formula(p) for p in (prefetch if isinstance(prefetch, list) else [prefetch] if prefetch else [])
    )


def _only_vectors(point: JsonDict, with_vector: WithVector | None) -> JsonDict:
    """The point with only the vectors asked for (Edge's MMR returns them regardless)."""
    vector = point.get("vector")
    if vector is None or with_vector is True:
        return point
    if not with_vector:
        point["vector"] = None
    elif isinstance(vector, dict):
        point["vector"] = {k: v for k, v in vector.items() if k in with_vector}
    return point


def _sparse_dot(a: Mapping[int, float], b: Mapping[int, float]) -> float:
    if len(b) < len(a):
        a, b = b, a
    return sum(x * b[i] for i, x in a.items() if i in b)


def _mmr_order(
    hits: list[JsonDict], vectors: Mapping[Any, Any], target: models.SparseVector, lambda_: float, limit: int
) -> list[JsonDict]:
    """Greedy MMR selection of ``limit`` hits (ties go to the last maximum, as Qdrant's ``max_by_key``)."""
    as_map = {
        h["id"]: dict(zip(v["indices"], v["values"], strict=True)) if v else {}
        for h in hits
        for v in [vectors.get(h["id"])]
    }
    query = dict(zip(target.indices, target.values, strict=True))
    relevance = {pid: _sparse_dot(query, vec) for pid, vec in as_map.items()}
    pending = list(range(len(hits)))

    def last_argmax(values: list[float]) -> int:
        best = max(values)
        return max(i for i, v in enumerate(values) if v == best)

    def take(position: int) -> int:
        # Qdrant's `swap_remove`: the last pending candidate moves into the freed slot.
        chosen = pending[position]
        pending[position] = pending[-1]
        pending.pop()
        return chosen

    selected = [take(last_argmax([relevance[hits[i]["id"]] for i in pending]))]
    while len(selected) < limit and pending:
        scores = []
        for i in pending:
            redundancy = max(_sparse_dot(as_map[hits[i]["id"]], as_map[hits[j]["id"]]) for j in selected)
            scores.append(lambda_ * relevance[hits[i]["id"]] - (1.0 - lambda_) * redundancy)
        selected.append(take(last_argmax(scores)))
    return [hits[i] for i in selected]


def _op(factory: Any, *args: Any, **kwargs: Any) -> Any:
    """Build an Edge update operation; bad arguments (an invalid JSON path in ``key`` ...) are 400s."""
    with _edge_errors():
        return factory(*args, **kwargs)


def _fetch_vectors(coll: _Collection, keys: list[VectorKey]) -> dict[VectorKey, Any]:
    """The vectors ``keys`` name in one collection; a point without the vector is a 400."""
    ids = list(dict.fromkeys(pid for _, pid, _ in keys))
    names = list(dict.fromkeys(name for _, _, name in keys))
    with _edge_errors():
        records = coll.shard.retrieve(ids, False, names)
    vectors: dict[tuple[int | str, str], Any] = {}
    for record in records:
        pid = json_id(record.id)
        vector = record.vector
        if isinstance(vector, dict):
            for name in names:
                if name in vector:
                    vectors[(pid, name)] = vector[name]
        elif vector is not None:
            # Edge returns a lone unnamed vector as a plain list.
            vectors[(pid, DEFAULT_VECTOR_NAME)] = vector
    existing = {json_id(r.id) for r in records}
    found: dict[VectorKey, Any] = {}
    for key in keys:
        _, pid, name = key
        if (pid, name) in vectors:
            found[key] = vectors[(pid, name)]
        elif pid in existing:
            raise BadRequest(f"Wrong input: point {pid} has no vector `{name or '<unnamed>'}`")
    return found


class AliasNotFound(StorageError):
    """Deleting or renaming an alias that does not exist: 404."""

    default_status = 404

    def __init__(self, alias: str) -> None:
        super().__init__(f"Not found: Alias {alias} does not exists!")


class _Collection:
    """A registered collection: its shard (opened on first use), config and in-flight user count."""

    def __init__(
        self,
        name: str,
        directory: str,
        config: models.CreateCollection,
        payload_indexes: dict[str, JsonDict],
    ) -> None:
        self.name = name
        self.directory = directory
        self.config = config
        self.payload_indexes = payload_indexes
        self.vectors = VectorConfig.from_params(config.vectors, config.sparse_vectors)
        self.shard: Any = None
        self.users = 0
        # Qdrant returns the WAL sequence number as `operation_id`; Edge does not expose it, so the
        # store numbers writes per collection and process (monotonic, not persisted).
        self.op_ids = itertools.count()

    def registry_entry(self) -> JsonDict:
        return {
            "dir": self.directory,
            "config": self.config.model_dump(mode="json", exclude_none=True),
            "payload_indexes": self.payload_indexes,
        }

    def next_op(self) -> JsonDict:
        return update_result(next(self.op_ids))


class EdgeStore:
    """The :class:`~inference.storage.base.VectorStore` of one cluster on Qdrant Edge, under ``root``.

    Safe to share between threads: collection create/delete and registry writes take the store lock,
    point operations and queries run concurrently on the open shards. Only one process may open a
    root at a time (``StorageError`` otherwise). Call :meth:`close` (or use it as a context manager)
    to flush and release the shards; a new ``EdgeStore`` on the same root then sees all the data.
    """

    def __init__(self, root: Path | str, *, search_threads: int | None = 1) -> None:
        self.root = Path(root)
        # Edge's query holds the GIL while it waits for its search pool. A small collection is one
        # segment, searched by one pool thread, so a bigger pool buys nothing and adds threads that the
        # calling thread waits for the OS to schedule (bench: mean query under CPU load 0.34 -> 0.24 ms).
        self._search_threads = search_threads
        self._shards_dir = self.root / SHARDS_DIR
        self._shards_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._acquire_root_lock()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self._collections: dict[str, _Collection] = {}
        self._aliases: dict[str, str] = {}  # alias -> collection, persisted in the registry
        try:
            self._load_registry()
            self._remove_orphans()
        except BaseException:
            self._release_root_lock()
            raise

    def __repr__(self) -> str:
        return f"EdgeStore(root={str(self.root)!r})"

    def __enter__(self) -> EdgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------
    # Root lock and registry
    # ----------------------------------------------------------------------------------------

    def _acquire_root_lock(self) -> IO[str]:
        handle = open(self.root / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the store's life
        try:
            # Edge would refuse a second opener of a shard anyway ("Can't init WAL"), but only once a
            # shard is touched; locking the root fails fast and also protects the registry file.
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise StorageError(
                f"Service internal error: the storage at {self.root} is in use by another process"
            ) from None
        return handle

    def _release_root_lock(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
        self._lock_file.close()

    def _load_registry(self) -> None:
        path = self.root / REGISTRY_FILE
        if not path.exists():
            return
        data = json.loads(path.read_text(encoding="utf-8"))
        self._aliases = dict(data.get("aliases") or {})
        for name, entry in data.get("collections", {}).items():
            config = models.CreateCollection.model_validate(entry["config"])
            self._collections[name] = _Collection(
                name, entry["dir"], config, dict(entry.get("payload_indexes") or {})
            )

    def _write_registry(self) -> None:
        """Persist the registry atomically (temp file + fsync + os.replace); caller holds the lock."""
        data = {
            "format": REGISTRY_FORMAT,
            "collections": {name: c.registry_entry() for name, c in sorted(self._collections.items())},
            "aliases": dict(sorted(self._aliases.items())),
        }
        fd, tmp = tempfile.mkstemp(prefix=".registry-", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.root / REGISTRY_FILE)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)

    def _remove_orphans(self) -> None:
        """Delete shard directories no collection owns (a create or delete interrupted by a crash)."""
        owned = {c.directory for c in self._collections.values()}
        for child in self._shards_dir.iterdir():
            if child.is_dir() and child.name not in owned:
                shutil.rmtree(child, ignore_errors=True)
        for stale in self.root.glob(".registry-*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()

    # ----------------------------------------------------------------------------------------
    # Access to collections
    # ----------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed()

    def _resolve(self, name: str) -> _Collection:
        """The collection called ``name`` or aliased as ``name``; caller holds the lock."""
        coll = self._collections.get(name)
        if coll is None and name in self._aliases:
            coll = self._collections.get(self._aliases[name])
        if coll is None:
            raise CollectionNotFound(name)
        return coll

    @contextlib.contextmanager
    def _use(self, name: str) -> Iterator[_Collection]:
        """The open collection ``name``, counted as in use so it cannot be closed meanwhile."""
        validate_collection_name(name)
        with self._lock:
            self._check_open()
            coll = self._resolve(name)
            if coll.shard is None:
                with _edge_errors():
                    coll.shard = qe.EdgeShard.load(str(self._shards_dir / coll.directory))
            coll.users += 1
        try:
            yield coll
        finally:
            with self._lock:
                coll.users -= 1
                if coll.users == 0:
                    self._idle.notify_all()

    def _update(self, name: str, operation: Any) -> JsonDict:
        with self._use(name) as coll, _edge_errors():
            coll.shard.update(operation)
            return coll.next_op()

    # ----------------------------------------------------------------------------------------
    # Collections
    # ----------------------------------------------------------------------------------------

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        with self._lock:
            self._check_open()
            return sorted(self._collections)

    def collection_exists(self, name: str) -> bool:
        """Whether ``name`` is a collection of this store."""
        validate_collection_name(name)
        with self._lock:
            self._check_open()
            return name in self._collections

    def create_collection(self, name: str, config: models.CreateCollection) -> None:
        """Create a collection with its own Edge shard; :class:`CollectionExists` if the name is taken."""
        validate_collection_name(name)
        # Validates the config before anything touches disk.
        shard_config = edge_config(config, search_threads=self._search_threads)
        with self._lock:
            self._check_open()
            if name in self._collections or name in self._aliases:
                raise CollectionExists(name)
            # Directories are named by a fresh id rather than the collection name: any valid Qdrant
            # name is then safe on disk, and re-creating a name never meets a half-deleted directory.
            directory = f"c-{uuid.uuid4().hex}"
            path = self._shards_dir / directory
            try:
                with _edge_errors():
                    shard = qe.EdgeShard.create(str(path), shard_config)
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise
            coll = _Collection(name, directory, config, {})
            coll.shard = shard
            self._collections[name] = coll
            try:
                self._write_registry()
            except BaseException:
                del self._collections[name]
                with contextlib.suppress(Exception):
                    shard.close()
                shutil.rmtree(path, ignore_errors=True)
                raise

    def delete_collection(self, name: str) -> bool:
        """Drop a collection and its files; ``False`` if it does not exist (Qdrant answers 200 false)."""
        validate_collection_name(name)
        with self._lock:
            self._check_open()
            coll = self._collections.pop(name, None)
            if coll is None:
                return False
            aliases = self._aliases
            # Qdrant drops the aliases of a deleted collection with it.
            self._aliases = {a: c for a, c in aliases.items() if c != name}
            try:
                self._write_registry()
            except BaseException:
                self._collections[name] = coll
                self._aliases = aliases
                raise
            # New requests already get 404; wait for the ones still running on this shard.
            while coll.users:
                self._idle.wait()
            shard, coll.shard = coll.shard, None
        if shard is not None:
            with contextlib.suppress(Exception):
                shard.close()
        shutil.rmtree(self._shards_dir / coll.directory, ignore_errors=True)
        return True

    def get_collection(self, name: str) -> JsonDict:
        """``CollectionInfo``: counts from the shard, config from the registry."""
        with self._use(name) as coll, _edge_errors():
            info = coll.shard.info()
            edge_schema = info.payload_schema
            payload_schema: JsonDict = {}
            for field_name, schema in coll.payload_indexes.items():
                entry = edge_schema.get(field_name)
                payload_schema[field_name] = {**schema, "points": entry.points if entry is not None else 0}
            for field_name, entry in edge_schema.items():
                if field_name not in payload_schema:
                    payload_schema[field_name] = {
                        "data_type": edge_enum_name(entry.data_type),
                        "points": entry.points,
                    }
            return {
                "status": "green",
                "optimizer_status": "ok",
                "indexed_vectors_count": info.indexed_vectors_count,
                "points_count": info.points_count,
                "segments_count": info.segments_count,
                "config": collection_config_json(coll.config),
                "payload_schema": payload_schema,
            }

    def vector_config(self, name: str) -> VectorConfig:
        """The dense / sparse / multivector configuration of a collection."""
        validate_collection_name(name)
        with self._lock:
            self._check_open()
            return self._resolve(name).vectors

    def create_payload_index(
        self, name: str, field_name: str, field_schema: models.PayloadFieldSchema
    ) -> JsonDict:
        """Index a payload field (kept across restarts by Edge; recorded in the registry for info)."""
        schema = edge_index_schema(field_schema)
        with self._use(name) as coll:
            with _edge_errors():
                coll.shard.update(qe.UpdateOperation.create_field_index(field_name, schema))
            with self._lock:
                coll.payload_indexes[field_name] = index_schema_json(field_schema)
                self._write_registry()
            return coll.next_op()

    def delete_payload_index(self, name: str, field_name: str) -> JsonDict:
        """Drop a payload index."""
        with self._use(name) as coll:
            with _edge_errors():
                coll.shard.update(qe.UpdateOperation.delete_field_index(field_name))
            with self._lock:
                coll.payload_indexes.pop(field_name, None)
                self._write_registry()
            return coll.next_op()

    def optimize(self, name: str) -> bool:
        """Build indexes / merge segments of a collection now. MAINTENANCE ONLY.

        Edge's ``optimize()`` holds the GIL for the whole run (tens of seconds at 100k points), which
        freezes every Python thread of the process: run it from a maintenance task or at start-up,
        never from a request handler. Returns whether anything was optimized.
        """
        with self._use(name) as coll, _edge_errors():
            return bool(coll.shard.optimize())

    def update_collection(self, name: str, req: models.UpdateCollection) -> None:
        """``PATCH /collections/{name}``: merge the diff into the recorded config.

        Edge fixes index, quantization and optimizer settings when a shard is created, so those parts
        are recorded (and reported by ``get_collection``) for the shard's next rebuild but do not change
        how the running shard searches; metadata and strict mode take effect at once. Changing what a
        sparse vector means (its modifier) would silently change scores, so it is refused.
        """
        with self._use(name) as coll, self._lock:
            config = coll.config.model_copy(deep=True)
            if req.vectors:
                config.vectors = _merge_vector_diffs(config.vectors, req.vectors)
            if req.sparse_vectors:
                sparse = dict(config.sparse_vectors or {})
                for vector_name, params in req.sparse_vectors.items():
                    current = sparse.get(vector_name)
                    if current is None:
                        raise BadRequest(f"Wrong input: Not existing vector name error: {vector_name}")
                    if params.modifier is not None and params.modifier != (
                        current.modifier or models.Modifier.NONE
                    ):
                        raise Unsupported("changing the modifier of a sparse vector")
                    if params.index is not None:
                        sparse[vector_name] = current.model_copy(update={"index": params.index})
                config.sparse_vectors = sparse
            for diff, attr in (
                (req.optimizers_config, "optimizers_config"),
                (req.hnsw_config, "hnsw_config"),
            ):
                if diff is not None:
                    setattr(config, attr, _merged(getattr(config, attr), diff))
            if req.params is not None:
                for key in req.params.model_dump(exclude_none=True):
                    if key in models.CreateCollection.model_fields:
                        setattr(config, key, getattr(req.params, key))
            if req.quantization_config is not None:
                if isinstance(req.quantization_config, models.Disabled):
                    config.quantization_config = None
                else:
                    config.quantization_config = req.quantization_config
            if req.strict_mode_config is not None:
                config.strict_mode_config = _merged(config.strict_mode_config, req.strict_mode_config)
            if req.metadata is not None:
                metadata = {**(config.metadata or {}), **req.metadata}
                config.metadata = {k: v for k, v in metadata.items() if v is not None} or None
            previous = coll.config
            coll.config = config
            try:
                self._write_registry()
            except BaseException:
                coll.config = previous
                raise

    def create_vector(self, name: str, vector_name: str, config: models.VectorNameConfig) -> JsonDict:
        """``PUT /collections/{name}/vectors/{vector_name}``: add a dense or sparse named vector."""
        if vector_name == PAYLOAD_ONLY_VECTOR:
            raise BadRequest(f"Wrong input: `{vector_name}` is reserved by the embedded storage")
        with self._use(name) as coll:
            if vector_name in coll.vectors.dense or vector_name in coll.vectors.sparse:
                raise BadRequest(f"Wrong input: Vector with name `{vector_name}` already exists")
            if isinstance(coll.config.vectors, models.VectorParams):
                raise BadRequest(
                    "Wrong input: Cannot add a named vector to a collection with a single unnamed vector"
                )
            new = coll.config.model_copy(deep=True)
            if isinstance(config, models.DenseVectorNameConfig):
                dense = config.dense
                params = models.VectorParams(
                    size=dense.size,
                    distance=dense.distance,
                    multivector_config=dense.multivector_config,
                    datatype=models.Datatype(dense.datatype.value) if dense.datatype else None,
                )
                edge_config(models.CreateCollection(vectors={vector_name: params}))  # validates
                operation = qe.UpdateOperation.create_dense_vector(
                    vector_name,
                    dense.size,
                    edge_enum(qe.Distance, dense.distance),
                    multivector_config=(
                        qe.MultiVectorConfig(
                            edge_enum(qe.MultiVectorComparator, dense.multivector_config.comparator)
                        )
                        if dense.multivector_config
                        else None
                    ),
                    datatype=edge_enum(qe.VectorStorageDatatype, dense.datatype) if dense.datatype else None,
                )
                new.vectors = {**dict(new.vectors or {}), vector_name: params}
            else:
                sparse = config.sparse
                operation = qe.UpdateOperation.create_sparse_vector(
                    vector_name,
                    modifier=edge_enum(qe.Modifier, sparse.modifier) if sparse.modifier else None,
                    datatype=edge_enum(qe.VectorStorageDatatype, sparse.datatype)
                    if sparse.datatype
                    else None,
                )
                new.sparse_vectors = {
                    **(new.sparse_vectors or {}),
                    vector_name: models.SparseVectorParams(modifier=sparse.modifier),
                }
            return self._apply_vector_change(coll, operation, new)

    def delete_vector(self, name: str, vector_name: str) -> JsonDict:
        """``DELETE /collections/{name}/vectors/{vector_name}``: drop a named vector and its data."""
        with self._use(name) as coll:
            new = coll.config.model_copy(deep=True)
            if isinstance(new.vectors, dict) and vector_name in new.vectors:
                new.vectors = {k: v for k, v in new.vectors.items() if k != vector_name}
            elif new.sparse_vectors and vector_name in new.sparse_vectors:
                new.sparse_vectors = {k: v for k, v in new.sparse_vectors.items() if k != vector_name}
            else:
                raise BadRequest(f"Wrong input: Not existing vector name error: {vector_name}")
            if not new.vectors and not new.sparse_vectors:
                # Edge needs one vector per shard: keep the hidden one of payload-only collections.
                with _edge_errors():
                    coll.shard.update(qe.UpdateOperation.create_sparse_vector(PAYLOAD_ONLY_VECTOR))
            return self._apply_vector_change(coll, qe.UpdateOperation.delete_vector_name(vector_name), new)

    def _apply_vector_change(
        self, coll: _Collection, operation: Any, config: models.CreateCollection
    ) -> JsonDict:
        with self._lock:
            with _edge_errors():
                coll.shard.update(operation)
            previous = coll.config, coll.vectors
            coll.config = config
            coll.vectors = VectorConfig.from_params(config.vectors, config.sparse_vectors)
            try:
                self._write_registry()
            except BaseException:
                coll.config, coll.vectors = previous
                raise
            return coll.next_op()

    # Aliases ------------------------------------------------------------------------------------

    def update_aliases(self, actions: Sequence[models.AliasOperations]) -> None:
        """Create / delete / rename aliases, all or nothing (``POST /collections/aliases``)."""
        with self._lock:
            self._check_open()
            aliases = dict(self._aliases)
            for action in actions:
                if isinstance(action, models.CreateAliasOperation):
                    op = action.create_alias
                    validate_collection_name(op.alias_name)
                    if op.collection_name not in self._collections:
                        raise CollectionNotFound(op.collection_name)
                    if op.alias_name in self._collections:
                        raise BadRequest(f"Wrong input: Collection `{op.alias_name}` already exists!")
                    aliases[op.alias_name] = op.collection_name
                elif isinstance(action, models.DeleteAliasOperation):
                    if aliases.pop(action.delete_alias.alias_name, None) is None:
                        raise AliasNotFound(action.delete_alias.alias_name)
                else:
                    rename = action.rename_alias
                    validate_collection_name(rename.new_alias_name)
                    target = aliases.pop(rename.old_alias_name, None)
                    if target is None:
                        raise AliasNotFound(rename.old_alias_name)
                    if rename.new_alias_name in self._collections:
                        raise BadRequest(f"Wrong input: Collection `{rename.new_alias_name}` already exists!")
                    aliases[rename.new_alias_name] = target
            previous, self._aliases = self._aliases, aliases
            try:
                self._write_registry()
            except BaseException:
                self._aliases = previous
                raise

    def list_aliases(self, collection: str | None = None) -> list[JsonDict]:
        """``[{"alias_name", "collection_name"}]``, of one collection (404 if it does not exist) or all."""
        with self._lock:
            self._check_open()
            if collection is not None:
                validate_collection_name(collection)
                if collection not in self._collections:
                    raise CollectionNotFound(collection)
            return [
                {"alias_name": alias, "collection_name": target}
                for alias, target in sorted(self._aliases.items())
                if collection is None or target == collection
            ]

    def cluster_info(self, name: str) -> JsonDict:
        """``CollectionClusterInfo`` of a single-node Qdrant: one local shard, nothing remote."""
        with self._use(name) as coll, _edge_errors():
            points = coll.shard.info().points_count
        return {
            "peer_id": SINGLE_PEER_ID,
            "shard_count": 1,
            "local_shards": [{"shard_id": 0, "points_count": points, "state": "Active"}],
            "remote_shards": [],
            "shard_transfers": [],
        }

    # ----------------------------------------------------------------------------------------
    # Points
    # ----------------------------------------------------------------------------------------

    def upsert(
        self,
        name: str,
        points: Sequence[models.PointStruct],
        *,
        update_filter: models.Filter | None = None,
        update_mode: models.UpdateMode | None = None,
    ) -> JsonDict:
        """Insert or replace points; durable in the WAL when this returns."""
        self._strict(name, "upsert_max_batchsize", len(points), "upsert batch size")
        with _edge_errors():
            edge_points = [edge_point(p) for p in points]
        operation = _op(
            qe.UpdateOperation.upsert_points,
            edge_points,
            condition=edge_filter(update_filter),
            update_mode=edge_enum(qe.UpdateMode, update_mode) if update_mode else None,
        )
        return self._update(name, operation)

    def retrieve(
        self,
        name: str,
        ids: Sequence[PointId],
        *,
        with_payload: WithPayload = True,
        with_vector: WithVector = False,
    ) -> list[JsonDict]:
        """Records of the given ids that exist."""
        point_ids = [normalize_point_id(p) for p in ids]
        with self._use(name) as coll, _edge_errors():
            records = coll.shard.retrieve(
                point_ids,
                edge_with_payload(with_payload, True),
                edge_with_vector(with_vector),
            )
        return [record_json(r) for r in records]

    def scroll(self, name: str, req: models.ScrollRequest) -> JsonDict:
        """A page of points by id (or by a payload field with ``order_by``) and the next offset."""
        with _edge_errors():
            request = qe.ScrollRequest(
                offset=normalize_point_id(req.offset) if req.offset is not None else None,
                limit=DEFAULT_SCROLL_LIMIT if req.limit is None else req.limit,
                filter=edge_filter(req.filter),
                with_payload=edge_with_payload(req.with_payload, True),
                with_vector=edge_with_vector(req.with_vector),
                order_by=edge_order_by(req.order_by) if req.order_by is not None else None,
            )
        with self._use(name) as coll, _edge_errors():
            records, next_offset = coll.shard.scroll(request)
        return {
            "points": [record_json(r) for r in records],
            "next_page_offset": json_id(next_offset) if next_offset is not None else None,
        }

    def count(self, name: str, req: models.CountRequest) -> JsonDict:
        """Number of points matching the filter (exact unless ``exact`` is false)."""
        with _edge_errors():
            request = qe.CountRequest(
                exact=True if req.exact is None else req.exact, filter=edge_filter(req.filter)
            )
        with self._use(name) as coll, _edge_errors():
            return {"count": coll.shard.count(request)}

    def delete_points(self, name: str, selector: Selector) -> JsonDict:
        """Delete points by ids or by filter (missing ids are ignored, as in Qdrant)."""
        ids, flt = selector_parts(selector)
        if ids is not None:
            operation = _op(qe.UpdateOperation.delete_points, ids)
        else:
            operation = _op(qe.UpdateOperation.delete_points_by_filter, edge_filter(flt))
        return self._update(name, operation)

    def set_payload(self, name: str, req: models.SetPayload) -> JsonDict:
        """Merge ``payload`` into the points' payloads (under ``key`` if given)."""
        ids, flt = points_or_filter(req.points, req.filter)
        if ids is not None:
            operation = _op(qe.UpdateOperation.set_payload, ids, req.payload, key=req.key)
        else:
            operation = _op(
                qe.UpdateOperation.set_payload_by_filter, edge_filter(flt), req.payload, key=req.key
            )
        return self._update(name, operation)

    def overwrite_payload(self, name: str, req: models.SetPayload) -> JsonDict:
        """Replace the points' payloads with ``payload``."""
        ids, flt = points_or_filter(req.points, req.filter)
        if ids is not None:
            operation = _op(qe.UpdateOperation.overwrite_payload, ids, req.payload, key=req.key)
        else:
            operation = _op(
                qe.UpdateOperation.overwrite_payload_by_filter, edge_filter(flt), req.payload, key=req.key
            )
        return self._update(name, operation)

    def delete_payload(self, name: str, req: models.DeletePayload) -> JsonDict:
        """Remove ``keys`` from the points' payloads."""
        ids, flt = points_or_filter(req.points, req.filter)
        if ids is not None:
            operation = _op(qe.UpdateOperation.delete_payload, ids, list(req.keys))
        else:
            operation = _op(qe.UpdateOperation.delete_payload_by_filter, edge_filter(flt), list(req.keys))
        return self._update(name, operation)

    def clear_payload(self, name: str, selector: Selector) -> JsonDict:
        """Remove the whole payload of the selected points."""
        ids, flt = selector_parts(selector)
        if ids is not None:
            operation = _op(qe.UpdateOperation.clear_payload, ids)
        else:
            operation = _op(qe.UpdateOperation.clear_payload_by_filter, edge_filter(flt))
        return self._update(name, operation)

    def update_vectors(
        self,
        name: str,
        points: Sequence[models.PointVectors],
        *,
        update_filter: models.Filter | None = None,
    ) -> JsonDict:
        """Replace the given named vectors of existing points (others are kept)."""
        operation = _op(
            qe.UpdateOperation.update_vectors,
            [edge_point_vectors(p) for p in points],
            condition=edge_filter(update_filter),
        )
        return self._update(name, operation)

    def delete_vectors(self, name: str, req: models.DeleteVectors) -> JsonDict:
        """Remove the named vectors from the selected points."""
        ids, flt = points_or_filter(req.points, req.filter)
        names = list(req.vector)
        config = self.vector_config(name)
        for vector_name in names:
            # Edge accepts unknown names silently; Qdrant rejects them.
            if vector_name not in config.dense and vector_name not in config.sparse:
                raise BadRequest(f"Wrong input: Not existing vector name error: {vector_name}")
        if ids is not None:
            operation = _op(qe.UpdateOperation.delete_vectors, ids, names)
        else:
            operation = _op(qe.UpdateOperation.delete_vectors_by_filter, edge_filter(flt), names)
        return self._update(name, operation)

    # ----------------------------------------------------------------------------------------
    # Queries
    # ----------------------------------------------------------------------------------------

    def _fetcher(self, coll: _Collection) -> VectorFetcher:
        """Looks up the stored vectors of points a query names by id, here or in its ``lookup_from``."""

        def fetch(keys: list[VectorKey]) -> dict[VectorKey, Any]:
            found: dict[VectorKey, Any] = {}
            for source in dict.fromkeys(k[0] for k in keys):
                wanted = [k for k in keys if k[0] == source]
                if source is None:
                    found.update(_fetch_vectors(coll, wanted))
                else:
                    with self._use(source) as other:
                        found.update(_fetch_vectors(other, wanted))
            return found

        return fetch

    def query(self, name: str, req: models.QueryRequest) -> JsonDict:
        """Universal query: nearest / recommend / discover / context / fusion / order_by / formula ..."""
        self._strict_query(name, req)
        if self._is_sparse_mmr(name, req):
            return self._sparse_mmr(name, req)
        with _formula_errors(req), self._use(name) as coll, _edge_errors():
            request = QueryBuilder(self._fetcher(coll)).build(req)
            points = coll.shard.query(request)
        return {"points": [_only_vectors(scored_point_json(p), req.with_vector) for p in points]}

    def query_batch(self, name: str, reqs: Sequence[models.QueryRequest]) -> list[JsonDict]:
        """Several queries planned together by Edge; one ``{"points": [...]}`` per request."""
        self._strict(name, "search_max_batchsize", len(reqs), "number of queries in a batch")
        for r in reqs:
            self._strict_query(name, r)
        if any(self._is_sparse_mmr(name, r) for r in reqs):
            return [self.query(name, r) for r in reqs]
        with _formula_errors(*reqs), self._use(name) as coll, _edge_errors():
            requests = [QueryBuilder(self._fetcher(coll)).build(r) for r in reqs]
            results = coll.shard.query_batch(qe.QueryBatchRequest(requests)) if requests else []
        return [
            {"points": [_only_vectors(scored_point_json(p), r.with_vector) for p in points]}
            for r, points in zip(reqs, results, strict=True)
        ]

    def _strict(self, name: str, setting: str, value: int, what: str) -> None:
        """Refuse a request over a limit of the collection's strict mode (the cheap ones are enforced)."""
        validate_collection_name(name)
        with self._lock:
            self._check_open()
            config = self._resolve(name).config.strict_mode_config
        limit = getattr(config, setting, None) if config is not None and config.enabled else None
        if limit is not None and value > limit:
            raise BadRequest(f"Bad request: {what} {value} exceeds the strict mode limit {setting}={limit}")

    def _strict_query(self, name: str, req: models.QueryRequest | models.QueryGroupsRequest) -> None:
        limit = DEFAULT_QUERY_LIMIT if req.limit is None else req.limit
        self._strict(name, "max_query_limit", limit + (getattr(req, "offset", None) or 0), "query limit")

    def _is_sparse_mmr(self, name: str, req: models.QueryRequest) -> bool:
        query = req.query
        if not isinstance(query, models.NearestQuery) or query.mmr is None:
            return False
        return (req.using or DEFAULT_VECTOR_NAME) in self.vector_config(name).sparse

    def _sparse_mmr(self, name: str, req: models.QueryRequest) -> JsonDict:
        """MMR on a sparse vector, which Edge lacks: nearest candidates, then Qdrant's greedy re-ranking.

        Relevance and redundancy are sparse dot products (as qdrant-client's local mode computes them);
        hits keep their search scores, and `offset` applies to the re-ranked list.
        """
        query = req.query
        assert isinstance(query, models.NearestQuery) and query.mmr is not None
        using = req.using or DEFAULT_VECTOR_NAME
        limit = DEFAULT_QUERY_LIMIT if req.limit is None else req.limit
        offset = req.offset or 0
        diversity = 0.5 if query.mmr.diversity is None else query.mmr.diversity
        if not 0.0 <= diversity <= 1.0:
            raise BadRequest("Wrong input: MMR diversity must be between 0.0 and 1.0")
        target = query.nearest
        if not isinstance(target, models.SparseVector):
            point_id = normalize_point_id(target)
            records = self.retrieve(name, [point_id], with_payload=False, with_vector=[using])
            if not records:
                raise PointNotFound(point_id)
            record = records[0]
            target = models.SparseVector.model_validate(record["vector"][using])
        candidates_limit = query.mmr.candidates_limit or limit + offset
        search = req.model_copy(
            update={
                "query": models.NearestQuery(nearest=query.nearest),
                "limit": candidates_limit,
                "offset": 0,
            }
        )
        hits = self.query(name, search)["points"]
        if not hits:
            return {"points": []}
        vectors = {
            r["id"]: r["vector"].get(using)
            for r in self.retrieve(name, [h["id"] for h in hits], with_payload=False, with_vector=[using])
        }
        chosen = _mmr_order(hits, vectors, target, 1.0 - diversity, limit + offset)
        return {"points": chosen[offset:]}

    def query_groups(self, name: str, req: models.QueryGroupsRequest) -> JsonDict:
        """Best ``limit`` groups of up to ``group_size`` hits by the payload field ``group_by``.

        Edge has no grouping, so this runs the query for a candidate set (limit * group_size * 4 at
        first, growing x4 up to 10,000) with only the group field as payload, groups hits in score
        order, then fetches payload / vectors of the chosen hits as requested.
        """
        self._strict_query(name, req)
        limit = DEFAULT_QUERY_LIMIT if req.limit is None else req.limit
        group_size = DEFAULT_GROUP_SIZE if req.group_size is None else req.group_size
        if limit <= 0 or group_size <= 0:
            return {"groups": []}
        key = req.group_by
        candidates = min(
            max(limit * group_size * GROUP_CANDIDATE_FACTOR, MIN_GROUP_CANDIDATES), MAX_GROUP_CANDIDATES
        )
        with self._use(name) as coll, _edge_errors():
            builder = QueryBuilder(self._fetcher(coll))
            while True:
                request = builder.build(
                    req,
                    limit=candidates,
                    offset=0,
                    with_payload=qe.PayloadSelector.Include([key]),
                    with_vector=False,
                )
                hits = coll.shard.query(request)
                groups: dict[int | str, list[Any]] = {}
                for hit in hits:
                    for value in group_values(hit.payload, key):
                        members = groups.get(value)
                        if members is None:
                            if len(groups) >= limit:
                                continue
                            members = groups[value] = []
                        if len(members) < group_size:
                            members.append(hit)
                full = len(groups) >= limit and all(len(m) >= group_size for m in groups.values())
                if full or len(hits) < candidates or candidates >= MAX_GROUP_CANDIDATES:
                    break
                candidates = min(candidates * GROUP_CANDIDATE_FACTOR, MAX_GROUP_CANDIDATES)

            with_payload = edge_with_payload(req.with_payload, False)
            with_vector = edge_with_vector(req.with_vector)
            records: dict[int | str, Any] = {}
            if with_payload is not False or with_vector is not False:
                ids = list(dict.fromkeys(json_id(h.id) for m in groups.values() for h in m))
                for record in coll.shard.retrieve(ids, with_payload, with_vector):
                    records[json_id(record.id)] = record

        out = []
        for value, members in groups.items():
            group_hits = []
            for hit in members:
                point = scored_point_json(hit)
                record = records.get(point["id"])
                point["payload"] = (
                    record.payload if record is not None and with_payload is not False else None
                )
                point["vector"] = (
                    json_vector(record.vector) if record is not None and with_vector is not False else None
                )
                group_hits.append(point)
            out.append({"id": value, "hits": group_hits})
        if req.with_lookup is not None:
            self._add_lookups(out, req.with_lookup)
        return {"groups": out}

    def _add_lookups(self, groups: list[JsonDict], lookup: str | models.WithLookup) -> None:
        """``with_lookup``: each group gets the point of the lookup collection whose id is the group id."""
        if isinstance(lookup, str):
            lookup = models.WithLookup(collection=lookup)
        with_payload = edge_with_payload(lookup.with_payload, True)
        with_vector = edge_with_vector(lookup.with_vectors)
        ids: list[int | str] = []
        for group in groups:
            try:
                ids.append(normalize_point_id(group["id"]))
            except BadRequest:
                continue  # a group value that cannot be a point id has nothing to look up
        with self._use(lookup.collection) as other, _edge_errors():
            records = {
                json_id(r.id): record_json(r) for r in other.shard.retrieve(ids, with_payload, with_vector)
            }
        for group in groups:
            try:
                key = normalize_point_id(group["id"])
            except BadRequest:
                key = None
            group["lookup"] = records.get(key) if key is not None else None

    def facet(self, name: str, req: models.FacetRequest) -> JsonDict:
        """Counts of the values of a payload field (needs a keyword / integer / bool / uuid index).

        Ordered by count, then by value, as Qdrant does. Edge cuts its list at ``limit`` without a
        stable order among equal counts, so values tied at the cut could change from call to call: this
        asks for more values until the cut falls between two different counts (or all values are in).
        """
        limit = 10 if req.limit is None else req.limit
        if limit < 0:
            raise BadRequest("Validation error in JSON body: [limit: must be a non-negative integer]", 422)
        wanted = max(limit * 2, limit + 16)
        with self._use(name) as coll:
            while True:
                with _edge_errors():
                    request = qe.FacetRequest(
                        req.key, limit=wanted, exact=bool(req.exact), filter=edge_filter(req.filter)
                    )
                    hits = [(h.value, h.count) for h in coll.shard.facet(request).hits]
                complete = len(hits) < wanted
                if (
                    complete
                    or limit == 0
                    or hits[-1][1] < sorted((c for _, c in hits), reverse=True)[limit - 1]
                ):
                    break
                wanted *= 4
        hits.sort(key=lambda h: (-h[1], isinstance(h[0], str), h[0]))
        return {"hits": [{"value": v, "count": c} for v, c in hits[:limit]]}

    # ----------------------------------------------------------------------------------------
    # Shutdown
    # ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Wait for running operations, flush and close every shard, release the root lock."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            while any(c.users for c in self._collections.values()):
                self._idle.wait()
            shards = [c.shard for c in self._collections.values() if c.shard is not None]
            for coll in self._collections.values():
                coll.shard = None
        try:
            for shard in shards:
                with contextlib.suppress(Exception):
                    shard.flush()
                with contextlib.suppress(Exception):
                    shard.close()
        finally:
            self._release_root_lock()
