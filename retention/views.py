import csv
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import F
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import retarget, trigger_client_event

from agent import services as agent_services
from churnsite.access import AuthedHttpRequest, HtmxHttpRequest, permission_required
from churnsite.csvsafe import CsvBuffer, csv_cell
from churnsite.health import broker_status
from churnsite.http import MAX_ID, partial_template, safe_next
from ml.selectors import partner_current_score, partner_drivers
from retention import charts, selectors, services
from retention.forms import (
    DraftEmailForm,
    FeedFilterForm,
    ImportForm,
    InterventionFilterForm,
    InterventionForm,
    OutcomeForm,
    OutcomeUndoForm,
    PartnerFilterForm,
    RoiAssumptionsForm,
)
from retention.models import ImportJob, Intervention, Partner
from retention.templatetags import retention_tags as tags


@login_not_required
@never_cache
@require_GET
def healthz(request: HtmxHttpRequest) -> JsonResponse:
    """For load balancers and `make demo`: "ok" (200); "degraded" (503) when only the broker is
    down (pages, logins and sessions work from the database, tasks wait in it); "down" (503)
    when the database is."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True, "vendor": connection.vendor}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = {"ok": False, "error": str(exc)[:200]}
    checks["broker"] = broker_status()
    if not checks["database"]["ok"]:
        status = "down"
    elif not checks["broker"]["ok"]:
        status = "degraded"
    else:
        status = "ok"
    return JsonResponse({"status": status, **checks}, status=200 if status == "ok" else 503)


@permission_required("retention.view_partner")
@require_GET
def partner_list(request: AuthedHttpRequest) -> HttpResponse:
    form = PartnerFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    partners = selectors.partner_list(
        search=filters.get("q", ""), tier=filters.get("tier", ""), status=filters.get("status", "")
    )
    page = Paginator(partners, 50).get_page(request.GET.get("page"))
    template = partial_template(request, "retention/partner_list.html", {"results"})
    return render(request, template, {"form": form, "page": page})


# Live Feed ------------------------------------------------------------------------


def _feed_filters(request: AuthedHttpRequest) -> tuple[FeedFilterForm, dict, str]:
    """The feed's filter form, the selector's keyword arguments and the scope (mine/all)."""
    from desk import selectors as desk

    form = FeedFilterForm(request.GET or None, members=list(selectors.team_members()))
    filters = form.selector_kwargs()
    # "My partners" unless the person chose all, or picked an owner in the filter.
    scope = desk.feed_scope(request)
    if scope == "mine" and not filters["owner"]:
        filters["owner"] = request.user.pk
    return form, filters, scope


def _feed_context(request: AuthedHttpRequest, *, with_tasks: bool = False) -> dict:
    from desk import selectors as desk

    form, filters, scope = _feed_filters(request)
    partners = selectors.partner_live_feed_rows(selectors.partner_live_feed(**filters))
    unfiltered = not any(v for k, v in filters.items() if k != "sort")
    paginator = selectors.CappedPaginator(
        partners,
        selectors.FEED_PAGE_SIZE,
        page=request.GET.get("page"),
        known_count=selectors.feed_partner_count() if unfiltered else None,
    )
    page = paginator.get_page(request.GET.get("page"))
    unscored: Any = []
    if not page.object_list and not request.GET and scope == "all":
        # First run, before any scoring: show who is there instead of an empty desk.
        unscored = selectors.partner_list(status="active").filter(current_score__isnull=True)[:50]
    today = timezone.localdate()
    strip = desk.desk_strip(owner_id=filters["owner"], today=today)
    context = {
        "form": form,
        "page": page,
        "rows": _feed_rows(page.object_list),
        "run_id": strip["run_id"],
        "strip": strip,
        "scope": scope,
        "scope_owner": filters["owner"],
        "unscored": unscored,
        "query": request.GET.urlencode(),
    }
    if with_tasks:
        context["tasks"] = desk.tasks_today(owner_id=filters["owner"], today=today)
        context["today"] = today
    return context


def _change(p: dict) -> dict:
    """The risk change since the previous run, as the feed shows it: "▲ +23 pts since 1 Dec"."""
    from ml.models import AT_RISK

    previous, risk = p["previous_risk"], p["risk"]
    if previous is None:
        return {"change": "", "change_dir": "", "new_at_risk": False}
    points = round((risk - previous) * 100)
    since = p["previous_as_of"]
    since_text = f" since {since.day} {since:%b}" if since else ""
    if points == 0:
        text, direction = f"= no change{since_text}", "same"
    else:
        text = f"{'▲' if points > 0 else '▼'} {points:+d} pts{since_text}".replace("-", "−")
        direction = "up" if points > 0 else "down"
    return {"change": text, "change_dir": direction, "new_at_risk": risk >= AT_RISK > previous}


def _feed_rows(partners) -> list[dict]:
    """Pre-format the 50 rows: rendering them field by field in the template was most of the
    feed's CPU time (bench/feed_bench.py); the template still escapes every value."""
    base = reverse("retention:partner_list")
    tier_labels = dict(Partner.Tier.choices)
    rows = []
    for p in partners:
        ext, bucket = p["external_id"], p["bucket"]
        owner = f"{p['owner_first'] or ''} {p['owner_last'] or ''}".strip() or p["owner_username"] or "—"
        rows.append(
            {
                "id": ext,
                "url": f"{base}{ext}/",
                "bucket": bucket,
                # The emoji stays in the row's text (copy-paste, screen readers) but the colour
                # on screen is a CSS dot: not every system has an emoji font.
                "icon": tags.urgency_icon(bucket),
                "headline": f"{ext} • Risk: {tags.pct(p['risk'])} • {tags.churn_in(bucket)}",
                "window_note": tags.if_it_churns(p["risk"], p["p_7d"], p["p_30d"], p["p_90d"])
                if bucket and bucket != "later"
                else "",
                "name": p["name"],
                "tier": p["tier"],
                "tier_label": tier_labels.get(p["tier"], p["tier"]),
                "revenue": tags.money(p["monthly_revenue"]),
                "revenue_at_risk": tags.money(p["revenue_at_risk"]),
                "driver": p["top_driver"] or "",
                "owner": owner,
                "do_not_contact": p["do_not_contact_id"] is not None,
                "last_action": Intervention.describe_action(
                    p["last_action"], p["last_review_status"], p["last_outbox_status"]
                )
                if p["last_action"]
                else "",
                "last_at": p["last_intervention_at"].strftime("%Y-%m-%d")
                if p["last_intervention_at"]
                else "",
            }
            | _change(p)
        )
    return rows


