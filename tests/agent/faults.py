"""The fault matrix, shared by tests/agent/test_faults.py and bench/fault_bench.py.

Each fault runs real Celery worker processes against a Redis server of its own (started here on
a free port, never the shared one) and the current database:
- "drafting", "between", "sending", "sent": one worker takes an agent run and pauses at that
  failpoint (churnsite/failpoints.py: "sending" = the outbox row claimed, not committed; "sent" =
  the SMTP server accepted the email, not yet recorded); the test kill -9s it there; fresh
  workers and the sweep recover.
- "flush": runs are queued (a scheduled run and intervene-now runs) and Redis is FLUSHDB'd
  before any worker takes them; workers and the sweep start afterwards.
Then a second scheduled run shows the partners the dead run never reached are contacted once.
`measure` reads the database and the mail the workers wrote and counts what must be zero.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

from celery import Celery

from agent import services
from agent.models import AgentRun, AuditEvent, EmailOutbox, PartnerClaim
from retention.models import Intervention, Partner
from tests.agent.workers import WorkerPool
from tests.redis_server import RedisServer

FAILPOINTS = {
    "drafting": "agent.drafting",
    "between": "agent.between",
    "sending": "outbox.sending",
    "sent": "outbox.sent",
}
FAULTS = ("drafting", "between", "sending", "sent", "flush")
OPEN = (AgentRun.Status.QUEUED, AgentRun.Status.RUNNING)


class FaultRig:
    """Workers, a control app and the mail folder for one fault, on one Redis."""

    def __init__(self, *, redis_server: RedisServer, folder: Path, time_limit: int = 20, grace: int = 2):
        self.redis = redis_server
        self.outbox = folder / "mail"
        self.markers = folder / "markers"
        self.outbox.mkdir(parents=True, exist_ok=True)
        self.markers.mkdir(parents=True, exist_ok=True)
        # Not the current app: the rest of the suite keeps sending through churnsite.celery.app.
        self.app = Celery("fault-control", broker=redis_server.url, backend=None, set_as_current=False)
        self.queue = f"fault-{time.monotonic_ns() % 10**8}"
        self.env = {
            "REDIS_URL": redis_server.url,
            # Short limits, so a run whose worker died is failed within seconds, not 21 minutes.
            "AGENT_RUN_TIME_LIMIT": str(time_limit),
            "AGENT_PARTNER_TIME_LIMIT": str(time_limit),
            "AGENT_SWEEP_GRACE": str(grace),
            "AGENT_QUEUED_RUN_LIMIT": "300",
            "CHURNSITE_FAILPOINT_DIR": str(self.markers),
        }
        self.pools: list[WorkerPool] = []

    def pool(self, count: int, *, queue: str | None = None, **extra_env) -> WorkerPool:
        """Workers on the rig's queue (the healthy ones, which also run the sweep and take what it
        re-enqueues), or on a queue of their own (the one about to be killed)."""
        pool = WorkerPool(
            count=count,
            outbox=self.outbox,
            extra_env={**self.env, **extra_env},
            queue=queue or self.queue,
            control_app=self.app,
        )
        self.pools.append(pool)
        return pool.start()

    def reset(self) -> None:
        for path in [*self.outbox.glob("*"), *self.markers.glob("*")]:
            path.unlink()

    def send(self, name: str, *args, queue: str | None = None) -> None:
        self.app.send_task(name, args=list(args), queue=queue or self.queue)

    def wait_for_marker(self, failpoint: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(self.markers.glob(f"{failpoint}.*")):
                return
            time.sleep(0.05)
        raise TimeoutError(f"no worker reached {failpoint} in {timeout}s")

    def settle(self, timeout: float = 120) -> float:
        """Tick the sweep (as beat would, every 2 s instead of 60) until no run is open and no
        email is queued; returns the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            self.send("agent.sweep")
            time.sleep(2)
            open_runs = AgentRun.objects.filter(status__in=OPEN).exists()
            if not open_runs and not EmailOutbox.objects.filter(status=EmailOutbox.Status.QUEUED).exists():
                return time.monotonic() - start
        raise TimeoutError(
            f"still open after {timeout}s: {list(AgentRun.objects.filter(status__in=OPEN).values())}"
        )

    def stop(self) -> None:
        for pool in self.pools:
            pool.stop()


