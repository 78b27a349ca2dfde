"""The email outbox: the one way an email reaches a partner (agent, partner page, approval).

1. `email_outbox_queue` runs inside the transaction that creates (or approves) the intervention,
   so the intervention and its outbox row commit together or not at all.
2. `email_outbox_deliver` sends one row, at most once: it claims the row under a row lock
   (FOR UPDATE SKIP LOCKED: a second sender of the same row finds it taken and does nothing),
   re-checks the guards in that same transaction (partner active, not on do-not-contact, approval
   given where the tier needs it, not already sent) and commits the claim ("sending"); then it
   sends with the row's key as the Message-ID and records the result. A worker killed before the
   claim commits rolls it back (the row is queued again); one killed after it leaves the row
   "sending", which the sweep marks "in doubt" and never re-sends: at most one email per row.
   Callers deliver right after their commit; `agent.sweep` (every minute, churnsite/schedules.py)
   enqueues `agent.send_email` for rows still queued, so nothing depends on a task in Redis.
"""

from __future__ import annotations

import datetime as dt
import functools

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.db import transaction
from django.utils import timezone

from agent import selectors
from agent.audit import audit_record
from agent.email_brief import email_reply_to
from agent.models import AgentConfig, AgentRun, DoNotContact, EmailOutbox
from churnsite.failpoints import failpoint
from retention.models import Intervention, Partner

MAX_ATTEMPTS = settings.AGENT_OUTBOX_MAX_ATTEMPTS
RETRY_BASE = dt.timedelta(seconds=60)
BUSY = "busy"  # another sender holds the row right now
# The longest a sender may live (the hard time limits of the tasks that deliver: agent.send_email,
# the agent's run and per-partner tasks); a row "sending" for longer lost its sender.
SENDER_TIME_LIMIT = max(90, settings.AGENT_RUN_TIME_LIMIT, settings.AGENT_PARTNER_TIME_LIMIT)
IN_DOUBT_ERROR = (
    "Interrupted mid-send: it may have gone out. Not re-sent automatically; check with the partner."
)

REFUSALS = {
    "already_sent": "{p}: this email was already sent.",
    "not_active": "{p} is no longer an active partner: not sent.",
    "do_not_contact": "{p} is on the do-not-contact list{since}: not sent.",
    "awaiting_approval": "{p}: this email waits for a manager's approval: not sent.",
    "rejected": "{p}: a manager rejected this email: not sent.",
    "needs_approval": "{p} is {tier}, a tier whose emails need a manager's approval: not sent.",
}


def _user(actor: User | AnonymousUser | None) -> User | None:
    return actor if isinstance(actor, User) else None


def send_refusal(*, intervention: Intervention, partner: Partner, config: AgentConfig) -> str:
    """Why this intervention's email may not go out now ("" = it may). Call it under the locks."""
    if intervention.sent_at is not None:
        return "already_sent"
    if partner.status != Partner.Status.ACTIVE:
        return "not_active"
    if DoNotContact.objects.filter(partner=partner).exists():
        return "do_not_contact"
    if intervention.review_status == Intervention.Review.AWAITING:
        return "awaiting_approval"
    if intervention.review_status == Intervention.Review.REJECTED:
        return "rejected"
    if (
        partner.tier in (config.approval_tiers or [])
        and intervention.review_status != Intervention.Review.APPROVED
    ):
        return "needs_approval"
    return ""


def refusal_message(reason: str, *, partner: Partner) -> str:
    """The refusal in words, for the review page, the partner page and the admin."""
    since = ""
    if reason == "do_not_contact":
        entry = DoNotContact.objects.filter(partner=partner).first()
        if entry is not None:
            since = f" (since {entry.created_at:%Y-%m-%d %H:%M}{', ' + entry.reason if entry.reason else ''})"
    return REFUSALS.get(reason, "{p}: " + reason).format(
        p=partner.external_id, since=since, tier=partner.get_tier_display()
    )


def approved_notice(intervention: Intervention) -> str:
    """After an approval: sent, or queued (the outbox retries it) until the send is recorded."""
    ref = intervention.partner.external_id
    if intervention.sent_at is not None:
        return f"Approved and sent to {ref}."
    return f"Approved; the email to {ref} is queued (not sent yet) and retried automatically."


