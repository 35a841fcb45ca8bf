"""`manage.py billing_rebuild_rollups [--check]`: recompute usage roll-ups from the ledger and prove it."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from billing.selectors import RollupComparison
from billing.services import rollups_rebuild, rollups_verify

SHOWN_DIFFERENCES = 20


class Command(BaseCommand):
    """Rebuild the hourly and daily roll-ups from the ledger, or with --check only compare them."""

    help = (
        "Recompute usage roll-ups from the ledger and verify they are equal. With --check, change nothing: "
        "report differences and exit non-zero if there are any."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        """--check."""
        parser.add_argument("--check", action="store_true", help="Only compare; exit 1 on any difference")

    def handle(self, *args: Any, **options: Any) -> None:
        """Compare or rebuild, then print the proof (or the differences)."""
        if options["check"]:
            comparison = rollups_verify()
            self._report(comparison)
            if not comparison.equal:
                raise CommandError(
                    f"Roll-ups differ from the ledger in {len(comparison.differences)} bucket(s); "
                    "run billing_rebuild_rollups to recompute them."
                )
            return
        rebuilt = rollups_rebuild()
        self.stdout.write(f"Rebuilt {rebuilt.written} roll-up row(s) from the ledger.")
        self._report(rebuilt.comparison)
        if not rebuilt.comparison.equal:  # a rebuild that does not verify is a bug, never a warning
            raise CommandError("Roll-ups still differ from the ledger after the rebuild.")

    def _report(self, comparison: RollupComparison) -> None:
        hours = sum(1 for key in comparison.expected if key[2] == "hour")
        days = len(comparison.expected) - hours
        self.stdout.write(
            f"Ledger: {comparison.ledger_records} record(s), {comparison.ledger_tokens} token(s); "
            f"expected {hours} hour and {days} day roll-up(s)."
        )
        for diff in comparison.differences[:SHOWN_DIFFERENCES]:
            self.stdout.write(
                f"  DIFFERS {diff.cluster_id} {diff.model} {diff.granularity} "
                f"{diff.period_start.isoformat()}: "
                f"ledger {diff.ledger_tokens} tokens / {diff.ledger_records} requests, "
                f"roll-up {diff.rollup_tokens} tokens / {diff.rollup_records} requests"
            )
        if len(comparison.differences) > SHOWN_DIFFERENCES:
            self.stdout.write(f"  ... and {len(comparison.differences) - SHOWN_DIFFERENCES} more")
        if comparison.equal:
            self.stdout.write(self.style.SUCCESS("OK: every roll-up equals the sum of its ledger records."))
