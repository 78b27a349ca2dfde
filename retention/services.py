"""Writes for partners and interventions. Views, admin, commands and tasks call these."""

import datetime as dt
from functools import partial

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from agent.audit import audit_record
from agent.emails import draft_retention_email
from agent.models import AuditEvent
from crm_sim.client import CreateTask, CrmError, TaskQuery, get_crm_client
from ml.selectors import partner_current_score
from retention.log_selectors import OUTCOME_EVENTS, UNDO_SECONDS
from retention.models import Intervention, Partner, RoiAssumptions

_ALLOWED_FROM_PENDING = {Intervention.Outcome.SAVED, Intervention.Outcome.CHURNED}
CORRECTION_NEEDS_REASON = "A correction of a resolved outcome needs a reason: say why it changes."


@transaction.atomic
def intervention_log(
    *,
    partner: Partner,
    action: str,
    actor: User | None,
    source: str = Intervention.Source.MANUAL,
    assigned_to: User | None = None,
    note: str = "",
    email_subject: str = "",
    email_body: str = "",
    writer: str = "",
    risk: float | None = None,
    bucket: str = "",
    drivers: list | None = None,
    run=None,
    review_status: str = Intervention.Review.NOT_REQUIRED,
) -> Intervention:
    """Record a contact with a partner (manual by default), with the risk known at that moment.

    The agent passes its `run` (kept on the row and on the audit event) and, for tiers that
    need a manager, review_status=awaiting."""
    if action not in Intervention.Action.values:
        raise ValidationError({"action": f"Unknown action {action!r}"})
    if source == Intervention.Source.MANUAL and action == Intervention.Action.HOLDOUT:
        raise ValidationError({"action": "Only the agent draws control-group holdouts"})
    if risk is None:
        score = partner_current_score(partner=partner)
        if score is not None:
            risk, bucket, drivers = score.risk, score.bucket, score.drivers or []
    intervention = Intervention.objects.create(
        partner=partner,
        action=action,
        source=source,
        created_by=actor if actor is not None and actor.is_authenticated else None,
        assigned_to=assigned_to,
        note=note,
        email_subject=email_subject,
        email_body=email_body,
        writer=writer,
        risk_at_action=risk,
        bucket_at_action=bucket or "",
        drivers_at_action=drivers or [],
        agent_run=run,
        review_status=review_status,
    )
    audit_record(
        event_type="intervention_logged",
        actor=actor,
        actor_type="agent" if source == Intervention.Source.AGENT else None,
        run=run,
        intervention=intervention,
        payload={"action": action, "source": source, "risk": risk, "writer": writer},
    )
    return intervention


# What a person may change on a logged intervention after the fact (admin); the rest is
# history (source, action, sent_at, review_status, run, the email once sent, the outcome)
# and changes only through the services that audit it.
INTERVENTION_EDITABLE = ("note", "assigned_to")


def intervention_update(*, intervention: Intervention, actor: User, **changes) -> Intervention:
    """Change an intervention's note or assignee; audited with the old and new values."""
    unknown = set(changes) - set(INTERVENTION_EDITABLE)
    if unknown:
        raise ValidationError(f"{', '.join(sorted(unknown))} cannot be changed after the fact")
    with transaction.atomic():
        locked = Intervention.objects.select_for_update().get(pk=intervention.pk)
        before, after = {}, {}
        for field, value in changes.items():
            old = getattr(locked, field)
            if old != value:
                before[field], after[field] = _plain(old), _plain(value)
                setattr(locked, field, value)
        if after:
            locked.save(update_fields=[*after, "updated_at"])
            audit_record(
                event_type="intervention_updated",
                actor=actor,
                intervention=locked,
                payload={"from": before, "to": after},
            )
    return locked


def _plain(value) -> str | int | None:
    return value.pk if hasattr(value, "pk") else value


