"""Export the partner history as the import contract's files (docs/data.md).

The inverse of retention.importing: `export_data DIR` then `import_data DIR` into an empty
database gives the same history (the round-trip test checks that the model and the Live Feed
come out the same). Invoices without a team invoice number (the simulator's) get one from
their row id, stable across exports.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

from retention.models import Invoice, MonthlyActivity, Partner

FILES = {
    "partners": [
        "external_id", "name", "tier", "region", "segment", "monthly_revenue", "contact_email", "joined_on",
        "account_owner", "status", "churned_on", "notes",
    ],
    "activity": [
        "external_id", "month", "transactions", "revenue", "active_users", "support_tickets",
        "transactions_last_14d", "transactions_last_7d",
    ],
    "invoices": ["external_id", "invoice_id", "issued_on", "due_on", "paid_on", "amount"],
    "churn_events": ["external_id", "churned_on", "reason"],
}  # fmt: skip


def _cell(value) -> str:
    return "" if value is None else str(value)


def history_export(*, folder: Path, compress: bool = False) -> dict[str, int]:
    """Write the four files into ``folder``; returns rows per file."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".csv.gz" if compress else ".csv"
    rows: dict[str, int] = {}

    def write(name: str, records) -> None:
        path = folder / f"{name}{suffix}"
        opener = gzip.open if compress else open
        n = 0
        with opener(path, "wt", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(FILES[name])
            for record in records:
                out.writerow([_cell(v) for v in record])
                n += 1
        rows[name] = n

    partners = Partner.objects.order_by("pk").values_list(
        "external_id", "name", "tier", "region", "segment", "monthly_revenue", "contact_email", "joined_on",
        "account_owner__username", "status", "churned_on", "notes",
    )  # fmt: skip
    write("partners", partners.iterator(chunk_size=5000))
    activity = MonthlyActivity.objects.order_by("partner_id", "month").values_list(
        "partner__external_id", "month", "transactions", "revenue", "active_users", "support_tickets",
        "transactions_last_14d", "transactions_last_7d",
    )  # fmt: skip
    write(
        "activity",
        ((ext, f"{month:%Y-%m}", *rest) for ext, month, *rest in activity.iterator(chunk_size=20_000)),
    )
    invoices = Invoice.objects.order_by("partner_id", "issued_on", "pk").values_list(
        "partner__external_id", "invoice_id", "pk", "issued_on", "due_on", "paid_on", "amount"
    )
    write(
        "invoices",
        (
            (ext, invoice_id or f"INV{pk}", *rest)
            for ext, invoice_id, pk, *rest in invoices.iterator(chunk_size=20_000)
        ),
    )
    churned = Partner.objects.filter(status=Partner.Status.CHURNED).order_by("pk")
    write("churn_events", churned.values_list("external_id", "churned_on", "churn_reason").iterator())
    return rows
