"""The agent's workflow: claiming and finishing runs, the per-partner steps (their locks: agent.locks).

It imports agent.services (configuration, do-not-contact, run creation, sending, review,
follow-ups), never the reverse.

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
import logging
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from agent import locks, outbox, selectors, services
from agent.audit import audit_record
from agent.emails import EmailDraft, draft_retention_email
from agent.llm import CircuitBreaker, llm_concurrency, llm_configured
from agent.models import AgentConfig, AgentRun, EmailOutbox, FollowUp, PartnerClaim
from agent.results import (
    EXECUTED,
    FAILED,
    HELD,
    HOLDOUT,
    NOT_REACHED,
    RATE_LIMITED,
    SKIPPED,
    STOPPED,
    partner_outcome_text,
)
from churnsite.failpoints import failpoint
from ml.selectors import partner_drivers
from retention.models import Intervention, Partner
from retention.services import intervention_log

log = logging.getLogger(__name__)

# Drafts in flight at once when the LLM writer is active (bounded: the LLM server is shared).
# (0 = as many as the LLM server takes at once: OPENAI_CONCURRENCY.)
DRAFT_CONCURRENCY = getattr(settings, "AGENT_DRAFT_CONCURRENCY", 0)


# Runs ---------------------------------------------------------------------------


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
        # The partners it had claimed (a batch in flight) are free again for the next run.
        released, _ = PartnerClaim.objects.filter(run=run).delete()
        _run_finish(
            run,
            status=AgentRun.Status.FAILED,
            summary=agent.summary(),
            event_type="run_failed",
            payload={"error": f"{type(exc).__name__}: {exc}"[:500], "claims_released": released},
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
    # What happened to this one partner, in words, for the page that asked ("intervene now").
    partner = Partner.objects.filter(pk=partner_id).first()
    outcome = {
        "result": result,
        "reason": agent.last_reason,
        "outcome": partner_outcome_text(
            result,
            partner_ref=partner.external_id if partner else str(partner_id),
            tier=partner.get_tier_display() if partner else "",
            reason=agent.last_reason,
            config=agent.config,
        ),
    }
    summary = {**agent.summary(), **outcome}
    _run_finish(run, status=status, summary=summary, event_type="run_finished", payload={"result": result})
    return summary


# The agent -------------------------------------------------------------------------


@dataclass
class _Job:
    """One partner between claim and commit."""

    partner: Partner
    token: str
    risk: float
    bucket: str
    drivers: list = field(default_factory=list)
    draft: EmailDraft | None = None
    draft_error: str = ""


class InterventionAgent:
    """The workflow: scan, then for each eligible partner draw, explain, draft, log, send or hold,
    follow up; every step audited. Drafting (the slow LLM call) runs outside any transaction and,
    in a batch, on a bounded thread pool; all writes happen on the calling thread."""

    def __init__(self, *, run: AgentRun, rng: random.Random | None = None, concurrency: int | None = None):
        self.run = run
        self.rng = rng or random.SystemRandom()
        self.concurrency = concurrency or _draft_concurrency()
        # One breaker per run: after a few failed LLM calls in a row the rest of the run drafts
        # with the template at once instead of waiting out a timeout per partner.
        self.breaker = _llm_breaker()
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
        self.last_reason = ""

    def summary(self) -> dict:
        return {"run_id": self.run.pk, **self.counts}

    def _progress(self) -> None:
        AgentRun.objects.filter(pk=self.run.pk).update(summary=self.summary())

    def _audit(self, event_type: str, *, partner=None, intervention=None, payload=None):
        if payload and "reason" in payload:
            self.last_reason = payload["reason"]  # why the last partner was skipped or refused
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
        self._announce_breaker()
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
        if not locks.sweep_lock():
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
                batch: list[_Job] = []
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
                self._announce_breaker()
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
            locks.sweep_unlock()
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

    # Steps ------------------------------------------------------------------------

    def _release(self, job: _Job) -> None:
        locks.partner_claim_release(partner_id=job.partner.pk, token=job.token)

    def _prepare(self, partner_id: int, *, skip_threshold: bool, recheck: bool = True) -> _Job | str:
        """Claim, re-check, budget pre-check, draw; a holdout is recorded here. Returns a job to
        draft, or the final result."""
        if not self._enabled():
            self._audit("stopped_before_partner", payload={"partner_id": partner_id})
            return STOPPED
        token = uuid.uuid4().hex
        if not locks.partner_claim(partner_id=partner_id, run_id=self.run.pk, token=token):
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
                list(score.drivers) if score.drivers is not None else partner_drivers(partner=partner)
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
        try:
            failpoint("agent.drafting")
            job.draft = draft_retention_email(
                partner=job.partner,
                drivers=job.drivers,
                model=self.config.llm_model or None,
                breaker=self.breaker,
            )
        except Exception as exc:  # noqa: BLE001 - the writer should never raise; if it does, record it
            log.exception("Drafting failed for partner %s", job.partner.pk)
            job.draft_error = f"{type(exc).__name__}: {exc}"[:500]

    def _draft_all(self, jobs: list[_Job]) -> None:
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

    def _announce_breaker(self) -> None:
        if self.breaker is None:
            return
        opened = self.breaker.take_announcement()
        if opened:
            self._audit("llm_circuit_open", payload=opened | {"threshold": self.breaker.threshold})

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
        # The tier, or the writer itself (an untrusted model, an unusable partner name).
        tier_held = partner.tier in (self.config.approval_tiers or [])
        held = tier_held or bool(getattr(draft, "hold_reason", ""))
        queued: EmailOutbox | None = None
        try:
            with transaction.atomic():
                now = locks.budget_lock()
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
                        payload={
                            "tier": locked.tier,
                            "approval_tiers": self.config.approval_tiers,
                            "reason": "approval_tier" if tier_held else draft.hold_reason,
                        },
                    )
                else:
                    # The follow-up row commits with the intervention; its CRM task comes after.
                    FollowUp.objects.create(
                        intervention=intervention,
                        due_at=now + dt.timedelta(days=self.config.follow_up_days),
                    )
                    # The outbox row commits with the intervention: a crash after this commit
                    # leaves a queued email the sweep delivers, never a silent unsent contact.
                    queued = outbox.email_outbox_queue(
                        intervention=intervention, actor=None, run=self.run, config=self.config
                    )
        except IntegrityError:
            # The unique constraint: another path opened an agent intervention meanwhile.
            self._audit("partner_skipped", partner=partner, payload={"reason": "open_agent_intervention"})
            return SKIPPED
        finally:
            self._release(job)
        if held:
            return HELD
        failpoint("agent.between")
        try:
            status = services.intervention_send_email(
                intervention=intervention, actor=None, run=self.run, queued=queued
            )
        except ValidationError as exc:
            self.last_reason = exc.code or ""
            return SKIPPED  # refused at send time (audited): e.g. listed do-not-contact meanwhile
        except Exception:  # noqa: BLE001 - audited by the send service; the row stays queued for the sweep
            return FAILED
        if status not in (EmailOutbox.Status.SENT, outbox.BUSY):
            return FAILED  # audited; a queued row is retried by the sweep
        services.followup_schedule(
            intervention=intervention, run=self.run, follow_up_days=self.config.follow_up_days
        )
        return EXECUTED


def _draft_concurrency() -> int:
    if DRAFT_CONCURRENCY:
        return DRAFT_CONCURRENCY
    # As many drafts in flight as the LLM server takes at once, so none waits out its deadline
    # in a queue (the template writer needs no pool).
    return llm_concurrency() if llm_configured() else 8


def _llm_breaker() -> CircuitBreaker | None:
    return CircuitBreaker() if llm_configured() else None


def _config_snapshot(config: AgentConfig) -> dict:
    return {name: getattr(config, name) for name in services.CONFIG_FIELDS}
