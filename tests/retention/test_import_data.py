"""import_data: a team's whole history, all files together or nothing, idempotent."""

import datetime as dt
import gzip
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from agent.models import AuditEvent
from retention.importing import upserts
from retention.models import Invoice, MonthlyActivity, Partner
from tests.conftest import last_json

pytestmark = pytest.mark.django_db

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"


def run(capsys, *args) -> dict:
    call_command("import_data", *map(str, args))
    return last_json(capsys.readouterr().out)


def failing(capsys, *args) -> tuple[str, dict]:
    with pytest.raises(CommandError, match="nothing was written"):
        call_command("import_data", *map(str, args))
    captured = capsys.readouterr()
    return captured.err, last_json(captured.out)


def samples(tmp_path) -> Path:
    target = tmp_path / "history"
    shutil.copytree(SAMPLES, target)
    return target


def test_the_sample_files_import_every_table_and_a_second_import_changes_nothing(tmp_path, capsys):
    folder = samples(tmp_path)
    summary = run(capsys, folder)
    assert summary["written"] is True and summary["errors"] == 0
    assert summary["tables"]["activity"] == {"rows": 8, "created": 8, "updated": 0, "unchanged": 0}
    assert (Partner.objects.count(), MonthlyActivity.objects.count(), Invoice.objects.count()) == (3, 8, 5)
    initech = Partner.objects.get(external_id="P10003")
    assert (initech.status, str(initech.churned_on), initech.churn_reason) == (
        "churned", "2024-12-15", "moved to a competitor",
    )  # fmt: skip
    unpaid = Invoice.objects.get(invoice_id="INV-2024-1102")
    assert unpaid.paid_on is None and unpaid.partner.external_id == "P10002"

    stamp = Partner.objects.get(external_id="P10001").updated_at
    again = run(capsys, folder)
    assert (again["rows"], again["created"], again["updated"], again["unchanged"]) == (17, 0, 0, 17)
    assert Partner.objects.get(external_id="P10001").updated_at == stamp  # not even touched


def test_a_changed_row_is_updated_and_a_changed_contact_email_is_audited(tmp_path, capsys):
    folder = samples(tmp_path)
    run(capsys, folder)
    partners = folder / "partners.csv"
    partners.write_text(partners.read_text().replace("ops@acme.example", "finance@acme.example"))
    activity = folder / "activity.csv"
    activity.write_text(activity.read_text().replace("P10001,2024-12,405", "P10001,2024-12,999"))
    summary = run(capsys, folder)
    assert summary["tables"]["partners"]["updated"] == 1 and summary["tables"]["activity"]["updated"] == 1
    event = AuditEvent.objects.get(event_type="partner_contact_email_changed")
    assert event.payload["before"] == "ops@acme.example" and event.payload["after"] == "finance@acme.example"
    assert event.partner.external_id == "P10001"
    assert MonthlyActivity.objects.get(partner=event.partner, month="2024-12-01").transactions == 999


def test_every_bad_row_in_any_file_is_reported_and_no_file_is_written(tmp_path, capsys):
    folder = samples(tmp_path)
    with open(folder / "activity.csv", "a") as fh:
        fh.write("P99999,2024-10,1,1.00,1,0\n")  # line 10: unknown partner
        fh.write("P10001,2024-10,5,5.00,1,0\n")  # line 11: the same month twice
        fh.write("P10002,10/2024,5,5.00,1,0\n")  # line 12: not ISO
        fh.write("P10002,2099-01,5,5.00,1,0\n")  # line 13: in the future
    with open(folder / "invoices.csv", "a") as fh:
        fh.write("P10001,INV-X,2024-12-01,2024-12-31,,-50.00\n")  # line 7: negative amount
        fh.write("P10001,INV-Y,03/04/2024,2024-12-31,,50.00\n")  # line 8: US date
        fh.write(f"P10001,{'I' * 65},2024-12-01,2024-12-31,,50.00\n")  # line 9: oversized
    (folder / "churn_events.csv").write_text("external_id,churned_on\nP10001,2020-01-01\n")
    errors, summary = failing(capsys, folder)
    assert summary["written"] is False
    for expected in (
        "activity.csv line 10: external_id: unknown partner id P99999",
        "activity.csv line 11: month: 2024-10-01 duplicates line 2",
        "activity.csv line 12: month: must be a month as YYYY-MM",
        "activity.csv line 13: month: is in the future",
        "invoices.csv line 7: amount: must be 0 or more",
        "invoices.csv line 8: issued_on: must be a date as YYYY-MM-DD",
        "invoices.csv line 9: invoice_id: is longer than 64 characters",
        "churn_events.csv line 2: churned_on: 2020-01-01 is before the partner joined (2023-03-01)",
    ):
        assert expected in errors, expected
    assert summary["errors"] == 8
    assert not Partner.objects.exists() and not MonthlyActivity.objects.exists()


