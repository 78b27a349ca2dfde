"""Celery tasks of the desk: thin wrappers over desk.services."""

from celery import shared_task
from django.utils import timezone

from desk import services

# The beat entries are declared in churnsite/schedules.py with the others.


@shared_task(name="desk.send_due_digests", soft_time_limit=540, time_limit=600)
def send_due_digests() -> dict:
    return services.digests_send_due()


@shared_task(name="desk.send_chat_alerts", soft_time_limit=240, time_limit=300)
def send_chat_alerts() -> dict:
    """After a scoring run and every minute: Platinum drafts waiting, then what is due (retries)."""
    queued = services.chat_alerts_enqueue_drafts(day=timezone.localdate())
    return {"queued": queued, **services.chat_alerts_send_due()}
