"""Import a team's own history: partners, monthly activity, invoices, churn events.

The contract (columns, types, what a missing month means) is docs/data.md. One import is
one transaction: every file is read in chunks, checked cell by cell (pandas, vectorised),
and its good rows are loaded into a temporary staging table (PostgreSQL ``COPY``; on
SQLite plain inserts, the same tables and SQL otherwise). Checks that need more than one
row (duplicate keys, unknown partner ids, churn before joining) then run as SQL on the
staging tables. Any problem anywhere and nothing is written; otherwise set-based upserts
on the natural keys write only rows that differ, so re-importing the same files changes
nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.utils import timezone

from agent.audit import audit_record
from retention.models import Partner

CHUNK_ROWS = 250_000
MAX_ERRORS_KEPT = 10_000  # a file of garbage should not fill memory with messages
EXTERNAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,15}$")
ISO_DATE = r"\d{4}-\d{2}-\d{2}"
MONEY_MAX = 10**10  # DecimalField(max_digits=12, decimal_places=2)
COUNT_MAX = 2**31 - 1


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # id, text, choice, email, user, date, month, count, money
    required: bool = True
    max_length: int = 0
    choices: tuple[str, ...] = ()
    sql_type: str = "text"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def optional(self) -> list[str]:
        return [c.name for c in self.columns if not c.required]


ID = Column("external_id", "id", max_length=16)
TABLES = {
    "partners": Table(
        "partners",
        (
            ID,
            Column("name", "text", max_length=200),
            Column("tier", "choice", choices=tuple(Partner.Tier.values)),
            Column("region", "choice", choices=tuple(Partner.Region.values)),
            Column("segment", "choice", choices=tuple(Partner.Segment.values)),
            Column("monthly_revenue", "money", sql_type="numeric(12, 2)"),
            Column("contact_email", "email", max_length=254),
            Column("joined_on", "date", sql_type="date"),
            Column("account_owner", "user", required=False, max_length=150, sql_type="integer"),
            Column("status", "choice", required=False, choices=tuple(Partner.Status.values)),
            Column("churned_on", "date", required=False, sql_type="date"),
            Column("notes", "text", required=False, max_length=10_000),
        ),
        key=("external_id",),
    ),
    "activity": Table(
        "activity",
        (
            ID,
            Column("month", "month", sql_type="date"),
            Column("transactions", "count", sql_type="integer"),
            Column("revenue", "money", sql_type="numeric(12, 2)"),
            Column("active_users", "count", sql_type="integer"),
            Column("support_tickets", "count", sql_type="integer"),
        ),
        key=("external_id", "month"),
    ),
    "invoices": Table(
        "invoices",
        (
            ID,
            Column("invoice_id", "text", max_length=64),
            Column("issued_on", "date", sql_type="date"),
            Column("due_on", "date", sql_type="date"),
            Column("paid_on", "date", required=False, sql_type="date"),
            Column("amount", "money", sql_type="numeric(12, 2)"),
        ),
        key=("external_id", "invoice_id"),
    ),
    "churn_events": Table(
        "churn_events",
        (ID, Column("churned_on", "date", sql_type="date"), Column("reason", "text", False, 200)),
        key=("external_id",),
    ),
}
ORDER = ["partners", "churn_events", "activity", "invoices"]  # partners first: the others refer to them
# Kept for import_partners' help text.
REQUIRED = TABLES["partners"].required
OPTIONAL = TABLES["partners"].optional


@dataclass
class RowError:
    file: str
    line: int  # 0: the file as a whole
    column: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.line else self.file
        return f"{where}: {self.column}: {self.reason}" if self.column else f"{where}: {self.reason}"

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "column": self.column, "reason": self.reason}


@dataclass
class ImportReport:
    dry_run: bool = False
    files: list[dict] = field(default_factory=list)
    tables: dict[str, dict] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error_count

    def error(self, file: str, line: int, column: str, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(RowError(file, line, column, reason))

    def total(self, key: str) -> int:
        return sum(t.get(key, 0) for t in self.tables.values())

    def as_dict(self) -> dict:
        return {
            "rows": self.total("rows"),
            "created": self.total("created"),
            "updated": self.total("updated"),
            "unchanged": self.total("unchanged"),
            "deleted": self.total("deleted"),
            "errors": self.error_count,
            "dry_run": self.dry_run,
            "written": self.ok and not self.dry_run,
            "tables": self.tables,
            "seconds": round(self.seconds, 2),
        }


class _Abort(Exception):
    """Leaves the import's transaction without writing (errors, or a dry run)."""


