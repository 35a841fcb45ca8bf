# Existing data moves into one default account: every cluster, and every membership with its role.

from typing import Any

from django.db import migrations

DEFAULT_ACCOUNT_NAME = "default"  # as console.clusters.models.DEFAULT_ACCOUNT_NAME (migrations stay frozen)


def move_into_default_account(apps: Any, schema_editor: Any) -> None:
    """Create the default account (if missing) and put every cluster and membership without one in it."""
    Account = apps.get_model("console", "Account")
    Cluster = apps.get_model("console", "Cluster")
    Membership = apps.get_model("console", "Membership")
    if (
        not Cluster.objects.filter(account__isnull=True).exists()
        and not Membership.objects.filter(account__isnull=True).exists()
    ):
        return  # a fresh database: the default account is created when first needed
    account, _ = Account.objects.get_or_create(name=DEFAULT_ACCOUNT_NAME)
    Cluster.objects.filter(account__isnull=True).update(account=account)
    Membership.objects.filter(account__isnull=True).update(account=account)


class Migration(migrations.Migration):
    dependencies = [("console", "0004_accounts")]

    operations = [migrations.RunPython(move_into_default_account, migrations.RunPython.noop)]