def test_gzip_and_a_byte_order_mark_are_read(tmp_path, capsys):
    folder = samples(tmp_path)
    partners = folder / "partners.csv"
    partners.write_bytes(b"\xef\xbb\xbf" + partners.read_bytes())
    activity = folder / "activity.csv"
    with gzip.open(folder / "activity.csv.gz", "wb") as fh:
        fh.write(activity.read_bytes())
    activity.unlink()
    summary = run(capsys, folder / "partners.csv", folder / "activity.csv.gz")
    assert summary["tables"]["partners"]["created"] == 3 and summary["tables"]["activity"]["created"] == 8


def test_other_encodings_and_binary_files_are_refused_by_name(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "partners.csv").write_bytes(
        (SAMPLES / "partners.csv").read_text().replace("Acme Corp", "Société Générale").encode("latin-1")
    )
    (folder / "activity.csv").write_bytes(b"PK\x03\x04\x00\x00binary spreadsheet")
    errors, summary = failing(capsys, folder)
    assert "partners.csv: is not UTF-8 text" in errors and "save it as CSV UTF-8" in errors
    assert "activity.csv: is a binary file" in errors
    assert "Traceback" not in errors and not Partner.objects.exists()


def test_replace_deletes_the_months_the_files_no_longer_have(tmp_path, capsys):
    folder = samples(tmp_path)
    run(capsys, folder)
    activity = folder / "activity.csv"
    activity.write_text("\n".join(activity.read_text().splitlines()[:-1]) + "\n")  # drop P10003 2024-11
    assert run(capsys, folder)["deleted"] == 0  # without --replace nothing is deleted
    assert MonthlyActivity.objects.count() == 8
    summary = run(capsys, folder, "--replace")
    assert summary["tables"]["activity"]["deleted"] == 1 and MonthlyActivity.objects.count() == 7


def test_a_dry_run_counts_what_would_change_and_writes_nothing(tmp_path, capsys):
    summary = run(capsys, samples(tmp_path), "--dry-run")
    assert summary["dry_run"] is True and summary["created"] == 16 and summary["written"] is False
    assert not Partner.objects.exists()


def test_on_imported_data_the_desk_today_is_the_end_of_the_history_or_the_setting(tmp_path, capsys, settings):
    from ml.sim.today import scoring_as_of

    run(capsys, samples(tmp_path))
    assert str(scoring_as_of()) == "2024-12-31"  # the end of the last imported month
    settings.DESK_TODAY = dt.date(2024, 12, 20)
    assert str(scoring_as_of()) == "2024-12-20"


def test_simulate_days_refuses_a_world_that_was_imported(tmp_path, capsys):
    run(capsys, samples(tmp_path))
    with pytest.raises(CommandError, match="no simulated world"):
        call_command("simulate_days", "30")
    assert MonthlyActivity.objects.count() == 8


SCHEMA = (
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid IN ('retention_partner'::regclass, 'retention_monthlyactivity'::regclass, "
    "'retention_invoice'::regclass) UNION ALL SELECT tablename, indexname, indexdef FROM pg_indexes "
    "WHERE tablename IN ('retention_partner', 'retention_monthlyactivity', 'retention_invoice') ORDER BY 1, 2, 3"
)


def schema() -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(SCHEMA)
        return cur.fetchall()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="indexes are set aside on PostgreSQL only")
