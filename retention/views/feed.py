"""The Live Feed (scored partners, most urgent first; its poll and CSV export) and the partner list."""

import csv
from typing import Any

from django.conf import settings
from django.core.paginator import Paginator
from django.db.models import F
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django_htmx.http import trigger_client_event

from churnsite.access import AuthedHttpRequest, permission_required
from churnsite.csvsafe import CsvBuffer, csv_cell
from churnsite.http import partial_template
from desk import selectors as desk
from retention import selectors
from retention.forms import (
    FeedFilterForm,
    PartnerFilterForm,
)
from retention.models import Intervention, Partner
from retention.templatetags import retention_tags as tags


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


def _feed_filters(request: AuthedHttpRequest) -> tuple[FeedFilterForm, dict, str]:
    """The feed's filter form, the selector's keyword arguments and the scope (mine/all)."""
    form = FeedFilterForm(request.GET or None, member_choices=selectors.team_member_choices())
    filters = form.selector_kwargs()
    # "My partners" unless the person chose all, or picked an owner in the filter.
    scope = desk.feed_scope(request)
    if scope == "mine" and not filters["owner"]:
        filters["owner"] = request.user.pk
    return form, filters, scope


def _feed_context(request: AuthedHttpRequest, *, with_tasks: bool = False) -> dict:
    form, filters, scope = _feed_filters(request)
    today = timezone.localdate()
    strip = desk.desk_strip(owner_id=filters["owner"], today=today)
    partners = selectors.partner_live_feed_rows(selectors.partner_live_feed(**filters))
    # All of one owner's partners, or everyone's: the scoring run counted them already.
    whole_scope = not any(v for k, v in filters.items() if k not in ("sort", "owner"))
    paginator = selectors.CappedPaginator(
        partners,
        selectors.FEED_PAGE_SIZE,
        page=request.GET.get("page"),
        known_count=strip["partners"] or None if whole_scope and not strip["partners_changed"] else None,
    )
    page = paginator.get_page(request.GET.get("page"))
    unscored: Any = []
    if not page.object_list and not request.GET and scope == "all":
        # First run, before any scoring: show who is there instead of an empty desk.
        unscored = selectors.partner_list(status="active").filter(current_score__isnull=True)[:50]
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
    return {"change": text, "change_dir": direction, "new_at_risk": risk >= settings.AT_RISK_LEVEL > previous}


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