def intervention_set_outcome(
    *,
    intervention: Intervention,
    outcome: str,
    actor: User | None,
    reason: str = "",
    outcome_date: dt.date | None = None,
) -> Intervention:
    """Resolve an intervention: pending -> saved | churned.

    Changing an already resolved outcome is a correction only managers may make
    (permission `retention.correct_outcome`); every change is audited. `actor=None`
    means the system (the simulation clock or a CRM sync) resolved it. `outcome_date` is
    when it happened, if not now (the simulation clock: the churn day, or the end of the
    horizon, in the simulated world).
    """
    if outcome not in Intervention.Outcome.values:
        raise ValidationError({"outcome": f"Unknown outcome {outcome!r}"})
    refused = False
    with transaction.atomic():
        locked = Intervention.objects.select_for_update().get(pk=intervention.pk)
        previous = locked.outcome
        if outcome == previous:
            return locked
        if previous == Intervention.Outcome.PENDING:
            if outcome not in _ALLOWED_FROM_PENDING:
                raise ValidationError({"outcome": "A pending intervention resolves to saved or churned"})
        elif actor is None or not actor.has_perm("retention.correct_outcome"):
            refused = True
        elif not reason.strip():
            # A correction overrides someone's call on what happened: the log shows why.
            raise ValidationError({"reason": CORRECTION_NEEDS_REASON})
        if refused:
            # Committed with the refusal, so the attempt stays on record.
            audit_record(
                event_type="outcome_change_refused",
                actor=actor,
                intervention=locked,
                payload={"from": previous, "to": outcome},
            )
        else:
            # Who set the outcome being replaced, and when: an undo puts them back.
            undo = {
                "from_set_by": locked.outcome_set_by_id,
                "from_set_at": locked.outcome_set_at.isoformat() if locked.outcome_set_at else None,
            }
            locked.outcome = outcome
            if outcome == Intervention.Outcome.PENDING:
                locked.outcome_set_by, locked.outcome_set_at = None, None
            else:
                locked.outcome_set_by = actor if actor is not None and actor.is_authenticated else None
                locked.outcome_set_at = (
                    dt.datetime.combine(outcome_date, dt.time(12), tzinfo=dt.UTC)
                    if outcome_date
                    else timezone.now()
                )
            locked.save(update_fields=["outcome", "outcome_set_by", "outcome_set_at", "updated_at"])
            audit_record(
                event_type="outcome_set" if previous == Intervention.Outcome.PENDING else "outcome_corrected",
                actor=actor,
                intervention=locked,
                payload={"from": previous, "to": outcome, "reason": reason.strip(), **undo}
                | ({"outcome_date": outcome_date.isoformat()} if outcome_date else {}),
            )
    if refused:
        raise PermissionDenied("Only a manager can change a resolved outcome")
    if previous == Intervention.Outcome.PENDING:
        # After commit: the CRM is another system, and a failure there must not undo the outcome.
        transaction.on_commit(
            partial(intervention_close_crm_tasks, intervention=locked, actor=actor), robust=True
        )
    return locked


def intervention_undo_outcome(*, intervention: Intervention, event_id: int, actor: User) -> Intervention:
    """Take back an outcome change within UNDO_SECONDS: only the person who made it, only while
    it is the intervention's latest outcome change. The outcome, who set it and when go back to
    what they were; audited `outcome_undone`. An undo back to pending reopens the CRM follow-ups
    the resolution closed (as new tasks: the contract has no reopen)."""
    with transaction.atomic():
        locked = Intervention.objects.select_for_update().get(pk=intervention.pk)
        latest = (
            AuditEvent.objects.filter(intervention=locked, event_type__in=OUTCOME_EVENTS)
            .order_by("-seq")
            .first()
        )
        if latest is None or latest.pk != event_id or latest.event_type == "outcome_undone":
            raise ValidationError("Nothing to undo: the outcome changed again since.")
        if latest.actor_user_id != actor.pk:
            raise ValidationError("Only the person who changed this outcome can undo it.")
        age = (timezone.now() - latest.created_at).total_seconds()
        if age > UNDO_SECONDS:
            fix = (
                "correct it instead, with a reason"
                if actor.has_perm("retention.correct_outcome")
                else "ask a manager to correct it"
            )
            raise ValidationError(
                f"Too late to undo: the change is {age:.0f} seconds old (undo works for "
                f"{UNDO_SECONDS} seconds); {fix}."
            )
        payload = latest.payload
        if locked.outcome != payload.get("to"):
            raise ValidationError("Nothing to undo: the outcome changed again since.")
        previous = payload["from"]
        set_by = payload.get("from_set_by")
        set_at = payload.get("from_set_at")
        locked.outcome = previous
        locked.outcome_set_by = User.objects.filter(pk=set_by).first() if set_by else None
        locked.outcome_set_at = dt.datetime.fromisoformat(set_at) if set_at else None
        locked.save(update_fields=["outcome", "outcome_set_by", "outcome_set_at", "updated_at"])
        audit_record(
            event_type="outcome_undone",
            actor=actor,
            intervention=locked,
            payload={"from": payload["to"], "to": previous, "undoes": latest.pk, "seconds": round(age, 1)},
        )
    if previous == Intervention.Outcome.PENDING:
        transaction.on_commit(
            partial(intervention_reopen_crm_tasks, intervention=locked, since=latest, actor=actor),
            robust=True,
        )
    return locked


