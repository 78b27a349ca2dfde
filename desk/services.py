"""Writes for the morning desk: preferences, saved views, the digest email, chat alerts."""

import datetime as dt

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from agent.audit import audit_record
from desk.chat import ChatError, chat_post
from desk.models import ChatAlert, DeskPreference, SavedView
from desk.selectors import digest_for, digest_recipients, digest_settings
from ml.models import PartnerScore
from retention.models import Intervention, Partner


def desk_preference_set_scope(*, user: User, scope: str) -> DeskPreference:
    """Remember "my partners" or "all partners" for the Live Feed."""
    if scope not in DeskPreference.Scope.values:
        raise ValidationError({"scope": f"Unknown scope {scope!r}"})
    with transaction.atomic():
        pref, _ = DeskPreference.objects.select_for_update().get_or_create(user=user)
        pref.feed_scope = scope
        pref.save(update_fields=["feed_scope", "updated_at"])
    return pref


def desk_preference_update(*, user: User, actor: User, **changes) -> DeskPreference:
    """Digest settings (enabled, local time, time zone); audited, a person's opt-out is a record."""
    allowed = {"digest_enabled", "digest_time", "digest_timezone"}
    if set(changes) - allowed:
        raise ValidationError(f"Cannot change {', '.join(sorted(set(changes) - allowed))}")
    with transaction.atomic():
        pref, _ = DeskPreference.objects.select_for_update().get_or_create(user=user)
        before = {k: str(getattr(pref, k)) for k in changes}
        for k, v in changes.items():
            setattr(pref, k, v)
        pref.save(update_fields=[*changes, "updated_at"])
        audit_record(
            event_type="desk_preferences_changed",
            actor=actor,
            payload={
                "user": user.get_username(),
                "from": before,
                "to": {k: str(v) for k, v in changes.items()},
            },
        )
    return pref


def saved_view_create(*, owner: User, name: str, query: str, shared: bool) -> SavedView:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the view a name"})
    try:
        with transaction.atomic():
            view = SavedView.objects.create(owner=owner, name=name[:60], query=query[:500], shared=shared)
            audit_record(
                event_type="saved_view_created",
                actor=owner,
                payload={"view": view.pk, "name": view.name, "query": view.query, "shared": shared},
            )
    except IntegrityError:
        raise ValidationError({"name": f"You already have a view named {name!r}"}) from None
    return view


def saved_view_delete(*, view: SavedView, actor: User) -> None:
    """Only its owner deletes a view (a shared view is still someone's)."""
    if view.owner_id != actor.pk:
        raise PermissionDenied("Only the person who saved this view can delete it")
    with transaction.atomic():
        audit_record(
            event_type="saved_view_deleted", actor=actor, payload={"view": view.pk, "name": view.name}
        )
        view.delete()


# Morning digest ----------------------------------------------------------------------


def digest_render(*, digest: dict) -> tuple[str, str, str]:
    """(subject, plain text, HTML) of one owner's digest."""
    from django.conf import settings
    from django.template.loader import render_to_string

    context = {"digest": digest, "site_url": settings.SITE_URL}
    strip = digest["strip"]
    subject = f"Your partners today: {strip['at_risk']} at risk, {strip['new_at_risk']} new"
    text = render_to_string("desk/digest_email.txt", context)
    html = render_to_string("desk/digest_email.html", context)
    return subject, text, html


def digest_send(*, user: User, today, force: bool = False) -> str:
    """Send one owner's digest for their local `today`, at most once a day (claimed with a
    conditional UPDATE, so two beat workers never both send it). Returns what happened:
    "sent", "opted_out", "empty", "already_sent" or "failed" (audited).

    Its own send, not agent.outbox: the digest goes to our own staff, and the outbox's rules
    (do-not-contact, approval tiers, the hourly cap) are about emails to partners."""
    from django.conf import settings
    from django.core.mail import EmailMultiAlternatives
    from django.db.models import Q

    if not digest_settings(user=user)["enabled"]:
        return "opted_out"
    digest = digest_for(user=user, today=today)
    if digest["empty"]:
        return "empty"
    DeskPreference.objects.get_or_create(user=user)
    claim = DeskPreference.objects.filter(user=user)
    if not force:
        claim = claim.filter(Q(last_digest_on__isnull=True) | Q(last_digest_on__lt=today))
    previous = DeskPreference.objects.filter(user=user).values_list("last_digest_on", flat=True).first()
    if not claim.update(last_digest_on=today):
        return "already_sent"
    subject, text, html = digest_render(digest=digest)
    message = EmailMultiAlternatives(subject, text, settings.DEFAULT_FROM_EMAIL, [user.email])
    message.attach_alternative(html, "text/html")
    try:
        message.send()
    except Exception as exc:  # noqa: BLE001 - any transport failure: recorded, retried next tick
        DeskPreference.objects.filter(user=user).update(last_digest_on=previous)
        audit_record(
            event_type="digest_failed",
            actor_type="system",
            payload={"user": user.get_username(), "error": f"{type(exc).__name__}: {exc}"[:500]},
        )
        return "failed"
    audit_record(
        event_type="digest_sent",
        actor_type="system",
        payload={
            "user": user.get_username(),
            "day": today.isoformat(),
            "new_at_risk": len(digest["new_at_risk"]),
            "tasks": len(digest["tasks"]),
            "drafts": len(digest["drafts"]),
        },
    )
    return "sent"