@permission_required("retention.view_partner")
@require_GET
def live_feed(request: AuthedHttpRequest) -> HttpResponse:
    template = partial_template(request, "retention/live_feed.html", {"results"})
    return render(request, template, _feed_context(request, with_tasks=template.endswith(".html")))


@permission_required("retention.view_partner")
@require_GET
def live_feed_poll(request: AuthedHttpRequest) -> HttpResponse:
    """Polled by the feed: 204 (nothing to do) until a new scoring run lands, then the fresh rows."""
    latest = selectors.latest_scoring_run_id()
    if str(latest or "") == request.GET.get("run", ""):
        return HttpResponse(status=204)
    context = _feed_context(request)
    response = render(request, "retention/live_feed.html#results", context)
    return trigger_client_event(response, "scoring-run-landed", {"run": context["run_id"]})


FEED_CSV_COLUMNS = [
    "partner_id",
    "name",
    "tier",
    "owner",
    "risk",
    "bucket",
    "top_drivers",
    "revenue_at_risk",
    "last_intervention",
    "last_intervention_at",
]


def _feed_csv_lines(rows):
    """CSV text line by line: nothing but the current row and the cursor's chunk is in memory."""
    buffer = CsvBuffer()
    writer = csv.writer(buffer)
    writer.writerow(FEED_CSV_COLUMNS)
    yield buffer.take()
    for p in rows:
        owner = f"{p['owner_first'] or ''} {p['owner_last'] or ''}".strip() or p["owner_username"] or ""
        drivers = "; ".join(d.get("text", "") for d in (p["drivers"] or [])[:3] if isinstance(d, dict))
        writer.writerow(
            [
                csv_cell(v)
                for v in (
                    p["external_id"],
                    p["name"],
                    p["tier"],
                    owner,
                    f"{p['risk']:.4f}",
                    p["bucket"],
                    drivers,
                    p["revenue_at_risk"],
                    Intervention.describe_action(p["last_action"], p["last_review_status"])
                    if p["last_action"]
                    else "",
                    p["last_intervention_at"].isoformat() if p["last_intervention_at"] else "",
                )
            ]
        )
        yield buffer.take()


