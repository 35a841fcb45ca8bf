"""The cluster domain's side of the inference seams: API keys and cluster state, read for the gateway."""

from __future__ import annotations

from console.clusters.models import Cluster
from console.clusters.selectors import api_key_for_secret, cluster_for_inference_token, cluster_get
from inference.hooks import ClusterInfo, KeyInfo


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


class ClusterDirectory:
    """The `inference.hooks.Directory` registered by this app: reads of keys and clusters."""

    def key_for_secret(self, secret: str) -> KeyInfo | None:
        """The active key with this secret, or None."""
        key = api_key_for_secret(secret)
        return KeyInfo(cluster_id=key.cluster_id, read_only=key.read_only) if key else None

    def cluster(self, cluster_id: str) -> ClusterInfo | None:
        """The cluster's current state, or None."""
        cluster = cluster_get(cluster_id=cluster_id)
        return cluster_info(cluster) if cluster else None

    def cluster_for_inference_token(self, token: str) -> ClusterInfo | None:
        """The cluster of an inference-service token, or None."""
        cluster = cluster_for_inference_token(token)
        return cluster_info(cluster) if cluster else None
