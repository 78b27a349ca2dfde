from django.contrib.auth.decorators import login_not_required
from django.core.paginator import Paginator
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from retention import selectors
from retention.forms import PartnerFilterForm


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and `make demo`: database and broker reachability."""
    from churnsite.health import broker_status

    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True, "vendor": connection.vendor}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = {"ok": False, "error": str(exc)[:200]}
    checks["broker"] = broker_status()
    ok = checks["database"]["ok"] and checks["broker"]["ok"]
    return JsonResponse({"status": "ok" if ok else "degraded", **checks}, status=200 if ok else 503)


def partner_list(request: HttpRequest) -> HttpResponse:
    form = PartnerFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    partners = selectors.partner_list(
        search=filters.get("q", ""), tier=filters.get("tier", ""), status=filters.get("status", "")
    )
    page = Paginator(partners, 50).get_page(request.GET.get("page"))
    template = "retention/partner_list.html"
    if request.htmx:
        template += "#results"
    return render(request, template, {"form": form, "page": page})
