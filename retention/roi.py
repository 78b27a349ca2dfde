"""Reads for the Outcomes & ROI page: value retained, cost, the breakdowns by tier and action,
outcomes over time, and the control group's uplift."""

import datetime as dt
import math
from decimal import Decimal
from typing import Any

from django.db.models import (
    Count,
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
from django.db.models.functions import Cast, Coalesce, TruncMonth, TruncWeek

from retention.models import Intervention, Partner, RoiAssumptions

Outcome = Intervention.Outcome
HOLDOUT = Intervention.Action.HOLDOUT


def not_contacts() -> Q:
    """Interventions that reached nobody: control-group holdouts and drafts a manager
    rejected. They stay in the log and in the experiment (intent to treat), but a save
    rate, a cost or a retained value built on them would credit work never done."""
    return Q(action=HOLDOUT) | Q(review_status=Intervention.Review.REJECTED)


def roi_assumptions() -> RoiAssumptions:
    assumptions, _ = RoiAssumptions.objects.get_or_create(pk=RoiAssumptions.SINGLETON_PK)
    return assumptions


def _money(value) -> Decimal:
    return Decimal(value or 0).quantize(Decimal("0.01"))


# Saved, and the partner is still with us: what retained value counts.
RETAINED = Q(outcome=Outcome.SAVED, partner__status=Partner.Status.ACTIVE)


def _contacts() -> QuerySet[Intervention]:
    return Intervention.objects.exclude(not_contacts())


# Contacts: what the ROI figures count. The experiment's arms: resolved agent draws, holdouts
# and rejected drafts included (intent to treat, see control_group_uplift).
CONTACT = ~not_contacts()
ARM = Q(source=Intervention.Source.AGENT, outcome__in=[Outcome.SAVED, Outcome.CHURNED])


def _history_rows(*, since: dt.datetime | None = None) -> list[dict]:
    """The history grouped by the partner's tier and the action, with the contacts' counts,
    value retained and revenue at risk, and the experiment's arm figures: the one pass over
    the history (and the 1M partners it joins) that the Outcomes page's totals, both
    breakdowns and the uplift are folded from. Each was its own pass before (at 1M partners
    the uplift's alone cost 450-660 ms)."""
    revenue = F("partner__monthly_revenue")
    # A retained partner's saved contacts (RETAINED: the partner's status is the same on all
    # of them, so its saved contacts are the count without joining the partner again).
    saved_contacts_of_partner = (
        _contacts()
        .filter(outcome=Outcome.SAVED, partner=OuterRef("partner"))
        .order_by()
        .values("partner")
        .annotate(n=Count("pk"))
        .values("n")
    )
    qs = Intervention.objects.all()
    if since:
        qs = qs.filter(created_at__gte=since)
    rows = (
        qs.annotate(share=Subquery(saved_contacts_of_partner, output_field=IntegerField()))
        .values("partner__tier", "action")
        .annotate(
            n=Count("pk", filter=CONTACT),
            saved=Count("pk", filter=CONTACT & Q(outcome=Outcome.SAVED)),
            churned=Count("pk", filter=CONTACT & Q(outcome=Outcome.CHURNED)),
            pending=Count("pk", filter=CONTACT & Q(outcome=Outcome.PENDING)),
            saved_revenue=Coalesce(
                Sum(Cast(revenue, FloatField()) / F("share"), filter=CONTACT & RETAINED),
                Value(0.0),
                output_field=FloatField(),
            ),
            # Expected revenue lost without action: risk at the time times monthly revenue.
            revenue_at_risk=Coalesce(
                Sum(Coalesce("risk_at_action", Value(0.0)) * Cast(revenue, FloatField()), filter=CONTACT),
                Value(0.0),
                output_field=FloatField(),
            ),
            arm_n=Count("pk", filter=ARM),
            arm_churned=Count("pk", filter=ARM & Q(outcome=Outcome.CHURNED)),
            arm_contacts=Count("pk", filter=ARM & CONTACT),
            arm_revenue=Sum(revenue, filter=ARM),
        )
        .order_by("partner__tier", "action")
    )
    return list(rows)


def _contact_rows(rows: list[dict]) -> list[dict]:
    """The history rows with contacts (a tier or action nobody was contacted in has no group)."""
    return [r for r in rows if r["n"]]


def _group_figures(rows: list[dict], *, group_by: str, assumptions: RoiAssumptions) -> list[dict]:
    """Per group ("partner__tier" or "action") of the contact rows: counts, value retained by
    saved partners, predicted value and cost.

    A saved partner's revenue counts once, however many contacts it took: it is split
    evenly over the partner's saved contacts, so the groups add up to the total. A partner
    marked Saved who churned since retains nothing (the log flags it for correction)."""
    months = assumptions.months_of_revenue_saved
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


def _grouped(rows: list[dict], *, by: str, assumptions: RoiAssumptions) -> list[dict]:
    field = "partner__tier" if by == "tier" else "action"
    return _group_figures(rows, group_by=field, assumptions=assumptions)


def _labelled(groups: list[dict], *, by: str) -> list[dict]:
    if by == "tier":
        labels, order = dict(Partner.Tier.choices), list(Partner.Tier.values)
    else:
        labels, order = dict(Intervention.Action.choices), list(Intervention.Action.values)
    for group in groups:
        group["label"] = labels.get(group["key"], group["key"])
    return sorted(groups, key=lambda r: order.index(r["key"]) if r["key"] in order else 99)


def _totals(groups: list[dict]) -> dict:
    """The sums of one grouping's figures (each contact is in exactly one group)."""
    total = {k: sum((r[k] for r in groups), start=Decimal(0)) for k in ("value", "cost", "predicted_value")}
    total |= {k: sum(r[k] for r in groups) for k in ("n", "saved", "churned", "pending")}
    # Both distinct counts in one pass over the saved contacts.
    total |= (
        _contacts()
        .filter(outcome=Outcome.SAVED)
        .aggregate(
            saved_partners=Count("partner", distinct=True, filter=RETAINED),
            saved_then_churned=Count(
                "partner", distinct=True, filter=Q(partner__status=Partner.Status.CHURNED)
            ),
        )
    )
    resolved = total["saved"] + total["churned"]
    total["save_rate"] = total["saved"] / resolved if resolved else None
    total["roi"] = float(total["value"] / total["cost"]) if total["cost"] else None
    total["predicted_roi"] = float(total["predicted_value"] / total["cost"]) if total["cost"] else None
    total["net"] = total["value"] - total["cost"]
    return total


def roi_figures(*, assumptions: RoiAssumptions | None = None) -> dict:
    """The Outcomes page's figures, "totals", "by_tier", "by_action" and "uplift" (as
    control_group_uplift()), from one grouped pass over the history (and one over the saved
    contacts for the distinct partners)."""
    assumptions = assumptions or roi_assumptions()
    rows = _history_rows()
    contacts = _contact_rows(rows)
    by_action = _grouped(contacts, by="action", assumptions=assumptions)
    return {
        "totals": _totals(by_action),
        "by_tier": _labelled(_grouped(contacts, by="tier", assumptions=assumptions), by="tier"),
        "by_action": _labelled(by_action, by="action"),
        "uplift": _uplift(rows, assumptions=assumptions),
    }


def roi_breakdown(*, by: str, assumptions: RoiAssumptions | None = None) -> list[dict]:
    """ROI rows by "tier" or "action", labelled for display."""
    assumptions = assumptions or roi_assumptions()
    return _labelled(_grouped(_contact_rows(_history_rows()), by=by, assumptions=assumptions), by=by)


def roi_totals(*, assumptions: RoiAssumptions | None = None) -> dict:
    """Realized ROI (value retained by saved partners over cost) next to the predicted ROI."""
    assumptions = assumptions or roi_assumptions()
    return _totals(_grouped(_contact_rows(_history_rows()), by="action", assumptions=assumptions))


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
    return _uplift(_history_rows(since=since), assumptions=roi_assumptions(), z=z)


def _uplift(rows: list[dict], *, assumptions: RoiAssumptions, z: float = 1.959964) -> dict:
    """control_group_uplift() folded from the history rows' arm figures: the control arm is the
    holdout action's rows, the treated arm every other action's."""
    control = [r for r in rows if r["action"] == HOLDOUT]
    treated = [r for r in rows if r["action"] != HOLDOUT]
    # What the treated arm cost: contacts only (a rejected draft reached nobody, cost nothing).
    treated_cost = sum(
        (Decimal(assumptions.cost_of(r["action"])) * r["arm_contacts"] for r in treated), start=Decimal(0)
    )
    agg = {
        "control_n": sum(r["arm_n"] for r in control),
        "control_churned": sum(r["arm_churned"] for r in control),
        "treated_n": sum(r["arm_n"] for r in treated),
        "treated_churned": sum(r["arm_churned"] for r in treated),
        "treated_revenue": sum((r["arm_revenue"] or Decimal(0) for r in treated), start=Decimal(0)),
    }
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
