"""Thin tasks: send webhook deliveries (at once after a change, and the every-minute beat)."""

from celery import shared_task

from api import webhooks
from ml import services as ml_services
from ml.tasks import scoring_run_dispatch


@shared_task(name="api.deliver_webhooks", time_limit=300, soft_time_limit=280)
def deliver_webhooks(delivery_ids: list[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pk in delivery_ids:
        result = webhooks.webhook_deliver(delivery_id=pk)
        counts[result] = counts.get(result, 0) + 1
    return counts


@shared_task(name="api.send_due_webhooks", time_limit=300, soft_time_limit=280)
def send_due_webhooks() -> dict[str, int]:
    return webhooks.webhooks_send_due()


@shared_task(name="api.dispatch_scoring_run", time_limit=600, soft_time_limit=540)
def dispatch_scoring_run(run_id: int) -> dict:
    """Fan out a scoring run the API created (the same chord as the nightly run)."""
    return scoring_run_dispatch(run_id=run_id, chunk_size=ml_services.DEFAULT_CHUNK)
