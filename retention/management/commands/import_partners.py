"""Import partners from a CSV file, transactionally."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from retention.importing import OPTIONAL, REQUIRED, partners_import_csv


class Command(BaseCommand):
    help = (
        "Import partners from CSV (columns: "
        + ", ".join(REQUIRED)
        + "; optional: "
        + ", ".join(OPTIONAL)
        + "). Every bad row is reported with its line number; nothing is written unless all rows are valid."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--dry-run", action="store_true", help="validate and report; write nothing")

    def handle(self, *args, **opts):
        report = partners_import_csv(path=opts["path"], dry_run=opts["dry_run"])
        for error in report.errors:
            self.stderr.write(error)
        summary = json.dumps(report.as_dict())
        if not report.ok:
            self.stdout.write(summary)
            raise CommandError(f"{len(report.errors)} problem(s) found; nothing was written")
        verb = "Would import" if report.dry_run else "Imported"
        self.stdout.write(f"{verb} {report.rows} partners ({report.created} new, {report.updated} updated).")
        self.stdout.write(summary)