def email_outbox_queue(
    *,
    intervention: Intervention,
    actor: User | AnonymousUser | None,
    run: AgentRun | None = None,
    config: AgentConfig | None = None,
) -> EmailOutbox:
    """Queue the intervention's email; call it inside the transaction that creates or approves the
    intervention. Refuses (ValidationError, audited by the caller's flow) when a guard fails now.
    `config`: the configuration the caller decided with in this transaction (the agent's run);
    the send re-checks against a fresh one either way (email_outbox_deliver)."""
    with transaction.atomic():
        locked = (
            Intervention.objects.select_for_update(of=("self",))
            .select_related("partner")
            .get(pk=intervention.pk)
        )
        partner = locked.partner
        reason = send_refusal(
            intervention=locked, partner=partner, config=config or selectors.agent_config_get()
        )
        if reason:
            raise ValidationError(refusal_message(reason, partner=partner), code=reason)
        # The intervention's row lock serializes queuers of the same email: no insert race, so
        # no get_or_create (and its savepoint) is needed.
        outbox = EmailOutbox.objects.filter(intervention=locked).first()
        created = outbox is None
        if outbox is None:
            outbox = EmailOutbox.objects.create(intervention=locked, requested_by=_user(actor), run=run)
        if created:
            audit_record(
                event_type="email_queued",
                actor=actor,
                actor_type=None if _user(actor) else "agent",
                run=run,
                intervention=locked,
                payload={"outbox": str(outbox.key)},
            )
    return outbox


def email_outbox_deliver(*, outbox_id: int) -> str:
    """Send one queued outbox email, at most once. Returns the row's status afterwards
    ("sent", "queued" after a failed attempt, "refused", "failed", "sending") or BUSY.

    Three steps, so no crash can send it twice: (1) claim: under the row locks, re-check the
    guards and commit the row as "sending"; (2) SMTP, outside any transaction; (3) record the
    result. A sender killed in (1) rolls back: the row is queued and sent later. One killed in
    (2) or (3) leaves it "sending": whether the server took it is unknown, so nothing re-sends
    it; the sweep marks it "in doubt" for a person to check (`email_outbox_sweep_in_doubt`).
    Before, the claim, the send and the record were one transaction: a crash after the server
    accepted the email rolled the record back and the sweep sent it again (the fault "sent" in
    tests/agent/faults.py: two emails, one Message-ID)."""
    config = selectors.agent_config_get()
    with transaction.atomic():
        outbox = (
            EmailOutbox.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("requested_by", "run")
            .filter(pk=outbox_id)
            .first()
        )
        if outbox is None:
            return BUSY
        if outbox.status != EmailOutbox.Status.QUEUED:
            return outbox.status
        # Both rows locked in one statement (the intervention's, then as before the partner's);
        # the partner's row lock orders this send against a do-not-contact entry being added.
        intervention = (
            Intervention.objects.select_for_update(of=("self", "partner"))
            .select_related("partner", "partner__account_owner")
            .get(pk=outbox.intervention_id)
        )
        partner = intervention.partner
        actor, run = outbox.requested_by, outbox.run
        audit = functools.partial(
            audit_record,
            actor=actor,
            actor_type=None if actor else "agent",
            run=run,
            intervention=intervention,
        )
        reason = send_refusal(intervention=intervention, partner=partner, config=config)
        if reason:
            outbox.status, outbox.last_error = EmailOutbox.Status.REFUSED, reason
            outbox.save(update_fields=["status", "last_error", "updated_at"])
            audit(
                event_type="email_refused",
                payload={
                    "reason": reason,
                    "message": refusal_message(reason, partner=partner),
                    "outbox": str(outbox.key),
                },
            )
            return outbox.status
        failpoint("outbox.sending")  # claimed, not committed: a crash here leaves it queued
        outbox.status = EmailOutbox.Status.SENDING
        outbox.attempts += 1
        outbox.save(update_fields=["status", "attempts", "updated_at"])
    subject = " ".join(intervention.email_subject.split())[:200]
    domain = settings.DEFAULT_FROM_EMAIL.rsplit("@", 1)[-1].strip("> ") or "churnsite.local"
    message = EmailMessage(
        subject=subject,
        body=intervention.email_body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[partner.contact_email],  # from the partner record, never from the draft
        # The person who signed the draft (owner, or the user who sent it).
        reply_to=email_reply_to(intervention),
        headers={
            # The outbox key names the row it came from; a person who re-sends an email in doubt
            # sends the same Message-ID, which mail clients treat as the same message.
            "Message-ID": f"<{outbox.key}@{domain}>",
            "X-Churnsite-Outbox": str(outbox.key),
            "X-Churnsite-Intervention": str(intervention.pk),
        },
    )
    try:
        message.send(fail_silently=False)
    except Exception as exc:  # noqa: BLE001 - any transport error: audited, retried by the sweep
        # The server refused or never answered: not sent, so a retry cannot duplicate it.
        with transaction.atomic():
            gave_up = outbox.attempts >= MAX_ATTEMPTS
            outbox.status = EmailOutbox.Status.FAILED if gave_up else EmailOutbox.Status.QUEUED
            outbox.next_attempt_at = timezone.now() + RETRY_BASE * 2 ** (outbox.attempts - 1)
            outbox.last_error = f"{type(exc).__name__}: {exc}"[:500]
            outbox.save(update_fields=["status", "next_attempt_at", "last_error", "updated_at"])
            audit(
                event_type="email_failed",
                payload={
                    "error": outbox.last_error,
                    "attempt": outbox.attempts,
                    "will_retry": not gave_up,
                    "outbox": str(outbox.key),
                },
            )
        return outbox.status
    failpoint("outbox.sent")  # accepted by the server, not yet recorded
    with transaction.atomic():
        now = timezone.now()
        outbox.status, outbox.sent_at = EmailOutbox.Status.SENT, now
        outbox.save(update_fields=["status", "sent_at", "updated_at"])
        intervention.sent_at = now
        intervention.save(update_fields=["sent_at", "updated_at"])
        audit(
            event_type="email_sent",
            payload={
                "to": partner.contact_email,
                "subject": subject,
                "writer": intervention.writer,
                "outbox": str(outbox.key),
                "attempt": outbox.attempts,
            },
        )
    return EmailOutbox.Status.SENT


