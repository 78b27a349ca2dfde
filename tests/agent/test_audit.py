import pytest

from agent.audit import audit_record
from agent.models import AuditEvent

pytestmark = pytest.mark.django_db


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
    assert AuditEvent.objects.get(pk=event.pk).payload == {"a": 1}


def test_audit_events_record_who_acted(partner, retention_user):
    event = audit_record(event_type="note", actor=retention_user, partner=partner)
    assert event.actor_type == "user"
    assert event.actor_user == retention_user


@pytest.mark.django_db(transaction=True)
def test_postgresql_refuses_raw_update_delete_and_truncate_of_the_audit_trail(partner):
    from django.db import DatabaseError, connection, transaction

    if connection.vendor != "postgresql":
        pytest.skip("the trigger exists on PostgreSQL only")
    event = audit_record(event_type="note", partner=partner, payload={"a": 1})
    for sql in (
        "UPDATE agent_auditevent SET payload = '{}' WHERE id = %s",
        "DELETE FROM agent_auditevent WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [event.pk])
    # Outside the test database's maintenance switch, TRUNCATE is refused too.
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL churnsite.allow_audit_truncate = 'off'")
            cursor.execute("TRUNCATE agent_auditevent CASCADE")
    assert AuditEvent.objects.get(pk=event.pk).payload == {"a": 1}
