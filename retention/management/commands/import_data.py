"""Import a team's history (partners, monthly activity, invoices, churn events; docs/data.md)."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from retention.importing import history_import


class Command(BaseCommand):
    help = (
        "Import partners, monthly activity, invoices and churn events from CSV (or .csv.gz) files "
        "or a directory of them (docs/data.md). All files commit together or not at all; every "
        "bad row is reported with file, line, column and reason."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path, help="CSV files, or directories of them")
        parser.add_argument("--dry-run", action="store_true", help="validate and report; write nothing")
        parser.add_argument(
            "--replace",
            action="store_true",
            help="the files hold the whole history of their partners: delete their months and "
            "invoices the files do not have",
        )

    def handle(self, *args, **opts):
        report = history_import(paths=opts["paths"], dry_run=opts["dry_run"], replace=opts["replace"])
        print_report(self, report, noun="rows")


def print_report(command: BaseCommand, report, *, noun: str, keys: list[str] | None = None) -> None:
    """Errors on stderr, a sentence, then the JSON summary as the last line (a failure too);
    ``keys`` narrows the summary (import_partners keeps the keys it always printed)."""
    for error in report.errors:
        command.stderr.write(str(error))
    if report.error_count > len(report.errors):
        command.stderr.write(f"... and {report.error_count - len(report.errors)} more")
    summary = report.as_dict()
    summary = json.dumps({k: summary[k] for k in keys} if keys else summary)
    if not report.ok:
        command.stdout.write(summary)
        raise CommandError(f"{report.error_count} problem(s) found; nothing was written")
    verb = "Would import" if report.dry_run else "Imported"
    command.stdout.write(
        f"{verb} {report.total('rows')} {noun} ({report.total('created')} new, "
        f"{report.total('updated')} updated, {report.total('unchanged')} unchanged) in {report.seconds:.1f} s."
    )
    command.stdout.write(summary)
