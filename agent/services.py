"""Writes for the agent: configuration, runs, the per-partner workflow, review, follow-ups.

Guardrails, and where each one holds:
- The hourly cap is counted inside the transaction that creates the intervention, under a
  PostgreSQL advisory transaction lock, with the database clock: every worker and process
  serializes on it, so N concurrent workers can never exceed it (Celery's rate_limit is per
  worker and would not). The cap counts contacts: emails sent and drafts held for review.
  Holdouts (control group) contact nobody and are not counted, but a run checks the budget
  before drawing, so a capped run draws no more holdouts either.
- One open agent intervention per partner: a unique constraint in the database.
- Overlapping runs: a session-level advisory "sweep" lock (a second run exits, audited
  `run_skipped_overlap`), plus a per-partner claim row (PartnerClaim) that single-partner
  tasks and runs share, so no partner is drafted or acted on twice.
- Stop: the config flag is re-read before every partner and again inside the final transaction.
- Approval tiers: the intervention is created `awaiting` with no email; only
  `intervention_approve` (permission retention.approve_intervention) sends it.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import EmailMessage
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from agent import selectors
from agent.audit import audit_record
from agent.models import AgentConfig, AgentRun, DoNotContact, FollowUp, PartnerClaim
from retention.models import Intervention, Partner
from retention.services import intervention_log

log = logging.getLogger(__name__)

# Advisory lock keys (any constants unique to this app).
BUDGET_LOCK_KEY = 7_301_001
SWEEP_LOCK_KEY = 7_301_002
# A claim older than this belongs to a worker that died mid-partner (tasks time out long before).
CLAIM_TTL = dt.timedelta(minutes=15)
# Drafts in flight at once when the LLM writer is active (bounded: the LLM server is shared).
DRAFT_CONCURRENCY = getattr(settings, "AGENT_DRAFT_CONCURRENCY", 8)

CONFIG_FIELDS = (
    "enabled",
    "risk_threshold",
    "max_per_hour",
    "cooldown_days",
    "follow_up_days",
    "approval_tiers",
    "control_fraction",
    "llm_model",
)

# Per-partner results, also the keys of the run summary.
EXECUTED = "executed"
HELD = "held_for_review"
HOLDOUT = "holdouts"
RATE_LIMITED = "rate_limited"
FAILED = "failed"
SKIPPED = "skipped"
STOPPED = "stopped"
NOT_REACHED = "not_reached"


def _is_postgres() -> bool:
    return connection.vendor == "postgresql"


def _user(actor: AbstractBaseUser | None) -> AbstractBaseUser | None:
    return actor if actor is not None and actor.is_authenticated else None


# Configuration ------------------------------------------------------------------


@transaction.atomic
def agent_config_update(*, actor: AbstractBaseUser | None, **changes) -> AgentConfig:
    """Change configuration fields; the change (before and after) is audited."""
    unknown = set(changes) - set(CONFIG_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown configuration fields: {sorted(unknown)}")
    selectors.agent_config_get()
    config = AgentConfig.objects.select_for_update().get(pk=1)
    diff = {}
    for name, value in changes.items():
        if name == "approval_tiers":
            value = sorted({str(t) for t in value})
            if not set(value) <= set(Partner.Tier.values):
                raise ValidationError({"approval_tiers": f"Unknown tiers in {value}"})
        if getattr(config, name) != value:
            diff[name] = {"from": getattr(config, name), "to": value}
            setattr(config, name, value)
    if not diff:
        return config
    config.full_clean()
    config.save()
    audit_record(event_type="config_changed", actor=actor, payload={"changes": diff})
    if "enabled" in diff:
        _sync_agent_schedule(enabled=config.enabled)
    return config


def agent_set_enabled(*, enabled: bool, actor: AbstractBaseUser | None) -> AgentConfig:
    """Start/Stop: the config flag (checked before every partner) and the beat schedule."""
    return agent_config_update(actor=actor, enabled=enabled)


def _sync_agent_schedule(*, enabled: bool) -> None:
    from django_celery_beat.models import PeriodicTask

    from agent.tasks import AGENT_SCHEDULE_NAME

    task = PeriodicTask.objects.filter(name=AGENT_SCHEDULE_NAME).first()
    if task is None:
        periodic_tasks_sync()  # reads the flag just saved
        return
    # save(), not a queryset update: beat notices changes through the model's signals.
    task.enabled = enabled
    task.save(update_fields=["enabled"])


# Do-not-contact list --------------------------------------------------------------


@transaction.atomic
def do_not_contact_add(*, partner: Partner, reason: str, actor: AbstractBaseUser | None) -> DoNotContact:
    entry, created = DoNotContact.objects.get_or_create(
        partner=partner, defaults={"reason": reason[:200], "added_by": _user(actor)}
    )
    if created:
        audit_record(
            event_type="do_not_contact_added", actor=actor, partner=partner, payload={"reason": reason}
        )
    return entry


@transaction.atomic
def do_not_contact_remove(*, partner: Partner, actor: AbstractBaseUser | None) -> bool:
    deleted, _ = DoNotContact.objects.filter(partner=partner).delete()
    if deleted:
        audit_record(event_type="do_not_contact_removed", actor=actor, partner=partner)
    return bool(deleted)


# Runs ---------------------------------------------------------------------------


@transaction.atomic
def agent_run_create(
    *,
    trigger: str,
    actor: AbstractBaseUser | None = None,
    dry_run: bool = False,
    partner: Partner | None = None,
) -> AgentRun:
    """A queued run; the caller enqueues the task after commit with its id."""
    run = AgentRun.objects.create(trigger=trigger, requested_by=_user(actor), dry_run=dry_run)
    audit_record(
        event_type="run_requested",
        actor=actor,
        actor_type=None if _user(actor) else "agent",
        run=run,
        partner=partner,
        payload={"trigger": trigger, "dry_run": dry_run},
    )
    return run


def _run_claim(run_id: int) -> bool:
    """queued -> running, once: a redelivered task finds the run already taken."""
    return (
        AgentRun.objects.filter(pk=run_id, status=AgentRun.Status.QUEUED).update(
            status=AgentRun.Status.RUNNING, started_at=timezone.now()
        )
        == 1
    )


def _run_finish(run: AgentRun, *, status: str, summary: dict, event_type: str, payload: dict | None = None):
    with transaction.atomic():
        AgentRun.objects.filter(pk=run.pk).update(status=status, finished_at=timezone.now(), summary=summary)
        audit_record(
            event_type=event_type, actor_type="agent", run=run, payload={**summary, **(payload or {})}
        )
    run.status, run.summary = status, summary


@contextmanager
def _claimed_run(run_id: int):
    """Claim a queued run for this process and yield its agent, or None if another process had it.

    Any exception (time limits included) marks the run failed and audits it, so a run never
    stays "running" behind a crash it could see."""
    run = AgentRun.objects.get(pk=run_id)
    if not _run_claim(run_id):
        run.refresh_from_db()
        yield run, None
        return
    agent = InterventionAgent(run=run)
    try:
        yield run, agent
    except BaseException as exc:
        _run_finish(
            run,
            status=AgentRun.Status.FAILED,
            summary=agent.summary(),
            event_type="run_failed",
            payload={"error": f"{type(exc).__name__}: {exc}"[:500]},
        )
        raise


def _already_processed(run: AgentRun) -> dict:
    return {"run_id": run.pk, "status": run.status, **run.summary, "note": "already processed"}


def agent_run_execute(*, run_id: int, limit: int | None = None) -> dict:
    """What the Celery task and the command call: process one queued run to the end."""
    with _claimed_run(run_id) as (run, agent):
        if agent is None:
            return _already_processed(run)
        return agent.batch_process(limit=limit)


def agent_partner_execute(*, run_id: int, partner_id: int, skip_threshold: bool) -> dict:
    """One partner ("intervene now", or a per-partner task): same guardrails, no sweep lock."""
    with _claimed_run(run_id) as (run, agent):
        if agent is None:
            return _already_processed(run)
        result = agent.execute_intervention(partner_id, skip_threshold=skip_threshold)
    status = AgentRun.Status.STOPPED if result == STOPPED else AgentRun.Status.FINISHED
    _run_finish(
        run, status=status, summary=agent.summary(), event_type="run_finished", payload={"result": result}
    )
    return agent.summary()


# The agent -------------------------------------------------------------------------


@dataclass
class _Job:
    """One partner between claim and commit."""

    partner: Partner
    token: str
    risk: float
    bucket: str
    drivers: list = field(default_factory=list)
    draft: object = None
    draft_error: str = ""


class InterventionAgent:
    """The workflow: scan, then for each eligible partner draw, explain, draft, log, send or hold,
    follow up; every step audited. Drafting (the slow LLM call) runs outside any transaction and,
    in a batch, on a bounded thread pool; all writes happen on the calling thread."""

    def __init__(self, *, run: AgentRun, rng: random.Random | None = None, concurrency: int | None = None):
        self.run = run
        self.rng = rng or random.SystemRandom()
        self.concurrency = concurrency or DRAFT_CONCURRENCY
        self.counts = {
            "scanned": 0,
            "eligible": 0,
            EXECUTED: 0,
            HELD: 0,
            HOLDOUT: 0,
            RATE_LIMITED: 0,
            FAILED: 0,
            SKIPPED: 0,
        }
        self.config = selectors.agent_config_get()

    def summary(self) -> dict:
        return {"run_id": self.run.pk, **self.counts}

    def _progress(self) -> None:
        AgentRun.objects.filter(pk=self.run.pk).update(summary=self.summary())

    def _audit(self, event_type: str, *, partner=None, intervention=None, payload=None):
        return audit_record(
            event_type=event_type,
            actor_type="agent",
            run=self.run,
            partner=partner,
            intervention=intervention,
            payload=payload,
        )

    def _enabled(self) -> bool:
        return AgentConfig.objects.filter(pk=1, enabled=True).exists()

    # Scan ----------------------------------------------------------------------

    def scan_for_interventions(self, threshold: float | None = None) -> list[int]:
        """Ids of the eligible partners, riskiest first."""
        threshold = self.config.risk_threshold if threshold is None else threshold
        self.counts["scanned"] = Partner.objects.filter(
            status=Partner.Status.ACTIVE, current_score__isnull=False
        ).count()
        ids = list(
            selectors.partners_eligible(
                threshold=threshold, cooldown_days=self.config.cooldown_days
            ).values_list("pk", flat=True)
        )
        self.counts["eligible"] = len(ids)
        return ids

    # One partner ------------------------------------------------------------------

    def execute_intervention(self, partner_id: int, *, skip_threshold: bool = False) -> str:
        """The full workflow for one partner; returns what happened (a summary key or "stopped")."""
        job_or_result = self._prepare(partner_id, skip_threshold=skip_threshold)
        if isinstance(job_or_result, str):
            return self._count(job_or_result)
        job = job_or_result
        self._draft(job)
        return self._count(self._commit(job, skip_threshold=skip_threshold))

    def _count(self, result: str, *, progress: bool = True) -> str:
        if result in self.counts:
            self.counts[result] += 1
        if progress:
            self._progress()
        return result

    # Batch ---------------------------------------------------------------------------

    def batch_process(self, limit: int | None = None) -> dict:
        """Process the eligible partners until done, the cap, `limit` actions, or Stop."""
        run = self.run
        if not run.dry_run and not self._enabled():
            _run_finish(
                run, status=AgentRun.Status.SKIPPED, summary=self.summary(), event_type="run_skipped_stopped"
            )
            return {**self.summary(), "status": run.status}
        if not self._sweep_lock():
            _run_finish(
                run, status=AgentRun.Status.SKIPPED, summary=self.summary(), event_type="run_skipped_overlap"
            )
            return {**self.summary(), "status": run.status}
        status, stop_reason = AgentRun.Status.FINISHED, ""
        try:
            self._audit("run_started", payload={"config": _config_snapshot(self.config), "limit": limit})
            ids = self.scan_for_interventions()
            self._progress()
            if run.dry_run:
                ids = []
            acted = 0
            pos = 0
            while pos < len(ids) and not stop_reason:
                batch = []
                # Budget pre-check once per chunk (the binding check is in each commit).
                if selectors.budget_used() >= self.config.max_per_hour:
                    self._audit("rate_limited", payload=self._budget_payload())
                    self.counts[RATE_LIMITED] += 1
                    stop_reason = RATE_LIMITED
                    break
                # Claim a handful (the draft concurrency); holdouts and skips resolve right away.
                while pos < len(ids) and len(batch) < self.concurrency:
                    if limit is not None and acted + len(batch) >= limit:
                        stop_reason = "limit"
                        break
                    result = self._prepare(ids[pos], skip_threshold=False, recheck=False)
                    pos += 1
                    if isinstance(result, _Job):
                        batch.append(result)
                        continue
                    self._count(result, progress=False)
                    if result == HOLDOUT:
                        acted += 1
                    if result in (STOPPED, RATE_LIMITED):
                        stop_reason = result
                        break
                self._progress()
                self._draft_all(batch)
                for i, job in enumerate(batch):
                    if stop_reason in (STOPPED, RATE_LIMITED):
                        self._release(job)
                        continue
                    result = self._count(self._commit(job, skip_threshold=False), progress=False)
                    if result in (EXECUTED, HELD):
                        acted += 1
                    if result in (STOPPED, RATE_LIMITED):
                        stop_reason = result
                        for rest in batch[i + 1 :]:
                            self._release(rest)
                        break
                self._progress()
        finally:
            self._sweep_unlock()
        # Eligible partners this run never acted on because it stopped early (the cap, Stop or
        # the limit), so the totals add up: eligible = acted on + skipped + failed + not reached.
        handled = sum(self.counts[k] for k in (EXECUTED, HELD, HOLDOUT, FAILED, SKIPPED))
        self.counts[NOT_REACHED] = 0 if run.dry_run else max(0, self.counts["eligible"] - handled)
        if stop_reason == STOPPED:
            status = AgentRun.Status.STOPPED
        _run_finish(
            run,
            status=status,
            summary=self.summary(),
            event_type="run_finished",
            payload={"stop_reason": stop_reason, "dry_run": run.dry_run},
        )
        return {**self.summary(), "status": status, "dry_run": run.dry_run}

    def _sweep_lock(self) -> bool:
        if not _is_postgres():
            return True  # the embedded demo runs one process; claims still prevent doubles
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [SWEEP_LOCK_KEY])
            return bool(cursor.fetchone()[0])

    def _sweep_unlock(self) -> None:
        if _is_postgres():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [SWEEP_LOCK_KEY])

    # Steps ------------------------------------------------------------------------

    def _claim(self, partner_id: int, token: str) -> bool:
        """Insert the claim row; the primary key makes it exclusive. A claim older than CLAIM_TTL
        (its worker died) is taken over; the conditional upsert lets exactly one taker win."""
        now = timezone.now()
        table = PartnerClaim._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (partner_id, run_id, token, claimed_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (partner_id) DO UPDATE SET run_id = EXCLUDED.run_id, token = EXCLUDED.token, "
                f"claimed_at = EXCLUDED.claimed_at WHERE {table}.claimed_at < %s RETURNING token",
                [partner_id, self.run.pk, token, now, now - CLAIM_TTL],
            )
            row = cursor.fetchone()
        return row is not None and row[0] == token

    def _release(self, job: _Job) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {PartnerClaim._meta.db_table} WHERE partner_id = %s AND token = %s",
                [job.partner.pk, job.token],
            )

    def _prepare(self, partner_id: int, *, skip_threshold: bool, recheck: bool = True) -> _Job | str:
        """Claim, re-check, budget pre-check, draw; a holdout is recorded here. Returns a job to
        draft, or the final result."""
        if not self._enabled():
            self._audit("stopped_before_partner", payload={"partner_id": partner_id})
            return STOPPED
        token = uuid.uuid4().hex
        if not self._claim(partner_id, token):
            self._audit(
                "partner_skipped", payload={"partner_id": partner_id, "reason": "claimed_by_another_worker"}
            )
            return SKIPPED
        job = None
        try:
            partner = Partner.objects.select_related("account_owner", "current_score").get(pk=partner_id)
            job = _Job(partner=partner, token=token, risk=0.0, bucket="")
            control = self.rng.random() < self.config.control_fraction
            # A holdout is written right here, so it gets the full re-check; a contact is
            # re-checked under the partner's lock when it is committed.
            if recheck or control:
                reason = selectors.partner_ineligibility(
                    partner=partner, config=self.config, skip_threshold=skip_threshold
                )
                if reason:
                    self._audit("partner_skipped", partner=partner, payload={"reason": reason})
                    self._release(job)
                    return SKIPPED
            if recheck and selectors.budget_used() >= self.config.max_per_hour:
                self._audit("rate_limited", partner=partner, payload=self._budget_payload())
                self._release(job)
                return RATE_LIMITED
            score = partner.current_score
            job.risk, job.bucket = score.risk, score.bucket
            if control:
                return self._holdout(job)
            job.drivers = (
                list(score.drivers)
                if score.drivers is not None
                else selectors.partner_drivers_for_agent(partner=partner)
            )
            self._audit(
                "partner_selected",
                partner=partner,
                payload={
                    "risk": job.risk,
                    "bucket": job.bucket,
                    "threshold": None if skip_threshold else self.config.risk_threshold,
                    "drivers": job.drivers,
                },
            )
            return job
        except Exception:
            if job is not None:
                self._release(job)
            else:
                self._release(_Job(partner=Partner(pk=partner_id), token=token, risk=0.0, bucket=""))
            raise

    def _holdout(self, job: _Job) -> str:
        try:
            with transaction.atomic():
                intervention = intervention_log(
                    partner=job.partner,
                    action=Intervention.Action.HOLDOUT,
                    actor=None,
                    source=Intervention.Source.AGENT,
                    note="Control group: deliberately not contacted, to measure the agent's uplift.",
                    risk=job.risk,
                    bucket=job.bucket,
                    drivers=list(job.partner.current_score.drivers or []),
                    run=self.run,
                )
                self._audit(
                    "holdout_assigned",
                    intervention=intervention,
                    payload={"control_fraction": self.config.control_fraction, "risk": job.risk},
                )
        except IntegrityError:
            self._audit("partner_skipped", partner=job.partner, payload={"reason": "open_agent_intervention"})
            return SKIPPED
        finally:
            self._release(job)
        return HOLDOUT

    def _draft(self, job: _Job) -> None:
        """The LLM call (or the template). No database writes, so it can run on a thread."""
        from agent.emails import draft_retention_email

        try:
            job.draft = draft_retention_email(
                partner=job.partner, drivers=job.drivers, model=self.config.llm_model or None
            )
        except Exception as exc:  # noqa: BLE001 - the writer should never raise; if it does, record it
            log.exception("Drafting failed for partner %s", job.partner.pk)
            job.draft_error = f"{type(exc).__name__}: {exc}"[:500]

    def _draft_all(self, jobs: list[_Job]) -> None:
        from agent.llm import llm_configured

        if len(jobs) <= 1 or not llm_configured():
            for job in jobs:
                self._draft(job)
            return
        # Bounded concurrency: the LLM is slow (seconds) but the pool never exceeds the batch.
        with ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(jobs)), thread_name_prefix="draft"
        ) as pool:
            list(pool.map(self._draft_threaded, jobs))

    def _draft_threaded(self, job: _Job) -> None:
        try:
            self._draft(job)
        finally:
            # Connections are per thread: a pool thread must not leak one if the writer used it.
            connections.close_all()

    def _budget_payload(self, used: int | None = None) -> dict:
        return {
            "used": selectors.budget_used() if used is None else used,
            "max_per_hour": self.config.max_per_hour,
        }

    def _commit(self, job: _Job, *, skip_threshold: bool) -> str:
        """Under the budget lock: re-check, count, create the intervention; then send or hold."""
        partner = job.partner
        if job.draft is None:
            self._audit("draft_failed", partner=partner, payload={"error": job.draft_error})
            self._release(job)
            return FAILED
        draft = job.draft
        held = partner.tier in (self.config.approval_tiers or [])
        try:
            with transaction.atomic():
                now = _lock_budget()
                if not AgentConfig.objects.filter(pk=1, enabled=True).exists():
                    self._audit("stopped_before_partner", partner=partner)
                    return STOPPED
                used = selectors.budget_used(now=now)
                if used >= self.config.max_per_hour:
                    self._audit("rate_limited", partner=partner, payload=self._budget_payload(used))
                    return RATE_LIMITED
                # Lock the partner row so a manual log or another path can't race the re-check.
                locked = (
                    Partner.objects.select_for_update(of=("self",))
                    .select_related("account_owner", "current_score")
                    .get(pk=partner.pk)
                )
                reason = selectors.partner_ineligibility(
                    partner=locked, config=self.config, skip_threshold=skip_threshold, now=now
                )
                if reason:
                    self._audit("partner_skipped", partner=partner, payload={"reason": reason})
                    return SKIPPED
                intervention = intervention_log(
                    partner=locked,
                    action=Intervention.Action.EMAIL_SENT,
                    actor=None,
                    source=Intervention.Source.AGENT,
                    assigned_to=locked.account_owner,
                    email_subject=draft.subject[:200],
                    email_body=draft.body,
                    writer=draft.writer,
                    risk=job.risk,
                    bucket=job.bucket,
                    drivers=job.drivers,
                    run=self.run,
                    review_status=Intervention.Review.AWAITING if held else Intervention.Review.NOT_REQUIRED,
                )
                # The database clock stamps the row the budget counts (same clock as the count).
                Intervention.objects.filter(pk=intervention.pk).update(created_at=now)
                intervention.created_at = now
                self._audit(
                    "email_drafted",
                    intervention=intervention,
                    payload={
                        **draft.audit_payload(),
                        "prompt": draft.prompt,
                        "drivers": job.drivers,
                        "budget_used_before": used,
                    },
                )
                if held:
                    self._audit(
                        "held_for_review",
                        intervention=intervention,
                        payload={"tier": locked.tier, "approval_tiers": self.config.approval_tiers},
                    )
                else:
                    # The follow-up row commits with the intervention; its CRM task comes after.
                    FollowUp.objects.create(
                        intervention=intervention,
                        due_at=now + dt.timedelta(days=self.config.follow_up_days),
                    )
        except IntegrityError:
            # The unique constraint: another path opened an agent intervention meanwhile.
            self._audit("partner_skipped", partner=partner, payload={"reason": "open_agent_intervention"})
            return SKIPPED
        finally:
            self._release(job)
        if held:
            return HELD
        try:
            intervention_send_email(intervention=intervention, actor=None, run=self.run)
        except Exception:  # noqa: BLE001 - audited by the send service; the intervention stays, unsent
            return FAILED
        followup_schedule(intervention=intervention, run=self.run, follow_up_days=self.config.follow_up_days)
        return EXECUTED


def _config_snapshot(config: AgentConfig) -> dict:
    return {name: getattr(config, name) for name in CONFIG_FIELDS}


def _lock_budget() -> dt.datetime:
    """Serialize budget checks across every process; returns the database's clock."""
    with connection.cursor() as cursor:
        if _is_postgres():
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [BUDGET_LOCK_KEY])
            # clock_timestamp(), not now(): now() is when the transaction began, before the wait.
            cursor.execute("SELECT clock_timestamp()")
            return cursor.fetchone()[0]
        # SQLite: a write first takes the database lock, so concurrent counts serialize too.
        cursor.execute("UPDATE agent_agentconfig SET id = id WHERE id = 1")
        return timezone.now()


