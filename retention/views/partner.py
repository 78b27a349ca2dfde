"""The partner page: score, drivers, history, and the workspace (log an intervention, draft and send an email)."""

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import retarget

from agent import services as agent_services
from churnsite.access import AuthedHttpRequest, permission_required
from churnsite.http import partial_template
from ml.selectors import partner_current_score, partner_drivers
from retention import charts, selectors, services
from retention.forms import (
    DraftEmailForm,
    InterventionForm,
)
from retention.models import Intervention


def _workspace_context(request: AuthedHttpRequest, partner, form=None, notice: str = "") -> dict:
    members = list(selectors.team_members())
    return {
        "partner": partner,
        "timeline": selectors.partner_timeline(partner=partner),
        "log_form": form or InterventionForm(members=members),
        "notice": notice,
    }


@permission_required("retention.view_partner")
@require_GET
def partner_detail(request: AuthedHttpRequest, external_id: str) -> HttpResponse:
    partner = selectors.partner_for_page(external_id=external_id)
    template = partial_template(request, "retention/partner_detail.html", {"workspace"})
    if template.endswith("#workspace"):
        return render(request, template, _workspace_context(request, partner))
    score = partner_current_score(partner=partner)
    history = selectors.partner_risk_history(partner=partner)
    activity = selectors.partner_activity(partner=partner)
    payments = selectors.partner_payments(partner=partner)
    pct = lambda v: f"{v * 100:.0f}%"  # noqa: E731
    context = _workspace_context(request, partner) | {
        "score": score,
        "at_risk_level": settings.AT_RISK_LEVEL,
        "drivers": partner_drivers(partner=partner),
        "history": history[-8:][::-1],
        "risk_chart": charts.line_chart(
            [s.as_of.strftime("%d %b %y") for s in history],  # type: ignore[attr-defined]  # set by the selector
            {"Risk within 90 days": [s.risk for s in history]},
            title=f"Risk over time for {partner.external_id}",
            y_max=1,
            y_format=pct,
        ),
        "transactions_chart": charts.bar_chart(
            [a.month.strftime("%b %y") for a in activity],
            {"Transactions": [a.transactions for a in activity]},
            title="Transactions per month",
        ),
        "revenue_chart": charts.line_chart(
            [a.month.strftime("%b %y") for a in activity],
            {"Revenue": [float(a.revenue) for a in activity]},
            title="Revenue per month",
            y_format=lambda v: f"${v:,.0f}",
        ),
        "payments_chart": charts.bar_chart(
            [p["invoice"].issued_on.strftime("%b %y") for p in payments],
            {
                "Days late (paid)": [0 if p["open"] else p["days_late"] for p in payments],
                "Days overdue (open)": [p["days_late"] if p["open"] else 0 for p in payments],
            },
            title="Days each invoice was paid late",
            colours=["#d98a00", "#c62828"],
        ),
        "payments": payments,
    }
    return render(request, "retention/partner_detail.html", context)


@permission_required("retention.add_intervention")
@require_POST
def partner_log_intervention(request: AuthedHttpRequest, external_id: str) -> HttpResponse:
    partner = selectors.partner_for_page(external_id=external_id)
    form = InterventionForm(request.POST, members=list(selectors.team_members()))
    notice = ""
    if form.is_valid():
        data = form.cleaned_data
        intervention = services.intervention_log(
            partner=partner,
            action=data["action"],
            actor=request.user,
            assigned_to=data["assigned_to"],
            note=data["note"],
        )
        notice = f"Logged: {intervention.get_action_display()}"
    if not request.htmx:
        messages.info(request, notice or "The intervention was not logged: check the form")
        return redirect("retention:partner_detail", external_id=partner.external_id)
    # Once logged, the workspace shows a fresh form, not the one just submitted.
    shown = None if notice else form
    return render(
        request,
        "retention/partner_detail.html#workspace",
        _workspace_context(request, partner, shown, notice),
    )


@permission_required("retention.add_intervention")
@require_POST
def partner_draft_email(request: AuthedHttpRequest, external_id: str) -> HttpResponse:
    partner = selectors.partner_for_page(external_id=external_id)
    drivers = partner_drivers(partner=partner)
    draft = services.partner_email_draft(partner=partner, drivers=drivers, actor=request.user)
    form = DraftEmailForm(
        initial={
            "subject": draft.subject,
            "body": draft.body,
            "writer": draft.writer,
            "original_body": draft.body,
            "send": True,
        }
    )
    context = {"partner": partner, "draft": draft, "draft_form": form}
    return render(request, "retention/partner_detail.html#draft", context)


# What the partner page says after "Log email sent": queued until the send is recorded.
SEND_NOTICES = {
    agent_services.MANUAL_SENT: "Sent to {email} and logged",
    agent_services.MANUAL_QUEUED: "Logged; the email to {email} is queued (not sent yet): it is retried automatically",
    agent_services.MANUAL_HELD: "Logged and held for a manager's approval (this tier needs one): not sent yet",
    agent_services.MANUAL_LOGGED: "Logged the email",
}


@permission_required("retention.add_intervention")
@require_POST
def partner_send_email(request: AuthedHttpRequest, external_id: str) -> HttpResponse:
    """Log the (possibly edited) draft as an "email sent" intervention, and send it if asked."""
    partner = selectors.partner_for_page(external_id=external_id)
    form = DraftEmailForm(request.POST)
    if not form.is_valid():
        response = render(
            request,
            "retention/partner_detail.html#draft",
            {"partner": partner, "draft_form": form},
        )
        # The form targets the whole workspace on success; its errors replace only the draft.
        return retarget(response, "#draft") if request.htmx else response
    data = form.cleaned_data
    edited = data["body"].strip() != data["original_body"].strip()
    try:
        # The one send path (agent.outbox): the same guards as the agent's emails.
        _, result = agent_services.partner_email_send(
            partner=partner,
            subject=data["subject"],
            body=data["body"],
            # A person's edits make it their text, whatever wrote the first draft.
            writer=Intervention.Writer.MANUAL if edited else data["writer"],
            actor=request.user,
            send=data["send"],
        )
    except ValidationError as exc:
        notice = "Not sent: " + "; ".join(exc.messages)
    else:
        notice = SEND_NOTICES[result].format(email=partner.contact_email)
    if not request.htmx:
        messages.info(request, notice)
        return redirect("retention:partner_detail", external_id=partner.external_id)
    return render(
        request, "retention/partner_detail.html#workspace", _workspace_context(request, partner, None, notice)
    )