def intervention_reopen_crm_tasks(
    *, intervention: Intervention, since: AuditEvent, actor: User | None
) -> int:
    """The follow-ups an undone resolution closed, open again: each is created anew through the
    CRM client (idempotent on the undone event and the task, so a retry makes no second copy)."""
    client = get_crm_client()
    reopened = 0
    try:
        for record in client.list_tasks(TaskQuery(status="completed", intervention_id=intervention.pk)):
            if record.completed_at is None or record.completed_at < since.created_at:
                continue  # closed before the resolution that is undone: not its doing
            client.create_task(
                CreateTask(
                    partner_external_id=record.partner_external_id,
                    kind=record.kind,
                    title=record.title,
                    due_on=record.due_on,
                    idempotency_key=f"undo-{since.pk}-{record.external_id}",
                    intervention_id=intervention.pk,
                    assigned_to_username=record.assigned_to_username,
                    notes=record.notes,
                ),
                actor=actor,
            )
            reopened += 1
    except (CrmError, ValidationError) as exc:
        audit_record(
            event_type="crm_task_failed",
            actor=actor,
            intervention=intervention,
            payload={"kind": "reopen_on_undo", "error": f"{type(exc).__name__}: {exc}"[:500]},
        )
    return reopened


def intervention_close_crm_tasks(*, intervention: Intervention, actor: User | None = None) -> int:
    """Complete the intervention's open CRM tasks with its outcome, through the CRM client.

    Called once an intervention is resolved, so nobody works a follow-up or escalation call
    for a partner already saved or lost. The tasks record the outcome without resolving the
    intervention again (it is where the outcome came from). A CRM failure is audited and
    leaves the tasks open; the outcome itself is already committed.
    """
    client = get_crm_client()
    closed = 0
    try:
        for record in client.list_tasks(TaskQuery(status="open", intervention_id=intervention.pk)):
            client.complete_task(
                record.external_id, outcome=intervention.outcome, actor=actor, resolve_intervention=False
            )
            closed += 1
    except (CrmError, ValidationError) as exc:
        audit_record(
            event_type="crm_task_failed",
            actor=actor,
            intervention=intervention,
            payload={"kind": "close_on_outcome", "error": f"{type(exc).__name__}: {exc}"[:500]},
        )
    return closed


# Partner page: drafting and sending a retention email -------------------------------


def partner_email_draft(*, partner: Partner, drivers: list, actor: User | None):
    """Draft a retention email with the agent's writer and audit how it was written.

    Returns the writer's `EmailDraft`.
    """
    # Signed by the user who drafts (and sends) it; Reply-To names the same person.
    draft = draft_retention_email(partner=partner, drivers=drivers, sender_user=actor)
    audit_record(
        event_type="email_drafted",
        actor=actor,
        partner=partner,
        payload=draft.audit_payload() | {"prompt": draft.prompt, "via": "partner_page"},
    )
    return draft


# Outcomes page: ROI assumptions ----------------------------------------------------


@transaction.atomic
def roi_assumptions_update(*, actor: User, changes: dict):
    """Change the ROI assumptions (managers only); the audit event keeps old and new values."""
    if not actor.has_perm("retention.change_roiassumptions"):
        raise PermissionDenied("Only a manager can change the ROI assumptions")
    assumptions, _ = RoiAssumptions.objects.select_for_update().get_or_create(pk=RoiAssumptions.SINGLETON_PK)
    before, after = {}, {}
    for field, value in changes.items():
        old = getattr(assumptions, field)
        if old != value:
            before[field], after[field] = str(old), str(value)
            setattr(assumptions, field, value)
    assumptions.updated_by = actor
    assumptions.full_clean()
    assumptions.save()
    audit_record(
        event_type="roi_assumptions_changed", actor=actor, payload={"before": before, "after": after}
    )
    return assumptions
