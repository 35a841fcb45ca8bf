"""`manage.py create_cluster`: create a cluster and print its URL and (once) its secrets."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from console.clusters.models import DEFAULT_ACCOUNT_NAME, Cluster
from console.clusters.services import ClusterError, account_get_or_create, cluster_create


class Command(BaseCommand):
    """Create a cluster with a read-write API key and an inference-service token."""

    help = "Create a cluster; the API key and inference token are shown only once."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """--name, --region, --tier, --account, --created-at, --remote-url, --json."""
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--account", default=DEFAULT_ACCOUNT_NAME, help="Owning account (created if missing)"
        )
        parser.add_argument("--region", required=True)
        parser.add_argument("--tier", required=True, choices=Cluster.Tier.values)
        parser.add_argument("--created-at", help="ISO date/time (default: now); decides default inference")
        parser.add_argument("--remote-url", default="", help="Use a remote Qdrant server for storage")
        parser.add_argument("--remote-api-key", default="")
        parser.add_argument("--json", action="store_true", help="Print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        """Create the cluster and print it."""
        created_at = None
        if options["created_at"]:
            try:
                created_at = datetime.fromisoformat(options["created_at"])
            except ValueError as exc:
                raise CommandError(f"--created-at is not an ISO date/time: {exc}") from None
            if timezone.is_naive(created_at):
                created_at = created_at.replace(tzinfo=UTC)
        try:
            account = account_get_or_create(name=options["account"])
            created = cluster_create(
                account=account,
                name=options["name"],
                region=options["region"],
                tier=options["tier"],
                created_at=created_at,
                storage_backend=Cluster.Backend.REMOTE if options["remote_url"] else Cluster.Backend.EMBEDDED,
                remote_url=options["remote_url"],
                remote_api_key=options["remote_api_key"],
            )
        except ClusterError as exc:
            raise CommandError(str(exc)) from None
        cluster = created.cluster
        data = {
            "id": cluster.id,
            "name": cluster.name,
            "account": account.name,
            "url": f"{settings.PUBLIC_URL}/clusters/{cluster.id}",
            # Qdrant's gRPC API: one port for every cluster, the API key selects this one.
            "grpc_url": settings.GRPC_PUBLIC_URL if settings.GRPC_PORT else None,
            "api_key": created.api_key,
            "inference_token": created.inference_token,
            "inference_enabled": cluster.inference_enabled,
        }
        if options["json"]:
            self.stdout.write(json.dumps(data))
        else:
            for key, value in data.items():
                self.stdout.write(f"{key:18} {value}")
