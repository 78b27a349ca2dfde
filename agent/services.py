"""Writes for the agent: configuration, do-not-contact, run creation, sending, review, follow-ups.

The per-partner workflow and the run lifecycle live in agent.workflow, which imports this
module (never the reverse); the periodic schedules live in churnsite.schedules.
Approval tiers: a held intervention is created `awaiting` with no email; only
`intervention_approve` (permission retention.approve_intervention) sends it.
"""

from __future__ import annotations

import datetime as dt
import difflib

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from agent import outbox, selectors
from agent.audit import audit_record
from agent.models import AgentConfig, AgentRun, DoNotContact, EmailOutbox, FollowUp
from churnsite import schedules
from crm_sim.client import CreateTask, get_crm_client
from ml.selectors import partner_current_score
from retention.models import Intervention, Partner
from retention.services import intervention_log

CONFIG_FIELDS = (
    "enabled",
    "risk_threshold",
    "max_per_hour",
    "cooldown_days",
    "follow_up_days",
    "approval_tiers",
    "control_fraction",
    "llm_model",
)


def _user(actor: User | None) -> User | None:
    return actor if actor is not None and actor.is_authenticated else None


# Configuration ------------------------------------------------------------------


@transaction.atomic
def agent_config_update(*, actor: User | None, **changes) -> AgentConfig:
    """Change configuration fields; the change (before and after) is audited."""
    unknown = set(changes) - set(CONFIG_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown configuration fields: {sorted(unknown)}")
    selectors.agent_config_get()
    config = AgentConfig.objects.select_for_update().get(pk=1)
    diff = {}
    for name, value in changes.items():
        if name == "approval_tiers":
            value = sorted({str(t) for t in value})
            if not set(value) <= set(Partner.Tier.values):
                raise ValidationError({"approval_tiers": f"Unknown tiers in {value}"})
        if getattr(config, name) != value:
            diff[name] = {"from": getattr(config, name), "to": value}
            setattr(config, name, value)
    if not diff:
        return config
    config.full_clean()
    config.save()
    audit_record(event_type="config_changed", actor=actor, payload={"changes": diff})
    if "enabled" in diff:
        _sync_agent_schedule(enabled=config.enabled)
    return config


def agent_set_enabled(*, enabled: bool, actor: User | None) -> AgentConfig:
    """Start/Stop: the config flag (checked before every partner) and the beat schedule."""
    return agent_config_update(actor=actor, enabled=enabled)


def _sync_agent_schedule(*, enabled: bool) -> None:
    schedules.agent_schedule_set_enabled(enabled=enabled)


# Do-not-contact list --------------------------------------------------------------


@transaction.atomic
def do_not_contact_add(*, partner: Partner, reason: str, actor: User | None) -> DoNotContact:
    # The partner's row lock orders the listing against a send re-checking it (agent.outbox).
    Partner.objects.select_for_update(of=("self",)).filter(pk=partner.pk).first()
    entry, created = DoNotContact.objects.get_or_create(
        partner=partner, defaults={"reason": reason[:200], "added_by": _user(actor)}
    )
    if created:
        audit_record(
            event_type="do_not_contact_added", actor=actor, partner=partner, payload={"reason": reason}
        )
    return entry


@transaction.atomic
def do_not_contact_remove(*, partner: Partner, actor: User | None) -> bool:
    deleted, _ = DoNotContact.objects.filter(partner=partner).delete()
    if deleted:
        audit_record(event_type="do_not_contact_removed", actor=actor, partner=partner)
    return bool(deleted)


# Runs ---------------------------------------------------------------------------


@transaction.atomic
def agent_run_create(
    *,
    trigger: str,
    actor: User | None = None,
    dry_run: bool = False,
    partner: Partner | None = None,
) -> AgentRun:
    """A queued run; the caller enqueues the task after commit with its id (and the sweep enqueues
    it again from the database if that message is lost)."""
    run = AgentRun.objects.create(
        trigger=trigger, requested_by=_user(actor), dry_run=dry_run, partner=partner
    )
    audit_record(
        event_type="run_requested",
        actor=actor,
        actor_type=None if _user(actor) else "agent",
        run=run,
        partner=partner,
        payload={"trigger": trigger, "dry_run": dry_run},
    )
    return run


# Email: every caller (agent, partner page, approval) goes through the outbox -------------


def intervention_send_email(
    *,
    intervention: Intervention,
    actor: User | None,
    run: AgentRun | None = None,
    queued: EmailOutbox | None = None,
) -> str:
    """The one send service: queue the intervention's email in the outbox (re-checking the guards;
    a row the caller queued in its own transaction is reused) and deliver it now. Returns the
    outbox status ("sent"; "queued" after a failed attempt the sweep retries; "failed"; or
    outbox.BUSY). A refusal (do-not-contact, approval needed, ...) is audited and raised.
    `queued`: the row the caller queued in its committed transaction; the delivery re-checks
    every guard under the row locks, so it is not queued (and checked) a second time."""
    try:
        row = queued or outbox.email_outbox_queue(intervention=intervention, actor=actor, run=run)
    except ValidationError as exc:
        audit_record(
            event_type="email_refused",
            actor=actor,
            actor_type=None if _user(actor) else "agent",
            run=run,
            intervention=intervention,
            payload={"reason": exc.code, "message": "; ".join(exc.messages)},
        )
        raise
    status = outbox.email_outbox_deliver(outbox_id=row.pk)
    if status == EmailOutbox.Status.REFUSED:
        row.refresh_from_db()
        raise ValidationError(
            outbox.refusal_message(row.last_error, partner=intervention.partner), code=row.last_error
        )
    return status


# Partner page: a person's email ---------------------------------------------------------

MANUAL_SENT, MANUAL_QUEUED, MANUAL_HELD, MANUAL_LOGGED = "sent", "queued", "held_for_review", "logged"


def partner_email_send(
    *,
    partner: Partner,
    subject: str,
    body: str,
    writer: str,
    actor: User | None,
    send: bool = True,
) -> tuple[Intervention, str]:
    """A person's email from the partner page, logged as an "email sent" intervention.

    With `send`, the same guards as the agent's: an inactive or do-not-contact partner is
    refused (audited, nothing logged); a tier that needs approval goes into the review queue
    with the agent's drafts, unsent; otherwise it goes through the outbox. Without `send` it only
    logs an email the person sent themselves. Returns the intervention and what happened."""
    config = selectors.agent_config_get()
    with transaction.atomic():
        locked = Partner.objects.select_for_update(of=("self",)).get(pk=partner.pk)
        reason = ""
        if send:
            reason = outbox.send_refusal(
                intervention=Intervention(review_status=Intervention.Review.APPROVED),
                partner=locked,
                config=config,
            )
        held = send and not reason and locked.tier in (config.approval_tiers or [])
        if not reason:
            intervention = intervention_log(
                partner=locked,
                action=Intervention.Action.EMAIL_SENT,
                actor=actor,
                email_subject=subject,
                email_body=body,
                writer=writer,
                review_status=Intervention.Review.AWAITING if held else Intervention.Review.NOT_REQUIRED,
            )
            if held:
                audit_record(
                    event_type="held_for_review",
                    actor=actor,
                    intervention=intervention,
                    payload={
                        "tier": locked.tier,
                        "approval_tiers": config.approval_tiers,
                        "via": "partner_page",
                    },
                )
            elif send:
                row = outbox.email_outbox_queue(intervention=intervention, actor=actor)
    if reason:
        message = outbox.refusal_message(reason, partner=locked)
        audit_record(
            event_type="email_refused",
            actor=actor,
            partner=locked,
            payload={"reason": reason, "message": message, "via": "partner_page"},
        )
        raise ValidationError(message, code=reason)
    if held:
        return intervention, MANUAL_HELD
    if not send:
        return intervention, MANUAL_LOGGED
    status = outbox.email_outbox_deliver(outbox_id=row.pk)
    intervention.refresh_from_db()
    return intervention, MANUAL_SENT if status == EmailOutbox.Status.SENT else MANUAL_QUEUED


# Review -----------------------------------------------------------------------------


def _refuse(*, action: str, intervention: Intervention, actor) -> None:
    audit_record(
        event_type="review_refused",
        actor=actor,
        intervention=intervention,
        payload={"action": action, "reason": "missing permission retention.approve_intervention"},
    )


def intervention_approve(
    *,
    intervention: Intervention,
    actor: User,
    subject: str | None = None,
    body: str | None = None,
) -> Intervention:
    """A manager approves a held draft (optionally edited: the edit is audited as a diff); the
    email goes through the outbox in the approval's transaction, then the follow-up is scheduled.
    Refused, with the reason in words, when the partner was listed do-not-contact or stopped being
    active after the draft was written (the refusal is audited; the draft stays awaiting)."""
    if actor is None or not actor.has_perm("retention.approve_intervention"):
        _refuse(action="approve", intervention=intervention, actor=actor)
        raise PermissionDenied("Only managers can approve held interventions")
    refusal = ""
    with transaction.atomic():
        locked = Intervention.objects.select_for_update().get(pk=intervention.pk)
        if locked.review_status != Intervention.Review.AWAITING:
            raise ValidationError(f"This intervention is {locked.get_review_status_display().lower()}")
        partner = Partner.objects.select_for_update(of=("self",)).get(pk=locked.partner_id)
        refusal = approve_refusal(intervention=locked, partner=partner)
        if not refusal:
            new_subject = " ".join((subject if subject is not None else locked.email_subject).split())[:200]
            new_body = (body if body is not None else locked.email_body).replace("\r\n", "\n")
            # Lines without their ends, joined after: with keepends, a last line lacking "\n"
            # ran into the next diff line ("-Best, Max+Best regards, Max").
            diff = "\n".join(
                difflib.unified_diff(
                    f"Subject: {locked.email_subject}\n\n{locked.email_body}".splitlines(),
                    f"Subject: {new_subject}\n\n{new_body}".splitlines(),
                    fromfile="draft",
                    tofile="approved",
                    lineterm="",
                )
            )
            draft = {"subject": locked.email_subject, "body": locked.email_body}
            drafted_by = locked.writer
            locked.email_subject, locked.email_body = new_subject, new_body
            locked.review_status = Intervention.Review.APPROVED
            if diff:
                # A person's edits make it their text, as on the partner page; the audit keeps
                # which writer drafted it and the diff.
                locked.writer = Intervention.Writer.MANUAL
            locked.save(
                update_fields=["email_subject", "email_body", "review_status", "writer", "updated_at"]
            )
            audit_record(
                event_type="review_approved",
                actor=actor,
                run=locked.agent_run,
                intervention=locked,
                # The draft as written too, so the review page shows the edit side by side.
                payload={"edited": bool(diff), "diff": diff, "drafted_by": drafted_by}
                | ({"draft": draft} if diff else {}),
            )
            row = outbox.email_outbox_queue(intervention=locked, actor=actor, run=locked.agent_run)
    if refusal:
        message = outbox.refusal_message(refusal, partner=locked.partner)
        audit_record(
            event_type="review_refused",
            actor=actor,
            run=locked.agent_run,
            intervention=locked,
            payload={"action": "approve", "reason": refusal, "message": message},
        )
        raise ValidationError(message, code=refusal)
    outbox.email_outbox_deliver(outbox_id=row.pk)
    locked.refresh_from_db()
    followup_schedule(intervention=locked, run=locked.agent_run)
    return locked


def approve_refusal(*, intervention: Intervention, partner: Partner) -> str:
    """Why approving this held draft would not send it ("" = it would), for the review pages."""
    return outbox.send_refusal(
        intervention=Intervention(review_status=Intervention.Review.APPROVED, sent_at=intervention.sent_at),
        partner=partner,
        config=selectors.agent_config_get(),
    )


def intervention_reject(*, intervention: Intervention, actor: User, reason: str) -> Intervention:
    """A manager refuses a held draft, with a reason; no email is ever sent for it."""
    if actor is None or not actor.has_perm("retention.approve_intervention"):
        _refuse(action="reject", intervention=intervention, actor=actor)
        raise PermissionDenied("Only managers can reject held interventions")
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "Say why the draft is rejected"})
    with transaction.atomic():
        locked = Intervention.objects.select_for_update().get(pk=intervention.pk)
        if locked.review_status != Intervention.Review.AWAITING:
            raise ValidationError(f"This intervention is {locked.get_review_status_display().lower()}")
        locked.review_status = Intervention.Review.REJECTED
        locked.note = f"{locked.note}\nRejected: {reason}".strip()
        locked.save(update_fields=["review_status", "note", "updated_at"])
        audit_record(
            event_type="review_rejected",
            actor=actor,
            run=locked.agent_run,
            intervention=locked,
            payload={"reason": reason},
        )
    return locked


