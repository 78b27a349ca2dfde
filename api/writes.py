"""Write operations of /api/v1/: each one calls the service the site's page calls, so the same
permissions, audit events and guardrails apply (the one send path, approval tiers, the hourly
cap, do-not-contact). Long work (scoring, agent runs, imports) is queued: 202 and a status URL."""

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.shortcuts import get_object_or_404
from ninja import File, Form, Router, Status
from ninja.errors import HttpError
from ninja.files import UploadedFile

from agent import selectors as agent_selectors
from agent import services as agent_services
from agent.audit import audit_record
from agent.models import AgentRun
from agent.tasks import execute_intervention, run_agent
from api import schemas as s
from api.auth import needs
from api.reads import get_partner, intervention_out
from api.tasks import dispatch_scoring_run
from churnsite.access import AuthedHttpRequest
from churnsite.broker import enqueue
from ml import services as ml_services
from ml.models import ScoringRun
from retention import log_selectors, selectors, services
from retention.importing import import_job_create, import_job_progress
from retention.models import ImportJob, Intervention
from retention.tasks import run_import_job

router = Router()


# Interventions and outcomes ---------------------------------------------------------------------


@router.post(
    "/partners/{partner_id}/interventions",
    response={201: s.InterventionOut},
    tags=["interventions"],
    operation_id="intervention_log",
)
@needs("retention.add_intervention")
def intervention_log(request: AuthedHttpRequest, partner_id: s.PartnerRef, data: s.InterventionIn):
    """Log a contact made outside the desk (a call from the CRM, a meeting), as on the partner page."""
    partner = get_partner(partner_id)
    assignee = None
    if data.assigned_to:
        assignee = selectors.team_members().filter(username=data.assigned_to).first()
        if assignee is None:
            raise HttpError(400, f"No team member {data.assigned_to!r}")
    intervention = services.intervention_log(
        partner=partner, action=data.action, actor=request.user, assigned_to=assignee, note=data.note
    )
    return Status(201, intervention_out(_reload(intervention.pk)))


def _reload(pk: int) -> Intervention:
    return log_selectors.intervention_list().get(pk=pk)


@router.post(
    "/partners/{partner_id}/emails",
    response={201: s.EmailOut, 202: s.EmailOut, 409: s.Error},
    tags=["interventions"],
    operation_id="partner_email_send",
)
@needs("retention.add_intervention")
def partner_email_send(request: AuthedHttpRequest, partner_id: s.PartnerRef, data: s.EmailIn):
    """Send (or only log) a person's email to the partner, through the one send path: a partner on
    do-not-contact or inactive is refused (409, audited `email_refused`); a tier that needs approval
    is held for a manager (202 `held_for_review`, audited), never sent from here."""
    partner = get_partner(partner_id)
    try:
        intervention, result = agent_services.partner_email_send(
            partner=partner,
            subject=data.subject,
            body=data.body,
            writer=Intervention.Writer.MANUAL,
            actor=request.user,
            send=data.send,
        )
    except ValidationError as exc:
        return Status(409, {"detail": "Not sent: " + "; ".join(exc.messages), "code": exc.code or "refused"})
    code = 202 if result in (agent_services.MANUAL_HELD, agent_services.MANUAL_QUEUED) else 201
    return Status(code, {"result": result, "intervention": intervention_out(_reload(intervention.pk))})


@router.post(
    "/interventions/{intervention_id}/outcome",
    response={200: s.InterventionOut, 403: s.Error},
    tags=["interventions"],
    operation_id="intervention_set_outcome",
)
@needs("retention.change_intervention")
def intervention_set_outcome(request: AuthedHttpRequest, intervention_id: s.ObjectId, data: s.OutcomeIn):
    """Resolve a pending outcome (saved / churned); changing a resolved one is a manager's
    correction (403 otherwise, audited `outcome_change_refused`)."""
    intervention = get_object_or_404(Intervention.objects.select_related("partner"), pk=intervention_id)
    try:
        services.intervention_set_outcome(
            intervention=intervention, outcome=data.outcome, actor=request.user, reason=data.reason
        )
    except PermissionDenied as exc:
        return Status(403, {"detail": str(exc), "code": "correct_outcome"})
    return Status(200, intervention_out(_reload(intervention.pk)))


# Do-not-contact --------------------------------------------------------------------------------


@router.put(
    "/partners/{partner_id}/do-not-contact",
    response=s.DoNotContactOut,
    tags=["partners"],
    operation_id="do_not_contact_add",
)
@needs("agent.add_donotcontact")
def do_not_contact_add(request: AuthedHttpRequest, partner_id: s.PartnerRef, data: s.DoNotContactIn):
    partner = get_partner(partner_id)
    entry = agent_services.do_not_contact_add(partner=partner, reason=data.reason, actor=request.user)
    return {"partner": partner.external_id, "on_list": True, "reason": entry.reason}


@router.delete(
    "/partners/{partner_id}/do-not-contact",
    response=s.DoNotContactOut,
    tags=["partners"],
    operation_id="do_not_contact_remove",
)
@needs("agent.delete_donotcontact", message="Only a manager can take a partner off the do-not-contact list")
def do_not_contact_remove(request: AuthedHttpRequest, partner_id: s.PartnerRef):
    partner = get_partner(partner_id)
    agent_services.do_not_contact_remove(partner=partner, actor=request.user)
    return {"partner": partner.external_id, "on_list": False, "reason": ""}


