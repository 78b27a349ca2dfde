import pytest
from django.core.management import CommandError, call_command

from agent.models import AuditEvent
from retention.models import Partner
from tests.conftest import last_json
from tests.factories import PartnerFactory, UserFactory

pytestmark = pytest.mark.django_db

HEADER = "external_id,name,tier,region,segment,monthly_revenue,contact_email,joined_on,account_owner,status,churned_on,notes\n"


def write(tmp_path, body: str):
    path = tmp_path / "partners.csv"
    path.write_text(HEADER + body)
    return path


def test_a_valid_file_creates_and_updates_partners(tmp_path, capsys):
    UserFactory(username="alex.kim")
    PartnerFactory(external_id="P10001", name="Old Name", tier="bronze")
    path = write(
        tmp_path,
        "P10001,Acme Corp,Gold,emea,merchant,12000.50,ops@acme.example,2022-03-01,alex.kim,,,\n"
        "P10002,Globex,platinum,na,reseller,54000,billing@globex.example,2021-07-15,,churned,2026-10-01,moved to a rival\n",
    )
    call_command("import_partners", str(path))
    assert last_json(capsys.readouterr().out) == {
        "rows": 2,
        "created": 1,
        "updated": 1,
        "errors": 0,
        "dry_run": False,
        "written": True,
    }
    acme = Partner.objects.get(external_id="P10001")
    assert (acme.name, acme.tier, acme.account_owner.username) == ("Acme Corp", "gold", "alex.kim")
    globex = Partner.objects.get(external_id="P10002")
    assert globex.status == "churned" and str(globex.churned_on) == "2026-10-01"
    assert AuditEvent.objects.filter(event_type="history_imported").count() == 1


def test_every_bad_row_is_reported_by_line_and_nothing_is_written(tmp_path, capsys):
    path = write(
        tmp_path,
        "P20001,Fine Ltd,silver,na,reseller,100,a@fine.example,2024-01-01,,,,\n"
        "X 1,Bad Id,silver,na,reseller,100,a@b.example,2024-01-01,,,,\n"
        "P20003,Bad Tier,diamond,na,reseller,100,a@c.example,2024-01-01,,,,\n"
        "P20004,Bad Money,silver,na,reseller,lots,not-an-email,2024-13-01,,,,\n"
        "P20001,Duplicate,silver,na,reseller,100,a@d.example,2024-01-01,,,,\n"
        "P20006,Churn Without Date,silver,na,reseller,100,a@e.example,2024-01-01,,churned,,\n"
        "P20007,Ghost Owner,silver,na,reseller,100,a@f.example,2024-01-01,nobody,,,\n",
    )
    with pytest.raises(CommandError, match="8 problem"):
        call_command("import_partners", str(path))
    captured = capsys.readouterr()
    errors = captured.err
    assert "line 3: external_id" in errors
    assert "line 4: tier" in errors
    assert "line 5: monthly_revenue" in errors and "contact_email" in errors and "joined_on" in errors
    assert "line 6: external_id: P20001 duplicates line 2" in errors
    assert "line 7: churned_on" in errors
    assert "line 8: account_owner: no user named 'nobody'" in errors
    assert last_json(captured.out)["written"] is False
    assert Partner.objects.count() == 0


def test_a_negative_revenue_is_named_and_blank_rows_are_skipped(tmp_path, capsys):
    path = write(
        tmp_path,
        "P30001,Fine Ltd,silver,na,reseller,100,a@fine.example,2024-01-01,,,,\n"
        "P30002,Owes Us,silver,na,reseller,-5,a@owes.example,2024-01-01,,,,\n"
        ",,,,,,,,,,,\n",
    )
    with pytest.raises(CommandError, match="1 problem"):
        call_command("import_partners", str(path))
    captured = capsys.readouterr()
    assert "line 3: monthly_revenue: must be 0 or more" in captured.err
    assert "line 4" not in captured.err
    assert last_json(captured.out)["rows"] == 2


def test_dry_run_validates_without_writing(tmp_path, capsys):
    path = write(tmp_path, "P30001,Initech,bronze,apac,referral,900,it@initech.example,2025-05-05,,,,\n")
    call_command("import_partners", str(path), "--dry-run")
    summary = last_json(capsys.readouterr().out)
    assert summary["dry_run"] is True and summary["created"] == 1 and summary["written"] is False
    assert not Partner.objects.exists()


def test_a_file_with_missing_columns_is_refused(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("external_id,name\nP1,x\n")
    with pytest.raises(CommandError):
        call_command("import_partners", str(path))
    assert "missing column(s): tier" in capsys.readouterr().err
