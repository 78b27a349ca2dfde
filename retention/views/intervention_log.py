"""The Intervention Log: every intervention with its outcome (set, corrected, undone) and its CSV export."""

import csv

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from churnsite.access import AuthedHttpRequest, permission_required
from churnsite.csvsafe import csv_cell
from churnsite.http import partial_template, safe_next
from retention import log_selectors, selectors, services
from retention.forms import (
    InterventionFilterForm,
    OutcomeForm,
    OutcomeUndoForm,
)
from retention.models import Intervention


def _log_filters(request: AuthedHttpRequest) -> InterventionFilterForm:
    return InterventionFilterForm(request.GET or None, members=list(selectors.team_members()))


@permission_required("retention.view_intervention")
@require_GET
def intervention_list(request: AuthedHttpRequest) -> HttpResponse:
    form = _log_filters(request)
    filters = form.selector_kwargs()
    context = {"form": form, "summary": log_selectors.outcome_summary(**filters)}
    template = partial_template(request, "retention/intervention_list.html", {"summary", "results"})
    if template.endswith("#summary"):
        return render(request, template, context)
    context["page"] = Paginator(log_selectors.intervention_list(**filters), 50).get_page(
        request.GET.get("page")
    )
    return render(request, template, context)


def _log_row(
    request: AuthedHttpRequest, pk: int, *, error: str = "", correcting: str = "", reason: str = ""
) -> HttpResponse:
    """One Intervention Log row (htmx): with an Undo while the viewer's own change is young, or,
    for a correction, the reason field (`correcting` = the outcome asked for)."""
    intervention = log_selectors.intervention_log_rows().get(pk=pk)
    undo = (
        None
        if error or correcting
        else log_selectors.outcome_undoable_event(intervention=intervention, actor=request.user)
    )
    context = {
        "intervention": intervention,
        "row_error": error,
        "correcting": correcting,
        "reason": reason,
        "undo_event": undo,
        "undo_seconds": log_selectors.UNDO_SECONDS,
    }
    return render(request, "retention/intervention_list.html#row", context)


@permission_required("retention.change_intervention")
@require_POST
def intervention_outcome(request: AuthedHttpRequest, pk: int) -> HttpResponse:
    intervention = get_object_or_404(Intervention.objects.select_related("partner"), pk=pk)
    form = OutcomeForm(request.POST)
    error, correcting, changed = "", "", False
    if not form.is_valid():
        error = "Choose pending, saved or churned"
    else:
        outcome, reason = form.cleaned_data["outcome"], form.cleaned_data["reason"]
        try:
            before = intervention.outcome
            intervention = services.intervention_set_outcome(
                intervention=intervention, outcome=outcome, actor=request.user, reason=reason
            )
            changed = intervention.outcome != before
        except PermissionDenied as exc:
            error = str(exc)
        except ValidationError as exc:
            error = "; ".join(exc.messages)
            if services.CORRECTION_NEEDS_REASON in exc.messages:
                correcting = outcome  # ask for the reason, keeping the outcome asked for
    if not request.htmx:
        messages.add_message(request, messages.ERROR if error else messages.SUCCESS, error or "Outcome saved")
        return redirect(safe_next(request, reverse("retention:intervention_list")))
    response = _log_row(request, pk, error=error, correcting=correcting)
    if changed:
        trigger_client_event(response, "outcome-changed", {"id": pk, "outcome": intervention.outcome})
    return response


@permission_required("retention.change_intervention")
@require_POST
def intervention_outcome_undo(request: AuthedHttpRequest, pk: int) -> HttpResponse:
    """The Intervention Log's Undo: takes back the viewer's own outcome change of the last
    UNDO_SECONDS through the outcome service (audited); later it is refused, saying so."""
    intervention = get_object_or_404(Intervention, pk=pk)
    form = OutcomeUndoForm(request.POST)
    error = ""
    if not form.is_valid():
        error = "Nothing to undo."
    else:
        try:
            intervention = services.intervention_undo_outcome(
                intervention=intervention, event_id=form.cleaned_data["event"], actor=request.user
            )
        except ValidationError as exc:
            error = "; ".join(exc.messages)
    if not request.htmx:
        messages.add_message(
            request, messages.ERROR if error else messages.SUCCESS, error or "Outcome change undone"
        )
        return redirect(safe_next(request, reverse("retention:intervention_list")))
    response = _log_row(request, pk, error=error)
    if not error:
        trigger_client_event(response, "outcome-changed", {"id": pk, "outcome": intervention.outcome})
    return response


CSV_COLUMNS = [
    "partner_id",
    "partner_name",
    "tier",
    "timestamp",
    "action",
    "source",
    "status",
    "assigned_to",
    "outcome_date",
    "outcome_set_by",
    "risk_at_action",
    "bucket_at_action",
    "note",
    "review_status",
    "sent_at",
]


@permission_required("retention.view_intervention")
@require_GET
def intervention_export(request: AuthedHttpRequest) -> HttpResponse:
    """The filtered Intervention Log as CSV (all rows, not just the page on screen)."""
    rows = log_selectors.intervention_list(**_log_filters(request).selector_kwargs())
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="interventions-{stamp}.csv"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    for i in rows.iterator(chunk_size=2000):
        writer.writerow(
            [
                csv_cell(v)
                for v in (
                    i.partner.external_id,
                    i.partner.name,
                    i.partner.tier,
                    i.created_at.isoformat(),
                    i.action,
                    i.source,
                    i.outcome,
                    i.assigned_to.username if i.assigned_to else "",
                    i.outcome_set_at.date().isoformat() if i.outcome_set_at else "",
                    i.outcome_set_by.username if i.outcome_set_by else "",
                    "" if i.risk_at_action is None else f"{i.risk_at_action:.4f}",
                    i.bucket_at_action,
                    i.note,
                    i.review_status,
                    i.sent_at.isoformat() if i.sent_at else "",
                )
            ]
        )
    return response