# Jobs: scoring runs, agent runs, imports ---------------------------------------------------------


def scoring_out(run: ScoringRun) -> dict:
    return {
        "id": run.pk,
        "status": run.status,
        "status_url": f"/api/v1/scoring-runs/{run.pk}",
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "detail": {
            "scored": run.scored,
            "as_of": run.as_of.isoformat() if run.as_of else None,
            "error": (run.stats or {}).get("error"),
        },
    }


@router.post(
    "/scoring-runs", response={202: s.JobOut, 409: s.Error}, tags=["jobs"], operation_id="scoring_run_start"
)
@needs("ml.change_modelversion", message="Only a manager can start a scoring run")
def scoring_run_start(request: AuthedHttpRequest):
    """Score every active partner with the active model now (what the nightly run does)."""
    try:
        with transaction.atomic():
            run = ml_services.scoring_run_start()
            audit_record(
                event_type="scoring_requested", actor=request.user, payload={"run": run.pk, "via": "api"}
            )
    except ml_services.ModelActivationError as exc:
        return Status(409, {"detail": str(exc), "code": "no_active_model"})
    if not enqueue(dispatch_scoring_run, run.pk):
        ml_services.scoring_run_finish(run_id=run.pk, error="the task queue (Redis) is unreachable")
    run.refresh_from_db()
    return Status(202, scoring_out(run))


@router.get("/scoring-runs/{run_id}", response=s.JobOut, tags=["jobs"], operation_id="scoring_run_get")
@needs("ml.view_riskscore")
def scoring_run_get(request: AuthedHttpRequest, run_id: s.ObjectId):
    return scoring_out(get_object_or_404(ScoringRun, pk=run_id))


def agent_run_out(run: AgentRun) -> dict:
    return {
        "id": run.pk,
        "status": run.status,
        "status_url": f"/api/v1/agent-runs/{run.pk}",
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "detail": {"trigger": run.trigger, "dry_run": run.dry_run, "summary": run.summary or {}},
    }


@router.post(
    "/agent-runs", response={202: s.JobOut, 409: s.Error}, tags=["jobs"], operation_id="agent_run_start"
)
@needs("agent.run_agent")
def agent_run_start(request: AuthedHttpRequest, data: s.AgentRunIn):
    """Run the agent now (Run now), or on one partner (Intervene now): the run applies every
    guardrail again under its locks (stopped agent, hourly cap, do-not-contact, approval tiers)."""
    if data.partner is None:
        run = agent_services.agent_run_create(
            trigger=AgentRun.Trigger.MANUAL, actor=request.user, dry_run=data.dry_run
        )
        enqueue(run_agent, run.pk, run=run)
        return Status(202, agent_run_out(run))
    partner = get_partner(data.partner)
    # What the Agent page says before it queues one partner (the task checks it all again).
    code, detail = agent_selectors.intervene_refusal(partner=partner)
    if code:
        audit_record(
            event_type="intervene_refused",
            actor=request.user,
            partner=partner,
            payload={"reason": code, "via": "api"},
        )
        return Status(409, {"detail": detail, "code": code})
    run = agent_services.agent_run_create(
        trigger=AgentRun.Trigger.PARTNER, actor=request.user, partner=partner, dry_run=data.dry_run
    )
    enqueue(execute_intervention, run.pk, partner.pk, True, run=run)
    return Status(202, agent_run_out(run))


@router.get("/agent-runs/{run_id}", response=s.JobOut, tags=["jobs"], operation_id="agent_run_get")
@needs("agent.view_agentrun")
def agent_run_get(request: AuthedHttpRequest, run_id: s.ObjectId):
    return agent_run_out(get_object_or_404(AgentRun, pk=run_id))


def import_out(job: ImportJob) -> dict:
    return {
        "id": job.pk,
        "status": job.status,
        "status_url": f"/api/v1/imports/{job.pk}",
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "detail": {
            "files": [f["name"] for f in job.files],
            "dry_run": job.dry_run,
            "replace": job.replace,
            "progress": import_job_progress(job=job),
            "summary": job.summary,
            "errors": job.errors,
            "error_count": job.error_count,
        },
    }


@router.post("/imports", response={202: s.JobOut}, tags=["jobs"], operation_id="import_start")
@needs("retention.import_data", message="Only managers can import data.")
def import_start(
    request: AuthedHttpRequest,
    files: File[list[UploadedFile]],
    dry_run: Form[bool] = False,
    replace: Form[bool] = False,
):
    """Upload partners, monthly activity, invoices and churn events (CSV or .csv.gz, docs/data.md),
    imported in the background, all or nothing; follow `status_url`."""
    if not files or len(files) > 8:
        raise HttpError(400, "Upload 1 to 8 files")
    job = import_job_create(uploads=list(files), actor=request.user, dry_run=dry_run, replace=replace)
    enqueue(run_import_job, job.pk)
    job.refresh_from_db()
    return Status(202, import_out(job))


@router.get("/imports/{import_id}", response=s.JobOut, tags=["jobs"], operation_id="import_get")
@needs("retention.import_data", message="Only managers can import data.")
def import_get(request: AuthedHttpRequest, import_id: s.ObjectId):
    return import_out(get_object_or_404(ImportJob, pk=import_id))