def run_fault(fault: str, rig: FaultRig, *, partners: list[Partner]) -> dict:
    """Inject one fault, recover, run once more; returns measure() plus what the dead run was."""
    if not any(pool.queue == rig.queue for pool in rig.pools):
        rig.pool(2)  # the healthy workers (kept across faults)
    victim = services.agent_run_create(trigger=AgentRun.Trigger.SCHEDULE)
    if fault in FAILPOINTS:
        doomed = f"{rig.queue}-doomed-{fault}"
        worker = rig.pool(1, queue=doomed, CHURNSITE_FAILPOINTS=f"{FAILPOINTS[fault]}=600")
        rig.send("agent.run_agent", victim.pk, queue=doomed)
        rig.wait_for_marker(FAILPOINTS[fault])
        worker.kill()
    else:
        parked = f"{rig.queue}-parked"  # nobody consumes it: the messages wait in Redis
        rig.send("agent.run_agent", victim.pk, queue=parked)
        for partner in partners[:3]:
            run = services.agent_run_create(trigger=AgentRun.Trigger.PARTNER, partner=partner)
            rig.send("agent.execute_intervention", run.pk, partner.pk, True, queue=parked)
        rig.redis.flushdb()  # every queued message is gone; only the database remembers
    recovered_in = rig.settle()
    # The partners the dead run never reached: the next run contacts each of them once.
    follow_up = services.agent_run_create(trigger=AgentRun.Trigger.SCHEDULE)
    rig.send("agent.run_agent", follow_up.pk)
    rig.settle()
    victim.refresh_from_db()
    return {
        **measure(rig.outbox),
        "victim_status": victim.status,
        "victim_failed_audited": AuditEvent.objects.filter(event_type="run_failed", run=victim).exists(),
        "victim_emails_sent": EmailOutbox.objects.filter(run=victim, status=EmailOutbox.Status.SENT).count(),
        "recovered_in_s": round(recovered_in, 1),
    }


def _messages(folder: Path) -> list[dict]:
    found = []
    for path in sorted(folder.glob("*.log")):
        for chunk in path.read_text().split("-" * 79):
            key = re.search(r"^X-Churnsite-Outbox: (\S+)$", chunk, re.M)
            if key:
                to = re.search(r"^To: (\S+)$", chunk, re.M)
                found.append({"key": key.group(1), "to": to.group(1) if to else ""})
    return found


def measure(folder: Path) -> dict:
    """What a user would check after the fault: every number but `contacts` must be 0."""
    messages = _messages(folder)
    per_partner = Counter(m["to"] for m in messages)
    per_key = Counter(m["key"] for m in messages)
    audited_keys = set(
        AuditEvent.objects.filter(event_type="email_sent").values_list("payload__outbox", flat=True)
    )
    sent_rows = set(
        str(k)
        for k in EmailOutbox.objects.filter(status=EmailOutbox.Status.SENT).values_list("key", flat=True)
    )
    logged = set(
        AuditEvent.objects.filter(event_type="intervention_logged").values_list("intervention_id", flat=True)
    )
    interventions = Intervention.objects.all()
    unaudited_interventions = interventions.exclude(pk__in=logged).count()
    agent_open = Counter(
        Intervention.objects.filter(source="agent")
        .exclude(action="holdout")
        .values_list("partner_id", flat=True)
    )
    # A sender killed after its claim (during or right after the SMTP call) leaves the row
    # "sending" (the sweep marks it "in doubt" once past any sender's limit): it may have gone
    # out, so it is never sent again. Counted on its own, not as lost.
    doubtful = EmailOutbox.objects.filter(
        status__in=[EmailOutbox.Status.SENDING, EmailOutbox.Status.IN_DOUBT]
    )
    doubtful_keys = {str(k) for k in doubtful.values_list("key", flat=True)}
    lost = EmailOutbox.objects.exclude(
        status__in=[
            EmailOutbox.Status.SENT,
            EmailOutbox.Status.REFUSED,
            EmailOutbox.Status.SENDING,
            EmailOutbox.Status.IN_DOUBT,
        ]
    ).count()
    # An agent email that was neither held nor sent and has no outbox row would be lost silently.
    lost += (
        interventions.filter(
            source="agent", action="email_sent", sent_at__isnull=True, email_outbox__isnull=True
        )
        .exclude(review_status__in=["awaiting", "rejected"])
        .count()
    )
    return {
        "contacts": len(messages),
        "held": interventions.filter(review_status="awaiting").count(),
        "duplicates": sum(n - 1 for n in per_partner.values() if n > 1)
        + sum(n - 1 for n in per_key.values() if n > 1)
        + sum(n - 1 for n in agent_open.values() if n > 1),
        "unaudited": len(set(per_key) - audited_keys - doubtful_keys) + unaudited_interventions,
        "in_doubt": len(doubtful_keys),
        "stuck_runs": AgentRun.objects.filter(status__in=OPEN).count(),
        "stuck_claims": PartnerClaim.objects.count(),
        "lost_emails": lost + len(sent_rows - set(per_key)),
    }
