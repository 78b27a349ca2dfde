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
