"""Reads about clusters and credentials."""

from __future__ import annotations

from console.models import ApiKey, Cluster, hash_secret


def api_key_for_secret(secret: str) -> ApiKey | None:
    """The active API key with this clear secret (looked up by hash), with its cluster."""
    if not secret:
        return None
    return (
        ApiKey.objects.select_related("cluster")
        .filter(key_hash=hash_secret(secret), revoked_at__isnull=True)
        .first()
    )


def cluster_for_inference_token(token: str) -> Cluster | None:
    """The cluster an inference-service token belongs to."""
    if not token:
        return None
    return Cluster.objects.filter(inference_token_hash=hash_secret(token)).first()