@permission_required("retention.view_partner")
@require_GET
def live_feed_export(request: AuthedHttpRequest) -> StreamingHttpResponse:
    """The filtered feed (every row, in the feed's order) as CSV, streamed from a server-side
    cursor so 100k partners export in constant memory."""
    _form, filters, _scope = _feed_filters(request)
    fields = {k: v for k, v in selectors.FEED_ROW_RELATED.items() if k != "top_driver"}
    rows = (
        selectors.partner_live_feed(**filters)
        .values(*selectors.FEED_ROW_FIELDS, **fields, drivers=F("current_score__drivers"))
        .iterator(chunk_size=2000)
    )
    response = StreamingHttpResponse(_feed_csv_lines(rows), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="live-feed-{stamp}.csv"'
    return response


# Partner page ----------------------------------------------------------------------


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


# Intervention Log ------------------------------------------------------------------


def _log_filters(request: AuthedHttpRequest) -> InterventionFilterForm:
    return InterventionFilterForm(request.GET or None, members=list(selectors.team_members()))


@permission_required("retention.view_intervention")
@require_GET
def intervention_list(request: AuthedHttpRequest) -> HttpResponse:
    form = _log_filters(request)
    filters = form.selector_kwargs()
    context = {"form": form, "summary": selectors.outcome_summary(**filters)}
    template = partial_template(request, "retention/intervention_list.html", {"summary", "results"})
    if template.endswith("#summary"):
        return render(request, template, context)
    context["page"] = Paginator(selectors.intervention_list(**filters), 50).get_page(request.GET.get("page"))
    return render(request, template, context)


def _log_row(
    request: AuthedHttpRequest, pk: int, *, error: str = "", correcting: str = "", reason: str = ""
) -> HttpResponse:
    """One Intervention Log row (htmx): with an Undo while the viewer's own change is young, or,
    for a correction, the reason field (`correcting` = the outcome asked for)."""
    intervention = selectors.intervention_log_rows().get(pk=pk)
    undo = (
        None
        if error or correcting
        else selectors.outcome_undoable_event(intervention=intervention, actor=request.user)
    )
    context = {
        "intervention": intervention,
        "row_error": error,
        "correcting": correcting,
        "reason": reason,
        "undo_event": undo,
        "undo_seconds": selectors.UNDO_SECONDS,
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
    rows = selectors.intervention_list(**_log_filters(request).selector_kwargs())
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


# Outcomes & ROI --------------------------------------------------------------------


def _outcomes_context(request: AuthedHttpRequest, form=None) -> dict:
    assumptions = selectors.roi_assumptions()
    over_time = selectors.outcomes_over_time()
    uplift = selectors.control_group_uplift()
    totals = selectors.roi_totals(assumptions=assumptions)
    by_tier = selectors.roi_breakdown(by="tier", assumptions=assumptions)
    by_action = selectors.roi_breakdown(by="action", assumptions=assumptions)
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
    form = RoiAssumptionsForm(request.POST, instance=selectors.roi_assumptions())
    if form.is_valid():
        services.roi_assumptions_update(actor=request.user, changes=form.cleaned_data)
        if not request.htmx:
            messages.success(request, "ROI assumptions saved")
            return redirect("retention:outcomes")
        return render(request, "retention/outcomes.html#figures", _outcomes_context(request))
    if not request.htmx:
        messages.error(request, "The ROI assumptions were not saved: check the values")
    return render(request, "retention/outcomes.html#figures", _outcomes_context(request, form))


# Import -------------------------------------------------------------------------------------


def _import_context(
    request: AuthedHttpRequest, job: ImportJob | None, form: ImportForm | None = None
) -> dict:
    from retention.importing import import_job_progress

    return {
        "form": form or ImportForm(),
        "job": job,
        "progress": import_job_progress(job=job) if job else None,
        "jobs": ImportJob.objects.order_by("-created_at")[:10],
    }


@permission_required("retention.import_data", message="Only managers can import data.")
def import_page(request: AuthedHttpRequest) -> HttpResponse:
    """Managers upload a team's history files; the page follows the job and lists bad rows."""
    from retention.importing import import_job_create
    from retention.tasks import run_import_job

    job = None
    if request.GET.get("job", "").isdigit() and int(request.GET["job"]) <= MAX_ID:
        job = get_object_or_404(ImportJob, pk=int(request.GET["job"]))
    if request.method == "POST":
        form = ImportForm(request.POST, request.FILES)
        if not form.is_valid():
            return render(request, "retention/import.html", _import_context(request, None, form), status=400)
        job = import_job_create(
            uploads=form.cleaned_data["files"], actor=request.user,
            dry_run=form.cleaned_data["dry_run"], replace=form.cleaned_data["replace"],
        )  # fmt: skip
        from churnsite.broker import enqueue

        if not enqueue(run_import_job, job.pk):
            messages.warning(request, f"Import {job.pk} waits: the task queue is unreachable.")
        return redirect(f"{reverse('retention:import')}?job={job.pk}")
    template = partial_template(request, "retention/import.html", {"import-job": "job"})
    return render(request, template, _import_context(request, job))
