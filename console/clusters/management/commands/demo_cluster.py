"""`manage.py demo_cluster`: on first start, create a demo cluster and print how to reach it."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from console.clusters.models import Cluster
from console.clusters.services import account_default_get_or_create, cluster_create


class Command(BaseCommand):
    """Create the demo cluster once (paid, us-east-1: inference on); later runs just print its URL."""

    help = "Create a demo cluster if there is no cluster yet, and print its URL and API key."

    def handle(self, *args: Any, **options: Any) -> None:
        """Create or describe the demo cluster."""
        # The clear key is shown once; for the local demo we also keep it in DATA_DIR (mode 0600) so a
        # developer who missed the first start can find it. Production clusters never do this.
        secrets_file = settings.DATA_DIR / "demo-cluster.json"
        if Cluster.objects.exists():
            cluster = Cluster.objects.order_by("created_at").first()
            assert cluster is not None
            self.stdout.write(f"Demo cluster: {settings.PUBLIC_URL}/clusters/{cluster.id}")
            if secrets_file.exists():
                self.stdout.write(f"Its API key is in {secrets_file}")
            return
        created = cluster_create(
            name="demo", region="us-east-1", tier=Cluster.Tier.PAID, account=account_default_get_or_create()
        )
        info = {
            "url": f"{settings.PUBLIC_URL}/clusters/{created.cluster.id}",
            "api_key": created.api_key,
            "inference_token": created.inference_token,
        }
        secrets_file.write_text(json.dumps(info, indent=2) + "\n")
        secrets_file.chmod(0o600)
        self.stdout.write(self.style.SUCCESS("Created a demo cluster (paid, us-east-1, inference on):"))
        for key, value in info.items():
            self.stdout.write(f"  {key:16} {value}")