Progress = Callable[[float, str], None]


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """The CSV files named, or found in the directories named (sorted by name)."""
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.name.endswith((".csv", ".csv.gz"))))
        else:
            out.append(path)
    return out


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
    plan = []
    for path in files:
        label = (names or {}).get(path, path.name)
        try:
            header = _read_header(path)
        except _FileError as exc:
            report.error(label, 0, "", str(exc))
            continue
        table = _which_table(header)
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
            context = _Context(today=today, report=report)
            for item, size in zip(plan, sizes, strict=True):
                spec = TABLES[item["table"]]
                _create_stage(spec)
                report.files.append({"file": item["file"], "table": spec.name, "columns": item["header"]})
                rows = _stage_file(
                    item,
                    spec,
                    context,
                    lambda f, d=done, n=size, name=item["file"]: say((d + f * n) / sum(sizes) * 0.8, name),
                )
                if connection.vendor == "postgresql":
                    # Autovacuum never analyzes temporary tables: without statistics the planner
                    # takes a 2M-row staging table for a small one and picks nested loops.
                    _execute(f"ANALYZE {_stage_name(spec.name)}")
                report.tables[spec.name] = {"rows": rows}
                report.files[-1]["rows"] = rows
                done += size
            say(0.8, "checking across files")
            staged = [p["table"] for p in plan]
            _check_across(staged, {p["table"]: p["file"] for p in plan}, report)
            if report.error_count:
                raise _Abort
            _count_changes(staged, report)
            if dry_run:
                raise _Abort
            say(0.9, "writing")
            _write(plan, report, actor=actor, replace=replace, now=started)
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
        _drop_stages()
    report.seconds = (timezone.now() - started).total_seconds()
    report.errors.sort(key=lambda e: (e.file, e.line))
    say(1.0, "done")
    return report


def history_end(today: dt.date) -> dt.date | None:
    """The last day the recorded history covers: the latest activity month's end, invoice,
    payment or churn date (never after today). The desk's today on imported data."""
    row = _query(
        "SELECT (SELECT MAX(month) FROM retention_monthlyactivity), (SELECT MAX(issued_on) FROM retention_invoice), "
        "(SELECT MAX(paid_on) FROM retention_invoice), (SELECT MAX(churned_on) FROM retention_partner)"
    )[0]
    dates = [v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v)) for v in row if v is not None]
    if row[0] is not None:
        dates[0] = (pd.Timestamp(dates[0]) + pd.offsets.MonthEnd(0)).date()
    return min(max(dates), today) if dates else None


# Reading -----------------------------------------------------------------------------


class _FileError(Exception):
    pass


