"""Reading the files: which table a file is from its header, gzip by content, UTF-8 only,
pandas' C parser in chunks; each chunk's good rows go to the staging table."""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from retention.importing.contract import Table
from retention.importing.staging import load_stage
from retention.importing.validation import Context, validate_chunk

CHUNK_ROWS = 250_000
_EDGE_SPACE = re.compile(r"^[^\S\n]|[^\S\n]$", re.MULTILINE)


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


class FileError(Exception):
    pass


def open_file(path: Path):
    """A binary handle on the file, gunzipped when it is gzip (by content, not by name)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        raise FileError(f"cannot read it: {exc.strerror}") from None
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115


def read_header(path: Path) -> list[str]:
    with open_file(path) as fh:
        try:
            head = fh.read(64 * 1024)
        except (OSError, EOFError) as exc:
            raise FileError(f"cannot read it ({exc})") from None
    if b"\x00" in head:
        raise FileError("is a binary file, not CSV text (save it as CSV UTF-8)")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the block's end
            raise FileError(not_utf8(exc)) from None
        text = head[: exc.start].decode("utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    if not first:
        raise FileError("is empty (a header row is required)")
    return [h.strip().lower() for h in next(csv.reader([first]))]


def not_utf8(exc: UnicodeDecodeError) -> str:
    return (
        f"is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
        "save it as CSV UTF-8 (Latin-1 and Windows encodings are not guessed)"
    )


def stage_file(item: dict, spec: Table, ctx: Context, progress: Callable[[float], None]) -> int:
    label, header = item["file"], item["header"]
    size = max(item["path"].stat().st_size, 1)
    rows = 0
    with open_file(item["path"]) as raw:
        counted = _CountingReader(raw)
        try:
            chunks = pd.read_csv(
                io.BufferedReader(counted, 1 << 20), dtype=str, keep_default_na=False, skip_blank_lines=False, chunksize=CHUNK_ROWS,
                encoding="utf-8-sig", header=0, names=header, engine="c",
            )  # fmt: skip
            for chunk in chunks:
                chunk = chunk.fillna("")
                for col in chunk.columns:
                    if _needs_strip(chunk[col].to_numpy(dtype=object)):
                        chunk[col] = chunk[col].str.strip()
                blank = np.logical_and.reduce(
                    [
                        np.fromiter(map(len, chunk[c].to_numpy(dtype=object)), np.int64, len(chunk)) == 0
                        for c in chunk
                    ]
                )
                chunk = chunk[~blank]  # blank lines and a spreadsheet's trailing ",,,,"
                if not len(chunk):
                    continue
                rows += len(chunk)
                good = validate_chunk(chunk, spec, label, ctx)
                if spec.name == "partners":
                    ctx.partner_ids.update(chunk["external_id"].tolist())
                load_stage(spec, good, [c for c in header if c in {x.name for x in spec.columns}])
                progress(min(counted.position / size, 1.0))
        except UnicodeDecodeError as exc:
            ctx.report.error(label, 0, "", not_utf8(exc))
        except pd.errors.ParserError as exc:
            ctx.report.error(label, 0, "", f"is not well-formed CSV: {exc}".strip())
        except (OSError, EOFError) as exc:
            ctx.report.error(label, 0, "", f"cannot be read to the end ({exc})")
    if rows == 0 and not ctx.report.error_count:
        ctx.report.error(label, 0, "", "has no data rows")
    return rows


def _needs_strip(values) -> bool:
    """Whether a cell of the column starts or ends with white space (rare), by one scan of
    the joined column: stripping every cell costs a Python call each."""
    joined = "\n" + "\n".join(values) + "\n"
    if joined.count("\n") != len(values) + 1:
        return True  # a cell holds a line break: strip them all
    if not joined.isascii():
        return bool(_EDGE_SPACE.search(joined))  # other white space than ASCII's
    return any(f"\n{c}" in joined or f"{c}\n" in joined for c in " \t\r\x0b\x0c")


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
