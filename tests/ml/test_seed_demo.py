import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction

from agent.audit import audit_record
from agent.models import AuditEvent
from ml.models import SimulatedWorld
from ml.sim import store
from retention.models import Invoice, MonthlyActivity, Partner
from tests.conftest import last_json

pytestmark = pytest.mark.django_db


def seed(capsys, *args) -> dict:
    call_command("seed_demo", *args, "--no-progress")
    return last_json(capsys.readouterr().out)


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


@pytest.fixture
def demo_debug(settings):
    """--reset is a demo maintenance step, refused unless DEBUG is on (pytest turns it off)."""
    settings.DEBUG = True


def test_it_seeds_the_simulated_world_and_the_demo_users(capsys, media):
    summary = seed(capsys, "--partners", "200", "--months", "6", "--seed", "3")

    assert summary["partners"] == Partner.objects.count() == 200
    assert summary["activity_rows"] == MonthlyActivity.objects.count() > 200
    assert summary["invoices"] == Invoice.objects.count() > 200
    assert summary["rows_written"] == 200 + summary["activity_rows"] + summary["invoices"]
    assert Partner.objects.filter(status="churned").count() == summary["churned"]
    # Every partner has an owner from the team, and the demo logins work.
    assert not Partner.objects.filter(account_owner__isnull=True).exists()
    retention = authenticate(username="retention", password="retention-demo")
    manager = authenticate(username="manager", password="manager-demo")
    assert retention is not None and retention.groups.filter(name="Retention").exists()
    assert manager is not None and manager.groups.filter(name="Managers").exists() and manager.is_staff
    assert manager.has_perm("retention.approve_intervention")
    assert not retention.has_perm("retention.approve_intervention")


def test_the_hidden_truth_is_kept_out_of_the_partner_tables_and_reloads(capsys, media):
    seed(capsys, "--partners", "150", "--months", "6", "--seed", "5")
    record, world = store.world_load()
    assert record.seed == 5 and record.n_partners == 150
    assert (media / record.state_path).exists()
    # The reloaded state describes exactly the partners in the database.
    assert set(world.partners["external_id"]) == set(Partner.objects.values_list("external_id", flat=True))
    churned_db = set(Partner.objects.filter(status="churned").values_list("external_id", flat=True))
    assert churned_db == set(world.partners.loc[world.partners["status"] == "churned", "external_id"])


# TRUNCATE (the reset) cannot run inside the test's wrapping transaction.
@pytest.mark.django_db(transaction=True)
def test_the_same_seed_gives_the_same_partners(capsys, media, demo_debug):
    seed(capsys, "--partners", "120", "--months", "6", "--seed", "9")
    first = list(
        Partner.objects.order_by("external_id").values_list("external_id", "name", "tier", "monthly_revenue")
    )
    seed(capsys, "--partners", "120", "--months", "6", "--seed", "9", "--reset")
    again = list(
        Partner.objects.order_by("external_id").values_list("external_id", "name", "tier", "monthly_revenue")
    )
    assert first == again


@pytest.mark.django_db(transaction=True)  # --reset truncates, outside a test transaction
def test_a_given_simulated_today_gives_the_same_world_on_any_run_date(capsys, media, demo_debug):
    def world(*today):
        summary = seed(capsys, "--partners", "150", "--months", "6", "--seed", "9", *today, "--reset")
        rows = list(
            Invoice.objects.order_by("partner__external_id", "issued_on").values_list(
                "partner__external_id", "issued_on", "due_on", "paid_on", "amount"
            )
        )
        return summary, rows

    summary, first = world("--today", "2026-04-14")
    assert summary["simulated_today"] == "2026-04-14"
    assert SimulatedWorld.objects.get().today.isoformat() == "2026-04-14"
    assert max(r[1] for r in first).isoformat() <= "2026-04-14"  # nothing issued after that today
    assert world("--today", "2026-04-14")[1] == first
    assert world("--today", "2026-04-20")[1] != first

    with pytest.raises(CommandError, match="not a date"):
        seed(capsys, "--partners", "10", "--today", "14/04/2026")


def test_reset_is_refused_when_debug_is_off(capsys, media):
    seed(capsys, "--partners", "50", "--months", "6")
    with pytest.raises(CommandError, match="refused when DEBUG is off"):
        seed(capsys, "--partners", "50", "--months", "6", "--reset")
    assert Partner.objects.count() == 50


def test_it_refuses_to_seed_over_existing_data_without_reset(capsys, media):
    seed(capsys, "--partners", "100", "--months", "6")
    with pytest.raises(CommandError, match="--reset"):
        call_command("seed_demo", "--partners", "50", "--months", "6", "--no-progress")
    assert Partner.objects.count() == 100


@pytest.mark.django_db(transaction=True)
def test_reset_replaces_the_world(capsys, media, demo_debug):
    seed(capsys, "--partners", "100", "--months", "6", "--seed", "1")
    audit_record(event_type="note", partner=Partner.objects.first())
    summary = seed(capsys, "--partners", "60", "--months", "6", "--seed", "2", "--reset")
    # The demo's trail starts over (the command runs as the tables' owner, here the test's user).
    assert not AuditEvent.objects.exists()
    assert audit_record(event_type="note").seq == 1
    assert summary["partners"] == Partner.objects.count() == 60
    assert SimulatedWorld.objects.count() == 1
    assert SimulatedWorld.objects.get().seed == 2


def _schema() -> list[tuple]:
    """The partner tables' constraints and indexes as PostgreSQL defines them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = ANY(%(t)s::regclass[]) UNION ALL "
            "SELECT indrelid::regclass::text, indexrelid::regclass::text, pg_get_indexdef(indexrelid) "
            "FROM pg_index WHERE indrelid = ANY(%(t)s::regclass[]) ORDER BY 1, 2, 3",
            {"t": ["retention_partner", "retention_monthlyactivity", "retention_invoice"]},
        )
        return cursor.fetchall()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the bulk load is PostgreSQL's")
def test_the_bulk_load_puts_back_every_index_and_constraint_and_they_hold(capsys, media):
    before = _schema()
    assert any("FOREIGN KEY (partner_id)" in d for *_, d in before)
    seed(capsys, "--partners", "80", "--months", "6")
    # Dropped for the load, built once after it: the same definitions, under the same names.
    assert _schema() == before
    partner = Partner.objects.first()
    month = MonthlyActivity.objects.filter(partner=partner).values_list("month", flat=True).first()
    with pytest.raises(IntegrityError), transaction.atomic():
        MonthlyActivity.objects.create(
            partner=partner, month=month, transactions=1, revenue=1, active_users=1, support_tickets=0
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        # Deferred: the foreign key is checked when the transaction (here the savepoint's
        # constraint check) ends.
        MonthlyActivity.objects.create(
            partner_id=partner.pk + 10**6,
            month=month,
            transactions=1,
            revenue=1,
            active_users=1,
            support_tickets=0,
        )
        connection.check_constraints()
