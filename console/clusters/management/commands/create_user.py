"""`manage.py create_user`: a console user with a role in an account and an API token."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from console.clusters.models import DEFAULT_ACCOUNT_NAME, Membership
from console.clusters.services import ClusterError, account_get_or_create, user_create


class Command(BaseCommand):
    """Create (or update) a console user and print their API token."""

    help = (
        "Create a console user with a role in an account (admin manages the account's clusters, viewer only "
        "reads them) and print the API token for `Authorization: Token <token>`. Re-running updates the role "
        "in that account (roles in other accounts are kept) and keeps the token."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        """--username, --role, --account, --password, --json."""
        parser.add_argument("--username", required=True)
        parser.add_argument("--role", required=True, choices=Membership.Role.values)
        parser.add_argument(
            "--account", default=DEFAULT_ACCOUNT_NAME, help="The account of the role (created if missing)"
        )
        parser.add_argument("--password", default=None, help="For the console login (default: token only)")
        parser.add_argument("--json", action="store_true", help="Print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        """Create or update the user and print it."""
        try:
            created = user_create(
                username=options["username"],
                role=options["role"],
                password=options["password"],
                account=account_get_or_create(name=options["account"]),
            )
        except ClusterError as exc:
            raise CommandError(str(exc)) from None
        data = {
            "username": created.user.get_username(),
            "account": created.account.name,
            "role": created.role,
            "token": created.token,
        }
        if options["json"]:
            self.stdout.write(json.dumps(data))
        else:
            for key, value in data.items():
                self.stdout.write(f"{key:9} {value}")
