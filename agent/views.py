"""The Agent Control page: Start/Stop, Run now (live progress), configuration, budget, activity
log and the manual override queue. Thin views: check access, validate, call one service."""

import functools

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from agent import outbox, selectors, services
from agent.forms import ActivityFilterForm, AgentConfigForm, DoNotContactForm, PartnerRefForm
from agent.models import AgentRun
from agent.tasks import execute_intervention, run_agent
from churnsite.access import AuthedHttpRequest, permission_required
from churnsite.broker import enqueue
from churnsite.health import broker_status
from churnsite.http import partial_template
from desk.selectors import chat_alert_status
from retention.models import Intervention, Partner

TEMPLATE = "agent/control.html"


def _once(compute):
    """A callable the template calls when it needs the value; computed at most once."""
    return functools.cache(compute)


def _chat_alert_status() -> dict:
    return chat_alert_status()


def _context(request: AuthedHttpRequest, **extra) -> dict:
    config = selectors.agent_config_get()
    filters = ActivityFilterForm(request.GET or None, event_types=selectors.audit_event_types)
    cleaned = filters.cleaned_data if filters.is_valid() else {}
    runs = list(selectors.recent_runs(limit=10))
    current = extra.pop("run", None) or (runs[0] if runs else None)
    return {
        "config": config,
        "config_form": extra.pop("config_form", None) or AgentConfigForm(instance=config),
        # The live sections poll this view every few seconds for one partial each: the costly
        # values below are computed only if the rendered part uses them (and then once).
        "writer": _once(selectors.writer_status),
        "llm_hits": _once(selectors.llm_hit_rate),
        "writer_trust": _once(selectors.writer_trust_table),
        "broker": _once(broker_status),
        "eager": settings.CELERY_TASK_ALWAYS_EAGER,
        "budget_used": _once(selectors.budget_used),
        "audit_check": _once(selectors.audit_verification_latest),
        # What a run would act on now, so an empty run is never a mystery.
        "eligible_now": _once(
            lambda: selectors.partners_eligible(
                threshold=config.risk_threshold, cooldown_days=config.cooldown_days
            ).count()
        ),
        "runs": runs,
        "run": current,
        "filters": filters,
        "events": selectors.activity_log(run_id=cleaned.get("run"), event_type=cleaned.get("type") or ""),
        "queue": selectors.review_queue(),
        "dnc": selectors.do_not_contact_list(),
        "dnc_form": extra.pop("dnc_form", None) or DoNotContactForm(),
        "intervene_form": extra.pop("intervene_form", None) or PartnerRefForm(),
        "chat_alerts": _once(_chat_alert_status),
        "can_run": request.user.has_perm("agent.run_agent"),
        "can_configure": request.user.has_perm("agent.change_agentconfig"),
        "can_approve": request.user.has_perm("retention.approve_intervention"),
        **extra,
    }


@permission_required("agent.view_agentrun")
@require_GET
def control(request: AuthedHttpRequest) -> HttpResponse:
    return render(request, partial_template(request, TEMPLATE, {"log", "budget", "queue"}), _context(request))


