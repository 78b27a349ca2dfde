"""Export partners, monthly activity, invoices and churn events as the import contract's files."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand

from retention.exporting import history_export


class Command(BaseCommand):
    help = "Write partners.csv, activity.csv, invoices.csv and churn_events.csv (docs/data.md) into DIR."

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path)
        parser.add_argument("--gzip", action="store_true", help="write .csv.gz files")

    def handle(self, *args, **opts):
        rows = history_export(folder=opts["folder"], compress=opts["gzip"])
        self.stdout.write(f"Wrote {sum(rows.values())} rows to {opts['folder']}.")
        self.stdout.write(json.dumps({"folder": str(opts["folder"]), "rows": rows}))