def _open(path: Path):
    """A binary handle on the file, gunzipped when it is gzip (by content, not by name)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        raise _FileError(f"cannot read it: {exc.strerror}") from None
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115


def _read_header(path: Path) -> list[str]:
    with _open(path) as fh:
        try:
            head = fh.read(64 * 1024)
        except (OSError, EOFError) as exc:
            raise _FileError(f"cannot read it ({exc})") from None
    if b"\x00" in head:
        raise _FileError("is a binary file, not CSV text (save it as CSV UTF-8)")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the block's end
            raise _FileError(_not_utf8(exc)) from None
        text = head[: exc.start].decode("utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    if not first:
        raise _FileError("is empty (a header row is required)")
    return [h.strip().lower() for h in next(csv.reader([first]))]


def _not_utf8(exc: UnicodeDecodeError) -> str:
    return (
        f"is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
        "save it as CSV UTF-8 (Latin-1 and Windows encodings are not guessed)"
    )


def _which_table(header: list[str]) -> str | None:
    if "invoice_id" in header:
        return "invoices"
    if "month" in header:
        return "activity"
    if "name" in header or "contact_email" in header:
        return "partners"
    if "churned_on" in header:
        return "churn_events"
    return None


@dataclass
class _Context:
    today: dt.date
    report: ImportReport
    partner_ids: set[str] = field(default_factory=set)  # external ids of the partners file
    users: dict[str, int] | None = None


def _stage_file(item: dict, spec: Table, ctx: _Context, progress: Callable[[float], None]) -> int:
    label, header = item["file"], item["header"]
    size = max(item["path"].stat().st_size, 1)
    rows = 0
    with _open(item["path"]) as raw:
        counted = _CountingReader(raw)
        try:
            chunks = pd.read_csv(
                io.BufferedReader(counted, 1 << 20), dtype=str, keep_default_na=False, skip_blank_lines=False, chunksize=CHUNK_ROWS,
                encoding="utf-8-sig", header=0, names=header, engine="c",
            )  # fmt: skip
            for chunk in chunks:
                chunk = chunk.fillna("")
                for col in chunk.columns:
                    chunk[col] = chunk[col].str.strip()
                blank = (chunk == "").all(axis=1)
                chunk = chunk[~blank.to_numpy()]  # blank lines and a spreadsheet's trailing ",,,,"
                if not len(chunk):
                    continue
                rows += len(chunk)
                good = _validate(chunk, spec, label, ctx)
                if spec.name == "partners":
                    ctx.partner_ids.update(chunk["external_id"].tolist())
                _load_stage(spec, good, [c for c in header if c in {x.name for x in spec.columns}])
                progress(min(counted.position / size, 1.0))
        except UnicodeDecodeError as exc:
            ctx.report.error(label, 0, "", _not_utf8(exc))
        except pd.errors.ParserError as exc:
            ctx.report.error(label, 0, "", f"is not well-formed CSV: {exc}".strip())
        except (OSError, EOFError) as exc:
            ctx.report.error(label, 0, "", f"cannot be read to the end ({exc})")
    if rows == 0 and not ctx.report.error_count:
        ctx.report.error(label, 0, "", "has no data rows")
    return rows


class _CountingReader(io.RawIOBase):
    """How far into the (possibly compressed) file pandas has read, for the progress bar."""

    def __init__(self, inner):
        self.inner = inner
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.inner.read(len(b))
        n = len(data)
        b[:n] = data
        compressed = getattr(self.inner, "fileobj", None)
        self.position = compressed.tell() if compressed is not None else self.position + n
        return n


# Cell checks (vectorised over a chunk) --------------------------------------------------


def _validate(chunk: pd.DataFrame, spec: Table, label: str, ctx: _Context) -> pd.DataFrame:
    """Report every bad cell of the chunk; return its good rows, converted for staging."""
    lines = chunk.index.to_numpy() + 2  # the header is line 1
    bad = np.zeros(len(chunk), dtype=bool)
    out = pd.DataFrame({"line": lines}, index=chunk.index)

    def flag(mask, column: str, reason) -> None:
        nonlocal bad
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        reasons = reason if isinstance(reason, pd.Series) else None
        for i in np.flatnonzero(mask):
            text = reasons.iloc[i] if reasons is not None else reason
            ctx.report.error(label, int(lines[i]), column, text)
        bad |= mask

    for col in spec.columns:
        if col.name not in chunk.columns:
            continue
        s = chunk[col.name]
        empty = (s == "").to_numpy()
        if col.required:
            flag(empty, col.name, "is required")
        present = ~empty
        if col.max_length:
            long = present & (s.str.len() > col.max_length).to_numpy()
            flag(long, col.name, f"is longer than {col.max_length} characters")
        if col.kind == "id":
            flag(present & ~s.str.fullmatch(EXTERNAL_ID.pattern).to_numpy(), col.name,
                 "must be letters, digits, '-', '_' or '.' (up to 16)")  # fmt: skip
            out[col.name] = s
        elif col.kind == "text":
            out[col.name] = s.where(present, None)
        elif col.kind == "choice":
            low = s.str.lower()
            flag(
                present & ~low.isin(col.choices).to_numpy(),
                col.name,
                f"must be one of {', '.join(col.choices)}",
            )
            out[col.name] = low.where(present, None)
        elif col.kind == "email":
            flag(present & ~s.map(_is_email).to_numpy(dtype=bool), col.name, "is not an email address")
            out[col.name] = s
        elif col.kind == "user":
            if ctx.users is None:
                ctx.users = dict(get_user_model().objects.values_list("username", "pk"))
            ids = s.map(ctx.users)
            unknown = present & ids.isna().to_numpy()
            flag(unknown, col.name, "no user named " + s.map(repr))
            out[col.name] = ids.where(present, None).astype("Int64")
        elif col.kind in ("date", "month"):
            dates, reason = _dates(s, month=col.kind == "month")
            flag(present & dates.isna().to_numpy(), col.name, reason)
            future = present & (dates > pd.Timestamp(ctx.today)).to_numpy(dtype=bool)
            flag(future, col.name, f"is in the future (after {ctx.today})")
            out[col.name] = dates.dt.strftime("%Y-%m-%d").where(present & dates.notna().to_numpy(), None)
        elif col.kind in ("count", "money"):
            numbers = pd.to_numeric(s.where(present, None), errors="coerce")
            nan = present & numbers.isna().to_numpy()
            flag(nan, col.name, "is not a number")
            if col.kind == "count":
                flag(present & ~nan & (numbers % 1 != 0).to_numpy(), col.name, "must be a whole number")
            flag((numbers < 0).to_numpy(), col.name, "must be 0 or more (a negative amount)")
            limit = COUNT_MAX if col.kind == "count" else MONEY_MAX
            flag((numbers.abs() >= limit).to_numpy(), col.name, "is too large")
            out[col.name] = s.where(present, None)

    if spec.name == "partners" and "status" in chunk.columns:
        status = chunk["status"].str.lower().replace("", "active")
        churned_on = (
            chunk["churned_on"] if "churned_on" in chunk.columns else pd.Series("", index=chunk.index)
        )
        flag(
            ((status == "churned") & (churned_on == "")).to_numpy(),
            "churned_on",
            "a churned partner needs churned_on",
        )
        flag(
            ((status == "active") & (churned_on != "")).to_numpy(),
            "churned_on",
            "an active partner has no churned_on",
        )
        out["status"] = status
    if spec.name == "partners" and "churned_on" in out:
        flag(_before(out["churned_on"], out["joined_on"]), "churned_on", "is before joined_on")
    if spec.name == "invoices":
        flag(_before(out["due_on"], out["issued_on"]), "due_on", "is before issued_on")
    return out[~bad]


def _before(later: pd.Series, earlier: pd.Series) -> np.ndarray:
    """ISO dates compare as text; a missing date is never "before"."""
    both = (later.notna() & earlier.notna()).to_numpy()
    return both & (later.fillna("").to_numpy(dtype=str) < earlier.fillna("").to_numpy(dtype=str))


def _is_email(value: str) -> bool:
    try:
        validate_email(value)
    except ValidationError:
        return False
    return True


def _dates(s: pd.Series, *, month: bool) -> tuple[pd.Series, str]:
    """ISO dates only (YYYY-MM-DD; a month also YYYY-MM): 03/04/2025 is never guessed."""
    text = s.where(~s.str.fullmatch(r"\d{4}-\d{2}"), s + "-01") if month else s
    iso = text.str.fullmatch(ISO_DATE)
    parsed = pd.to_datetime(text.where(iso, None), format="%Y-%m-%d", errors="coerce")
    if month:
        parsed = parsed.where(parsed.dt.day == 1)
        return parsed, "must be a month as YYYY-MM (or its first day, YYYY-MM-01)"
    return parsed, "must be a date as YYYY-MM-DD"


# Staging ---------------------------------------------------------------------------------


def _stage_name(table: str) -> str:
    return f"import_stage_{table}"


def _create_stage(spec: Table) -> None:
    columns = ", ".join(f"{c.name} {c.sql_type}" for c in spec.columns)
    with connection.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {_stage_name(spec.name)}")
        cur.execute(f"CREATE TEMP TABLE {_stage_name(spec.name)} (line integer NOT NULL, {columns})")


def _drop_stages() -> None:
    with connection.cursor() as cur:
        for table in TABLES:
            cur.execute(f"DROP TABLE IF EXISTS {_stage_name(table)}")


def _load_stage(spec: Table, frame: pd.DataFrame, present: list[str]) -> None:
    if not len(frame):
        return
    cols = ["line", *present]
    frame = frame[cols]
    name = _stage_name(spec.name)
    if connection.vendor == "postgresql":
        buf = io.StringIO()
        frame.to_csv(buf, index=False, header=False)
        raw = connection.connection
        with (
            raw.cursor() as cur,
            cur.copy(f"COPY {name} ({', '.join(cols)}) FROM STDIN (FORMAT csv)") as copy,
        ):
            copy.write(buf.getvalue())
    else:
        rows = [tuple(_plain(v) for v in r) for r in frame.itertuples(index=False)]
        with connection.cursor() as cur:
            marks = ", ".join(["%s"] * len(cols))
            cur.executemany(f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({marks})", rows)


def _plain(value):
    """numpy scalars and pandas' missing values as the Python values sqlite3 binds."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def _query(sql: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(sql, params or [])
        return cur.fetchall()


