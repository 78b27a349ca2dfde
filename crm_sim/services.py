"""Writes for CRM tasks. The simulated backend, the CRM page and the admin call these."""

import datetime as dt

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from agent.audit import audit_record
from crm_sim.models import CrmTask
from retention.models import Intervention, Partner
from retention.services import intervention_set_outcome

SIM_PREFIX = "SIM-"


def sim_external_id(pk: int) -> str:
    return f"{SIM_PREFIX}{pk:06d}"


def crm_task_create(
    *,
    partner: Partner,
    kind: str,
    title: str,
    due_on: dt.date,
    idempotency_key: str,
    intervention: Intervention | None = None,
    assigned_to: User | None = None,
    notes: str = "",
    actor: User | None = None,
    actor_type: str | None = None,
) -> tuple[CrmTask, bool]:
    """Create a task once per idempotency key; return (task, created).

    A repeated call with the same key returns the first task unchanged (the first call
    wins, as with Stripe's idempotency keys), even when the two calls race: the unique
    constraint on idempotency_key decides, and the loser reads the winner's row.
    """
    idempotency_key = (idempotency_key or "").strip()
    if not idempotency_key:
        raise ValidationError({"idempotency_key": "Every task needs an idempotency key"})
    if kind not in CrmTask.Kind.values:
        raise ValidationError({"kind": f"Unknown task kind {kind!r}"})
    if not title.strip():
        raise ValidationError({"title": "A task needs a title"})
    if intervention is not None and intervention.partner_id != partner.pk:
        raise ValidationError({"intervention": "The intervention belongs to another partner"})

    existing = CrmTask.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        return _same_partner(existing, partner), False
    try:
        # A savepoint, so a lost race leaves the caller's transaction usable.
        with transaction.atomic():
            task = CrmTask.objects.create(
                partner=partner,
                intervention=intervention,
                kind=kind,
                title=title.strip()[:200],
                notes=notes,
                due_on=due_on,
                assigned_to=assigned_to,
                idempotency_key=idempotency_key,
            )
            task.external_id = sim_external_id(task.pk)
            task.save(update_fields=["external_id"])
            audit_record(
                event_type="crm_task_created",
                actor=actor,
                actor_type=actor_type,
                partner=partner,
                intervention=intervention,
                payload={
                    "external_id": task.external_id,
                    "kind": kind,
                    "due_on": due_on.isoformat(),
                    "idempotency_key": idempotency_key,
                    "assigned_to": assigned_to.get_username() if assigned_to is not None else None,
                },
            )
    except IntegrityError:
        # A concurrent call with the same key committed first (our INSERT waited for it).
        winner = CrmTask.objects.filter(idempotency_key=idempotency_key).first()
        if winner is None:
            raise  # some other constraint failed: not a race
        return _same_partner(winner, partner), False
    return task, True


def _same_partner(task: CrmTask, partner: Partner) -> CrmTask:
    # The same key for another partner is a caller bug, not a retry: refuse it loudly.
    if task.partner_id != partner.pk:
        raise ValidationError(
            {"idempotency_key": f"Key already used for task {task.external_id} of another partner"}
        )
    return task


_UPDATABLE = {"title", "notes", "due_on", "assigned_to", "status"}


def crm_task_update(*, task: CrmTask, actor: User | None = None, **changes) -> CrmTask:
    """Change an open task's title, notes, due date, assignee, or cancel it (status="cancelled").

    Completion goes through crm_task_complete, which also resolves the intervention.
    """
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValidationError(f"Cannot update {', '.join(sorted(unknown))}")
    with transaction.atomic():
        locked = CrmTask.objects.select_for_update().get(pk=task.pk)
        if not locked.is_open:
            raise ValidationError(f"Task {locked.external_id} is {locked.status}; only open tasks change")
        status = changes.get("status")
        if status is not None and status not in (CrmTask.Status.OPEN, CrmTask.Status.CANCELLED):
            raise ValidationError({"status": "Use complete_task to complete a task"})
        if "title" in changes and not (changes["title"] or "").strip():
            raise ValidationError({"title": "A task needs a title"})
        before = {}
        for field, value in changes.items():
            before[field] = _plain(getattr(locked, field))
            setattr(locked, field, value)
        locked.save(update_fields=[*changes, "updated_at"])
        audit_record(
            event_type="crm_task_updated",
            actor=actor,
            partner=locked.partner,
            intervention=locked.intervention,
            payload={
                "external_id": locked.external_id,
                "from": before,
                "to": {field: _plain(value) for field, value in changes.items()},
            },
        )
    return locked


