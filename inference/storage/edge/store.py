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
from collections.abc import Iterator, Sequence
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
from .config import collection_config_json, edge_config, edge_index_schema, index_schema_json
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
from .query import DEFAULT_QUERY_LIMIT, QueryBuilder, VectorFetcher, edge_order_by, group_values

REGISTRY_FILE = "registry.json"
SHARDS_DIR = "shards"
LOCK_FILE = ".lock"
REGISTRY_FORMAT = 1

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

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._shards_dir = self.root / SHARDS_DIR
        self._shards_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._acquire_root_lock()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self._collections: dict[str, _Collection] = {}
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

    @contextlib.contextmanager
    def _use(self, name: str) -> Iterator[_Collection]:
        """The open collection ``name``, counted as in use so it cannot be closed meanwhile."""
        validate_collection_name(name)
        with self._lock:
            self._check_open()
            coll = self._collections.get(name)
            if coll is None:
                raise CollectionNotFound(name)
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
        shard_config = edge_config(config)  # validates the config before anything touches disk
        with self._lock:
            self._check_open()
            if name in self._collections:
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
            try:
                self._write_registry()
            except BaseException:
                self._collections[name] = coll
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
            coll = self._collections.get(name)
            if coll is None:
                raise CollectionNotFound(name)
            return coll.vectors

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
        edge_points = [edge_point(p) for p in points]
        operation = qe.UpdateOperation.upsert_points(
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
        request = qe.CountRequest(
            exact=True if req.exact is None else req.exact, filter=edge_filter(req.filter)
        )
        with self._use(name) as coll, _edge_errors():
            return {"count": coll.shard.count(request)}

    def delete_points(self, name: str, selector: Selector) -> JsonDict:
        """Delete points by ids or by filter (missing ids are ignored, as in Qdrant)."""
        ids, flt = selector_parts(selector)
        if ids is not None:
            operation = qe.UpdateOperation.delete_points(ids)
        else:
            operation = qe.UpdateOperation.delete_points_by_filter(edge_filter(flt))
        return self._update(name, operation)

    def set_payload(self, name: str, req: models.SetPayload) -> JsonDict:
        """Merge ``payload`` into the points' payloads (under ``key`` if given)."""
        ids, flt = points_or_filter(req.points, req.filter)
        if ids is not None:
            operation = qe.UpdateOperation.set_payload(ids, req.payload, key=req.key)
        else:
            operation = qe.UpdateOperation.set_payload_by_filter(edge_filter(flt), req.payload, key=req.key)
        return self._update(name, operation)

    def overwrite_payload(self, name: str, req: models.SetPayload) -> JsonDict:
        """Replace the points' payloads with ``payload``."""
        ids, flt = points_or_filter(req.points, req.filter)
        if ids is not None:
            operation = qe.UpdateOperation.overwrite_payload(ids, req.payload, key=req.key)
        else:
            operation = qe.UpdateOperation.overwrite_payload_by_filter(
                edge_filter(flt), req.payload, key=req.key
            )
        return self._update(name, operation)

    def delete_payload(self, name: str, req: models.DeletePayload) -> JsonDict:
        """Remove ``keys`` from the points' payloads."""
        ids, flt = points_or_filter(req.points, req.filter)
        if ids is not None:
            operation = qe.UpdateOperation.delete_payload(ids, list(req.keys))
        else:
            operation = qe.UpdateOperation.delete_payload_by_filter(edge_filter(flt), list(req.keys))
        return self._update(name, operation)

    def clear_payload(self, name: str, selector: Selector) -> JsonDict:
        """Remove the whole payload of the selected points."""
        ids, flt = selector_parts(selector)
        if ids is not None:
            operation = qe.UpdateOperation.clear_payload(ids)
        else:
            operation = qe.UpdateOperation.clear_payload_by_filter(edge_filter(flt))
        return self._update(name, operation)

    def update_vectors(
        self,
        name: str,
        points: Sequence[models.PointVectors],
        *,
        update_filter: models.Filter | None = None,
    ) -> JsonDict:
        """Replace the given named vectors of existing points (others are kept)."""
        operation = qe.UpdateOperation.update_vectors(
            [edge_point_vectors(p) for p in points], condition=edge_filter(update_filter)
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
            operation = qe.UpdateOperation.delete_vectors(ids, names)
        else:
            operation = qe.UpdateOperation.delete_vectors_by_filter(edge_filter(flt), names)
        return self._update(name, operation)

    # ----------------------------------------------------------------------------------------
    # Queries
    # ----------------------------------------------------------------------------------------

    @staticmethod
    def _fetcher(coll: _Collection) -> VectorFetcher:
        """Looks up the stored vectors of points a query names by id (``lookup_from`` is unsupported)."""

        def fetch(pairs: list[tuple[int | str, str]]) -> dict[tuple[int | str, str], Any]:
            ids = list(dict.fromkeys(pid for pid, _ in pairs))
            names = list(dict.fromkeys(name for _, name in pairs))
            records = coll.shard.retrieve(ids, False, names)
            found: dict[tuple[int | str, str], Any] = {}
            for record in records:
                pid = json_id(record.id)
                vector = record.vector
                if isinstance(vector, dict):
                    for name in names:
                        if name in vector:
                            found[(pid, name)] = vector[name]
                elif vector is not None:
                    # Edge returns a lone unnamed vector as a plain list.
                    found[(pid, DEFAULT_VECTOR_NAME)] = vector
            existing = {json_id(r.id) for r in records}
            for pid, name in pairs:
                if (pid, name) not in found and pid in existing:
                    raise BadRequest(f"Wrong input: point {pid} has no vector `{name or '<unnamed>'}`")
            return found

        return fetch

    def query(self, name: str, req: models.QueryRequest) -> JsonDict:
        """Universal query: nearest / recommend / discover / context / fusion / order_by / formula ..."""
        with self._use(name) as coll, _edge_errors():
            request = QueryBuilder(self._fetcher(coll)).build(req)
            points = coll.shard.query(request)
        return {"points": [scored_point_json(p) for p in points]}

    def query_batch(self, name: str, reqs: Sequence[models.QueryRequest]) -> list[JsonDict]:
        """Several queries planned together by Edge; one ``{"points": [...]}`` per request."""
        with self._use(name) as coll, _edge_errors():
            requests = [QueryBuilder(self._fetcher(coll)).build(r) for r in reqs]
            results = coll.shard.query_batch(qe.QueryBatchRequest(requests)) if requests else []
        return [{"points": [scored_point_json(p) for p in points]} for points in results]

    def query_groups(self, name: str, req: models.QueryGroupsRequest) -> JsonDict:
        """Best ``limit`` groups of up to ``group_size`` hits by the payload field ``group_by``.

        Edge has no grouping, so this runs the query for a candidate set (limit * group_size * 4 at
        first, growing x4 up to 10,000) with only the group field as payload, groups hits in score
        order, then fetches payload / vectors of the chosen hits as requested.
        """
        if req.with_lookup is not None:
            raise Unsupported("`with_lookup`")
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
        return {"groups": out}

    def facet(self, name: str, req: models.FacetRequest) -> JsonDict:
        """Counts of the values of a payload field (needs a keyword / integer / bool index)."""
        request = qe.FacetRequest(
            req.key,
            limit=10 if req.limit is None else req.limit,
            exact=bool(req.exact),
            filter=edge_filter(req.filter),
        )
        with self._use(name) as coll, _edge_errors():
            response = coll.shard.facet(request)
        return {"hits": [{"value": h.value, "count": h.count} for h in response.hits]}

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
