"""Request helpers every view uses the same way: which htmx partial to render, where a safe
`next` leads, and database ids that cannot overflow."""

from collections.abc import Iterable, Mapping

from django.http import HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme

from churnsite.access import HtmxHttpRequest

# The largest id PostgreSQL's bigint and SQLite's INTEGER hold; a bigger number in a URL or a
# filter raised OverflowError (a 500) on SQLite before it reached the database.
MAX_ID = 2**63 - 1


class IdConverter:
    """`<id:pk>` in URLs: 1 to 18 digits (always below MAX_ID); anything longer is a 404."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


def partial_template(
    request: HtmxHttpRequest, template: str, partials: Iterable[str] | Mapping[str, str]
) -> str:
    """The one way a view picks an htmx partial: by the id of the element the request swaps
    (htmx sends it as HX-Target). `partials` lists partial names that equal their element's
    id, or maps an id to its partial ({"crm-views": "views_nav"}). A plain or boosted
    request, or a target the page has no partial for, gets the whole page."""
    by_target = partials if isinstance(partials, Mapping) else {name: name for name in partials}
    htmx = request.htmx
    if htmx and not htmx.boosted and htmx.target is not None and htmx.target in by_target:
        return f"{template}#{by_target[htmx.target]}"
    return template


def safe_next(request: HttpRequest, default: str) -> str:
    """The `next` the form carried if it stays on this site, else `default` (issue 9:
    `next=//evil.example/x` redirected off-site)."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default
