"""The open vector store of each cluster in this process.

Qdrant Edge allows one opener per shard directory, so a cluster's embedded storage is opened once per
process and shared by every request thread (Edge is thread-safe inside one process). `make run` serves
with one web process for that reason. With `QDRANT_URL` every cluster (but one configured with a server of
its own) lives in its own namespace on that shared server, and any number of processes may serve.
"""

from __future__ import annotations

import threading

from django.conf import settings

from inference.hooks import ClusterInfo
from inference.storage import EdgeStore, RemoteStore, VectorStore
from inference.storage.namespaced import NamespacedStore, namespace_prefix

_stores: dict[str, VectorStore] = {}
_lock = threading.Lock()


def store_for(cluster: ClusterInfo) -> VectorStore:
    """The cluster's store, opened on first use."""
    store = _stores.get(cluster.id)
    if store is not None:
        return store
    with _lock:
        store = _stores.get(cluster.id)
        if store is None:
            store = _open(cluster)
            _stores[cluster.id] = store
        return store


def store_close(cluster_id: str) -> bool:
    """Close a cluster's store (a restart reopens it on next use); False if it was not open."""
    with _lock:
        store = _stores.pop(cluster_id, None)
    if store is None:
        return False
    store.close()
    return True


def backend(cluster: ClusterInfo) -> str:
    """Where the cluster's vectors live: its own "remote" server, the "shared" QDRANT_URL, or "embedded"."""
    if cluster.remote_url:
        return "remote"
    return "shared" if settings.QDRANT_URL else "embedded"


def _open(cluster: ClusterInfo) -> VectorStore:
    if cluster.remote_url:  # a cluster configured with a server of its own keeps it
        return RemoteStore(cluster.remote_url, cluster.remote_api_key or None)
    if settings.QDRANT_URL:
        # Every other cluster: a namespace of its own on the shared server (storage/namespaced.py).
        shared = RemoteStore(settings.QDRANT_URL, settings.QDRANT_API_KEY or None)
        return NamespacedStore(shared, namespace_prefix(cluster.id))
    root = settings.CLUSTERS_DIR / cluster.id / "storage"
    root.mkdir(parents=True, exist_ok=True)
    return EdgeStore(root, search_threads=settings.EDGE_SEARCH_THREADS or None)
