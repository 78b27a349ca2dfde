"""Webhooks out: which changes announce which event, the outbox rows, signing, sending, retries.

Each event is an audited change (or, for partner.at_risk, a finished scoring run): the delivery
rows are inserted in the transaction that records it, so an event is announced if and only if
the change committed. A task sends them at once after commit; the every-minute beat entry
(churnsite.schedules) sends whatever is due, so nothing depends on a message surviving in Redis.
A row is claimed by a conditional UPDATE that pushes its next attempt past the HTTP timeout (a
lease): two senders never post the same attempt, and a sender that dies leaves it due again.

Signature: header `X-Churnsite-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`
(docs/api.md has a verification snippet).
"""

import datetime as dt
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agent.audit import audit_record
from api.models import WEBHOOK_EVENTS, WebhookAttempt, WebhookDelivery, WebhookSubscription
from ml.models import PartnerScore
from retention.models import Intervention

log = logging.getLogger(__name__)

# Audit event type -> webhook event.
AUDIT_EVENTS = {
    "intervention_logged": "intervention.created",
    "email_sent": "intervention.sent",
    "outcome_set": "intervention.outcome_set",
    "outcome_corrected": "intervention.outcome_set",
    "held_for_review": "review.waiting",
}
SIGNATURE_HEADER = "X-Churnsite-Signature"
BACKOFF_MAX = 3600
_EVENTS_KEY = "api:webhook-subscribed-events"


