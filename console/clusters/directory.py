"""The cluster domain's side of the inference seams: API keys and cluster state, read for the gateway.

Every data-plane request needs its key and its cluster's state, so both are kept in this process for
DIRECTORY_CACHE_SECONDS instead of costing two SQL queries a request. A change (a key revoked, a toggle, a
job's step) drops the entry once its transaction commits, in the process that made it and, with a shared
Redis (`CACHE_REDIS_URL`), in every other process and replica through the generation counter of
`console.clusters.sharedcache`: the very next request anywhere reads it fresh. Without Redis, a change made
in another process (the restart worker flipping the state back to running) shows within the cache's
lifetime. A restart's drain step drops the cluster's entry before it waits, so no request started after
the drain can see a stale "running".
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_delete, post_save

from console.clusters.models import ApiKey, Cluster, hash_secret
from console.clusters.selectors import api_key_for_secret, cluster_for_inference_token, cluster_get
from console.clusters.sharedcache import SharedCache, changed
from inference.hooks import ClusterInfo, KeyInfo


def _lifetime() -> float:
    return float(settings.DIRECTORY_CACHE_SECONDS)


def cluster_info(cluster: Cluster) -> ClusterInfo:
    """What the gateway needs to serve a cluster, from its row."""
    remote = cluster.storage_backend == Cluster.Backend.REMOTE
    return ClusterInfo(
        id=cluster.pk,
        restarting=cluster.status == Cluster.Status.RESTARTING,
        inference_enabled=cluster.inference_enabled,
        remote_url=cluster.remote_url if remote else "",
        remote_api_key=cluster.remote_api_key if remote else "",
    )


_keys: SharedCache[KeyInfo | None] = SharedCache(_lifetime)  # by the secret's hash (clear secrets never kept)
_clusters: SharedCache[ClusterInfo | None] = SharedCache(_lifetime)  # by cluster id


def forget_cluster(cluster_id: str) -> None:
    """Read the cluster's state fresh on its next request (this process)."""
    _clusters.drop(cluster_id)


def _on_key_change(sender: Any, instance: ApiKey, **kwargs: Any) -> None:
    changed(lambda: _keys.drop(instance.key_hash))


def _on_cluster_change(sender: Any, instance: Cluster, **kwargs: Any) -> None:
    changed(lambda: _clusters.drop(instance.pk))


def connect_invalidation() -> None:
    """Drop cached entries when keys or clusters change, in this process and, through the shared
    generation, in every other (called by the app config of every process: web, worker, commands)."""
    post_save.connect(_on_key_change, sender=ApiKey, dispatch_uid="directory.key.save")
    post_delete.connect(_on_key_change, sender=ApiKey, dispatch_uid="directory.key.delete")
    post_save.connect(_on_cluster_change, sender=Cluster, dispatch_uid="directory.cluster.save")
    post_delete.connect(_on_cluster_change, sender=Cluster, dispatch_uid="directory.cluster.delete")


class ClusterDirectory:
    """The `inference.hooks.Directory` registered by this app: reads of keys and clusters, cached briefly."""

    def key_for_secret(self, secret: str) -> KeyInfo | None:
        """The active key with this secret, or None."""

        def load() -> KeyInfo | None:
            key = api_key_for_secret(secret)
            return KeyInfo(cluster_id=key.cluster_id, read_only=key.read_only) if key else None

        return _keys.get(hash_secret(secret), load) if secret else None

    def cluster(self, cluster_id: str) -> ClusterInfo | None:
        """The cluster's current state, or None."""

        def load() -> ClusterInfo | None:
            cluster = cluster_get(cluster_id=cluster_id)
            return cluster_info(cluster) if cluster else None

        return _clusters.get(cluster_id, load)

    def cluster_for_inference_token(self, token: str) -> ClusterInfo | None:
        """The cluster of an inference-service token, or None."""
        cluster = cluster_for_inference_token(token)
        return cluster_info(cluster) if cluster else None
