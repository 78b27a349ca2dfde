"""Import partners from a CSV file, transactionally (an alias of import_data for one partners file)."""

from pathlib import Path

from django.core.management.base import BaseCommand

from retention.importing import OPTIONAL, REQUIRED, partners_import_csv
from retention.management.commands.import_data import print_report

SUMMARY_KEYS = ["rows", "created", "updated", "errors", "dry_run", "written"]


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
        print_report(self, report, noun="partners", keys=SUMMARY_KEYS)
