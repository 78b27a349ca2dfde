"""Celery tasks: thin wrappers that take ids and call the services.

Time limits: one draft can take up to ~120 s in the worst case (OPENAI_TIMEOUT 20 s x 3 HTTP
attempts x 2 rounds when the first reply is invalid) before the template takes over, so the
per-partner task allows 300 s and a batch (drafts 8 at a time, ~7 waves for 50 partners) 1200 s.
Both stay far below the broker's visibility timeout (3600 s), after which Redis would
redeliver a running task to a second worker. Every task is safe to run twice: runs are claimed
queued -> running once, partners through claims and the unique constraint. The beat entries that
call these tasks are declared in churnsite/schedules.py.
"""

from celery import shared_task
from django.conf import settings

from agent import outbox, services, sweep, workflow
from agent.audit import audit_chain_verify
from agent.models import AgentRun

# Settings, so the fault tests run workers with short limits; the sweep reads the same values.
RUN_TIME_LIMIT = settings.AGENT_RUN_TIME_LIMIT
RUN_SOFT_TIME_LIMIT = RUN_TIME_LIMIT - min(60, RUN_TIME_LIMIT // 10)
PARTNER_TIME_LIMIT = settings.AGENT_PARTNER_TIME_LIMIT
PARTNER_SOFT_TIME_LIMIT = PARTNER_TIME_LIMIT - min(30, PARTNER_TIME_LIMIT // 10)
FOLLOWUP_SOFT_TIME_LIMIT, FOLLOWUP_TIME_LIMIT = 600, 660


@shared_task(
    name="agent.run_agent", acks_late=True, soft_time_limit=RUN_SOFT_TIME_LIMIT, time_limit=RUN_TIME_LIMIT
)
def run_agent(run_id: int | None = None) -> dict:
    """A scan and batch; the beat schedule calls it without a run (one is created)."""
    if run_id is None:
        run_id = services.agent_run_create(trigger=AgentRun.Trigger.SCHEDULE).pk
    return workflow.agent_run_execute(run_id=run_id)


@shared_task(
    name="agent.execute_intervention",
    acks_late=True,
    soft_time_limit=PARTNER_SOFT_TIME_LIMIT,
    time_limit=PARTNER_TIME_LIMIT,
)
def execute_intervention(run_id: int, partner_id: int, skip_threshold: bool = False) -> dict:
    """One partner ("intervene now" skips the threshold, never the cap or the approval)."""
    return workflow.agent_partner_execute(run_id=run_id, partner_id=partner_id, skip_threshold=skip_threshold)


@shared_task(
    name="agent.check_followups",
    acks_late=True,
    soft_time_limit=FOLLOWUP_SOFT_TIME_LIMIT,
    time_limit=FOLLOWUP_TIME_LIMIT,
)
def check_followups() -> dict:
    return services.followups_process_due()


@shared_task(name="agent.audit_verify", soft_time_limit=1800, time_limit=1860)
def audit_verify() -> dict:
    """Walk the audit chain (nightly on the beat); the Agent page shows the stored result."""
    result = audit_chain_verify()
    return {
        "ok": result.ok,
        "events": result.events,
        "broken_seq": result.broken_seq,
        "reason": result.reason,
    }


@shared_task(name="agent.send_email", acks_late=True, soft_time_limit=60, time_limit=90)
def send_email(outbox_id: int) -> str:
    """One outbox email, at most once (claimed under a row lock; a second run finds it taken)."""
    return outbox.email_outbox_deliver(outbox_id=outbox_id)


@shared_task(name="agent.sweep", soft_time_limit=50, time_limit=60)
def sweep_lost_work() -> dict:
    """Every minute: re-enqueue due outbox emails and queued runs, fail runs whose worker died."""
    return sweep.agent_sweep()


@shared_task(name="agent.ping", soft_time_limit=10, time_limit=20)
def ping() -> str:
    """Lets tests and health checks wait until a worker consumes this queue."""
    return "pong"
