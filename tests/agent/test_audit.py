import io
import threading
from contextlib import contextmanager

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from agent.audit import GENESIS, audit_chain_verify, audit_record
from agent.models import AuditChainHead, AuditEvent, AuditVerification
from tests.conftest import last_json

pytestmark = pytest.mark.django_db

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="roles and triggers exist on PostgreSQL only"
)


def test_an_audit_event_cannot_be_changed_or_deleted(partner):
    event = audit_record(event_type="note", partner=partner, payload={"a": 1})
    event.payload = {"a": 2}
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).update(payload={})
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    with pytest.raises(PermissionError, match="audit_record"):
        AuditEvent.objects.create(event_type="unchained", actor_type="system")
    assert AuditEvent.objects.get(pk=event.pk).payload == {"a": 1}


def test_audit_events_record_who_acted(partner, retention_user):
    event = audit_record(event_type="note", actor=retention_user, partner=partner)
    assert event.actor_type == "user"
    assert event.actor_user == retention_user


def verify(capsys) -> dict:
    """audit_verify's last-line JSON summary (it exits 1 when the chain is broken)."""
    try:
        call_command("audit_verify")
    except CommandError:
        pass
    return last_json(capsys.readouterr().out)


@contextmanager
def trigger_disabled():
    """What a superuser (or the table owner) can do: set the append-only trigger aside."""
    with connection.cursor() as cursor:
        # The test's own inserts leave deferred foreign-key checks pending, which ALTER TABLE refuses.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE agent_auditevent DISABLE TRIGGER agent_auditevent_no_update_delete")
        try:
            yield cursor
        finally:
            cursor.execute("ALTER TABLE agent_auditevent ENABLE TRIGGER agent_auditevent_no_update_delete")


def test_each_event_carries_the_hash_of_the_previous_one_and_of_its_own_content(partner, retention_user):
    first = audit_record(event_type="note", partner=partner, payload={"a": 1, "score": 0.93, "big": 1e20})
    second = audit_record(event_type="note", actor=retention_user, payload={"text": "Grüße", "n": [1, 2.5]})
    assert (first.seq, first.prev_hash) == (1, GENESIS)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert len(first.hash) == 64 and first.hash != second.hash
    assert AuditChainHead.objects.values_list("seq", "hash").get() == (2, second.hash)


def test_audit_verify_reports_an_intact_chain_and_the_agent_page_shows_when(capsys, partner, manager_client):
    for i in range(5):
        audit_record(event_type="note", partner=partner, payload={"i": i})
    summary = verify(capsys)
    assert summary["ok"] is True and summary["events"] == 5 and summary["first_broken"] is None
    assert summary["head_seq"] == 5 and summary["head_hash"] == AuditEvent.objects.get(seq=5).hash
    checked = AuditVerification.objects.latest()
    assert checked.ok and checked.events == 5

    body = manager_client.get("/agent/").content.decode()
    assert "Audit chain verified" in body and f"{checked.checked_at:%Y-%m-%d %H:%M}" in body


def test_the_agent_page_says_when_the_chain_was_never_verified(manager_client):
    assert "Audit chain not verified yet" in manager_client.get("/agent/").content.decode()


@postgres_only
def test_audit_verify_detects_a_row_changed_by_a_superuser_with_the_trigger_disabled(
    capsys, partner, manager_client
):
    events = [
        audit_record(event_type="email_sent", partner=partner, payload={"to": "a@x.example"})
        for _ in range(4)
    ]
    assert verify(capsys)["ok"] is True
    with trigger_disabled() as cursor:
        cursor.execute(
            "UPDATE agent_auditevent SET payload = %s WHERE id = %s", ['{"to": "b@x.example"}', events[2].pk]
        )

    summary = verify(capsys)
    assert summary["ok"] is False
    assert summary["first_broken"]["seq"] == 3 and summary["first_broken"]["event_id"] == events[2].pk
    assert "content does not match its hash" in summary["first_broken"]["reason"]
    assert "Audit chain BROKEN at event 3" in manager_client.get("/agent/").content.decode()


@postgres_only
def test_audit_verify_detects_an_event_removed_and_an_event_rehashed_in_place(capsys, partner):
    events = [audit_record(event_type="note", partner=partner, payload={"i": i}) for i in range(4)]
    with trigger_disabled() as cursor:
        # Recomputing the changed row's own hash does not help: the next event points at the old one.
        from agent.audit import HASHED_FIELDS, event_hash

        row = AuditEvent.objects.values("id", *HASHED_FIELDS).get(pk=events[1].pk)
        row["payload"] = {"i": 99}
        cursor.execute(
            "UPDATE agent_auditevent SET payload = %s, hash = %s WHERE id = %s",
            ['{"i": 99}', event_hash(row), events[1].pk],
        )
    summary = verify(capsys)
    assert summary["first_broken"]["seq"] == 3 and "previous event" in summary["first_broken"]["reason"]

    with trigger_disabled() as cursor:
        cursor.execute("DELETE FROM agent_auditevent WHERE id = %s", [events[0].pk])
    summary = verify(capsys)
    assert summary["first_broken"]["seq"] == 1 and "missing" in summary["first_broken"]["reason"]