def test_a_big_insert_builds_the_indexes_and_keys_once_and_leaves_them_as_they_were(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(upserts, "BULK_ROWS", 1)  # every insert into an empty table counts as big
    before = schema()
    assert any("gin_trgm_ops" in row[2] for row in before)  # the partner name search index is there
    statements = []
    with connection.execute_wrapper(
        lambda execute, sql, *rest: statements.append(sql) or execute(sql, *rest)
    ):
        summary = run(capsys, samples(tmp_path))
    assert summary["written"] and (Partner.objects.count(), MonthlyActivity.objects.count()) == (3, 8)
    assert Invoice.objects.count() == 5
    assert any(s.startswith("DROP INDEX partner_name_trgm_idx") for s in statements)  # the path ran
    assert any('DROP CONSTRAINT "invoice_one_row_per_invoice_id"' in s for s in statements)
    # Every index, unique constraint and foreign key is back, the same, and still deferred.
    assert schema() == before
    with connection.cursor() as cur:
        cur.execute(
            "SELECT conrelid::regclass::text, condeferrable, condeferred FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = 'retention_partner'::regclass "
            "AND conrelid::regclass::text IN ('retention_monthlyactivity', 'retention_invoice') ORDER BY 1"
        )
        assert cur.fetchall() == [
            ("retention_invoice", True, True),
            ("retention_monthlyactivity", True, True),
        ]
    # A table that would not double keeps its indexes: the second import adds one row to 3.
    statements.clear()
    folder = samples(tmp_path / "again")
    partners = folder / "partners.csv"
    lines = partners.read_text().splitlines()
    partners.write_text("\n".join([*lines, lines[-1].replace("P10003", "P10009", 1)]) + "\n")
    with connection.execute_wrapper(
        lambda execute, sql, *rest: statements.append(sql) or execute(sql, *rest)
    ):
        again = run(capsys, partners)
    assert again["tables"]["partners"]["created"] == 1
    assert not any("DROP CONSTRAINT" in s or s.startswith("DROP INDEX") for s in statements)


def test_the_optional_last_14_and_7_days_are_imported_checked_and_left_alone_when_a_file_lacks_them(
    tmp_path, capsys
):
    folder = samples(tmp_path)
    run(capsys, folder)
    nov = MonthlyActivity.objects.get(partner__external_id="P10002", month="2024-11-01")
    assert (nov.transactions, nov.transactions_last_14d, nov.transactions_last_7d) == (1322, 402, 170)
    blank = MonthlyActivity.objects.get(partner__external_id="P10003", month="2024-10-01")
    assert blank.transactions_last_14d is None and blank.transactions_last_7d is None

    # A part larger than its whole is reported, row by row, and nothing is written.
    activity = folder / "activity.csv"
    original = activity.read_text()
    activity.write_text(
        original.replace("P10001,2024-10,412,11850.00,23,2,188,95", "P10001,2024-10,412,11850.00,23,2,413,95")
        .replace("P10001,2024-11,398,11620.00,22,1,185,92", "P10001,2024-11,398,11620.00,22,1,185,186")
    )  # fmt: skip
    errors, summary = failing(capsys, folder)
    assert "activity.csv line 2: transactions_last_14d: is more than transactions" in errors
    assert "activity.csv line 3: transactions_last_7d: is more than transactions_last_14d" in errors
    assert summary["errors"] == 2

    # A file without the columns updates the months and keeps the counts imported before.
    lines = [",".join(line.split(",")[:6]) for line in original.splitlines()]
    activity.write_text("\n".join(lines).replace("P10002,2024-11,1322", "P10002,2024-11,1323") + "\n")
    summary = run(capsys, folder)
    assert summary["tables"]["activity"]["updated"] == 1
    nov.refresh_from_db()
    assert (nov.transactions, nov.transactions_last_14d, nov.transactions_last_7d) == (1323, 402, 170)