# Follow-ups ---------------------------------------------------------------------------


def followup_schedule(
    *, intervention: Intervention, run: AgentRun | None = None, follow_up_days: int | None = None
) -> FollowUp:
    """The N-day follow-up (our row and a CRM task). Idempotent; a CRM failure is audited and the
    row stays, so the hourly check still happens."""
    if follow_up_days is None:
        follow_up_days = selectors.agent_config_get().follow_up_days
    partner = intervention.partner
    followup, _ = FollowUp.objects.get_or_create(
        intervention=intervention,
        defaults={"due_at": timezone.now() + dt.timedelta(days=follow_up_days)},
    )
    if followup.crm_task_id:
        return followup
    owner = partner.account_owner
    try:
        record = get_crm_client().create_task(
            CreateTask(
                partner_external_id=partner.external_id,
                kind="follow_up_email",
                title=f"Follow up on the retention email to {partner.name}"[:200],
                due_on=timezone.localdate(followup.due_at),
                idempotency_key=f"agent-followup-{intervention.pk}",
                intervention_id=intervention.pk,
                assigned_to_username=owner.get_username() if owner is not None else None,
                notes="Created by the intervention agent: check whether the partner's risk improved.",
            )
        )
    except Exception as exc:  # noqa: BLE001 - CrmError or an outage: audited, retried by the hourly check
        audit_record(
            event_type="crm_task_failed",
            actor_type="agent",
            run=run,
            intervention=intervention,
            payload={"kind": "follow_up_email", "error": f"{type(exc).__name__}: {exc}"[:500]},
        )
        return followup
    with transaction.atomic():
        FollowUp.objects.filter(pk=followup.pk).update(crm_task_id=record.external_id)
        followup.crm_task_id = record.external_id
        audit_record(
            event_type="followup_scheduled",
            actor_type="agent",
            run=run,
            intervention=intervention,
            payload={"due_at": followup.due_at.isoformat(), "crm_task": record.external_id},
        )
    return followup