def digests_send_due(*, now=None, force: bool = False, users=None, at_any_time: bool = False) -> dict:
    """Send the digest to every owner whose local digest time has passed today (the beat runs
    this every 15 minutes); `at_any_time` skips the time check (send_digest), `force` also
    sends a second one today. Returns counts per outcome."""
    from django.utils import timezone

    now = now or timezone.now()
    counts = {"sent": 0, "opted_out": 0, "empty": 0, "already_sent": 0, "failed": 0, "not_yet": 0}
    recipients = users if users is not None else digest_recipients()
    for user in recipients:
        prefs = digest_settings(user=user)
        local = now.astimezone(prefs["timezone"])
        if not at_any_time and local.time() < prefs["time"]:
            counts["not_yet"] += 1
            continue
        counts[digest_send(user=user, today=local.date(), force=force)] += 1
    return counts


# Chat alerts -------------------------------------------------------------------------

# Seconds before attempt 2, 3, ...: doubling from 30 s, at most an hour.
ALERT_BACKOFF_BASE, ALERT_BACKOFF_MAX = 30, 3600


def _partner_link(external_id: str) -> str:
    from django.conf import settings

    return f"{settings.SITE_URL}/partners/{external_id}/"


def _alerted_today(kind: str, day):
    from django.db.models import Exists, OuterRef

    # Deduplicated per partner per day; the unique constraint settles a race between two runs.
    return Exists(ChatAlert.objects.filter(partner=OuterRef("partner"), kind=kind, day=day))


def chat_alerts_enqueue_at_risk(*, run_id: int, day) -> int:
    """An outbox row per partner this run moved into "at risk" (once per partner per day)."""

    level = settings.AT_RISK_LEVEL
    crossed = (
        PartnerScore.objects.filter(run_id=run_id, risk__gte=level, previous_risk__lt=level)
        .exclude(_alerted_today(ChatAlert.Kind.AT_RISK, day))
        .values_list("partner_id", "partner__external_id", "partner__name", "risk", "previous_risk")
    )
    alerts = [
        ChatAlert(
            partner_id=pid,
            kind=ChatAlert.Kind.AT_RISK,
            day=day,
            text=f"⚠️ {ext} {name} is now at risk: {risk:.0%} (was {prev:.0%}) {_partner_link(ext)}",
        )
        for pid, ext, name, risk, prev in crossed.iterator(chunk_size=2000)
    ]
    return len(ChatAlert.objects.bulk_create(alerts, batch_size=2000, ignore_conflicts=True))


def chat_alerts_enqueue_drafts(*, day) -> int:
    """An outbox row per Platinum partner with an agent draft waiting for approval."""
    from django.conf import settings

    waiting = (
        Intervention.objects.filter(
            review_status=Intervention.Review.AWAITING, partner__tier=Partner.Tier.PLATINUM
        )
        .exclude(_alerted_today(ChatAlert.Kind.DRAFT_WAITING, day))
        .values_list("partner_id", "partner__external_id", "partner__name")
    )
    alerts = [
        ChatAlert(
            partner_id=pid,
            kind=ChatAlert.Kind.DRAFT_WAITING,
            day=day,
            text=f"✉️ A draft for Platinum partner {ext} {name} is waiting for a manager's approval "
            f"{settings.SITE_URL}/admin/agent/interventionreview/",
        )
        for pid, ext, name in waiting.distinct()
    ]
    return len(ChatAlert.objects.bulk_create(alerts, ignore_conflicts=True))


def chat_alerts_send_due(*, now=None, limit: int = 50) -> dict:
    """Send pending alerts whose next attempt is due. A failure schedules a retry with backoff
    (doubling), up to CHAT_ALERT_MAX_ATTEMPTS, then the alert is given up; every failure is
    audited. Rows are claimed with SKIP LOCKED, so two workers never post the same alert."""
    from django.conf import settings
    from django.db.models import Q
    from django.utils import timezone

    now = now or timezone.now()
    counts = {"sent": 0, "retry": 0, "failed": 0}
    if not settings.CHAT_WEBHOOK_URL:
        return counts | {"skipped": "CHAT_WEBHOOK_URL is not set"}
    due = Q(status=ChatAlert.Status.PENDING) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    for _ in range(limit):
        with transaction.atomic():
            alert = (
                ChatAlert.objects.select_for_update(skip_locked=True)
                .filter(due)
                .select_related("partner")
                .order_by("created_at", "pk")
                .first()
            )
            if alert is None:
                break
            alert.attempts += 1
            try:
                chat_post(text=alert.text)
            except ChatError as exc:
                give_up = alert.attempts >= settings.CHAT_ALERT_MAX_ATTEMPTS
                delay = min(ALERT_BACKOFF_BASE * 2 ** (alert.attempts - 1), ALERT_BACKOFF_MAX)
                alert.status = ChatAlert.Status.FAILED if give_up else ChatAlert.Status.PENDING
                alert.next_attempt_at = None if give_up else now + dt.timedelta(seconds=delay)
                alert.last_error = str(exc)[:500]
                counts["failed" if give_up else "retry"] += 1
                audit_record(
                    event_type="chat_alert_failed",
                    actor_type="system",
                    partner=alert.partner,
                    payload={
                        "alert": alert.pk,
                        "kind": alert.kind,
                        "attempt": alert.attempts,
                        "gave_up": give_up,
                        "retry_in_seconds": None if give_up else delay,
                        "error": alert.last_error,
                    },
                )
            else:
                alert.status, alert.sent_at, alert.last_error = ChatAlert.Status.SENT, now, ""
                counts["sent"] += 1
            alert.save(
                update_fields=["attempts", "status", "next_attempt_at", "last_error", "sent_at", "updated_at"]
            )
    return counts
