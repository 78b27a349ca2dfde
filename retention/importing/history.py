"""One import, all files or none: the plan from the headers, staging, checks, then writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from django.db import connection, transaction
from django.utils import timezone

from agent.audit import audit_record
from retention.importing.checks import check_across
from retention.importing.contract import ORDER, TABLES, which_table
from retention.importing.reading import FileError, collect_files, read_header, stage_file
from retention.importing.report import ImportReport
from retention.importing.staging import create_stage, drop_stages, execute, query, stage_name
from retention.importing.upserts import count_changes, write
from retention.importing.validation import Context

IMPORT_LOCK = 0x1A7E_0011  # pg_advisory_xact_lock key of history_import


class _Abort(Exception):
    """Leaves the import's transaction without writing (errors, or a dry run)."""


Progress = Callable[[float, str], None]


def history_import(
    *,
    paths: Iterable[Path],
    actor=None,
    dry_run: bool = False,
    replace: bool = False,
    progress: Progress | None = None,
    names: dict[Path, str] | None = None,
    today: dt.date | None = None,
) -> ImportReport:
    """Import these files together: all of them are written, or none (see the module doc).

    ``replace``: the files hold the whole activity and invoice history of the partners in
    them, so those partners' months and invoices missing from the files are deleted.
    ``names`` gives uploaded files the name the user knows them by, for error messages."""
    started = timezone.now()
    report = ImportReport(dry_run=dry_run)
    today = today or timezone.localdate()
    say = progress or (lambda fraction, stage: None)
    files = collect_files(paths)
    if not files:
        report.error("(no files)", 0, "", "no .csv or .csv.gz files given")
        return report
    plan: list[dict[str, Any]] = []
    for path in files:
        label = (names or {}).get(path, path.name)
        try:
            header = read_header(path)
        except FileError as exc:
            report.error(label, 0, "", str(exc))
            continue
        table = which_table(header)
        if table is None:
            report.error(
                label, 1, "", f"cannot tell which table this is from its columns: {', '.join(header)}"
            )
            continue
        spec = TABLES[table]
        missing = [c for c in spec.required if c not in header]
        unknown = [c for c in header if c not in spec.required + spec.optional]
        if missing:
            report.error(label, 1, "", f"missing column(s): {', '.join(missing)}")
        if unknown:
            report.error(label, 1, "", f"unknown column(s): {', '.join(unknown)}")
        if any(p["table"] == table for p in plan):
            report.error(
                label, 0, "", f"a second {table} file in one import ({plan[0]['file']} is the first)"
            )
        plan.append({"path": path, "file": label, "table": table, "header": header})
    if report.error_count:
        return report
    plan.sort(key=lambda p: ORDER.index(p["table"]))
    sizes = [max(p["path"].stat().st_size, 1) for p in plan]
    done = 0
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # One import at a time: the counts taken before writing stay exact, so the
                # writes need no ON CONFLICT. Hash joins over millions of staged rows in memory.
                execute("SELECT pg_advisory_xact_lock(%s)", [IMPORT_LOCK])
                execute("SET LOCAL work_mem = '256MB'")
            context = Context(today=today, report=report)
            for item, size in zip(plan, sizes, strict=True):
                spec = TABLES[item["table"]]
                create_stage(spec)
                report.files.append({"file": item["file"], "table": spec.name, "columns": item["header"]})

                def file_progress(f: float, d: int = done, n: int = size, name: str = item["file"]) -> None:
                    say((d + f * n) / sum(sizes) * 0.8, name)

                rows = stage_file(item, spec, context, file_progress)
                if connection.vendor == "postgresql":
                    # Autovacuum never analyzes temporary tables: without statistics the planner
                    # takes a 2M-row staging table for a small one and picks nested loops.
                    execute(f"ANALYZE {stage_name(spec.name)}")
                report.tables[spec.name] = {"rows": rows}
                report.files[-1]["rows"] = rows
                done += size
            say(0.8, "checking across files")
            staged = [p["table"] for p in plan]
            check_across(staged, {p["table"]: p["file"] for p in plan}, report)
            if report.error_count:
                raise _Abort
            count_changes(staged, report)
            if dry_run:
                raise _Abort
            say(0.9, "writing")
            write(plan, report, actor=actor, replace=replace, now=started)
            report.seconds = (timezone.now() - started).total_seconds()
            end = history_end(today)
            audit_record(
                event_type="history_imported",
                actor=actor,
                payload={
                    "files": report.files,
                    "history_end": end.isoformat() if end else None,
                    **{k: v for k, v in report.as_dict().items() if k != "tables"},
                },
            )
    except _Abort:
        pass
    finally:
        drop_stages()
    report.seconds = (timezone.now() - started).total_seconds()
    report.errors.sort(key=lambda e: (e.file, e.line))
    say(1.0, "done")
    return report


def history_end(today: dt.date) -> dt.date | None:
    """The last day the recorded history covers: the latest activity month's end, invoice,
    payment or churn date (never after today). The desk's today on imported data."""
    row = query(
        "SELECT (SELECT MAX(month) FROM retention_monthlyactivity), (SELECT MAX(issued_on) FROM retention_invoice), "
        "(SELECT MAX(paid_on) FROM retention_invoice), (SELECT MAX(churned_on) FROM retention_partner)"
    )[0]
    dates = [v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v)) for v in row if v is not None]
    if row[0] is not None:
        dates[0] = (pd.Timestamp(dates[0]) + pd.offsets.MonthEnd(0)).date()
    return min(max(dates), today) if dates else None


def partners_import_csv(*, path: Path, actor=None, dry_run: bool = False) -> ImportReport:
    """The partners-only import of `import_partners` (one file through the same path)."""
    return history_import(paths=[path], actor=actor, dry_run=dry_run)
