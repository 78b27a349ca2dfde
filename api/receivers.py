"""Signal receivers: audited changes and finished scoring runs become webhook deliveries.

Webhooks follow the audit trail: each event they announce is an audited change, and its
delivery rows commit in the same transaction as that change (an outbox)."""

import logging

from django.db import transaction
from django.db.models.signals import post_save

from agent.models import AuditEvent
from api import webhooks
from ml.signals import scoring_run_succeeded

log = logging.getLogger(__name__)


def connect() -> None:
    post_save.connect(audit_event_saved, sender=AuditEvent, dispatch_uid="api_webhooks_audit")
    scoring_run_succeeded.connect(run_succeeded, dispatch_uid="api_webhooks_at_risk")


def audit_event_saved(sender, instance, created: bool, **kwargs) -> None:
    if created and instance.event_type in webhooks.AUDIT_EVENTS:
        webhooks.webhooks_enqueue_for_audit_event(event=instance)


def run_succeeded(sender, run, **kwargs) -> None:
    """Inside the run's transaction, under a savepoint: a webhook problem never fails scoring."""
    try:
        with transaction.atomic():
            webhooks.webhooks_enqueue_at_risk(run_id=run.pk)
    except Exception:  # noqa: BLE001 - webhooks are a side channel: scoring must finish regardless
        log.exception("partner.at_risk webhooks for scoring run %s were not queued", run.pk)