@postgres_only
def test_audit_verify_detects_events_removed_from_the_end_of_the_chain(capsys, partner):
    events = [audit_record(event_type="note", partner=partner) for _ in range(3)]
    with trigger_disabled() as cursor:
        cursor.execute("DELETE FROM agent_auditevent WHERE id = %s", [events[-1].pk])
    summary = verify(capsys)
    assert summary["ok"] is False and summary["events"] == 2
    assert "head says 3 (events removed)" in summary["first_broken"]["reason"]


# The site's database role ------------------------------------------------------------


@pytest.fixture(scope="session")
def app_role(django_db_setup, django_db_blocker):
    """A role like the one the README runs the site as: not the owner, not a superuser, and
    (more than the README grants) every table privilege, TRUNCATE included."""
    if connection.vendor != "postgresql":
        pytest.skip("roles exist on PostgreSQL only")
    name = f"{connection.settings_dict['NAME']}_app"
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE ROLE "{name}" NOLOGIN')
        cursor.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{name}"')
        cursor.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{name}"')
    yield name
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(f'DROP OWNED BY "{name}"')
        cursor.execute(f'DROP ROLE "{name}"')


@contextmanager
def as_role(role: str):
    """Statements in the block run as `role` (SET ROLE changes current_user, as logging in would)."""
    with connection.cursor() as cursor:
        cursor.execute(f'SET ROLE "{role}"')
        try:
            yield cursor
        finally:
            cursor.execute("RESET ROLE")


def refused_as(role: str, *statements: str) -> str:
    """Run statements as `role` in a savepoint; the database error they end with."""
    with pytest.raises(DatabaseError) as refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # else TRUNCATE fails on the test's pending FK checks
        cursor.execute(f'SET LOCAL ROLE "{role}"')
        for sql in statements:
            cursor.execute(sql)
    return str(refused.value)


@postgres_only
def test_no_session_setting_lets_the_sites_role_rewrite_or_empty_the_trail(app_role, partner):
    event = audit_record(event_type="note", partner=partner, payload={"a": 1})
    update = f"UPDATE agent_auditevent SET payload = '{{}}' WHERE id = {event.pk}"
    assert "append-only: UPDATE refused" in refused_as(app_role, update)
    assert "append-only: DELETE refused" in refused_as(
        app_role, f"DELETE FROM agent_auditevent WHERE id = {event.pk}"
    )
    # The old maintenance switch is gone: any role could set a custom setting.
    assert "append-only: TRUNCATE refused" in refused_as(
        app_role, "SET LOCAL churnsite.allow_audit_truncate = 'on'", "TRUNCATE agent_auditevent CASCADE"
    )
    assert "must be owner" in refused_as(
        app_role, "ALTER TABLE agent_auditevent DISABLE TRIGGER agent_auditevent_no_update_delete"
    )
    assert "permission denied" in refused_as(app_role, "SET session_replication_role = replica")
    # Nor can it move the chain head back to hide what it cannot delete.
    assert "only advances" in refused_as(app_role, "UPDATE agent_auditchainhead SET seq = 0")
    assert "TRUNCATE refused" in refused_as(app_role, "TRUNCATE agent_auditchainhead")
    assert AuditEvent.objects.get(pk=event.pk).payload == {"a": 1}


@postgres_only
def test_the_sites_role_appends_to_the_chain(app_role, partner):
    with as_role(app_role) as cursor:
        event = audit_record(event_type="note", partner=partner)
        cursor.execute("SELECT current_user")
        assert cursor.fetchone()[0] == app_role
    assert AuditChainHead.objects.get().seq == event.seq == 1


