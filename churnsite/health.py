from django.conf import settings


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
