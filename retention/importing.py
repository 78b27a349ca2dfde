"""CSV import of partners: all rows valid, or nothing written.

Columns (header row required; order free): external_id, name, tier, region, segment,
monthly_revenue, contact_email, joined_on (YYYY-MM-DD); optional: account_owner (a
username), status (active/churned), churned_on, notes. Existing partners (same
external_id) are updated; others are created.
"""

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from django import forms
from django.contrib.auth import get_user_model
from django.db import transaction

from agent.audit import audit_record
from retention.models import Partner

REQUIRED = [
    "external_id",
    "name",
    "tier",
    "region",
    "segment",
    "monthly_revenue",
    "contact_email",
    "joined_on",
]
OPTIONAL = ["account_owner", "status", "churned_on", "notes"]
EXTERNAL_ID = re.compile(r"^P\d{4,10}$")


class PartnerRowForm(forms.ModelForm):
    account_owner = forms.CharField(required=False)
    status = forms.ChoiceField(choices=Partner.Status.choices, required=False)

    class Meta:
        model = Partner
        fields = [*REQUIRED, "status", "churned_on", "notes"]

    def clean_external_id(self):
        value = self.cleaned_data["external_id"].strip()
        if not EXTERNAL_ID.match(value):
            raise forms.ValidationError("must look like P18477 (P and digits)")
        return value

    def clean_monthly_revenue(self):
        value = self.cleaned_data["monthly_revenue"]
        if value is not None and value < 0:
            # Said here with the column's name, before the model's constraint says it by its own.
            raise forms.ValidationError("must be 0 or more")
        return value

    def validate_unique(self):
        pass  # updates by external_id are intended; duplicates within a file are caught separately

    def clean_account_owner(self):
        username = (self.cleaned_data.get("account_owner") or "").strip()
        if not username:
            return None
        try:
            return get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise forms.ValidationError(f"no user named {username!r}") from None

    def clean(self):
        data = super().clean()
        status = data.get("status") or Partner.Status.ACTIVE
        data["status"] = status
        if status == Partner.Status.CHURNED and not data.get("churned_on"):
            self.add_error("churned_on", "a churned partner needs churned_on")
        if status == Partner.Status.ACTIVE and data.get("churned_on"):
            self.add_error("churned_on", "an active partner has no churned_on")
        return data


@dataclass
class ImportReport:
    rows: int = 0
    created: int = 0
    updated: int = 0
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "errors": len(self.errors),
            "dry_run": self.dry_run,
            "written": self.ok and not self.dry_run,
        }


def _lower_choice(value: str) -> str:
    return value.strip().lower()


def partners_import_csv(*, path: Path, actor=None, dry_run: bool = False) -> ImportReport:
    """Validate every row, report each bad one by line number, write only if all are good."""
    report = ImportReport(dry_run=dry_run)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed below
    except OSError as exc:
        report.errors.append(f"cannot read {path}: {exc.strerror}")
        return report
    with fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
        if missing:
            report.errors.append(f"line 1: missing column(s): {', '.join(missing)}")
        if unknown:
            report.errors.append(f"line 1: unknown column(s): {', '.join(unknown)}")
        if report.errors:
            return report
        reader.fieldnames = header
        valid: list[dict] = []
        seen: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            data = {k: (v or "").strip() for k, v in row.items() if k is not None}
            if not any(data.values()):
                continue  # a blank row (often the spreadsheet's trailing ",,,,"): nothing to import
            report.rows += 1
            for key in ("tier", "region", "segment", "status"):
                if key in data:
                    data[key] = _lower_choice(data[key])
            form = PartnerRowForm(data)
            if not form.is_valid():
                problems = "; ".join(
                    f"{name}: {' '.join(str(m) for m in messages)}"
                    if name != "__all__"
                    else " ".join(messages)
                    for name, messages in form.errors.items()
                )
                report.errors.append(f"line {line}: {problems}")
                continue
            ext = form.cleaned_data["external_id"]
            if ext in seen:
                report.errors.append(f"line {line}: external_id {ext} already appears on line {seen[ext]}")
                continue
            seen[ext] = line
            valid.append(form.cleaned_data)
    if report.rows == 0 and not report.errors:
        report.errors.append("the file has no data rows")
    if report.errors:
        return report

    existing = Partner.objects.in_bulk(list(seen), field_name="external_id")
    report.created = sum(1 for ext in seen if ext not in existing)
    report.updated = len(seen) - report.created
    if dry_run:
        return report
    fields = [*REQUIRED[1:], "account_owner", "status", "churned_on", "notes"]
    with transaction.atomic():
        to_create, to_update = [], []
        for data in valid:
            partner = existing.get(data["external_id"]) or Partner(external_id=data["external_id"])
            for name in fields:
                setattr(partner, name, data.get(name) if name != "notes" else data.get("notes") or "")
            (to_update if partner.pk else to_create).append(partner)
        Partner.objects.bulk_create(to_create, batch_size=2_000)
        Partner.objects.bulk_update(to_update, fields, batch_size=2_000)
        audit_record(
            event_type="partners_imported",
            actor=actor,
            payload={"file": str(path), **report.as_dict()},
        )
    return report