# Email ------------------------------------------------------------------------------


def intervention_send_email(
    *, intervention: Intervention, actor: AbstractBaseUser | None, run: AgentRun | None = None
) -> Intervention:
    """Send the intervention's email to the partner's contact address (from code, never from the
    draft), reply-to the account owner. Idempotent: an already sent intervention is not resent."""
    try:
        with transaction.atomic():
            locked = (
                Intervention.objects.select_for_update(of=("self",))
                .select_related("partner", "partner__account_owner")
                .get(pk=intervention.pk)
            )
            if locked.sent_at is not None:
                return locked
            if locked.review_status in (Intervention.Review.AWAITING, Intervention.Review.REJECTED):
                raise ValidationError("This email waits for (or was refused) a manager's approval")
            partner = locked.partner
            owner = partner.account_owner
            subject = " ".join(locked.email_subject.split())[:200]
            message = EmailMessage(
                subject=subject,
                body=locked.email_body,
                from_email=settings.DEFAULT_FROM_EMAIL,
                to=[partner.contact_email],
                reply_to=[owner.email] if owner is not None and owner.email else None,
                headers={"X-Churnsite-Intervention": str(locked.pk)},
            )
            message.send(fail_silently=False)
            locked.sent_at = timezone.now()
            locked.save(update_fields=["sent_at", "updated_at"])
            audit_record(
                event_type="email_sent",
                actor=actor,
                actor_type=None if _user(actor) else "agent",
                run=run,
                intervention=locked,
                payload={"to": partner.contact_email, "subject": subject, "writer": locked.writer},
            )
            return locked
    except ValidationError:
        raise
    except Exception as exc:
        audit_record(
            event_type="email_failed",
            actor=actor,
            actor_type=None if _user(actor) else "agent",
            run=run,
            intervention=intervention,
            payload={"error": f"{type(exc).__name__}: {exc}"[:500]},
        )
        raise


