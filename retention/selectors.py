"""Reads for partners and interventions."""

import datetime as dt
import math
from decimal import Decimal
from functools import cached_property
from typing import Any

from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import (
    Count,
    Exists,
    F,
    FloatField,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Coalesce, TruncMonth, TruncWeek
from django.shortcuts import get_object_or_404
from django.utils import timezone

from agent.models import AuditEvent
from churnsite.access import MANAGERS, RETENTION
from ml.models import AT_RISK, BUCKET_URGENCY_RANK, WORSE_BY, RiskScore, ScoringRun
from ml.sim.today import scoring_as_of
from retention.models import Intervention, Invoice, MonthlyActivity, Partner, RoiAssumptions

Outcome = Intervention.Outcome
HOLDOUT = Intervention.Action.HOLDOUT


def partner_list(*, search: str = "", tier: str = "", status: str = "") -> QuerySet[Partner]:
    qs = Partner.objects.select_related("account_owner")
    if search:
        qs = qs.filter(Q(external_id__iexact=search) | Q(name__icontains=search))
    if tier:
        qs = qs.filter(tier=tier)
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("external_id")


# Live Feed ------------------------------------------------------------------------

# Each sort walks one PartnerScore index (see ml.models.PartnerScore.Meta.indexes) so the
# first page of 100k partners is read from the top of an index, not sorted in full.
FEED_SORTS = {
    "urgency": ("current_score__urgency_rank", "-current_score__risk", "pk"),
    "risk": ("-current_score__risk", "pk"),
    "revenue": ("-current_score__revenue_at_risk", "pk"),
    # Biggest rise since the previous run first; partners with nothing to compare come last.
    "change": (F("current_score__risk_change").desc(nulls_last=True), "pk"),
}
# What changed since the previous run: "new" crossed into at risk, "worse" rose at least a point.
FEED_CHANGES = {
    "new": Q(current_score__risk__gte=AT_RISK, current_score__previous_risk__lt=AT_RISK),
    "worse": Q(current_score__risk_change__gte=WORSE_BY),
}
FEED_PAGE_SIZE = 50
# Counting every match of a loose filter over 100k rows costs more than the page itself
# (25-40 ms at a 10,000 cap, measured by bench/feed_bench.py); past this many the feed
# says "1,000+" (20 pages: a triage list is narrowed with filters, not paged through).
FEED_COUNT_CAP = 1_000


def partner_live_feed(
    *,
    sort: str = "urgency",
    tier: str = "",
    bucket: str = "",
    owner: int | None = None,
    not_contacted: bool = False,
    search: str = "",
    change: str = "",
) -> QuerySet[Partner]:
    """Active, scored partners for the Live Feed, with their last intervention; one query per page."""
    last = Intervention.objects.filter(partner=OuterRef("pk")).order_by("-created_at", "-pk")
    qs = (
        Partner.objects.filter(status=Partner.Status.ACTIVE, current_score__isnull=False)
        .select_related("current_score", "account_owner")
        .annotate(
            last_action=Subquery(last.values("action")[:1]),
            last_review_status=Subquery(last.values("review_status")[:1]),
            last_outbox_status=Subquery(last.values("email_outbox__status")[:1]),
            last_intervention_at=Subquery(last.values("created_at")[:1]),
        )
    )
    if tier:
        qs = qs.filter(tier=tier)
    if bucket:
        # urgency_rank is the leading column of the urgency index; bucket has none.
        qs = qs.filter(current_score__urgency_rank=BUCKET_URGENCY_RANK[bucket])
    if owner:
        qs = qs.filter(account_owner_id=owner)
    if not_contacted:
        qs = qs.filter(~Exists(Intervention.objects.filter(partner=OuterRef("pk"))))
    if change in FEED_CHANGES:
        qs = qs.filter(FEED_CHANGES[change])
    search = search.strip()
    if search:
        if search[:1] in "pP" and search[1:].isdigit():
            qs = qs.filter(external_id=search.upper())
        else:
            # Name only (no OR on the id), so PostgreSQL can use the trigram index (0004).
            qs = qs.filter(name__icontains=search)
    return qs.order_by(*FEED_SORTS.get(sort, FEED_SORTS["urgency"]))


# What a feed row shows, read as plain values: building 150 model instances and decoding
# every driver list cost more than the query itself (bench/feed_bench.py).
FEED_ROW_FIELDS = (
    "external_id",
    "name",
    "tier",
    "monthly_revenue",
    "last_action",
    "last_review_status",
    "last_outbox_status",
    "last_intervention_at",
)
FEED_ROW_RELATED = {
    "bucket": F("current_score__bucket"),
    "risk": F("current_score__risk"),
    "p_7d": F("current_score__p_7d"),
    "p_30d": F("current_score__p_30d"),
    "p_90d": F("current_score__p_90d"),
    "revenue_at_risk": F("current_score__revenue_at_risk"),
    "previous_risk": F("current_score__previous_risk"),
    "previous_as_of": F("current_score__previous_as_of"),
    "top_driver": KeyTextTransform("text", KeyTransform("0", "current_score__drivers")),
    "owner_first": F("account_owner__first_name"),
    "owner_last": F("account_owner__last_name"),
    "owner_username": F("account_owner__username"),
    # The do-not-contact badge (a left join on the one-to-one list).
    "do_not_contact_id": F("do_not_contact__id"),
}


def partner_live_feed_rows(feed: QuerySet[Partner]) -> QuerySet:
    """The feed's rows as dicts: FEED_ROW_FIELDS plus FEED_ROW_RELATED."""
    return feed.values(*FEED_ROW_FIELDS, **FEED_ROW_RELATED)


class CappedPaginator(Paginator):
    """A paginator that counts at most `cap` rows past the requested page (then `capped` is
    True and `floor` is the lower bound it knows), so counting stays cheap at 100k rows while
    every page keeps a Next link until the rows really end."""

    def __init__(
        self,
        object_list: QuerySet[Any],
        per_page: int,
        cap: int | None = None,
        *,
        page: Any = None,
        known_count: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.cap = cap if cap is not None else FEED_COUNT_CAP
        # The unfiltered feed's size is the scoring run's own count: exact, and free.
        self.known_count = known_count
        try:
            # Bounded: a huge page number made LIMIT overflow (beyond the rows it is the last page).
            requested = min(max(1, int(page)), 10**6)
        except (TypeError, ValueError):
            requested = 1
        super().__init__(object_list, per_page, **kwargs)
        self.queryset = object_list
        self.floor = (requested - 1) * self.per_page + self.per_page + self.cap

    @cached_property
    def count(self) -> int:
        if self.known_count is not None:
            return self.known_count
        # values("pk") drops the select_related joins and the subquery annotations.
        return self.queryset.order_by().values("pk")[: self.floor + 1].count()

    @property
    def capped(self) -> bool:
        return self.known_count is None and self.count > self.floor


def feed_partner_count() -> int | None:
    """How many active partners hold a current score: the latest scoring run scored exactly
    them, unless partners churned since (then None, and the feed counts its rows)."""
    run = (
        ScoringRun.objects.filter(status=ScoringRun.Status.SUCCEEDED, backfill=False)
        .order_by("-pk")
        .values("scored", "finished_at")
        .first()
    )
    if not run or not run["scored"]:
        return None
    churned_since = Partner.objects.filter(status=Partner.Status.CHURNED, updated_at__gt=run["finished_at"])
    return None if churned_since.exists() else run["scored"]


def latest_scoring_run_id() -> int | None:
    """The newest finished scoring run: the Live Feed re-renders when it changes."""
    return (
        ScoringRun.objects.filter(status=ScoringRun.Status.SUCCEEDED, backfill=False)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )


def team_members() -> QuerySet:
    """People an intervention can be assigned to, and Live Feed owners."""
    return (
        get_user_model()
        .objects.filter(is_active=True, groups__name__in=[RETENTION, MANAGERS])
        .distinct()
        .order_by("first_name", "username")
    )


# Partner page ----------------------------------------------------------------------


def partner_for_page(*, external_id: str) -> Partner:
    return get_object_or_404(
        Partner.objects.select_related(
            "account_owner", "current_score__run", "current_score__model_version", "do_not_contact"
        ),
        external_id=external_id,
    )


def partner_risk_history(*, partner: Partner, limit: int = 60) -> list[RiskScore]:
    """The partner's scores by the date they describe (a run's as-of date: in a simulated
    world, or for a backfilled month, that is not when the run happened), oldest first,
    one per date (the latest run's)."""
    rows = (
        RiskScore.objects.filter(partner=partner)
        .select_related("run")
        .order_by("-run__as_of", "-scored_at")
        .only("risk", "bucket", "scored_at", "run__as_of")
    )
    by_date: dict = {}
    for row in rows[: limit * 2]:
        row.as_of = row.run.as_of or row.scored_at.date()  # type: ignore[attr-defined]  # for the chart
        by_date.setdefault(row.as_of, row)  # type: ignore[attr-defined]
    return list(by_date.values())[:limit][::-1]


def partner_activity(*, partner: Partner, months: int = 24) -> list[MonthlyActivity]:
    rows = list(MonthlyActivity.objects.filter(partner=partner).order_by("-month")[:months])
    return rows[::-1]


def partner_payments(*, partner: Partner, limit: int = 24, today: dt.date | None = None) -> list[dict]:
    """Recent invoices with how late each was paid (or is, if still open), as of the desk's
    today: the simulated world's when it has one, so the page agrees with the drivers."""
    if today is None:
        today = scoring_as_of()
    rows = list(Invoice.objects.filter(partner=partner).order_by("-issued_on")[:limit])[::-1]
    out = []
    for inv in rows:
        end = inv.paid_on or today
        out.append(
            {
                "invoice": inv,
                "days_late": max(0, (end - inv.due_on).days),
                "open": inv.paid_on is None,
                "not_yet_due": inv.paid_on is None and today <= inv.due_on,
            }
        )
    return out


def partner_timeline(*, partner: Partner) -> QuerySet[Intervention]:
    return (
        Intervention.objects.filter(partner=partner)
        .select_related("created_by", "assigned_to", "outcome_set_by", "email_outbox")
        .order_by("-created_at", "-pk")
    )


# Intervention Log ------------------------------------------------------------------


# How long the person who changed an outcome may take it back (the Intervention Log's Undo).
UNDO_SECONDS = 10
OUTCOME_EVENTS = ("outcome_set", "outcome_corrected", "outcome_undone")


def intervention_log_rows() -> QuerySet[Intervention]:
    """Interventions as the Intervention Log shows them: with the latest outcome change's type
    and reason (so a correction reads "corrected by X: reason" under the outcome)."""
    latest_change = AuditEvent.objects.filter(
        intervention=OuterRef("pk"), event_type__in=OUTCOME_EVENTS
    ).order_by("-seq")
    return Intervention.objects.select_related(
        "partner", "assigned_to", "created_by", "outcome_set_by", "email_outbox"
    ).annotate(
        outcome_event=Subquery(latest_change.values("event_type")[:1]),
        outcome_reason=Subquery(
            latest_change.annotate(r=KeyTextTransform("reason", "payload")).values("r")[:1]
        ),
    )


def outcome_undoable_event(*, intervention: Intervention, actor) -> AuditEvent | None:
    """The outcome change `actor` may still undo on this intervention (their own, the latest,
    younger than UNDO_SECONDS), else None."""
    latest = (
        AuditEvent.objects.filter(intervention=intervention, event_type__in=OUTCOME_EVENTS)
        .order_by("-seq")
        .first()
    )
    if (
        latest is None
        or latest.event_type == "outcome_undone"
        or latest.actor_user_id != actor.pk
        or (timezone.now() - latest.created_at).total_seconds() > UNDO_SECONDS
    ):
        return None
    return latest


def intervention_list(
    *,
    action: str = "",
    source: str = "",
    outcome: str = "",
    tier: str = "",
    assigned_to: int | None = None,
    search: str = "",
) -> QuerySet[Intervention]:
    qs = intervention_log_rows()
    if action:
        qs = qs.filter(action=action)
    if source:
        qs = qs.filter(source=source)
    if outcome:
        qs = qs.filter(outcome=outcome)
    if tier:
        qs = qs.filter(partner__tier=tier)
    if assigned_to:
        qs = qs.filter(assigned_to_id=assigned_to)
    search = search.strip()
    if search:
        qs = qs.filter(Q(partner__external_id__iexact=search) | Q(partner__name__icontains=search))
    return qs.order_by("-created_at", "-pk")


def _not_contacts() -> Q:
    """Interventions that reached nobody: control-group holdouts and drafts a manager
    rejected. They stay in the log and in the experiment (intent to treat), but a save
    rate, a cost or a retained value built on them would credit work never done."""
    return Q(action=HOLDOUT) | Q(review_status=Intervention.Review.REJECTED)


def outcome_summary(**filters) -> dict:
    """Saved / churned / pending counts of the (filtered) log and the save rate.

    Holdouts and rejected drafts are left out (nobody was contacted), unless the filter
    asks for holdouts explicitly.
    """
    qs = intervention_list(**filters)
    if filters.get("action") != HOLDOUT:
        qs = qs.exclude(_not_contacts())
    counts = qs.aggregate(
        saved=Count("pk", filter=Q(outcome=Outcome.SAVED)),
        churned=Count("pk", filter=Q(outcome=Outcome.CHURNED)),
        pending=Count("pk", filter=Q(outcome=Outcome.PENDING)),
    )
    resolved = counts["saved"] + counts["churned"]
    counts["total"] = resolved + counts["pending"]
    counts["save_rate"] = counts["saved"] / resolved if resolved else None
    return counts


# Outcomes & ROI --------------------------------------------------------------------


def roi_assumptions() -> RoiAssumptions:
    assumptions, _ = RoiAssumptions.objects.get_or_create(pk=RoiAssumptions.SINGLETON_PK)
    return assumptions


def _money(value) -> Decimal:
    return Decimal(value or 0).quantize(Decimal("0.01"))


# Saved, and the partner is still with us: what retained value counts.
RETAINED = Q(outcome=Outcome.SAVED, partner__status=Partner.Status.ACTIVE)


def _contacts() -> QuerySet[Intervention]:
    return Intervention.objects.exclude(_not_contacts())


def _group_figures(*, group_by: str, assumptions: RoiAssumptions) -> list[dict]:
    """Per group: counts, value retained by saved partners, predicted value and cost.

    A saved partner's revenue counts once, however many contacts it took: it is split
    evenly over the partner's saved contacts, so the groups add up to the total. A partner
    marked Saved who churned since retains nothing (the log flags it for correction)."""
    months = assumptions.months_of_revenue_saved
    revenue = F("partner__monthly_revenue")
    saved_contacts_of_partner = (
        _contacts()
        .filter(RETAINED, partner=OuterRef("partner"))
        .order_by()
        .values("partner")
        .annotate(n=Count("pk"))
        .values("n")
    )
    rows = (
        _contacts()
        .annotate(share=Subquery(saved_contacts_of_partner, output_field=IntegerField()))
        .values(group_by, "action")
        .annotate(
            n=Count("pk"),
            saved=Count("pk", filter=Q(outcome=Outcome.SAVED)),
            churned=Count("pk", filter=Q(outcome=Outcome.CHURNED)),
            pending=Count("pk", filter=Q(outcome=Outcome.PENDING)),
            saved_revenue=Coalesce(
                Sum(Cast(revenue, FloatField()) / F("share"), filter=RETAINED),
                Value(0.0),
                output_field=FloatField(),
            ),
            # Expected revenue lost without action: risk at the time times monthly revenue.
            revenue_at_risk=Coalesce(
                Sum(Coalesce("risk_at_action", Value(0.0)) * Cast(revenue, FloatField())),
                Value(0.0),
                output_field=FloatField(),
            ),
        )
        .order_by(group_by, "action")
    )
    groups: dict[str, dict] = {}
    for row in rows:
        g = groups.setdefault(
            row[group_by],
            {"key": row[group_by], "n": 0, "saved": 0, "churned": 0, "pending": 0, "value": Decimal(0)}
            | {"cost": Decimal(0), "predicted_value": 0.0},
        )
        for k in ("n", "saved", "churned", "pending"):
            g[k] += row[k]
        g["value"] += Decimal(repr(row["saved_revenue"])) * months
        g["cost"] += Decimal(assumptions.cost_of(row["action"])) * row["n"]
        g["predicted_value"] += row["revenue_at_risk"] * months * assumptions.assumed_save_rate
    out = []
    for g in groups.values():
        resolved = g["saved"] + g["churned"]
        g["save_rate"] = g["saved"] / resolved if resolved else None
        g["value"], g["cost"] = _money(g["value"]), _money(g["cost"])
        g["predicted_value"] = _money(g["predicted_value"])
        g["roi"] = float(g["value"] / g["cost"]) if g["cost"] else None
        g["predicted_roi"] = float(g["predicted_value"] / g["cost"]) if g["cost"] else None
        out.append(g)
    return out


def roi_breakdown(*, by: str, assumptions: RoiAssumptions | None = None) -> list[dict]:
    """ROI rows by "tier" or "action", labelled for display."""
    assumptions = assumptions or roi_assumptions()
    if by == "tier":
        rows = _group_figures(group_by="partner__tier", assumptions=assumptions)
        labels, order = dict(Partner.Tier.choices), list(Partner.Tier.values)
    else:
        rows = _group_figures(group_by="action", assumptions=assumptions)
        labels, order = dict(Intervention.Action.choices), list(Intervention.Action.values)
    for row in rows:
        row["label"] = labels.get(row["key"], row["key"])
    return sorted(rows, key=lambda r: order.index(r["key"]) if r["key"] in order else 99)


def roi_totals(*, assumptions: RoiAssumptions | None = None) -> dict:
    """Realized ROI (value retained by saved partners over cost) next to the predicted ROI."""
    assumptions = assumptions or roi_assumptions()
    rows = _group_figures(group_by="action", assumptions=assumptions)
    total = {k: sum((r[k] for r in rows), start=Decimal(0)) for k in ("value", "cost", "predicted_value")}
    total |= {k: sum(r[k] for r in rows) for k in ("n", "saved", "churned", "pending")}
    saved = _contacts().filter(outcome=Outcome.SAVED)
    total["saved_partners"] = saved.filter(RETAINED).values("partner").distinct().count()
    total["saved_then_churned"] = (
        saved.filter(partner__status=Partner.Status.CHURNED).values("partner").distinct().count()
    )
    resolved = total["saved"] + total["churned"]
    total["save_rate"] = total["saved"] / resolved if resolved else None
    total["roi"] = float(total["value"] / total["cost"]) if total["cost"] else None
    total["predicted_roi"] = float(total["predicted_value"] / total["cost"]) if total["cost"] else None
    total["net"] = total["value"] - total["cost"]
    return total


def outcomes_over_time(*, since: dt.datetime | None = None) -> dict:
    """Contacted interventions per week (or month, over long spans) by current outcome."""
    qs = _contacts()
    if since:
        qs = qs.filter(created_at__gte=since)
    span = qs.aggregate(first=Min("created_at"), last=Max("created_at"))
    if span["first"] is None:
        return {"labels": [], "saved": [], "churned": [], "pending": [], "unit": "week"}
    monthly = (span["last"] - span["first"]).days > 26 * 7
    trunc = TruncMonth if monthly else TruncWeek
    rows = (
        qs.annotate(period=trunc("created_at"))
        .values("period")
        .annotate(
            saved=Count("pk", filter=Q(outcome=Outcome.SAVED)),
            churned=Count("pk", filter=Q(outcome=Outcome.CHURNED)),
            pending=Count("pk", filter=Q(outcome=Outcome.PENDING)),
        )
        .order_by("period")
    )
    fmt = "%Y-%m" if monthly else "%d %b"
    return {
        "labels": [r["period"].strftime(fmt) for r in rows],
        "saved": [r["saved"] for r in rows],
        "churned": [r["churned"] for r in rows],
        "pending": [r["pending"] for r in rows],
        "unit": "month" if monthly else "week",
    }


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def control_group_uplift(*, since: dt.datetime | None = None, z: float = 1.959964) -> dict:
    """Churn of treated vs held-out partners among resolved agent interventions.

    uplift = control_rate - treated_rate (positive: interventions save partners), with a
    95% interval by Newcombe's hybrid score method (Wilson intervals per arm), which,
    unlike the plain Wald interval, stays sensible with small arms and rates near 0 or 1.
    Treated is intent-to-treat: every non-holdout agent intervention, including ones a
    manager later rejected, because dropping those would compare a hand-picked group
    with a random one.
    incremental_revenue = uplift x the treated partners' monthly revenue x the months of
    revenue counted as saved (RoiAssumptions); incremental_roi = (incremental revenue - the
    treated contacts' cost) / that cost, with the interval the uplift's 95% interval gives
    (the ROI is linear in the uplift); roi_settled is False while that interval spans 0.
    """
    qs = Intervention.objects.filter(
        source=Intervention.Source.AGENT, outcome__in=[Outcome.SAVED, Outcome.CHURNED]
    )
    if since:
        qs = qs.filter(created_at__gte=since)
    arm = Q(action=HOLDOUT)
    churned = Q(outcome=Outcome.CHURNED)
    assumptions = roi_assumptions()
    # What the treated arm cost: contacts only (a rejected draft reached nobody, cost nothing).
    treated_cost = sum(
        (
            Decimal(assumptions.cost_of(row["action"])) * row["n"]
            for row in qs.exclude(_not_contacts()).values("action").annotate(n=Count("pk")).order_by()
        ),
        start=Decimal(0),
    )
    agg = qs.aggregate(
        control_n=Count("pk", filter=arm),
        control_churned=Count("pk", filter=arm & churned),
        treated_n=Count("pk", filter=~arm),
        treated_churned=Count("pk", filter=~arm & churned),
        treated_revenue=Sum("partner__monthly_revenue", filter=~arm),
    )
    tn, tk, cn, ck = agg["treated_n"], agg["treated_churned"], agg["control_n"], agg["control_churned"]
    treated_rate = tk / tn if tn else None
    control_rate = ck / cn if cn else None
    result: dict[str, Any] = {
        "treated_n": tn,
        "treated_churned": tk,
        "control_n": cn,
        "control_churned": ck,
        "treated_rate": treated_rate,
        "control_rate": control_rate,
        "uplift": None,
        "ci_low": None,
        "ci_high": None,
        "incremental_partners": None,
        "incremental_revenue": None,
        "treated_cost": _money(treated_cost),
        "incremental_roi": None,
        "roi_low": None,
        "roi_high": None,
        "roi_settled": False,
    }
    if not tn or not cn or treated_rate is None or control_rate is None:
        return result
    uplift = control_rate - treated_rate
    lc, uc = _wilson(ck, cn, z)
    lt, ut = _wilson(tk, tn, z)
    result["uplift"] = uplift
    result["ci_low"] = uplift - math.sqrt((control_rate - lc) ** 2 + (ut - treated_rate) ** 2)
    result["ci_high"] = uplift + math.sqrt((uc - control_rate) ** 2 + (treated_rate - lt) ** 2)
    months = assumptions.months_of_revenue_saved
    result["incremental_partners"] = uplift * tn
    result["incremental_revenue"] = _money(
        Decimal(str(uplift)) * Decimal(agg["treated_revenue"] or 0) * months
    )
    # The ROI the experiment supports: revenue the contacts caused (not every partner who
    # stayed, which the gross figure counts), net of what the contacts cost, per unit of cost.
    if treated_cost:
        revenue = float(agg["treated_revenue"] or 0) * float(months)
        cost = float(treated_cost)

        def roi(u: float) -> float:
            return (u * revenue - cost) / cost

        result["incremental_roi"] = roi(uplift)
        result["roi_low"], result["roi_high"] = roi(result["ci_low"]), roi(result["ci_high"])
        result["roi_settled"] = not result["roi_low"] <= 0 <= result["roi_high"]
    return result
