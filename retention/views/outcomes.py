"""Outcomes & ROI: what the interventions saved, the control group's uplift, the ROI assumptions."""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from churnsite.access import AuthedHttpRequest, permission_required
from churnsite.http import partial_template
from retention import charts, roi, services
from retention.forms import (
    RoiAssumptionsForm,
)


def _outcomes_context(request: AuthedHttpRequest, form=None) -> dict:
    assumptions = roi.roi_assumptions()
    over_time = roi.outcomes_over_time()
    figures = roi.roi_figures(assumptions=assumptions)
    totals, by_tier, by_action = figures["totals"], figures["by_tier"], figures["by_action"]
    uplift = figures["uplift"]
    can_edit = request.user.has_perm("retention.change_roiassumptions")
    pct = lambda v: f"{v * 100:.0f}%"  # noqa: E731
    arms = [
        r
        for r in (("Treated", uplift["treated_rate"]), ("Control", uplift["control_rate"]))
        if r[1] is not None
    ]
    return {
        "assumptions": assumptions,
        "totals": totals,
        "uplift": uplift,
        "by_tier": by_tier,
        "by_action": by_action,
        "can_edit": can_edit,
        "form": form or (RoiAssumptionsForm(instance=assumptions) if can_edit else None),
        "over_time_chart": charts.bar_chart(
            over_time["labels"],
            {"Saved": over_time["saved"], "Churned": over_time["churned"], "Pending": over_time["pending"]},
            title=f"Interventions per {over_time['unit']} by outcome",
            colours=["#2e7d32", "#c62828", "#9ca3af"],
        ),
        "arms_chart": charts.bar_chart(
            [a[0] for a in arms],
            {"Churn rate": [a[1] for a in arms]},
            title="Churn rate: treated vs control group",
            y_format=pct,
            height=150,
        ),
        "tier_chart": charts.bar_chart(
            [r["label"] for r in by_tier],
            {"Saved": [r["saved"] for r in by_tier], "Churned": [r["churned"] for r in by_tier]}
            | {"Pending": [r["pending"] for r in by_tier]},
            title="Outcomes by tier",
            colours=["#2e7d32", "#c62828", "#9ca3af"],
            height=150,
        ),
    }


@permission_required("retention.view_intervention")
@require_GET
def outcomes(request: AuthedHttpRequest) -> HttpResponse:
    template = partial_template(request, "retention/outcomes.html", {"figures"})
    return render(request, template, _outcomes_context(request))


@permission_required(
    "retention.change_roiassumptions", message="Only a manager can change the ROI assumptions"
)
@require_POST
def outcomes_assumptions(request: AuthedHttpRequest) -> HttpResponse:
    form = RoiAssumptionsForm(request.POST, instance=roi.roi_assumptions())
    if form.is_valid():
        services.roi_assumptions_update(actor=request.user, changes=form.cleaned_data)
        if not request.htmx:
            messages.success(request, "ROI assumptions saved")
            return redirect("retention:outcomes")
        return render(request, "retention/outcomes.html#figures", _outcomes_context(request))
    if not request.htmx:
        messages.error(request, "The ROI assumptions were not saved: check the values")
    return render(request, "retention/outcomes.html#figures", _outcomes_context(request, form))
