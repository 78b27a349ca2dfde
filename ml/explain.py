"""SHAP contributions -> drivers in words (no Django).

A driver is ``{"feature", "text", "value", "points"}``: ``points`` is the signed push on the
displayed risk in percentage points. One-hot columns are summed back into the attribute
they encode (a partner "is a reseller"; it is not "not a merchant" and "not a referral").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ml.features import REGIONS, SEGMENTS, TIERS

_REGION_NAMES = {"na": "North America", "emea": "EMEA", "apac": "APAC", "latam": "LATAM"}


# Short names for charts of the model as a whole (the Model page's importance bars).
FEATURE_LABELS = {
    "tenure_days": "Tenure",
    "tier_rank": "Tier",
    "segment": "Segment",
    "region": "Region",
    "monthly_revenue": "Plan revenue",
    "revenue_3m": "Revenue, last 3 months",
    "revenue_vs_plan_1m": "Revenue vs plan, last month",
    "revenue_vs_plan_3m": "Revenue vs plan, 3 months",
    "revenue_vs_plan_12m": "Revenue vs plan, 12 months",
    "revenue_vs_plan_ewm": "Revenue vs plan, weighted",
    "revenue_vs_plan_change_1m": "Revenue vs plan, change",
    "transactions_1m": "Transactions, last month",
    "transactions_3m": "Transactions, 3 months",
    "transactions_log_trend_1v3": "Transactions, last month vs 3",
    "transactions_log_trend_3v3": "Transactions, 3 vs prior 3",
    "active_users_1m": "Active users, last month",
    "support_tickets_1m": "Support tickets, last month",
    "months_of_history": "Months of history",
    "active_users_vs_peak": "Active users vs peak",
    "active_users_3m": "Active users, 3 months",
    "transactions_trend_3m": "Transactions trend",
    "revenue_trend_3m": "Revenue trend",
    "active_users_trend_3m": "Active users trend",
    "trend_velocity": "Decline velocity",
    "support_tickets_3m": "Support tickets, 3 months",
    "tickets_per_user_3m": "Tickets per active user",
    "days_since_last_payment": "Days since last payment",
    "days_overdue": "Days overdue",
    "overdue_invoices": "Overdue invoices",
    "late_days_90d": "Days late, 90 days",
    "late_max_90d": "Worst lateness, 90 days",
    "days_to_pay_last": "Days to pay, latest invoice",
    "last_invoice_open": "Latest invoice unpaid",
    "days_to_pay_3m": "Days to pay, 3 months",
    "late_share_12m": "Share paid late, 12 months",
    "avg_days_late_12m": "Average days late, 12 months",
    "historical_churn_rate": "Peer churn rate",
    "historical_churn_speed": "Peer churn speed",
    "transactions_vs_year_1m": "Transactions, last month vs the year",
    "transactions_vs_year_2m": "Transactions, month before last vs the year",
    "active_users_vs_3m_1m": "Active users, last month vs 3",
    "support_tickets_vs_year_1m": "Support tickets, last month vs the year",
    "transactions_last_2w": "Transactions, last 2 weeks of last month",
    "transactions_last_1w": "Transactions, last week of last month",
    "transactions_2w_vs_rest_1m": "Transactions, last 2 weeks vs the month's start",
    "transactions_1w_vs_rest_1m": "Transactions, last week vs the month's start",
    "transactions_2w_vs_year": "Transactions, last 2 weeks vs the year",
    "transactions_step_days": "Transactions, days since a step down",
    "transactions_step_level": "Transactions, level after a step down",
    "transactions_step_strength": "Transactions, how clear a step down is",
    "transactions_step_age_days": "Transactions, days since a step down (to the score's date)",
    "data_age_days": "Days since the last complete month",
}
# Inputs that are the same for every partner scored on a day (how old the monthly rows are):
# they move everybody's risk alike, so they are no reason for one partner and never a driver.
NOT_DRIVERS = frozenset({"data_age_days"})


def feature_label(feature: str) -> str:
    """A column's name for people; a team's own CSV columns keep theirs."""
    for prefix, names in (("segment_", None), ("region_", _REGION_NAMES)):
        if feature.startswith(prefix) and feature not in FEATURE_LABELS:
            value = feature.removeprefix(prefix)
            shown = (names or {}).get(value, value.title())
            return f"{prefix[:-1].title()}: {shown}"
    return FEATURE_LABELS.get(feature, feature)


def group_contributions(model, points: np.ndarray, values) -> list[dict]:
    features = model.features
    if model.kind == "csv":
        return _csv_contributions(model, points, values)
    by_name = dict(zip(features, values, strict=True))
    grouped: dict[str, dict] = {}
    for j, name in enumerate(features):
        if name.startswith("segment_"):
            g = grouped.setdefault("segment", {"feature": "segment", "value": None, "points": 0.0})
            g["points"] += float(points[j])
            if by_name[name] >= 0.5:
                g["value"] = name.removeprefix("segment_")
        elif name.startswith("region_"):
            g = grouped.setdefault("region", {"feature": "region", "value": None, "points": 0.0})
            g["points"] += float(points[j])
            if by_name[name] >= 0.5:
                g["value"] = name.removeprefix("region_")
        elif name not in NOT_DRIVERS:
            grouped[name] = {"feature": name, "value": float(by_name[name]), "points": float(points[j])}
    # Comparisons say against what: a driver's sentence may quote the partner's other values.
    context = {k: float(v) for k, v in by_name.items()}
    for g in grouped.values():
        g["context"] = context
    if "historical_churn_speed" in grouped:
        grouped["historical_churn_speed"]["rate"] = by_name.get("historical_churn_rate")
    return list(grouped.values())


def _csv_contributions(model, points, row) -> list[dict]:
    onehot = model.schema.get("onehot", {})
    grouped: dict[str, dict] = {}
    for j, name in enumerate(model.features):
        value = row[name]
        if name in onehot:
            column, category = onehot[name]
            g = grouped.setdefault(column, {"feature": column, "value": None, "points": 0.0})
            g["points"] += float(points[j])
            if value >= 0.5:
                g["value"] = category
        else:
            v = float(value) if value == value else None
            grouped[name] = {"feature": name, "value": v, "points": float(points[j])}
    return list(grouped.values())


def _pct(v: float) -> str:
    return f"{abs(v) * 100:.0f}%"


def _trend_text(what: str, v: float) -> str:
    if abs(v) < 0.005:
        return f"{what} flat over 3 months"
    return f"{what} {'down' if v < 0 else 'up'} {_pct(v)} in 3 months"


def _count(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 10 or float(v).is_integer() else f"{v:,.1f}"


def _versus(
    what: str, now: float, before: float, *, now_span: str, before_span: str, money: bool = False
) -> str:
    """'Transactions 2 last month, vs 16 a month over the 3 months before'."""
    fmt = (lambda x: f"${x:,.0f}") if money else _count
    return f"{what} {fmt(now)} {now_span}, vs {fmt(max(before, 0.0))} {before_span}"


def _before_log(now: float, v: float) -> float | None:
    """The earlier value behind a log trend, v = log((now + 1) / (before + 1))."""
    return (now + 1) / math.exp(v) - 1


def _before_ratio(now: float, v: float) -> float | None:
    """The earlier value behind a relative trend, now = before * (1 + v) (none at -100%)."""
    return now / (1 + v) if v > -1 else None


@dataclass(frozen=True)
class _Trend:
    """A trend feature said as its two numbers: the partner's value now (`now_key` in the
    context) against the earlier value the trend implies."""

    what: str
    now_key: str
    before: Callable[[float, float], float | None]
    now_span: str = "a month over the last 3 months"
    before_span: str = "over the 3 before"
    money: bool = False


_TRENDS = {
    "transactions_log_trend_1v3": _Trend(
        "Transactions",
        "transactions_1m",
        _before_log,
        now_span="last month",
        before_span="a month over the 3 months before",
    ),
    "transactions_log_trend_3v3": _Trend("Transactions", "transactions_3m", _before_log),
    "transactions_trend_3m": _Trend("Transactions", "transactions_3m", _before_ratio),
    "revenue_trend_3m": _Trend("Revenue", "revenue_3m", _before_ratio, money=True),
    "active_users_trend_3m": _Trend("Active users", "active_users_3m", _before_ratio),
}


def _comparison(feature: str, v: float, ctx: dict[str, float]) -> str | None:
    """The sentences that compare two numbers, with both numbers (None: not enough context)."""
    trend = _TRENDS.get(feature)
    if trend is not None:
        now = ctx.get(trend.now_key)
        before = trend.before(now, v) if now is not None else None
        if now is None or before is None:
            return None
        return _versus(
            trend.what, now, before, now_span=trend.now_span, before_span=trend.before_span, money=trend.money
        )
    plan = ctx.get("monthly_revenue") or 0.0
    last2w, month = ctx.get("transactions_last_2w"), ctx.get("transactions_1m")
    match feature:
        case "transactions_2w_vs_rest_1m" | "transactions_1w_vs_rest_1m" if last2w is not None and month:
            week = feature.startswith("transactions_1w")
            count = ctx.get("transactions_last_1w", 0.0) if week else last2w
            span = "week" if week else "2 weeks"
            return (
                f"Transactions {_count(count)} in the last {span} of last month, at {v * 100:.0f}% of the daily rate "
                f"earlier that month ({_count(max(month - last2w, 0.0))} before its last 2 weeks)"
            )
        case (
            "transactions_step_days"
            | "transactions_step_level"
            | "transactions_step_strength"
            | "transactions_step_age_days"
        ) if "transactions_step_days" in ctx:
            return _step_text(ctx)
        case "transactions_2w_vs_year" if last2w is not None and v > 0:
            usual = max((last2w + 0.5) / v - 0.5, 0.0)
            return (
                f"Transactions {_count(last2w)} in the last 2 weeks of last month, vs {_count(usual)} "
                "in a usual fortnight over the year before"
            )
        case "tickets_per_user_3m" if "support_tickets_3m" in ctx:
            # The ratio never hides its denominator, least of all a zero one.
            tickets, users = ctx["support_tickets_3m"], ctx.get("active_users_3m") or 0.0
            n = f"{tickets:.0f} support ticket{'s' if tickets != 1 else ''} in 3 months"
            if users < 0.5:
                return f"{n}, with no active users"
            return f"{n} from {_count(users)} active user{'s' if round(users) != 1 else ''} a month"
        case "active_users_vs_peak" if "active_users_1m" in ctx:
            now = ctx["active_users_1m"]
            if v <= 0:
                return "No active users last month"
            return f"{now:.0f} active users last month, vs a peak of {now / v:.0f} this year"
        case "revenue_vs_plan_1m" if plan:
            return f"Revenue ${v * plan:,.0f} last month, {v * 100:.0f}% of the ${plan:,.0f} plan"
        case "revenue_vs_plan_3m" if plan:
            return f"Revenue ${v * plan:,.0f} a month over 3 months, {v * 100:.0f}% of the ${plan:,.0f} plan"
        case "revenue_vs_plan_12m" if plan:
            return f"Revenue ${v * plan:,.0f} a month over 12 months, {v * 100:.0f}% of the ${plan:,.0f} plan"
        case "revenue_vs_plan_change_1m" if plan:
            return (
                f"Revenue {'down' if v < 0 else 'up'} ${abs(v) * plan:,.0f} last month against the month before "
                f"({abs(v) * 100:.0f}% of the ${plan:,.0f} plan)"
            )
    return None


def _step_text(ctx: dict[str, float]) -> str:
    days, level = ctx["transactions_step_days"], ctx.get("transactions_step_level", 1.0)
    if days <= 0:
        return "No step down in daily transactions over the last 2 months"
    clear = "clearly" if ctx.get("transactions_step_strength", 0.0) >= 3 else "perhaps"
    when = f"{days:.0f} days before the end of last month"
    age = ctx.get("transactions_step_age_days", days)
    if age > days:  # scored after the month's end: say how long ago, counted to the score's date
        when = f"{age:.0f} days ago ({when})"
    return f"Daily transactions {clear} stepped down to about {level * 100:.0f}% of their usual rate {when}"


def _text(feature: str, v, c: dict) -> str:
    if isinstance(v, float) and c.get("context"):
        compared = _comparison(feature, v, c["context"])
        if compared:
            return compared
    match feature:
        case "days_overdue":
            return f"Payment {v:.0f} days overdue" if v > 0 else "No overdue payment"
        case "overdue_invoices":
            return f"{v:.0f} invoice{'s' if v != 1 else ''} overdue" if v > 0 else "No overdue invoices"
        case "days_since_last_payment":
            return f"Last payment {v:.0f} days ago"
        case "late_share_12m":
            return f"{_pct(v)} of invoices paid late (12 months)"
        case "avg_days_late_12m":
            return f"Invoices paid {v:.0f} days late on average" if v >= 0.5 else "Invoices paid on time"
        case "transactions_trend_3m":
            return _trend_text("Transactions", v)
        case "revenue_trend_3m":
            return _trend_text("Revenue", v)
        case "active_users_trend_3m":
            return _trend_text("Active users", v)
        case "trend_velocity":
            if abs(v) < 0.005:
                return "Activity steady month to month over 6 months"
            return f"Activity {'declining' if v > 0 else 'growing'} {_pct(v)} a month over 6 months (transactions and revenue)"
        case "support_tickets_3m":
            return f"{v:.0f} support ticket{'s' if v != 1 else ''} in 3 months"
        case "tickets_per_user_3m":
            return f"{v:.1f}".removesuffix(".0") + " support tickets per active user in 3 months"
        case "tenure_days":
            months = v / 30.44
            return f"Partner for {months:.0f} month{'s' if round(months) != 1 else ''}"
        case "tier_rank":
            return f"{TIERS[int(round(v))].title()} tier" if 0 <= v < len(TIERS) else "Tier"
        case "segment":
            return f"{v.title()} segment" if v in SEGMENTS else "Segment"
        case "region":
            return f"{_REGION_NAMES.get(v, v)} region" if v in REGIONS else "Region"
        case "monthly_revenue":
            return f"Plan revenue ${v:,.0f} a month"
        case "revenue_vs_plan_1m":
            return f"Last month's revenue at {v * 100:.0f}% of plan"
        case "revenue_vs_plan_3m":
            return f"Revenue at {v * 100:.0f}% of plan (last 3 months)"
        case "revenue_vs_plan_12m":
            return f"Revenue at {v * 100:.0f}% of plan (last 12 months)"
        case "revenue_vs_plan_ewm":
            return f"Recent revenue at {math.exp(v) * 100:.0f}% of plan (weighted)"
        case "transactions_1m":
            return f"{v:,.0f} transactions last month"
        case "transactions_log_trend_1v3" | "transactions_log_trend_3v3":
            return _trend_text("Transactions", math.exp(v) - 1).replace(
                "in 3 months", "last month" if feature.endswith("1v3") else "in 3 months"
            )
        case "active_users_1m":
            return f"{v:.0f} active users last month"
        case "support_tickets_1m":
            return f"{v:.0f} support ticket{'s' if v != 1 else ''} last month"
        case "months_of_history":
            return f"{v:.0f} months of activity on record"
        case "active_users_vs_peak":
            return f"Active users at {v * 100:.0f}% of the year's peak"
        case "transactions_vs_year_1m":
            return f"Transactions last month at {v * 100:.0f}% of its monthly average over the year before"
        case "transactions_vs_year_2m":
            return f"Transactions the month before last at {v * 100:.0f}% of its monthly average over the year before"
        case "active_users_vs_3m_1m":
            return f"Active users last month at {v * 100:.0f}% of the 3 months before"
        case "support_tickets_vs_year_1m":
            return (
                f"Support tickets last month {abs(v):.1f} {'above' if v >= 0 else 'below'} "
                "its monthly average over the year before"
            )
        case "transactions_last_2w":
            return f"{v:,.0f} transactions in the last 2 weeks of last month"
        case "transactions_last_1w":
            return f"{v:,.0f} transactions in the last week of last month"
        case "transactions_2w_vs_rest_1m":
            return f"Transactions in the last 2 weeks of last month at {v * 100:.0f}% of the month's earlier rate"
        case "transactions_1w_vs_rest_1m":
            return (
                f"Transactions in the last week of last month at {v * 100:.0f}% of the month's earlier rate"
            )
        case "transactions_2w_vs_year":
            return f"Transactions in the last 2 weeks of last month at {v * 100:.0f}% of its usual rate"
        case "transactions_step_days":
            return (
                f"Daily transactions stepped down {v:.0f} days before the end of last month"
                if v > 0
                else "No step down in daily transactions over the last 2 months"
            )
        case "transactions_step_age_days":
            return (
                f"Daily transactions stepped down {v:.0f} days ago"
                if v > 0
                else "No step down in daily transactions over the last 2 months"
            )
        case "transactions_step_level":
            return f"Daily transactions at about {v * 100:.0f}% of their usual rate after a step down"
        case "transactions_step_strength":
            return (
                "A clear step down in daily transactions"
                if v >= 3
                else "No clear step down in daily transactions"
            )
        case "days_to_pay_last":
            return f"Latest invoice: {v:.0f} days from issue to payment (or so far)"
        case "last_invoice_open":
            return "Latest invoice still unpaid" if v >= 0.5 else "Latest invoice paid"
        case "days_to_pay_3m":
            return f"Invoices take {v:.0f} days to get paid (last 3 months)"
        case "late_max_90d":
            return f"Latest invoices up to {v:.0f} days late" if v >= 0.5 else "Recent invoices paid on time"
        case "revenue_vs_plan_change_1m":
            return f"Revenue {'down' if v < 0 else 'up'} {abs(v) * 100:.0f} pts of plan last month"
        case "late_days_90d":
            return (
                f"Recent invoices {v:.0f} days late on average"
                if v >= 0.5
                else "Recent invoices paid on time"
            )
        case "revenue_3m":
            return f"Revenue ${v:,.0f} a month (last 3 months)"
        case "transactions_3m":
            return f"{v:,.0f} transactions a month"
        case "active_users_3m":
            return f"{v:.0f} active users"
        case "historical_churn_rate":
            return f"Similar partners (same tier and segment): {_pct(v)} churn within 90 days"
        case "historical_churn_speed":
            return f"Similar partners who churned went in ~{v:.0f} days"
    if v is None:
        return f"{feature}: missing"
    if isinstance(v, float):
        return f"{feature} = {v:,.4g}"
    return f"{feature} = {v}"


def describe(c: dict) -> dict:
    value = c["value"]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, float):
        value = round(value, 4)
    return {
        "feature": c["feature"],
        "text": _text(c["feature"], c["value"], c),
        "value": value,
        "points": round(float(c["points"]), 1),
    }