def email_outbox_sweep_in_doubt(*, now: dt.datetime | None = None) -> int:
    """Rows left "sending" longer than any sender may live (the longest task time limit that
    delivers, plus the sweep's grace): their sender died during or right after the SMTP call, so
    the email may have gone out. Marked "in doubt" (audited `email_in_doubt`), never re-sent by
    the system: a duplicate to a partner at risk is the one thing the outbox promises not to do."""
    now = now or timezone.now()
    limit = dt.timedelta(seconds=SENDER_TIME_LIMIT + settings.AGENT_SWEEP_GRACE)
    marked = 0
    for row in EmailOutbox.objects.filter(status=EmailOutbox.Status.SENDING, updated_at__lte=now - limit):
        with transaction.atomic():
            updated = EmailOutbox.objects.filter(pk=row.pk, status=EmailOutbox.Status.SENDING).update(
                status=EmailOutbox.Status.IN_DOUBT, last_error=IN_DOUBT_ERROR, updated_at=now
            )
            if not updated:
                continue
            intervention = Intervention.objects.select_related("partner").get(pk=row.intervention_id)
            audit_record(
                event_type="email_in_doubt",
                actor_type="system",
                run=row.run,
                intervention=intervention,
                payload={"outbox": str(row.key), "attempt": row.attempts, "message": IN_DOUBT_ERROR},
            )
            marked += 1
    return marked


def email_outbox_due(
    *, now: dt.datetime | None = None, grace: dt.timedelta = dt.timedelta(seconds=30)
) -> list[int]:
    """Queued rows whose next attempt is due (older than `grace`, so a caller's own delivery right
    after its commit is not raced by the sweep)."""
    now = now or timezone.now()
    return list(
        EmailOutbox.objects.filter(status=EmailOutbox.Status.QUEUED, next_attempt_at__lte=now - grace)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:1000]
    )
