"""Partner history from the database as the DataFrames ml.features expects.

On PostgreSQL the rows stream through COPY ... TO STDOUT (CSV) into pandas, which is several
times faster than fetching millions of tuples; elsewhere (SQLite demo) a plain cursor.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence

import pandas as pd
from django.db import connection

PARTNER_COLUMNS = ["tier", "region", "segment", "monthly_revenue", "joined_on", "churned_on"]
ACTIVITY_COLUMNS = [
    "month", "transactions", "revenue", "active_users", "support_tickets",
    "transactions_last_14d", "transactions_last_7d",
]  # fmt: skip
INVOICE_COLUMNS = ["issued_on", "due_on", "paid_on", "amount"]
DATES = {"joined_on", "churned_on", "month", "issued_on", "due_on", "paid_on"}
NUMBERS = {
    "monthly_revenue", "revenue", "amount", "transactions", "active_users", "support_tickets",
    "transactions_last_14d", "transactions_last_7d",
}  # fmt: skip
KEYS = {"partner_id"}  # integer keys (external ids are text)


# Up to this many partners a read comes back as one text value (see _frame); more go through COPY.
ONE_VALUE_PARTNERS = 50_000


def _frame(sql: str, params: list, columns: list[str], *, one_value: bool = False) -> pd.DataFrame:
    """The rows of `sql` as a frame of `columns` (dates and numbers parsed).

    On PostgreSQL the rows come as CSV. COPY ... TO STDOUT hands them over one row per message,
    and psycopg's loop over the messages cost ~8 us a row in Python (2 of a scoring chunk's 3
    seconds of features at 10,000 partners); with `one_value` (a bounded read: a chunk's
    partners) the server joins the CSV lines into one text value (string_agg, in the rows'
    order), fetched in one go. Its 1 GB limit is far off: a chunk of 10,000 partners' year
    is about 7 MB."""
    if connection.vendor == "postgresql":
        from psycopg import sql as pgsql

        connection.ensure_connection()
        raw = connection.connection
        query = pgsql.SQL(sql.replace("%s", "{}")).format(*[pgsql.Literal(p) for p in params])
        buf = io.BytesIO()
        with raw.cursor() as cur:
            if one_value:
                names = pgsql.SQL(", ").join(pgsql.Identifier(f"c{i}") for i in range(1, len(columns) + 1))
                agg = pgsql.SQL("SELECT string_agg({}, E'\\n') FROM ({}) AS q({})")
                cur.execute(agg.format(_csv_line(columns), query, names))
                text = cur.fetchone()[0]
                if text:
                    buf.write(text.encode())
            else:
                copy_sql = pgsql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(query)
                with cur.copy(copy_sql) as copy:
                    for block in copy:
                        buf.write(block)
        buf.seek(0)
        if buf.getbuffer().nbytes == 0:
            df = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        else:
            df = pd.read_csv(
                buf, header=None, names=columns, dtype={c: str for c in columns if c not in NUMBERS | KEYS}
            )
    else:
        with connection.cursor() as cur:
            cur.execute(sql, params)
            df = pd.DataFrame(cur.fetchall(), columns=columns)
    for c in columns:
        if c in DATES:
            df[c] = pd.to_datetime(df[c], errors="coerce")
        elif c in NUMBERS:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def _csv_line(columns: list[str]):
    """A row as a CSV line, as COPY's CSV would write it for pandas: NULL empty, text quoted."""
    from psycopg import sql as pgsql

    fields = []
    for i, c in enumerate(columns, start=1):
        value = pgsql.SQL("q.{}::text").format(pgsql.Identifier(f"c{i}"))
        if c not in NUMBERS | KEYS | DATES:
            value = pgsql.SQL("'\"' || replace({}, '\"', '\"\"') || '\"'").format(value)
        fields.append(pgsql.SQL("coalesce({}, '')").format(value))
    return pgsql.SQL(" || ',' || ").join(fields)


def _id_filter(column: str, ids: Sequence[int] | None) -> tuple[str, list]:
    if ids is None:
        return "", []
    ids = [int(i) for i in ids]
    if connection.vendor == "postgresql":
        # One array literal: psycopg's adaptation of a list of 10,000 ints cost 0.2 s a query.
        where, params = f" AND {column} = ANY(%s::bigint[])", ["{" + ",".join(map(str, ids)) + "}"]
        if ids and max(ids) - min(ids) < 4 * len(ids):
            # A scoring chunk: consecutive partners. Read their key range from the index in one
            # scan and keep the chunk's own through a hashed filter ("+ 0" keeps the planner
            # off the array as an index condition). Matched as an index condition, 10,000 ids
            # were 10,000 index descents, or a scan of the whole table (the plan it chose at
            # 100k): a chunk's read then grew with the table, so scoring grew faster than the
            # partners did.
            where = f" AND {column} BETWEEN {min(ids)} AND {max(ids)} AND {column} + 0 = ANY(%s::bigint[])"
        return where, params
    return f" AND {column} IN ({','.join(map(str, ids))})", []


def history_frames(
    *,
    key: str = "external_id",
    partner_ids: Sequence[int] | None = None,
    activity_since: dt.date | None = None,
    invoices_since: dt.date | None = None,
    active_only: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(partners, activity, invoices) keyed by ``key`` ("external_id" or "partner_id")."""
    key_sql = "p.external_id" if key == "external_id" else "p.id"
    one_value = partner_ids is not None and len(partner_ids) <= ONE_VALUE_PARTNERS
    where_p, params_p = _id_filter("p.id", partner_ids)
    if active_only:
        where_p += " AND p.status = 'active'"
    partners = _frame(
        f"SELECT {key_sql}, p.tier, p.region, p.segment, p.monthly_revenue, p.joined_on, p.churned_on "
        f"FROM retention_partner p WHERE 1=1{where_p}",
        params_p,
        [key, *PARTNER_COLUMNS],
        one_value=one_value,
    )
    if key == "partner_id":
        partners[key] = pd.to_numeric(partners[key]).astype("int64")

    def children(table: str, date_col: str, since, cols: list[str], open_col: str = "") -> pd.DataFrame:
        where, params = _id_filter("c.partner_id", partner_ids)
        if since is not None and open_col:
            # Older rows still open (unpaid, or paid since) count too: an invoice unpaid
            # for more than the window is still overdue (see ml.features).
            where += f" AND (c.{date_col} >= %s OR c.{open_col} IS NULL OR c.{open_col} >= %s)"
            params = [*params, since, since]
        elif since is not None:
            where += f" AND c.{date_col} >= %s"
            params = [*params, since]
        if active_only:
            where += " AND p.status = 'active'"
        select = ", ".join(f"c.{c}" for c in cols)
        if key == "partner_id" and not active_only:
            # The row's own key: no join (it cost a partner lookup per row).
            source = f"SELECT c.partner_id, {select} FROM {table} c"
        else:
            source = (
                f"SELECT {key_sql}, {select} FROM {table} c JOIN retention_partner p ON p.id = c.partner_id"
            )
        df = _frame(f"{source} WHERE 1=1{where}", params, [key, *cols], one_value=one_value)
        if key == "partner_id":
            df[key] = pd.to_numeric(df[key]).astype("int64")
        return df

    activity = children("retention_monthlyactivity", "month", activity_since, ACTIVITY_COLUMNS)
    invoices = children("retention_invoice", "issued_on", invoices_since, INVOICE_COLUMNS, "paid_on")
    return partners, activity, invoices