@postgres_only
def test_the_owner_still_truncates_for_maintenance(partner):
    """The role migrations run as (the owner; here the test's superuser) truncates, as the
    demo's --reset and the test flushes do; the chain starts again from its first link."""
    audit_record(event_type="note", partner=partner)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("TRUNCATE agent_auditevent, agent_auditchainhead CASCADE")
    assert audit_record(event_type="note", partner=partner).seq == 1


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_build_one_unbroken_chain(partner):
    """8 threads on their own connections append 25 events each at once: every position once,
    each event linked to the one committed before it."""
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(25):
                with transaction.atomic():
                    audit_record(event_type="note", partner=partner, payload={"writer": n, "i": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sorted(AuditEvent.objects.values_list("seq", flat=True)) == list(range(1, 201))
    result = audit_chain_verify()
    assert result.ok and result.events == 200


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_leaves_no_gap_in_the_chain(capsys, partner):
    audit_record(event_type="note", partner=partner)
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(event_type="note", partner=partner)
        raise RuntimeError("the change the event recorded failed")
    assert audit_record(event_type="note", partner=partner).seq == 2
    assert verify(capsys)["ok"] is True


@postgres_only
def test_an_append_is_one_statement_when_this_connection_wrote_the_head_last(partner):
    audit_record(event_type="note", partner=partner)
    with CaptureQueriesContext(connection) as queries:
        audit_record(event_type="note", partner=partner)
    assert len(queries) == 1, [q["sql"][:80] for q in queries]
    assert audit_chain_verify().ok


@postgres_only
def test_a_rolled_back_savepoint_or_another_writer_moves_the_head_and_the_chain_stays_whole(partner):
    """The head this connection remembers is only a guess: after its own savepoint rolled back,
    and after another connection appended, the next append re-reads the locked head."""
    audit_record(event_type="note", partner=partner)
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(event_type="note", partner=partner)  # seq 2, then rolled back
        raise RuntimeError("the change the event recorded failed")
    assert audit_record(event_type="note", partner=partner).seq == 2

    assert audit_chain_verify().ok


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_after_another_connection_appended_the_next_append_links_to_its_event(partner):
    audit_record(event_type="note", partner=partner)
    other: list[AuditEvent] = []

    def other_connection() -> None:
        try:
            other.append(audit_record(event_type="note", partner=partner, payload={"from": "elsewhere"}))
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_connection)
    thread.start()
    thread.join(timeout=30)
    with CaptureQueriesContext(connection) as queries:
        event = audit_record(event_type="note", partner=partner)
    # The stale guess writes nothing; the locked head is read; the append links to it.
    assert event.seq == 3 and event.prev_hash == other[0].hash
    statements = [q["sql"] for q in queries if q["sql"] not in ("BEGIN", "COMMIT")]
    assert len(statements) == 3, statements
    assert audit_chain_verify().ok


# The deploy check ----------------------------------------------------------------------


def deploy_warnings() -> str:
    out = io.StringIO()
    call_command("check", "--deploy", stdout=out, stderr=out)
    return "\n".join(line for line in out.getvalue().splitlines() if "agent.W001" in line)


@postgres_only
def test_check_deploy_warns_when_the_site_runs_as_a_superuser():
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if not cursor.fetchone()[0]:
            pytest.skip("the suite's database user is not a superuser")
    assert "is a superuser (it can disable any trigger)" in deploy_warnings()


@postgres_only
def test_check_deploy_warns_when_the_site_owns_the_audit_table_and_not_as_a_plain_role(app_role):
    with as_role(app_role):
        assert deploy_warnings() == ""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE agent_auditevent OWNER TO "{app_role}"')
        with as_role(app_role):
            warnings = deploy_warnings()
        transaction.set_rollback(True)  # the table goes back to its owner
    assert f"the database user '{app_role}' owns agent_auditevent" in warnings


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_events_written_before_the_chain_existed_are_backfilled_into_it_in_time_order(capsys):
    from django.db.migrations.executor import MigrationExecutor

    before = [("agent", "0005_config_labels")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        OldEvent = executor.loader.project_state(before).apps.get_model("agent", "AuditEvent")
        old = [
            OldEvent.objects.create(event_type="note", actor_type="system", payload={"i": i})
            for i in range(3)
        ]
        # Written in another order than their ids: the chain follows the clock.
        with trigger_disabled() as cursor:
            cursor.execute(
                "UPDATE agent_auditevent SET created_at = created_at + interval '1 hour' WHERE id = %s",
                [old[0].pk],
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    chained = list(AuditEvent.objects.order_by("seq").values_list("seq", "payload"))
    assert chained == [(1, {"i": 1}), (2, {"i": 2}), (3, {"i": 0})]
    assert audit_record(event_type="note").seq == 4
    summary = verify(capsys)
    assert summary["ok"] is True and summary["events"] == 4


def test_the_beat_verifies_the_chain_nightly_and_the_task_records_the_result(partner):
    from django_celery_beat.models import PeriodicTask

    from agent.tasks import audit_verify
    from churnsite.schedules import AUDIT_VERIFY_SCHEDULE_NAME, PERIODIC_TASKS, periodic_tasks_sync

    spec = next(spec for spec in PERIODIC_TASKS if spec["name"] == AUDIT_VERIFY_SCHEDULE_NAME)
    assert spec["task"] == audit_verify.name and spec["crontab"]["hour"] == "3"
    periodic_tasks_sync()
    assert PeriodicTask.objects.get(name=AUDIT_VERIFY_SCHEDULE_NAME).enabled
    audit_record(event_type="note", partner=partner)
    assert audit_verify.apply().get() == {"ok": True, "events": 2, "broken_seq": None, "reason": ""}
    assert AuditVerification.objects.latest().events == 2
