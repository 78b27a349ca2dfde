import datetime as dt

from django import template
from django.template.defaultfilters import truncatechars

register = template.Library()


@register.filter
def audit_value(value) -> str:
    """An audit payload value for the activity log: floats rounded (risk=0.591, not 17
    digits), long text cut; the stored event keeps the full value."""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, str) and len(value) > 19 and value[10:11] == "T":
        try:  # an ISO timestamp: to the minute, in UTC as stored
            return dt.datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M")
        except ValueError:
            pass
    return truncatechars(str(value), 60)


@register.filter
def percent(value) -> str:
    """0.873 -> "87%" (a share for people)."""
    try:
        return f"{float(value) * 100:.0f}%"
    except (TypeError, ValueError):
        return ""
