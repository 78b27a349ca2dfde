"""Every periodic (beat) schedule, declared once, and the upsert into django-celery-beat.

`manage.py setup_periodic_tasks` calls `periodic_tasks_sync`; the agent's Start/Stop calls
`agent_schedule_set_enabled`. Tasks are named by string, so this module imports no tasks module
(and no services module imports a tasks module for a schedule constant).
"""

from __future__ import annotations

from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from agent import selectors
from agent.audit import audit_record

AGENT_SCHEDULE_NAME = "agent: scan for at-risk partners every 15 minutes"
FOLLOWUP_SCHEDULE_NAME = "agent: check due follow-ups hourly"
SWEEP_SCHEDULE_NAME = "agent: deliver queued emails and recover lost runs every minute"
SCORING_SCHEDULE_NAME = "nightly scoring"
VALIDATION_SCHEDULE_NAME = "nightly model validation (backtest and drift)"
AUDIT_VERIFY_SCHEDULE_NAME = "audit: verify the hash chain nightly"
DIGEST_SCHEDULE_NAME = "desk: morning digest (each owner at their local time)"
ALERTS_SCHEDULE_NAME = "desk: chat alerts (Platinum drafts waiting, retries)"
WEBHOOKS_SCHEDULE_NAME = "api: send due webhook deliveries (retries with backoff)"

PERIODIC_TASKS: list[dict] = [
    {
        "name": AGENT_SCHEDULE_NAME,
        "task": "agent.run_agent",
        "interval": {"every": 15, "period": "minutes"},
        # A tick nobody picked up within 10 minutes is dropped, not piled up behind the next one.
        "expire_seconds": 600,
    },
    {
        "name": FOLLOWUP_SCHEDULE_NAME,
        "task": "agent.check_followups",
        "crontab": {"minute": "5"},
        "expire_seconds": 1800,
    },
    {
        # Nothing depends on a task surviving in Redis: this re-enqueues from the database.
        "name": SWEEP_SCHEDULE_NAME,
        "task": "agent.sweep",
        "interval": {"every": 1, "period": "minutes"},
        "expire_seconds": 55,
    },
    {
        "name": SCORING_SCHEDULE_NAME,
        "task": "ml.tasks.score_all_partners",
        "crontab": {"minute": "30", "hour": "2"},
    },
    {
        # After scoring: the Model page's "last validated" and its realized reliability curve.
        "name": VALIDATION_SCHEDULE_NAME,
        "task": "ml.tasks.validate_model",
        "crontab": {"minute": "45", "hour": "3"},
    },
    {
        # The Agent page shows "audit chain verified <time>" from this walk.
        "name": AUDIT_VERIFY_SCHEDULE_NAME,
        "task": "agent.audit_verify",
        "crontab": {"minute": "15", "hour": "3"},
    },
    {
        # Every 15 minutes: each owner's digest goes out at the first tick after their local
        # DIGEST_TIME (or their own), once a local day, so time zones and a missed tick both work.
        "name": DIGEST_SCHEDULE_NAME,
        "task": "desk.send_due_digests",
        "crontab": {"minute": "*/15"},
        "expire_seconds": 600,
    },
    {
        # Platinum drafts waiting, and the retries of alerts a failing webhook refused.
        "name": ALERTS_SCHEDULE_NAME,
        "task": "desk.send_chat_alerts",
        "interval": {"every": 1, "period": "minutes"},
        "expire_seconds": 60,
    },
    {
        # Webhooks are sent at once after the change; this sends retries and anything whose
        # task message was lost (the outbox table is the truth, not Redis).
        "name": WEBHOOKS_SCHEDULE_NAME,
        "task": "api.send_due_webhooks",
        "interval": {"every": 1, "period": "minutes"},
        "expire_seconds": 60,
    },
]


@transaction.atomic
def periodic_tasks_sync() -> dict:
    """Upsert all declared schedules. The agent's schedule follows the Start/Stop flag; the others
    keep whatever enabled state the admin gave them (new ones start enabled)."""
    config = selectors.agent_config_get()
    result: dict = {"created": [], "updated": [], "total": 0}
    for spec in PERIODIC_TASKS:
        fields = {"task": spec["task"], "interval": None, "crontab": None}
        if "interval" in spec:
            fields["interval"], _ = IntervalSchedule.objects.get_or_create(**spec["interval"])
        else:
            crontab = {
                "minute": "*",
                "hour": "*",
                "day_of_week": "*",
                "day_of_month": "*",
                "month_of_year": "*",
            }
            crontab.update({key: str(value) for key, value in spec["crontab"].items()})
            fields["crontab"], _ = CrontabSchedule.objects.get_or_create(**crontab, timezone="UTC")
        fields["expire_seconds"] = spec.get("expire_seconds")
        if spec["name"] == AGENT_SCHEDULE_NAME:
            fields["enabled"] = config.enabled
        _, created = PeriodicTask.objects.update_or_create(name=spec["name"], defaults=fields)
        result["created" if created else "updated"].append(spec["name"])
    result["total"] = len(result["created"]) + len(result["updated"])
    audit_record(event_type="schedules_synced", actor_type="system", payload=result)
    return result


def agent_schedule_set_enabled(*, enabled: bool) -> None:
    """The agent's beat entry follows Start/Stop (the caller has saved the flag already)."""
    task = PeriodicTask.objects.filter(name=AGENT_SCHEDULE_NAME).first()
    if task is None:
        periodic_tasks_sync()  # reads the flag just saved
        return
    # save(), not a queryset update: beat notices changes through the model's signals.
    task.enabled = enabled
    task.save(update_fields=["enabled"])