def _execute(sql: str, params: list | None = None) -> int:
    with connection.cursor() as cur:
        cur.execute(sql, params or [])
        return cur.rowcount


# Checks across rows and files (SQL on the staging tables) -------------------------------


def _check_across(staged: list[str], files: dict[str, str], report: ImportReport) -> None:
    for table in staged:
        spec, stage = TABLES[table], _stage_name(table)
        key = ", ".join(spec.key)
        on = " AND ".join(f"s.{k} = d.{k}" for k in spec.key)
        dupes = _query(
            f"SELECT s.line, d.first, s.{spec.key[-1]} FROM {stage} s JOIN "
            f"(SELECT {key}, MIN(line) AS first FROM {stage} GROUP BY {key} HAVING COUNT(*) > 1) d ON {on} "
            "WHERE s.line > d.first ORDER BY s.line"
        )
        for line, first, value in dupes:
            report.error(
                files[table], line, spec.key[-1], f"{value} duplicates line {first} ({' + '.join(spec.key)})"
            )
        if table == "partners":
            continue
        # Two NOT EXISTS, not one over a UNION: each becomes a hash anti-join.
        unknown = "NOT EXISTS (SELECT 1 FROM retention_partner p WHERE p.external_id = s.external_id)"
        if "partners" in staged:
            partners_stage = _stage_name("partners")
            unknown += (
                f" AND NOT EXISTS (SELECT 1 FROM {partners_stage} sp WHERE sp.external_id = s.external_id)"
            )
        for line, ext in _query(
            f"SELECT s.line, s.external_id FROM {stage} s WHERE {unknown} ORDER BY s.line"
        ):
            report.error(
                files[table],
                line,
                "external_id",
                f"unknown partner id {ext} (not in the partners file or the database)",
            )
        if table == "churn_events":
            joined = "COALESCE(sp.joined_on, p.joined_on)" if "partners" in staged else "p.joined_on"
            join_sp = (
                f"LEFT JOIN {_stage_name('partners')} sp ON sp.external_id = s.external_id"
                if "partners" in staged
                else ""
            )
            rows = _query(
                f"SELECT s.line, s.churned_on, {joined} FROM {stage} s {join_sp} "
                f"LEFT JOIN retention_partner p ON p.external_id = s.external_id WHERE s.churned_on < {joined} ORDER BY s.line"
            )
            for line, churned, join in rows:
                report.error(
                    files[table], line, "churned_on", f"{churned} is before the partner joined ({join})"
                )