# Review -----------------------------------------------------------------------------


def _refuse(*, action: str, intervention: Intervention, actor) -> None:
    audit_record(
        event_type="review_refused",
        actor=actor,
        intervention=intervention,
        payload={"action": action, "reason": "missing permission retention.approve_intervention"},
    )


def intervention_approve(
    *,
    intervention: Intervention,
    actor: AbstractBaseUser,
    subject: str | None = None,
    body: str | None = None,
) -> Intervention:
    """A manager approves a held draft (optionally edited: the edit is audited as a diff); the
    email is sent and the follow-up scheduled."""
    if actor is None or not actor.has_perm("retention.approve_intervention"):
        _refuse(action="approve", intervention=intervention, actor=actor)
        raise PermissionDenied("Only managers can approve held interventions")
    with transaction.atomic():
        locked = Intervention.objects.select_for_update().get(pk=intervention.pk)
        if locked.review_status != Intervention.Review.AWAITING:
            raise ValidationError(f"This intervention is {locked.get_review_status_display().lower()}")
        new_subject = " ".join((subject if subject is not None else locked.email_subject).split())[:200]
        new_body = (body if body is not None else locked.email_body).replace("\r\n", "\n")
        diff = "".join(
            difflib.unified_diff(
                f"Subject: {locked.email_subject}\n\n{locked.email_body}".splitlines(keepends=True),
                f"Subject: {new_subject}\n\n{new_body}".splitlines(keepends=True),
                fromfile="draft",
                tofile="approved",
            )
        )
        drafted_by = locked.writer
        locked.email_subject, locked.email_body = new_subject, new_body
        locked.review_status = Intervention.Review.APPROVED
        if diff:
            # A person's edits make it their text, as on the partner page; the audit keeps
            # which writer drafted it and the diff.
            locked.writer = Intervention.Writer.MANUAL
        locked.save(update_fields=["email_subject", "email_body", "review_status", "writer", "updated_at"])
        audit_record(
            event_type="review_approved",
            actor=actor,
            run=locked.agent_run,
            intervention=locked,
            payload={"edited": bool(diff), "diff": diff, "drafted_by": drafted_by},
        )
    locked = intervention_send_email(intervention=locked, actor=actor, run=locked.agent_run)
    followup_schedule(intervention=locked, run=locked.agent_run)
    return locked