def followups_process_due(*, now: dt.datetime | None = None, limit: int = 200) -> dict:
    """Due follow-ups: still above the threshold -> an escalation call task for the owner;
    improved -> closed. Each claimed with SKIP LOCKED, so two checkers never take the same one."""
    now = now or timezone.now()
    config = selectors.agent_config_get()
    counts = {"escalated": 0, "closed": 0, "failed": 0}
    seen: list[int] = []
    for _ in range(limit):
        with transaction.atomic():
            followup = (
                FollowUp.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(status=FollowUp.Status.OPEN, due_at__lte=now)
                .exclude(pk__in=seen)
                .select_related(
                    "intervention", "intervention__partner", "intervention__partner__account_owner"
                )
                .order_by("due_at")
                .first()
            )
            if followup is None:
                break
            seen.append(followup.pk)
            intervention = followup.intervention
            partner = intervention.partner
            score = partner_current_score(partner=partner)
            risk = score.risk if score is not None else None
            # Already resolved (by a person, the CRM or the clock): nothing left to escalate.
            resolved = intervention.outcome != Intervention.Outcome.PENDING
            # No score means we can't tell it improved: a person should look.
            still_at_risk = not resolved and (risk is None or risk > config.risk_threshold)
            owner = partner.account_owner
            try:
                client = get_crm_client()
                if still_at_risk:
                    record = client.create_task(
                        CreateTask(
                            partner_external_id=partner.external_id,
                            kind="escalation",
                            title=f"Escalation call: {partner.name} still at risk"[:200],
                            due_on=timezone.localdate(now) + dt.timedelta(days=1),
                            idempotency_key=f"agent-escalation-{followup.pk}",
                            intervention_id=intervention.pk,
                            assigned_to_username=owner.get_username() if owner is not None else None,
                            notes=f"Risk {risk:.0%} after the agent's email." if risk is not None else "",
                        )
                    )
                    followup.escalation_task_id = record.external_id
                    followup.status = FollowUp.Status.ESCALATED
                elif followup.crm_task_id:
                    client.complete_task(followup.crm_task_id, outcome="none")
                    followup.status = FollowUp.Status.CLOSED
                else:
                    followup.status = FollowUp.Status.CLOSED
            except Exception as exc:  # noqa: BLE001 - audited; the follow-up stays open for the next check
                audit_record(
                    event_type="crm_task_failed",
                    actor_type="agent",
                    intervention=intervention,
                    payload={"kind": "follow_up_check", "error": f"{type(exc).__name__}: {exc}"[:500]},
                )
                counts["failed"] += 1
                continue
            followup.risk_at_check, followup.checked_at = risk, now
            followup.save(
                update_fields=["status", "escalation_task_id", "risk_at_check", "checked_at", "updated_at"]
            )
            escalated = followup.status == FollowUp.Status.ESCALATED
            audit_record(
                event_type="followup_escalated" if escalated else "followup_closed",
                actor_type="agent",
                intervention=intervention,
                payload={
                    "risk": risk,
                    "risk_at_action": intervention.risk_at_action,
                    "threshold": config.risk_threshold,
                    "outcome": intervention.outcome,
                    "crm_task": followup.escalation_task_id or followup.crm_task_id,
                },
            )
            counts["escalated" if escalated else "closed"] += 1
    return counts