# Writing -----------------------------------------------------------------------------------

TARGETS = {
    "partners": ("retention_partner", "t.external_id = s.external_id", ""),
    "activity": ("retention_monthlyactivity", "t.partner_id = p.id AND t.month = s.month", "p"),
    "invoices": ("retention_invoice", "t.partner_id = p.id AND t.invoice_id = s.invoice_id", "p"),
}
VALUE_COLUMNS = {
    "partners": ["name", "tier", "region", "segment", "monthly_revenue", "contact_email", "joined_on"],
    "activity": ["transactions", "revenue", "active_users", "support_tickets"],
    "invoices": ["issued_on", "due_on", "paid_on", "amount"],
}


def _partner_columns(header: list[str]) -> list[str]:
    """The partner columns an import sets: the required ones, and the optional ones the file has
    (a file without a status column leaves statuses, which churn events also set, alone)."""
    cols = list(VALUE_COLUMNS["partners"])
    if "account_owner" in header:
        cols.append("account_owner_id")
    if "status" in header:
        cols += ["status", "churned_on"]
    if "notes" in header:
        cols.append("notes")
    return cols


def _source(column: str) -> str:
    if column == "account_owner_id":
        return "s.account_owner"
    if column == "notes":
        return "COALESCE(s.notes, '')"
    return f"s.{column}"


def _distinct(columns: list[str], target: str = "t") -> str:
    return " OR ".join(f"{target}.{c} IS DISTINCT FROM {_source(c)}" for c in columns)