def sign(*, secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(*, secret: str, header: str, body: bytes, tolerance: int = 300, now: float | None = None) -> bool:
    """What a receiver does (docs/api.md): recompute the MAC and check the timestamp is recent."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    if not parts.get("t", "").isdigit() or "v1" not in parts:
        return False
    timestamp = int(parts["t"])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret=secret, timestamp=timestamp, body=body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts["v1"])


# Subscriptions ------------------------------------------------------------------------


def _clean_events(events: list[str]) -> list[str]:
    unknown = set(events) - set(WEBHOOK_EVENTS)
    if unknown or not events:
        raise ValidationError({"events": f"Choose among {', '.join(WEBHOOK_EVENTS)}"})
    return [e for e in WEBHOOK_EVENTS if e in events]


@transaction.atomic
def webhook_subscription_create(
    *, url: str, events: list[str], secret: str, actor: User, description: str = ""
) -> WebhookSubscription:
    if len(secret) < 16:
        raise ValidationError({"secret": "Use a secret of at least 16 characters"})
    sub = WebhookSubscription(
        url=url, events=_clean_events(events), secret=secret, description=description[:200], created_by=actor
    )
    sub.full_clean()
    sub.save()
    audit_record(
        event_type="webhook_subscription_created",
        actor=actor,
        payload={"subscription": sub.pk, "url": url, "events": sub.events},
    )
    transaction.on_commit(subscribed_events_forget)
    return sub


@transaction.atomic
def webhook_subscription_delete(*, subscription: WebhookSubscription, actor: User) -> None:
    audit_record(
        event_type="webhook_subscription_deleted",
        actor=actor,
        payload={"subscription": subscription.pk, "url": subscription.url, "events": subscription.events},
    )
    subscription.delete()
    transaction.on_commit(subscribed_events_forget)


def subscribed_events() -> set[str]:
    """Events some active subscription wants; cached, so an audited change with no subscriber
    costs no query (most of them: the audit trail is written on every step of every run)."""
    events = cache.get(_EVENTS_KEY)
    if events is None:
        rows = WebhookSubscription.objects.filter(is_active=True).values_list("events", flat=True)
        events = sorted({e for row in rows for e in row})
        cache.set(_EVENTS_KEY, events, 300)
    return set(events)


def subscribed_events_forget() -> None:
    cache.delete(_EVENTS_KEY)


# Enqueueing ----------------------------------------------------------------------------


def _intervention_data(intervention) -> dict[str, Any]:
    partner = intervention.partner
    return {
        "id": intervention.pk,
        "partner": {"id": partner.external_id, "name": partner.name, "tier": partner.tier},
        "action": intervention.action,
        "source": intervention.source,
        "outcome": intervention.outcome,
        "review_status": intervention.review_status,
        "risk_at_action": intervention.risk_at_action,
        "created_at": intervention.created_at.isoformat(),
        "sent_at": intervention.sent_at.isoformat() if intervention.sent_at else None,
    }


def _subscribers(event: str) -> list[WebhookSubscription]:
    return [s for s in WebhookSubscription.objects.filter(is_active=True) if event in s.events]


def _queue(*, subs: list[WebhookSubscription], items: list[tuple[str, str, dict, dt.datetime]]) -> list[int]:
    """Insert one row per (subscription, event) for items of (event, event_id, data, occurred_at)."""
    rows = [
        WebhookDelivery(
            subscription=s,
            event=event,
            event_id=event_id,
            payload={"id": event_id, "event": event, "created_at": at.isoformat(), "data": data},
            next_attempt_at=at,
        )
        for event, event_id, data, at in items
        for s in subs
        if event in s.events
    ]
    if not rows:
        return []
    # An event seen twice (a scoring run's signal sent again) keeps its one row per subscription;
    # update_conflicts (not ignore_conflicts) so every row comes back with its id.
    created = WebhookDelivery.objects.bulk_create(
        rows,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=["subscription", "event_id"],
        update_fields=["updated_at"],
    )
    ids = [r.pk for r in created if r.pk]
    transaction.on_commit(lambda: _send_soon(ids))
    return ids


def webhooks_enqueue_for_audit_event(*, event) -> list[int]:
    """Delivery rows for an audited change, inside its transaction (under a savepoint: a webhook
    problem is logged and never undoes the change it announces)."""
    name = AUDIT_EVENTS[event.event_type]
    if name not in subscribed_events() or event.intervention_id is None:
        return []
    try:
        with transaction.atomic():
            intervention = Intervention.objects.select_related("partner").get(pk=event.intervention_id)
            data: dict[str, Any] = {"intervention": _intervention_data(intervention)}
            if name == "intervention.outcome_set":
                data["from"] = event.payload.get("from")
                data["corrected"] = event.event_type == "outcome_corrected"
            return _queue(subs=_subscribers(name), items=[(name, f"evt_{event.pk}", data, event.created_at)])
    except Exception:  # noqa: BLE001 - the change itself must commit whatever happens here
        log.exception("Webhook deliveries for audit event %s were not queued", event.pk)
        return []


def webhooks_enqueue_at_risk(*, run_id: int) -> int:
    """partner.at_risk for each partner this scoring run moved into at risk."""
    name = "partner.at_risk"
    if name not in subscribed_events():
        return 0
    subs = _subscribers(name)
    level = settings.AT_RISK_LEVEL  # the desk's at-risk level, as the chat alerts use it
    crossed = PartnerScore.objects.filter(run_id=run_id, risk__gte=level, previous_risk__lt=level).values(
        "partner_id",
        "partner__external_id",
        "partner__name",
        "partner__tier",
        "risk",
        "previous_risk",
        "bucket",
    )
    now = timezone.now()
    items = [
        (
            name,
            f"risk_{run_id}_{row['partner_id']}",
            {
                "partner": {
                    "id": row["partner__external_id"],
                    "name": row["partner__name"],
                    "tier": row["partner__tier"],
                },
                "risk": row["risk"],
                "previous_risk": row["previous_risk"],
                "bucket": row["bucket"],
                "scoring_run": run_id,
            },
            now,
        )
        for row in crossed.iterator(chunk_size=2000)
    ]
    return len(_queue(subs=subs, items=items))


def _send_soon(ids: list[int]) -> None:
    # Without a broker tasks run in-process: the beat sends them instead, so a slow receiver
    # never holds up the request that made the change.
    if not ids or settings.CELERY_TASK_ALWAYS_EAGER:
        return
    from api.tasks import deliver_webhooks  # cycle: api.tasks imports this module

    try:
        deliver_webhooks.apply_async(args=[ids], retry=False, ignore_result=True)
    except Exception:  # noqa: BLE001 - the minute beat sends them
        log.warning("Could not enqueue webhook deliveries %s; the beat will send them", ids)


# Sending -------------------------------------------------------------------------------


def backoff_seconds(attempts: int) -> float:
    """Before attempt n+1, after n failed ones: base, 2 x base, 4 x base, ... at most an hour."""
    return min(BACKOFF_MAX, settings.WEBHOOK_BACKOFF_BASE * 2 ** max(0, attempts - 1))


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=settings.WEBHOOK_TIMEOUT) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"[:300]


def webhook_deliver(*, delivery_id: int, now: dt.datetime | None = None) -> str:
    """One attempt of a due delivery: "delivered", "retry", "failed", or "not_due" (someone
    else holds it, it is not due yet, or it is done)."""
    now = now or timezone.now()
    lease = dt.timedelta(seconds=settings.WEBHOOK_TIMEOUT + 30)
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=WebhookDelivery.Status.QUEUED, next_attempt_at__lte=now
    ).update(next_attempt_at=now + lease, attempts=F("attempts") + 1, updated_at=now)
    if not claimed:
        return "not_due"
    delivery = WebhookDelivery.objects.select_related("subscription").get(pk=delivery_id)
    sub = delivery.subscription
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    if not sub.is_active:
        code, error = None, "the subscription is disabled"
    else:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "churnsite-webhooks/1",
            "X-Churnsite-Event": delivery.event,
            "X-Churnsite-Event-Id": delivery.event_id,
            "X-Churnsite-Delivery": str(delivery.pk),
            SIGNATURE_HEADER: sign(secret=sub.secret, timestamp=int(time.time()), body=body),
        }
        started = time.perf_counter()
        code, error = _post(sub.url, body, headers)
        WebhookAttempt.objects.create(
            delivery=delivery,
            at=now,
            status_code=code,
            error=error,
            seconds=round(time.perf_counter() - started, 3),
        )
    ok = code is not None and 200 <= code < 300
    delivery.last_status_code, delivery.last_error = code, error
    if ok:
        delivery.status, delivery.delivered_at = WebhookDelivery.Status.DELIVERED, timezone.now()
        result = "delivered"
    elif delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS or not sub.is_active:
        delivery.status, result = WebhookDelivery.Status.FAILED, "failed"
        audit_record(
            event_type="webhook_failed",
            actor_type="system",
            payload={
                "delivery": delivery.pk,
                "event": delivery.event,
                "attempts": delivery.attempts,
                "error": error,
            },
        )
    else:
        delivery.next_attempt_at, result = (
            now + dt.timedelta(seconds=backoff_seconds(delivery.attempts)),
            "retry",
        )
    delivery.save(
        update_fields=[
            "status", "delivered_at", "last_status_code", "last_error", "next_attempt_at", "updated_at",
        ]
    )  # fmt: skip
    return result


def webhooks_send_due(*, now: dt.datetime | None = None, limit: int = 200) -> dict[str, int]:
    """The beat's pass: every queued delivery whose next attempt is due, oldest first."""
    now = now or timezone.now()
    due = list(
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.QUEUED, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    counts: dict[str, int] = {}
    for pk in due:
        result = webhook_deliver(delivery_id=pk, now=now)
        counts[result] = counts.get(result, 0) + 1
    return counts


@transaction.atomic
def webhook_delivery_replay(*, delivery: WebhookDelivery, actor: User) -> WebhookDelivery:
    """Send a delivery again (the same event id: receivers that saw it may ignore it)."""
    locked = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
    locked.status, locked.attempts = WebhookDelivery.Status.QUEUED, 0
    locked.next_attempt_at = timezone.now()
    locked.save(update_fields=["status", "attempts", "next_attempt_at", "updated_at"])
    audit_record(
        event_type="webhook_replayed",
        actor=actor,
        payload={"delivery": locked.pk, "event": locked.event, "event_id": locked.event_id},
    )
    transaction.on_commit(lambda: _send_soon([locked.pk]))
    return locked
