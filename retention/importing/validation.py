"""Cell checks, vectorised over a chunk: every bad cell is reported, good rows converted."""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from retention.importing.contract import (
    COUNT_MAX,
    DIGITS,
    EXTERNAL_ID,
    ISO_DATE,
    MONEY_MAX,
    PLAIN_EMAIL,
    YEAR_MONTH,
    Table,
)
from retention.importing.report import ImportReport


@dataclass
class Context:
    today: dt.date
    report: ImportReport
    partner_ids: set[str] = field(default_factory=set)  # external ids of the partners file
    users: dict[str, int] | None = None


def validate_chunk(chunk: pd.DataFrame, spec: Table, label: str, ctx: Context) -> pd.DataFrame:
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
        values = s.to_numpy(dtype=object)
        lens = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
        empty = lens == 0
        if col.required:
            flag(empty, col.name, "is required")
        present = ~empty
        if col.max_length:
            flag(present & (lens > col.max_length), col.name, f"is longer than {col.max_length} characters")
        if col.kind == "id":
            flag(refused(values, lens, present, EXTERNAL_ID), col.name,
                 "must be letters, digits, '-', '_' or '.' (up to 16)")  # fmt: skip
            out[col.name] = s
        elif col.kind == "text":
            out[col.name] = s.where(present, None)
        elif col.kind == "choice":
            low = s.copy()
            upper = present & ~s.isin(col.choices).to_numpy()
            if upper.any():  # lower-case only the cells that need it ("Gold")
                low[upper] = s[upper].str.lower()
            flag(
                present & ~low.isin(col.choices).to_numpy(),
                col.name,
                f"must be one of {', '.join(col.choices)}",
            )
            out[col.name] = low.where(present, None)
        elif col.kind == "email":
            maybe = present & (nonmatching(values, lens, PLAIN_EMAIL) | (lens > 320))
            if maybe.any():  # the few the plain pattern cannot vouch for: Django's own validator
                maybe[maybe] = ~np.fromiter(map(_is_email, values[maybe]), dtype=bool)
            flag(maybe, col.name, "is not an email address")
            out[col.name] = s
        elif col.kind == "user":
            if ctx.users is None:
                ctx.users = dict(get_user_model().objects.values_list("username", "pk"))
            ids = s.map(ctx.users)
            unknown = present & ids.isna().to_numpy()
            if unknown.any():
                flag(unknown, col.name, "no user named " + s.map(repr))
            out[col.name] = ids.where(present, None).astype("Int64")
        elif col.kind in ("date", "month"):
            text, dates, reason = _dates(values, lens, month=col.kind == "month")
            flag(present & np.isnat(dates), col.name, reason)
            future = present & (dates > np.datetime64(ctx.today))
            flag(future, col.name, f"is in the future (after {ctx.today})")
            out[col.name] = pd.Series(text, index=chunk.index).where(present & ~np.isnat(dates), None)
        elif col.kind in ("count", "money"):
            numbers = _numbers(values, present, s)
            nan = present & np.isnan(numbers)
            flag(nan, col.name, "is not a number")
            if col.kind == "count":
                flag(present & ~nan & (numbers % 1 != 0), col.name, "must be a whole number")
            flag(numbers < 0, col.name, "must be 0 or more (a negative amount)")
            limit = COUNT_MAX if col.kind == "count" else MONEY_MAX
            flag(np.abs(numbers) >= limit, col.name, "is too large")
            cells = s.where(present, None)
            if col.kind == "count":
                # "4.0" or "1e3" is a whole number the integer column would refuse as text.
                odd = ~bad & refused(values, lens, present, DIGITS)
                if odd.any():
                    cells = cells.copy()
                    cells[odd] = numbers[odd].astype(np.int64).astype(str)
            out[col.name] = cells

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
    if spec.name == "activity":
        # A part of the month cannot hold more transactions than the whole (nor a week more
        # than the fortnight that contains it).
        for part, whole in (
            ("transactions_last_14d", "transactions"),
            ("transactions_last_7d", "transactions_last_14d"),
            ("transactions_last_7d", "transactions"),
        ):
            if part in out and whole in out:
                flag(_more(out[part], out[whole]), part, f"is more than {whole}")
    return out[~bad]


def _more(part: pd.Series, whole: pd.Series) -> np.ndarray:
    """Counts compare as numbers; a missing count is never "more"."""
    a, b = pd.to_numeric(part, errors="coerce"), pd.to_numeric(whole, errors="coerce")
    return (a > b).fillna(False).to_numpy(dtype=bool)


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