def _count_changes(staged: list[str], report: ImportReport) -> None:
    headers = {f["table"]: f for f in report.files}
    for table in staged:
        stats = report.tables[table]
        stage = _stage_name(table)
        if table == "churn_events":
            changed = _query(
                f"SELECT COUNT(*) FROM {stage} s JOIN retention_partner t ON t.external_id = s.external_id "
                "WHERE t.status <> 'churned' OR t.churned_on IS DISTINCT FROM s.churned_on "
                "OR t.churn_reason IS DISTINCT FROM COALESCE(s.reason, '')"
            )[0][0]
            new = _query(
                f"SELECT COUNT(*) FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM retention_partner t WHERE t.external_id = s.external_id)"
            )[0][0]
            stats.update(
                created=0, updated=int(changed) + int(new), unchanged=stats["rows"] - int(changed) - int(new)
            )
            continue
        target, on, via = TARGETS[table]
        columns = _partner_columns(headers[table]["columns"]) if table == "partners" else VALUE_COLUMNS[table]
        join_p = "JOIN retention_partner p ON p.external_id = s.external_id " if via else ""
        left_p = "LEFT JOIN retention_partner p ON p.external_id = s.external_id " if via else ""
        created = _query(
            f"SELECT COUNT(*) FROM {stage} s {left_p}WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {on})"
        )[0][0]
        updated = _query(
            f"SELECT COUNT(*) FROM {stage} s {join_p}JOIN {target} t ON {on} WHERE {_distinct(columns)}"
        )[0][0]
        stats.update(
            created=int(created), updated=int(updated), unchanged=stats["rows"] - int(created) - int(updated)
        )


def _write(plan: list[dict], report: ImportReport, *, actor, replace: bool, now) -> None:
    for item in plan:
        table, header = item["table"], item["header"]
        stage = _stage_name(table)
        if table == "partners":
            columns = _partner_columns(header)
            _audit_email_changes(item["file"], actor)
            insert = ["external_id", *columns]
            if "status" not in columns:
                insert += ["status"]
            if "notes" not in columns:
                insert += ["notes"]
            values = ["s.external_id", *[_source(c) for c in columns]]
            values += [] if "status" in columns else ["'active'"]
            values += [] if "notes" in columns else ["''"]
            _execute(
                f"INSERT INTO retention_partner ({', '.join(insert)}, churn_reason, created_at, updated_at) "
                f"SELECT {', '.join(values)}, '', %s, %s FROM {stage} s WHERE true "
                "ON CONFLICT (external_id) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in columns)
                + ", updated_at = excluded.updated_at WHERE "
                + " OR ".join(f"retention_partner.{c} IS DISTINCT FROM excluded.{c}" for c in columns),
                [now, now],
            )
        elif table == "churn_events":
            pick = f"(SELECT {{}} FROM {stage} s WHERE s.external_id = retention_partner.external_id)"
            _execute(
                f"UPDATE retention_partner SET status = 'churned', churned_on = {pick.format('s.churned_on')}, "
                f"churn_reason = {pick.format('COALESCE(s.reason, %s)')}, updated_at = %s "
                f"WHERE external_id IN (SELECT external_id FROM {stage}) AND (status <> 'churned' "
                f"OR churned_on IS DISTINCT FROM {pick.format('s.churned_on')} "
                f"OR churn_reason IS DISTINCT FROM {pick.format('COALESCE(s.reason, %s)')})",
                ["", now, ""],
            )
        else:
            target, _, _ = TARGETS[table]
            key = "month" if table == "activity" else "invoice_id"
            columns = VALUE_COLUMNS[table]
            insert = ["partner_id", key, *columns]
            _execute(
                f"INSERT INTO {target} ({', '.join(insert)}) "
                f"SELECT p.id, s.{key}, {', '.join('s.' + c for c in columns)} FROM {stage} s "
                "JOIN retention_partner p ON p.external_id = s.external_id WHERE true "
                f"ON CONFLICT (partner_id, {key}) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in columns)
                + " WHERE "
                + " OR ".join(f"{target}.{c} IS DISTINCT FROM excluded.{c}" for c in columns)
            )
            if replace:
                report.tables[table]["deleted"] = _execute(
                    f"DELETE FROM {target} WHERE partner_id IN (SELECT p.id FROM retention_partner p "
                    f"WHERE p.external_id IN (SELECT external_id FROM {stage})) AND NOT EXISTS ("
                    f"SELECT 1 FROM {stage} s JOIN retention_partner p ON p.external_id = s.external_id "
                    f"WHERE p.id = {target}.partner_id AND s.{key} = {target}.{key})"
                )


