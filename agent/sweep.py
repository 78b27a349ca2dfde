"""The every-minute safety net (beat task `agent.sweep`, declared in churnsite/schedules.py).

Nothing the agent promises depends on a message surviving in Redis or a worker surviving its
task: every minute this reads the database and
- fails runs still "running" past their task's hard time limit plus a grace (their worker died:
  kill -9, OOM, a hard time limit), audited `run_failed` with reason `worker_lost`, and releases
  their partner claims;
- enqueues queued runs again (the message was lost: Redis flushed or restarted), and fails runs
  queued longer than AGENT_QUEUED_RUN_LIMIT (audited, reason `never_started`);
- enqueues `agent.send_email` for outbox rows still queued (the sender died between the commit
  and its claim of the row; or a retry is due);
- marks "in doubt" outbox rows left "sending" past any sender's time limit (the sender died
  during or right after the SMTP call): never re-sent, so no partner gets an email twice.
Enqueuing twice is harmless: runs are claimed queued -> running once, outbox rows under a lock.
"""

from __future__ import annotations

import datetime as dt

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agent import outbox
from agent.audit import audit_record
from agent.models import AgentRun, PartnerClaim


def run_time_limit(run: AgentRun) -> dt.timedelta:
    """The hard time limit of the task that executes `run` (agent.tasks reads the same settings)."""
    seconds = (
        settings.AGENT_PARTNER_TIME_LIMIT
        if run.trigger == AgentRun.Trigger.PARTNER
        else settings.AGENT_RUN_TIME_LIMIT
    )
    return dt.timedelta(seconds=seconds)


def _fail(run: AgentRun, *, reason: str, now: dt.datetime, limit_seconds: float) -> bool:
    with transaction.atomic():
        # Conditional: a run that finished meanwhile keeps its own status.
        failed = (
            AgentRun.objects.filter(pk=run.pk, status=run.status).update(
                status=AgentRun.Status.FAILED, finished_at=now
            )
            == 1
        )
        if not failed:
            return False
        released, _ = PartnerClaim.objects.filter(run=run).delete()
        audit_record(
            event_type="run_failed",
            actor_type="system",
            run=run,
            payload={
                **run.summary,
                "reason": reason,
                "was": run.status,
                "limit_seconds": limit_seconds,
                "claims_released": released,
            },
        )
    return True


def _enqueue_run(run: AgentRun) -> bool:
    if run.trigger == AgentRun.Trigger.PARTNER:
        if run.partner_id is None:
            return False
        # Intervene-now is the only per-partner trigger, and it skips the threshold.
        current_app.send_task("agent.execute_intervention", args=[run.pk, run.partner_id, True])
    else:
        current_app.send_task("agent.run_agent", args=[run.pk])
    return True


def agent_sweep(*, now: dt.datetime | None = None) -> dict:
    now = now or timezone.now()
    grace = dt.timedelta(seconds=settings.AGENT_SWEEP_GRACE)
    queued_limit = dt.timedelta(seconds=settings.AGENT_QUEUED_RUN_LIMIT)
    counts = {"runs_failed": 0, "runs_enqueued": 0, "emails_enqueued": 0}
    counts["emails_in_doubt"] = outbox.email_outbox_sweep_in_doubt(now=now)
    for run in AgentRun.objects.filter(status=AgentRun.Status.RUNNING, started_at__isnull=False):
        limit = run_time_limit(run)
        started = run.started_at  # not None (the filter), which the type cannot say
        if (
            started is not None
            and started + limit + grace <= now
            and _fail(run, reason="worker_lost", now=now, limit_seconds=limit.total_seconds())
        ):
            counts["runs_failed"] += 1
    for run in AgentRun.objects.filter(status=AgentRun.Status.QUEUED, created_at__lte=now - grace):
        if run.created_at + queued_limit <= now or (
            run.trigger == AgentRun.Trigger.PARTNER and run.partner_id is None
        ):
            if _fail(run, reason="never_started", now=now, limit_seconds=queued_limit.total_seconds()):
                counts["runs_failed"] += 1
        elif _enqueue_run(run):
            counts["runs_enqueued"] += 1
    for outbox_id in outbox.email_outbox_due(now=now, grace=grace):
        current_app.send_task("agent.send_email", args=[outbox_id])
        counts["emails_enqueued"] += 1
    return counts
