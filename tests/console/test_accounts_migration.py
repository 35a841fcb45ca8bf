"""The data migration of accounts: existing clusters and memberships move into one default account.

A file of transactional tests only (migrations run outside the test's transaction, and the flush after
empties every table): pytest-xdist's `--dist loadfile` runs a file's tests together, so a file mixing kinds
would flush migrate's seed rows before other files' non-transactional tests that read them.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from console.clusters.models import DEFAULT_ACCOUNT_NAME, Account, Cluster, Membership
from console.clusters.selectors import clusters_visible

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("console", "0003_restart_job_step_choices")]


def test_existing_clusters_and_memberships_move_into_the_default_account() -> None:
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    try:
        executor.migrate(BEFORE)
        old = MigrationExecutor(connection).loader.project_state(BEFORE).apps
        old_user = old.get_model("auth", "User")
        old_cluster = old.get_model("console", "Cluster")
        old_membership = old.get_model("console", "Membership")
        for n in range(2):
            old_cluster.objects.create(
                id=f"old{n}", name=f"c{n}", region="us-east-1", tier="paid", inference_token_hash=f"h{n}"
            )
        ada = old_user.objects.create(username="ada")
        vic = old_user.objects.create(username="vic")
        old_membership.objects.create(user=ada, role="admin")
        old_membership.objects.create(user=vic, role="viewer")

        executor = MigrationExecutor(connection)
        executor.migrate(latest)
    finally:
        MigrationExecutor(connection).migrate(latest)  # leave the schema as the other tests expect it

    default = Account.objects.get(name=DEFAULT_ACCOUNT_NAME)
    assert Account.objects.count() == 1
    assert set(Cluster.objects.values_list("pk", "account")) == {("old0", default.pk), ("old1", default.pk)}
    roles = set(Membership.objects.values_list("user__username", "account", "role"))
    assert roles == {("ada", default.pk, "admin"), ("vic", default.pk, "viewer")}
    # The roles still work: ada manages the old clusters, vic reads them.
    assert set(clusters_visible(user=User.objects.get(username="vic"))) == set(Cluster.objects.all())