def _dates(values: np.ndarray, lens: np.ndarray, *, month: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """ISO dates only (YYYY-MM-DD; a month also YYYY-MM): 03/04/2025 is never guessed.
    (the ISO text, the dates (NaT where bad), the reason a bad one is refused)."""
    text = values
    if month:
        short = (lens == 7) & ~refused(values, lens, lens == 7, YEAR_MONTH)
        if short.any():
            text = values.copy()
            text[short] = values[short] + "-01"
            lens = np.where(short, lens + 3, lens)
    iso = (lens > 0) & ~refused(text, lens, lens > 0, ISO_DATE)
    candidates = text.copy()
    candidates[~iso] = None
    parsed = pd.to_datetime(pd.Series(candidates), format="%Y-%m-%d", errors="coerce")
    dates = parsed.to_numpy(dtype="datetime64[ns]")
    if month:
        dates = np.where(parsed.dt.day.to_numpy() == 1, dates, np.datetime64("NaT"))
        return text, dates, "must be a month as YYYY-MM (or its first day, YYYY-MM-01)"
    return text, dates, "must be a date as YYYY-MM-DD"


def refused(values: np.ndarray, lens: np.ndarray, present: np.ndarray, pattern: re.Pattern) -> np.ndarray:
    """Which present cells do not match the whole pattern. A quick check of the whole column
    first (string methods over the joined cells, at memory speed) vouches for a good column;
    only a column it cannot vouch for is scanned cell by cell (nonmatching)."""
    quick = _QUICK.get(pattern)
    if quick is not None and present.any() and quick(values[present], lens[present]):
        return np.zeros(len(values), dtype=bool)
    return present & nonmatching(values, lens, pattern)


def _all_ids(cells: np.ndarray, lens: np.ndarray) -> bool:
    joined = "\n" + "\n".join(cells)
    return (
        lens.max() <= 16
        and _ID_CHARS.fullmatch(joined) is not None
        and not any(f"\n{c}" in joined for c in "_.-\n")  # a first character that may not start
        and not joined.endswith("\n")
    )


def _all_iso(cells: np.ndarray, lens: np.ndarray) -> bool:
    """Every cell is YYYY-MM-DD (or, all 7 wide, YYYY-MM): digits, dashes at 4 (and 7)."""
    width = int(lens[0])
    dashes = {10: (4, 7), 7: (4,)}.get(width)
    joined = "".join(cells)
    return (
        dashes is not None
        and len(joined) == width * len(cells)
        and joined.isascii()
        and not any(joined[d::width].strip("-") for d in dashes)
        and joined.count("-") == len(dashes) * len(cells)
        and joined.replace("-", "").isdigit()
    )


def _all_digits(cells: np.ndarray, lens: np.ndarray) -> bool:
    joined = "".join(cells)
    return joined.isascii() and joined.isdigit()


_ID_CHARS = re.compile(r"[A-Za-z0-9_.\n-]*")
_QUICK = {EXTERNAL_ID: _all_ids, ISO_DATE: _all_iso, YEAR_MONTH: _all_iso, DIGITS: _all_digits}
_NUMBER_CHARS = re.compile(r"[0-9.]*")


def _numbers(values: np.ndarray, present: np.ndarray, s: pd.Series) -> np.ndarray:
    """The cells as floats, NaN where empty or not a number. Plain digits-and-dot columns
    parse with numpy at once; anything else (signs, exponents, junk) goes through pandas."""
    cells = values[present]
    out = np.full(len(values), np.nan)
    if _NUMBER_CHARS.fullmatch("".join(cells)):
        try:
            out[present] = np.array(cells.tolist(), dtype=np.float64)
            return out
        except ValueError:  # "1.2.3": the slow path names each bad cell
            pass
    return pd.to_numeric(s.where(present, None), errors="coerce").to_numpy(dtype=np.float64)


def nonmatching(values: np.ndarray, lens: np.ndarray, pattern: re.Pattern) -> np.ndarray:
    """Which cells do not match the whole pattern (empty ones included), found by one regex
    scan of the column joined by newlines: a C-speed pass where a Python call per cell took
    most of an import's time. Patterns here never match a newline, so a cell holding one is
    refused outright."""
    bad = np.zeros(len(values), dtype=bool)
    if not len(values):
        return bad
    joined = "\n".join(values)
    starts = np.concatenate(([0], np.cumsum(lens + 1)[:-1]))
    misses = [m.start() for m in _line_refuser(pattern).finditer(joined)]
    if misses:
        bad[np.searchsorted(starts, misses, side="right") - 1] = True
    if joined.count("\n") != len(values) - 1:
        bad |= np.fromiter(("\n" in v for v in values), dtype=bool, count=len(values))
    return bad


@functools.cache
def _line_refuser(pattern: re.Pattern) -> re.Pattern:
    """Matches at the start of every line that is not, as a whole, the pattern."""
    return re.compile(rf"^(?!(?:{pattern.pattern})$)", re.MULTILINE | (pattern.flags & re.IGNORECASE))
