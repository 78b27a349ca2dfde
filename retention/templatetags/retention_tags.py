from decimal import Decimal

from django import template

from ml.models import Bucket

register = template.Library()

# Below the at-risk level ("later") a partner is "Low risk": grey, not a reassuring green
# forecast of churn "> 90 days".
URGENCY_ICONS = {"7d": "🔴", "30d": "🟠", "90d": "🟡", "later": "⚪"}
BUCKET_LABELS = dict(Bucket.choices)


@register.filter
def pct(value, digits: int = 0) -> str:
    """0.943 -> "94%"; None -> "—"."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.{int(digits)}f}%"


@register.filter
def signed_pct(value, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{float(value) * 100:+.{int(digits)}f} pts"


@register.filter
def signed_percent(value, digits: int = 0) -> str:
    """1.5 -> "+150%" (an ROI: money back per unit spent, net of the spend)."""
    if value is None:
        return "—"
    return f"{float(value) * 100:+,.{int(digits)}f}%".replace("-", "−")


@register.filter
def urgency_icon(bucket: str) -> str:
    return URGENCY_ICONS.get(bucket, "⚪")


@register.filter
def bucket_label(bucket: str) -> str:
    return BUCKET_LABELS.get(bucket, bucket or "—")


SHORT_WINDOWS = (("7d", "~7 d"), ("30d", "~30 d"), ("90d", "~90 d"))


def churn_in(bucket: str) -> str:
    """What a row says about timing: the churn window at or above the at-risk level (the
    stored bucket is "later" below it), else "Low risk"."""
    return "Low risk" if bucket in ("later", "", None) else f"Churn in: {bucket_label(bucket)}"


def if_it_churns(risk, p_7d, p_30d, p_90d) -> str:
    """ "If it churns: ~7 d 62%, ~30 d 30%, ~90 d 8%": the window probabilities given churn
    within 90 days (p_k / risk), the ones the shown window is the largest of."""
    if not risk:
        return ""
    parts = [
        f"{label} {float(p) / float(risk):.0%}"
        for (_, label), p in zip(SHORT_WINDOWS, (p_7d, p_30d, p_90d), strict=True)
    ]
    return "If it churns: " + ", ".join(parts)


@register.simple_tag
def churn_window_note(score) -> str:
    return if_it_churns(score.risk, score.p_7d, score.p_30d, score.p_90d) if score else ""


@register.filter
def churn_in_label(bucket: str) -> str:
    return churn_in(bucket)


@register.filter
def money(value) -> str:
    """12345.6 -> "$12,346"."""
    if value is None or value == "":
        return "—"
    amount = Decimal(value)
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,.0f}"


@register.filter
def ratio(value) -> str:
    return "—" if value is None else f"{float(value):.2f}x"


@register.filter
def member_name(user) -> str:
    if user is None:
        return "—"
    return user.get_full_name() or user.username
