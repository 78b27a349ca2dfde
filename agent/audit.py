"""The one way to write to the audit trail; import it from any app."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from agent.models import AuditEvent


def audit_record(
    *,
    event_type: str,
    actor: AbstractBaseUser | None = None,
    actor_type: str | None = None,
    run=None,
    partner=None,
    intervention=None,
    payload: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event. Call it inside the transaction of the change it records."""
    if actor_type is None:
        actor_type = AuditEvent.Actor.USER if actor is not None else AuditEvent.Actor.SYSTEM
    if partner is None and intervention is not None:
        partner = intervention.partner
    return AuditEvent.objects.create(
        event_type=event_type,
        actor_type=actor_type,
        actor_user=actor if actor is not None and actor.is_authenticated else None,
        run=run,
        partner=partner,
        intervention=intervention,
        payload=payload or {},
    )
