from decimal import Decimal

from django import template

from ml.models import Bucket

register = template.Library()

URGENCY_ICONS = {"7d": "🔴", "30d": "🟠", "90d": "🟡", "later": "🟢"}
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
def urgency_icon(bucket: str) -> str:
    return URGENCY_ICONS.get(bucket, "⚪")


@register.filter
def bucket_label(bucket: str) -> str:
    return BUCKET_LABELS.get(bucket, bucket or "—")


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
