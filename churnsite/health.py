"""Is the site up: the broker's state (the Agent page, the import page) and /healthz."""

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def broker_status() -> dict:
    """Is the Celery broker reachable? Without REDIS_URL the demo runs tasks in-process."""
    if not settings.REDIS_URL:
        return {"ok": True, "mode": "in-process (no REDIS_URL)"}
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        return {"ok": True, "mode": "redis"}
    except redis.RedisError as exc:
        return {"ok": False, "mode": "redis", "error": str(exc)[:200]}


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """For load balancers and `make demo`: "ok" (200); "degraded" (503) when only the broker is
    down (pages, logins and sessions work from the database, tasks wait in it); "down" (503)
    when the database is."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True, "vendor": connection.vendor}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = {"ok": False, "error": str(exc)[:200]}
    checks["broker"] = broker_status()
    if not checks["database"]["ok"]:
        status = "down"
    elif not checks["broker"]["ok"]:
        status = "degraded"
    else:
        status = "ok"
    return JsonResponse({"status": status, **checks}, status=200 if status == "ok" else 503)
