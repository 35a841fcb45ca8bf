"""Writes about clusters and their credentials."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime

from django.db import transaction
from django.utils import timezone

from console.models import REGIONS, ApiKey, Cluster, hash_secret

# Clusters created after this day start with inference on (when eligible), as in the cloud.
INFERENCE_DEFAULT_ON_AFTER = date(2025, 7, 7)


class ClusterError(Exception):
    """A cluster operation was refused; the message says why."""


@dataclass(frozen=True)
class Eligibility:
    """Whether inference may run on a cluster, and if not, why (shown next to the disabled toggle)."""

    eligible: bool
    reason: str = ""


def inference_eligibility(*, tier: str, region: str) -> Eligibility:
    """Inference is for paid clusters in US regions only."""
    if tier != Cluster.Tier.PAID:
        return Eligibility(False, "Inference is only available for paid clusters.")
    if not region.startswith("us-"):
        return Eligibility(False, "Inference is currently only available in US regions.")
    return Eligibility(True)


@dataclass(frozen=True)
class CreatedCluster:
    """A new cluster with the secrets that are shown only once."""

    cluster: Cluster
    api_key: str
    inference_token: str


def new_secret(prefix: str) -> str:
    """A 256-bit random token with a readable prefix."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


@transaction.atomic
def cluster_create(
    *,
    name: str,
    region: str,
    tier: str,
    created_at: datetime | None = None,
    storage_backend: str = Cluster.Backend.EMBEDDED,
    remote_url: str = "",
    remote_api_key: str = "",
) -> CreatedCluster:
    """Create a cluster with a read-write API key and an inference-service token."""
    if region not in REGIONS:
        raise ClusterError(f"Unknown region {region!r}; choose one of: {', '.join(REGIONS)}")
    if tier not in Cluster.Tier.values:
        raise ClusterError(f"Unknown tier {tier!r}; choose free or paid")
    if storage_backend == Cluster.Backend.REMOTE and not remote_url:
        raise ClusterError("A remote cluster needs the URL of its Qdrant server")
    created_at = created_at or timezone.now()
    default_on = created_at.date() > INFERENCE_DEFAULT_ON_AFTER
    token = new_secret("qit")
    cluster = Cluster.objects.create(
        name=name,
        region=region,
        tier=tier,
        created_at=created_at,
        inference_enabled=default_on and inference_eligibility(tier=tier, region=region).eligible,
        storage_backend=storage_backend,
        remote_url=remote_url,
        remote_api_key=remote_api_key,
        inference_token_hash=hash_secret(token),
    )
    api_key, _ = api_key_create(cluster=cluster, name="default", read_only=False)
    return CreatedCluster(cluster=cluster, api_key=api_key, inference_token=token)


def api_key_create(*, cluster: Cluster, name: str, read_only: bool) -> tuple[str, ApiKey]:
    """Create an API key; the clear key is returned here and never again."""
    key = new_secret("qk")
    record = ApiKey.objects.create(
        cluster=cluster, name=name, prefix=key[:10], key_hash=hash_secret(key), read_only=read_only
    )
    return key, record


def api_key_revoke(*, api_key: ApiKey) -> None:
    """Revoke a key: it stops authenticating at once."""
    api_key.revoke()