def intervention_reject(*, intervention: Intervention, actor: AbstractBaseUser, reason: str) -> Intervention:
    """A manager refuses a held draft, with a reason; no email is ever sent for it."""
    if actor is None or not actor.has_perm("retention.approve_intervention"):
        _refuse(action="reject", intervention=intervention, actor=actor)
        raise PermissionDenied("Only managers can reject held interventions")
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "Say why the draft is rejected"})
    with transaction.atomic():
        locked = Intervention.objects.select_for_update().get(pk=intervention.pk)
        if locked.review_status != Intervention.Review.AWAITING:
            raise ValidationError(f"This intervention is {locked.get_review_status_display().lower()}")
        locked.review_status = Intervention.Review.REJECTED
        locked.note = f"{locked.note}\nRejected: {reason}".strip()
        locked.save(update_fields=["review_status", "note", "updated_at"])
        audit_record(
            event_type="review_rejected",
            actor=actor,
            run=locked.agent_run,
            intervention=locked,
            payload={"reason": reason},
        )
    return locked


# Follow-ups ---------------------------------------------------------------------------


def followup_schedule(
    *, intervention: Intervention, run: AgentRun | None = None, follow_up_days: int | None = None
) -> FollowUp:
    """The N-day follow-up (our row and a CRM task). Idempotent; a CRM failure is audited and the
    row stays, so the hourly check still happens."""
    from crm_sim.client import CreateTask, get_crm_client

    if follow_up_days is None:
        follow_up_days = selectors.agent_config_get().follow_up_days
    partner = intervention.partner
    followup, _ = FollowUp.objects.get_or_create(
        intervention=intervention,
        defaults={"due_at": timezone.now() + dt.timedelta(days=follow_up_days)},
    )
    if followup.crm_task_id:
        return followup
    owner = partner.account_owner
    try:
        record = get_crm_client().create_task(
            CreateTask(
                partner_external_id=partner.external_id,
                kind="follow_up_email",
                title=f"Follow up on the retention email to {partner.name}"[:200],
                due_on=timezone.localdate(followup.due_at),
                idempotency_key=f"agent-followup-{intervention.pk}",
                intervention_id=intervention.pk,
                assigned_to_username=owner.get_username() if owner is not None else None,
                notes="Created by the intervention agent: check whether the partner's risk improved.",
            )
        )
    except Exception as exc:  # noqa: BLE001 - CrmError or an outage: audited, retried by the hourly check
        audit_record(
            event_type="crm_task_failed",
            actor_type="agent",
            run=run,
            intervention=intervention,
            payload={"kind": "follow_up_email", "error": f"{type(exc).__name__}: {exc}"[:500]},
        )
        return followup
    with transaction.atomic():
        FollowUp.objects.filter(pk=followup.pk).update(crm_task_id=record.external_id)
        followup.crm_task_id = record.external_id
        audit_record(
            event_type="followup_scheduled",
            actor_type="agent",
            run=run,
            intervention=intervention,
            payload={"due_at": followup.due_at.isoformat(), "crm_task": record.external_id},
        )
    return followup


