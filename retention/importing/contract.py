"""The data contract of docs/data.md as data: each table's columns, kinds and key."""

from __future__ import annotations

import re
from dataclasses import dataclass

from retention.models import Partner

# Whole-cell patterns (no anchors: validation.nonmatching anchors them per line).
EXTERNAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
YEAR_MONTH = re.compile(r"\d{4}-\d{2}")
DIGITS = re.compile(r"\d+")
# Addresses this plain pattern accepts Django's validate_email accepts too (dot-atom local
# part, LDH labels, a letters-only TLD); anything else goes to validate_email itself.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
PLAIN_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*\.[A-Za-z]{{2,63}}")
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
            Column("transactions_last_14d", "count", required=False, sql_type="integer"),
            Column("transactions_last_7d", "count", required=False, sql_type="integer"),
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


def which_table(header: list[str]) -> str | None:
    if "invoice_id" in header:
        return "invoices"
    if "month" in header:
        return "activity"
    if "name" in header or "contact_email" in header:
        return "partners"
    if "churned_on" in header:
        return "churn_events"
    return None
