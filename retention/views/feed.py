"""The Live Feed (scored partners, most urgent first; its poll and CSV export) and the partner list."""

import csv
import html
from typing import Any

from django.conf import settings
from django.core.paginator import Paginator
from django.db.models import F
from django.http import HttpResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET
from django_htmx.http import trigger_client_event

from churnsite.access import AuthedHttpRequest, permission_required
from churnsite.csvsafe import CsvBuffer, csv_cell
from churnsite.http import partial_template
from desk import selectors as desk
from desk.rows import task_rows
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
    paginator = selectors.CappedPaginator(
        selectors.LiveFeedQuery(**filters),
        selectors.FEED_PAGE_SIZE,
        page=request.GET.get("page"),
        known_count=_counted_by_run(filters, strip),
        read_by_id=selectors.feed_sort_in_memory(filters["sort"]) if filters["search"] else None,
        run_id=strip["run_id"],
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
        tasks = desk.tasks_today(owner_id=filters["owner"], today=today)
        context["tasks"] = task_rows(tasks, today=today, csrf_token=get_token(request))
        context["today"] = today
    return context


# The strip's figure that is the feed's size when "What changed" is the only filter.
_CHANGE_COUNTS = {"": "partners", "new": "new_at_risk", "worse": "worse"}


def _counted_by_run(filters: dict, strip: dict) -> int | None:
    """All of one owner's partners, or everyone's (or just the new at risk, or the worse):
    the scoring run counted them already, unless a partner changed since (then None: COUNT)."""
    others = any(v for k, v in filters.items() if k not in ("sort", "owner", "change"))
    key = _CHANGE_COUNTS.get(filters.get("change") or "")
    if others or key is None or strip["partners_changed"]:
        return None
    return strip[key] or None


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


# One feed row. Rendered here (every value escaped, as the template would) rather than through
# the template: its ~25 variables and conditions a row cost 8 ms of CPU for 50 rows on every
# feed view, a sixth of the request (bench/feed_bench.py); format_html's per-value SafeString
# bookkeeping still cost 5 ms, so the values go through html.escape and one str.format.
_ROW = (
    '<tr class="urgency-{bucket}" data-partner="{id}">\n'
    '  <td class="headline"><a href="{url}"{title}><span class="dot dot-{bucket}" aria-hidden="true"></span>'
    '<span class="emoji">{icon}</span> {headline}</a>{note}\n'
    "    {change}\n"
    "    {new}</td>\n"
    "  <td>{name}{dnc}</td>\n"
    '  <td><span class="tier tier-{tier}">{tier_label}</span></td>\n'
    '  <td class="num">{revenue}</td>\n'
    '  <td class="num">{revenue_at_risk}</td>\n'
    '  <td class="driver">{driver}</td>\n'
    "  <td>{owner}</td>\n"
    "  <td>{last}</td>\n"
    "</tr>\n"
)
_DNC = ' <span class="badge badge-dnc" title="On the do-not-contact list: no email goes out">Do not contact</span>'
_NEW = '<span class="badge new-at-risk">New at risk</span>'
_NOT_CONTACTED = '<span class="muted">Not contacted</span>'


def _row_html(row: dict) -> SafeString:
    e = html.escape
    note = e(row["window_note"])
    return mark_safe(  # noqa: S308 - every value below is escaped
        _ROW.format(
            bucket=e(row["bucket"]),
            id=e(row["id"]),
            url=e(row["url"]),
            title=f' title="{note}"' if note else "",
            icon=e(row["icon"]),
            headline=e(row["headline"]),
            note=f'<span class="visually-hidden"> ({note})</span>' if note else "",
            change=f'<span class="change change-{e(row["change_dir"])}">{e(row["change"])}</span>'
            if row["change"]
            else "",
            new=_NEW if row["new_at_risk"] else "",
            name=e(row["name"]),
            dnc=_DNC if row["do_not_contact"] else "",
            tier=e(row["tier"]),
            tier_label=e(str(row["tier_label"])),
            revenue=e(row["revenue"]),
            revenue_at_risk=e(row["revenue_at_risk"]),
            driver=e(row["driver"] or "—"),
            owner=e(row["owner"]),
            last=f'{e(row["last_action"])} <span class="muted">{e(row["last_at"])}</span>'
            if row["last_action"]
            else _NOT_CONTACTED,
        )
    )


def _feed_rows(partners) -> list[dict]:
    """Pre-format the 50 rows: rendering them field by field in the template was most of the
    feed's CPU time (bench/feed_bench.py); the template still escapes every value."""
    base = reverse("retention:partner_list")
    tier_labels = dict(Partner.Tier.choices)
    rows = []
    for p in partners:
        ext, bucket = p["external_id"], p["bucket"]
        action, review, outbox, last_at = selectors.last_intervention(p)
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
                "last_action": Intervention.describe_action(action, review, outbox) if action else "",
                "last_at": last_at.strftime("%Y-%m-%d") if last_at else "",
            }
            | _change(p)
        )
        rows[-1]["html"] = _row_html(rows[-1])
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
        action, review, _outbox, last_at = selectors.last_intervention(p)
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
                    Intervention.describe_action(action, review) if action else "",
                    last_at.isoformat() if last_at else "",
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