def followups_process_due(*, now: dt.datetime | None = None, limit: int = 200) -> dict:
    """Due follow-ups: still above the threshold -> an escalation call task for the owner;
    improved -> closed. Each claimed with SKIP LOCKED, so two checkers never take the same one."""
    from crm_sim.client import CreateTask, get_crm_client

    now = now or timezone.now()
    config = selectors.agent_config_get()
    counts = {"escalated": 0, "closed": 0, "failed": 0}
    seen: list[int] = []
    for _ in range(limit):
        with transaction.atomic():
            followup = (
                FollowUp.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(status=FollowUp.Status.OPEN, due_at__lte=now)
                .exclude(pk__in=seen)
                .select_related(
                    "intervention", "intervention__partner", "intervention__partner__account_owner"
                )
                .order_by("due_at")
                .first()
            )
            if followup is None:
                break
            seen.append(followup.pk)
            intervention = followup.intervention
            partner = intervention.partner
            score = selectors.partner_score(partner=partner)
            risk = score.risk if score is not None else None
            # Already resolved (by a person, the CRM or the clock): nothing left to escalate.
            resolved = intervention.outcome != Intervention.Outcome.PENDING
            # No score means we can't tell it improved: a person should look.
            still_at_risk = not resolved and (risk is None or risk > config.risk_threshold)
            owner = partner.account_owner
            try:
                client = get_crm_client()
                if still_at_risk:
                    record = client.create_task(
                        CreateTask(
                            partner_external_id=partner.external_id,
                            kind="escalation",
                            title=f"Escalation call: {partner.name} still at risk"[:200],
                            due_on=timezone.localdate(now) + dt.timedelta(days=1),
                            idempotency_key=f"agent-escalation-{followup.pk}",
                            intervention_id=intervention.pk,
                            assigned_to_username=owner.get_username() if owner is not None else None,
                            notes=f"Risk {risk:.0%} after the agent's email." if risk is not None else "",
                        )
                    )
                    followup.escalation_task_id = record.external_id
                    followup.status = FollowUp.Status.ESCALATED
                elif followup.crm_task_id:
                    client.complete_task(followup.crm_task_id, outcome="none")
                    followup.status = FollowUp.Status.CLOSED
                else:
                    followup.status = FollowUp.Status.CLOSED
            except Exception as exc:  # noqa: BLE001 - audited; the follow-up stays open for the next check
                audit_record(
                    event_type="crm_task_failed",
                    actor_type="agent",
                    intervention=intervention,
                    payload={"kind": "follow_up_check", "error": f"{type(exc).__name__}: {exc}"[:500]},
                )
                counts["failed"] += 1
                continue
            followup.risk_at_check, followup.checked_at = risk, now
            followup.save(
                update_fields=["status", "escalation_task_id", "risk_at_check", "checked_at", "updated_at"]
            )
            escalated = followup.status == FollowUp.Status.ESCALATED
            audit_record(
                event_type="followup_escalated" if escalated else "followup_closed",
                actor_type="agent",
                intervention=intervention,
                payload={
                    "risk": risk,
                    "risk_at_action": intervention.risk_at_action,
                    "threshold": config.risk_threshold,
                    "outcome": intervention.outcome,
                    "crm_task": followup.escalation_task_id or followup.crm_task_id,
                },
            )
            counts["escalated" if escalated else "closed"] += 1
    return counts


# Periodic schedules -------------------------------------------------------------------


def _declared_periodic_tasks() -> list[dict]:
    from agent.tasks import PERIODIC_TASKS

    declared = list(PERIODIC_TASKS)
    try:
        from ml.tasks import PERIODIC_TASKS as ML_PERIODIC_TASKS
    except ImportError:
        ML_PERIODIC_TASKS = []
    declared.extend(ML_PERIODIC_TASKS)
    return declared


@transaction.atomic
def periodic_tasks_sync() -> dict:
    """Upsert all declared schedules. The agent's schedule follows the Start/Stop flag; the others
    keep whatever enabled state the admin gave them (new ones start enabled)."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    from agent.tasks import AGENT_SCHEDULE_NAME

    config = selectors.agent_config_get()
    result = {"created": [], "updated": [], "total": 0}
    for spec in _declared_periodic_tasks():
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
        task, created = PeriodicTask.objects.update_or_create(name=spec["name"], defaults=fields)
        result["created" if created else "updated"].append(spec["name"])
    result["total"] = len(result["created"]) + len(result["updated"])
    audit_record(event_type="schedules_synced", actor_type="system", payload=result)
    return result