def _audit_email_changes(label: str, actor) -> None:
    """A contact email an import changes is audited with its before and after."""
    changes = _query(
        f"SELECT t.id, t.contact_email, s.contact_email FROM {_stage_name('partners')} s "
        "JOIN retention_partner t ON t.external_id = s.external_id WHERE t.contact_email <> s.contact_email"
    )
    partners = Partner.objects.in_bulk([pk for pk, _, _ in changes])
    for pk, before, after in changes:
        audit_record(
            event_type="partner_contact_email_changed",
            actor=actor,
            partner=partners[pk],
            payload={"before": before, "after": after, "file": label},
        )


def partners_import_csv(*, path: Path, actor=None, dry_run: bool = False) -> ImportReport:
    """The partners-only import of `import_partners` (one file through the same path)."""
    return history_import(paths=[path], actor=actor, dry_run=dry_run)


# The Import page: a job per upload -----------------------------------------------------------

JOB_ERRORS_KEPT = 1_000  # shown on the page; the count says how many there were


def _progress_key(job_id: int) -> str:
    return f"import-job-{job_id}-progress"


def import_job_create(*, uploads: list, actor, dry_run: bool = False, replace: bool = False):
    """Keep the uploaded files under MEDIA_ROOT/imports/<job>/ and queue their import."""
    from django.conf import settings

    from retention.models import ImportJob

    with transaction.atomic():
        job = ImportJob.objects.create(created_by=actor, dry_run=dry_run, replace=replace)
        folder = Path(settings.MEDIA_ROOT) / "imports" / str(job.pk)
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for i, upload in enumerate(uploads):
            # Our own file names: an uploaded name is for messages only, never a path.
            target = folder / f"{i:02d}.upload"
            with open(target, "wb") as fh:
                for block in upload.chunks():
                    fh.write(block)
            files.append({"name": Path(upload.name).name[:200], "path": str(target)})
        job.files = files
        job.save(update_fields=["files", "updated_at"])
        audit_record(
            event_type="import_queued",
            actor=actor,
            payload={
                "job": job.pk,
                "files": [f["name"] for f in files],
                "dry_run": dry_run,
                "replace": replace,
            },
        )
    return job


def import_job_run(*, job_id: int):
    """Run a queued job once (a redelivered task finds it claimed and does nothing)."""
    from django.core.cache import cache

    from retention.models import ImportJob

    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.RUNNING, updated_at=timezone.now()
    )
    if not claimed:
        return ImportJob.objects.get(pk=job_id)
    job = ImportJob.objects.select_related("created_by").get(pk=job_id)
    paths = {Path(f["path"]): f["name"] for f in job.files}

    def progress(fraction: float, stage: str) -> None:
        # The import's own transaction hides any row update until it ends: the cache is
        # how the page sees progress meanwhile.
        cache.set(_progress_key(job_id), {"fraction": round(fraction, 3), "stage": stage}, 3600)

    try:
        report = history_import(
            paths=list(paths), actor=job.created_by, dry_run=job.dry_run, replace=job.replace,
            progress=progress, names=paths,
        )  # fmt: skip
    except Exception as exc:  # the job must end, whatever broke; the error is kept for the page
        job.status = ImportJob.Status.FAILED
        job.errors = [{"file": "", "line": 0, "column": "", "reason": f"the import failed: {exc}"[:500]}]
        job.error_count = 1
        job.finished_at = timezone.now()
        job.save()
        raise
    job.status = ImportJob.Status.SUCCEEDED if report.ok else ImportJob.Status.FAILED
    job.summary = report.as_dict()
    job.errors = [e.as_dict() for e in report.errors[:JOB_ERRORS_KEPT]]
    job.error_count = report.error_count
    job.finished_at = timezone.now()
    job.save()
    cache.delete(_progress_key(job_id))
    return job


def import_job_progress(*, job) -> dict:
    """{"fraction", "stage"} of a running job (0 and "waiting" until the worker starts it)."""
    from django.core.cache import cache

    if job.is_done:
        return {"fraction": 1.0, "stage": "done"}
    return cache.get(_progress_key(job.pk)) or {"fraction": 0.0, "stage": "waiting for a worker"}
