import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from desk import services
from desk.tasks import send_chat_alerts

log = logging.getLogger(__name__)


def queue_at_risk_alerts(sender, run, **kwargs) -> None:
    """Inside the scoring run's transaction: one INSERT of outbox rows (a savepoint, so a
    failure here never fails the run); the webhook is called later, by a task."""

    if not settings.CHAT_WEBHOOK_URL:
        return
    try:
        with transaction.atomic():
            queued = services.chat_alerts_enqueue_at_risk(run_id=run.pk, day=timezone.localdate())
    except Exception:  # noqa: BLE001 - alerts are a side channel: scoring must finish regardless
        log.exception("Chat alerts for scoring run %s were not queued", run.pk)
        return
    # Without a broker tasks run in-process: the beat (or the next tick) sends them instead,
    # so a slow webhook never holds up score_partners.
    if queued and not settings.CELERY_TASK_ALWAYS_EAGER:
        transaction.on_commit(_send_soon)


def _send_soon() -> None:
    try:
        send_chat_alerts.delay()
    except Exception:  # noqa: BLE001 - the minute beat picks them up
        log.warning("Could not enqueue the chat alert task; the beat will send the alerts")