SNOOZE_DAYS = (1, 7)


def crm_task_snooze(*, task: CrmTask, days: int, actor: User | None, today: dt.date) -> CrmTask:
    """Move an open task's due date to `days` after today (1 day or 1 week), audited as a
    snooze: a task that keeps moving is itself a signal a manager wants to see."""
    if days not in SNOOZE_DAYS:
        raise ValidationError({"days": "Snooze for 1 day or 1 week"})
    with transaction.atomic():
        locked = CrmTask.objects.select_for_update().get(pk=task.pk)
        if not locked.is_open:
            raise ValidationError(f"Task {locked.external_id} is {locked.status}; only open tasks snooze")
        before = locked.due_on
        locked.due_on = today + dt.timedelta(days=days)
        locked.save(update_fields=["due_on", "updated_at"])
        audit_record(
            event_type="crm_task_snoozed",
            actor=actor,
            partner=locked.partner,
            intervention=locked.intervention,
            payload={
                "external_id": locked.external_id,
                "days": days,
                "from": before.isoformat(),
                "to": locked.due_on.isoformat(),
            },
        )
    return locked


def _plain(value):
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, User):
        return value.get_username()
    return value


def crm_task_complete(
    *, task: CrmTask, outcome: str, actor: User | None, resolve_intervention: bool = True
) -> CrmTask:
    """Complete an open task with an outcome; saved/churned resolve the linked intervention
    (unless `resolve_intervention` is False: the outcome came from that intervention).

    The task and the intervention's outcome change in one transaction, through the same
    outcome service as the Intervention Log. If the intervention was already resolved
    differently and the actor may not correct it, the task stays open and the refusal
    stays on record (PermissionDenied is raised after the refusal audit commits).
    Completing an already completed task with the same outcome is a no-op (retries), and so
    is outcome "none" on any closed task (closing what a person already closed).
    """
    if outcome not in CrmTask.Outcome.values:
        raise ValidationError({"outcome": f"Unknown outcome {outcome!r}"})
    refused: PermissionDenied | None = None
    with transaction.atomic():
        locked = (
            CrmTask.objects.select_for_update(of=("self",)).select_related("intervention").get(pk=task.pk)
        )
        if locked.status == CrmTask.Status.COMPLETED and locked.outcome == outcome:
            return locked
        if not locked.is_open and outcome == CrmTask.Outcome.NONE:
            # "Close it" (the agent's follow-up check) is already done if someone closed it first.
            return locked
        if not locked.is_open:
            raise ValidationError(
                f"Task {locked.external_id} is already {locked.get_status_display().lower()}"
            )
        if resolve_intervention and locked.intervention is not None and outcome != CrmTask.Outcome.NONE:
            try:
                intervention_set_outcome(
                    intervention=locked.intervention,
                    outcome=outcome,
                    actor=actor,
                    reason=f"CRM task {locked.external_id} completed",
                )
            except PermissionDenied as exc:
                refused = exc
        if refused is None:
            locked.status = CrmTask.Status.COMPLETED
            locked.outcome = outcome
            locked.completed_at = timezone.now()
            locked.completed_by = actor if actor is not None and actor.is_authenticated else None
            locked.save(update_fields=["status", "outcome", "completed_at", "completed_by", "updated_at"])
            audit_record(
                event_type="crm_task_completed",
                actor=actor,
                partner=locked.partner,
                intervention=locked.intervention,
                payload={"external_id": locked.external_id, "kind": locked.kind, "outcome": outcome},
            )
    if refused is not None:
        raise refused
    return locked
