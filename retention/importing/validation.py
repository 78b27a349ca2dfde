"""Cell checks, vectorised over a chunk: every bad cell is reported, good rows converted."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from retention.importing.contract import COUNT_MAX, EXTERNAL_ID, ISO_DATE, MONEY_MAX, Table
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