@permission_required("agent.view_agentrun")
@require_GET
def run_progress(request: AuthedHttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(AgentRun, pk=run_id)
    return render(request, TEMPLATE + "#progress", {"run": run})


@permission_required("agent.run_agent")
@require_POST
def toggle(request: AuthedHttpRequest) -> HttpResponse:
    enabled = request.POST.get("enabled") == "1"
    services.agent_set_enabled(enabled=enabled, actor=request.user)
    messages.success(
        request, "Agent started." if enabled else "Agent stopped: it acts on no further partner."
    )
    return redirect("agent:control")


@permission_required("agent.run_agent")
@require_POST
def run_now(request: AuthedHttpRequest) -> HttpResponse:
    run = services.agent_run_create(trigger=AgentRun.Trigger.MANUAL, actor=request.user)
    # Through Celery like the schedule (in-process when there is no broker); the run committed.
    if enqueue(run_agent, run.pk, run=run):
        messages.success(request, f"Run {run.pk} queued.")
    else:
        messages.warning(request, BROKER_DOWN.format(run=run.pk))
    if request.htmx:
        return render(request, TEMPLATE + "#progress", {"run": run})
    return redirect(f"{reverse('agent:control')}?run={run.pk}")


@permission_required("agent.change_agentconfig", message="Only a manager can change the guardrail settings")
@require_POST
def config_update(request: AuthedHttpRequest) -> HttpResponse:
    config = selectors.agent_config_get()
    form = AgentConfigForm(request.POST, instance=config)
    if form.is_valid():
        try:
            services.agent_config_update(actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "Configuration saved.")
            return redirect("agent:control")
    return render(request, TEMPLATE, _context(request, config_form=form), status=400)


BROKER_DOWN = (
    "Run {run} is queued, but the task queue (Redis) is unreachable: it starts when the queue is back."
)


@permission_required("agent.run_agent")
@require_POST
def intervene(request: AuthedHttpRequest) -> HttpResponse:
    form = PartnerRefForm(request.POST)
    if not form.is_valid():
        return render(request, TEMPLATE, _context(request, intervene_form=form), status=400)
    partner = form.cleaned_data["partner"]
    # Say now what would stop it; the run's progress below then says what actually happened
    # (contacted, held, control group, ...).
    _, problem = selectors.intervene_refusal(partner=partner)
    if problem:
        form.add_error("partner", problem)
        return render(request, TEMPLATE, _context(request, intervene_form=form), status=400)
    run = services.agent_run_create(trigger=AgentRun.Trigger.PARTNER, actor=request.user, partner=partner)
    if not enqueue(execute_intervention, run.pk, partner.pk, True, run=run):
        messages.warning(request, BROKER_DOWN.format(run=run.pk))
    else:
        messages.success(
            request,
            f"Queued run {run.pk} for {partner.external_id}: what it did appears below when it finishes.",
        )
    return redirect(f"{reverse('agent:control')}?run={run.pk}")


@permission_required("agent.add_donotcontact")
@require_POST
def dnc_add(request: AuthedHttpRequest) -> HttpResponse:
    form = DoNotContactForm(request.POST)
    if not form.is_valid():
        return render(request, TEMPLATE, _context(request, dnc_form=form), status=400)
    partner = form.cleaned_data["partner"]
    services.do_not_contact_add(partner=partner, reason=form.cleaned_data["reason"], actor=request.user)
    messages.success(request, f"{partner.external_id} is on the do-not-contact list.")
    return redirect("agent:control")


@permission_required("agent.delete_donotcontact")
@require_POST
def dnc_remove(request: AuthedHttpRequest, partner_id: int) -> HttpResponse:
    partner = get_object_or_404(Partner, pk=partner_id)
    services.do_not_contact_remove(partner=partner, actor=request.user)
    messages.success(request, f"{partner.external_id} removed from the do-not-contact list.")
    return redirect("agent:control")


@permission_required("retention.approve_intervention", message="Only managers can approve held interventions")
@require_POST
def review_approve(request: AuthedHttpRequest, intervention_id: int) -> HttpResponse:
    """Approve as drafted (the admin review page also allows editing). Refusals are audited."""
    intervention = get_object_or_404(Intervention, pk=intervention_id)
    try:
        approved = services.intervention_approve(intervention=intervention, actor=request.user)
    except ValidationError as exc:
        messages.error(request, "Not approved: " + "; ".join(exc.messages))
    else:
        messages.success(request, outbox.approved_notice(approved))
    return redirect("agent:control")


@permission_required("retention.approve_intervention", message="Only managers can reject held interventions")
@require_POST
def review_reject(request: AuthedHttpRequest, intervention_id: int) -> HttpResponse:
    intervention = get_object_or_404(Intervention, pk=intervention_id)
    try:
        services.intervention_reject(
            intervention=intervention, actor=request.user, reason=request.POST.get("reason", "")
        )
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    else:
        messages.success(request, f"Rejected the draft for {intervention.partner.external_id}.")
    return redirect("agent:control")
