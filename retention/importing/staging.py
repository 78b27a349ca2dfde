"""The temporary staging tables an import loads before anything is written, and the
small SQL helpers the checks and upserts share."""

from __future__ import annotations

import numpy as np
import pandas as pd
from django.db import connection

from retention.importing.contract import TABLES, Table


def stage_name(table: str) -> str:
    return f"import_stage_{table}"


def create_stage(spec: Table) -> None:
    columns = ", ".join(f"{c.name} {c.sql_type}" for c in spec.columns)
    with connection.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {stage_name(spec.name)}")
        cur.execute(f"CREATE TEMP TABLE {stage_name(spec.name)} (line integer NOT NULL, {columns})")


def drop_stages() -> None:
    with connection.cursor() as cur:
        for table in TABLES:
            cur.execute(f"DROP TABLE IF EXISTS {stage_name(table)}")


def load_stage(spec: Table, frame: pd.DataFrame, present: list[str]) -> None:
    if not len(frame):
        return
    cols = ["line", *present]
    frame = frame[cols]
    name = stage_name(spec.name)
    if connection.vendor == "postgresql":
        raw = connection.connection
        with raw.cursor() as cur, cur.copy(f"COPY {name} ({', '.join(cols)}) FROM STDIN") as copy:
            copy.write(copy_text(frame))
    else:
        rows = [tuple(_plain(v) for v in r) for r in frame.itertuples(index=False)]
        with connection.cursor() as cur:
            marks = ", ".join(["%s"] * len(cols))
            cur.executemany(f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({marks})", rows)


def copy_text(frame: pd.DataFrame) -> str:
    """The frame in COPY's text format, built a column at a time (pandas' to_csv formats
    cell by cell and took a fifth of an import's time): tab-separated, \\N for NULL, and the
    four characters COPY reads specially escaped, in the rare columns that hold them."""
    columns = []
    for name in frame.columns:
        s = frame[name]
        missing = s.isna().to_numpy()
        cells = s.astype(str).to_numpy(dtype=object)
        if missing.any():
            cells[missing] = ""
        joined = "".join(cells)
        if any(c in joined for c in "\\\t\n\r"):  # memchr-fast: no regex over every cell
            cells = np.array([v.translate(_COPY_ESCAPES) for v in cells], dtype=object)
        if missing.any():
            cells[missing] = "\\N"
        columns.append(cells)
    return "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _plain(value):
    """numpy scalars and pandas' missing values as the Python values sqlite3 binds."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def query(sql: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(sql, params or [])
        return cur.fetchall()


def execute(sql: str, params: list | None = None) -> int:
    with connection.cursor() as cur:
        cur.execute(sql, params or [])
        return cur.rowcount
