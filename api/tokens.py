"""API tokens: created (shown once), looked up by their hash, revoked; and the per-token rate limit."""

import datetime as dt
import hashlib
import logging
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from redis.exceptions import RedisError

from agent.audit import audit_record
from api.models import ApiToken
from churnsite.access import MANAGERS, RETENTION, permissions_sql, user_access_prime

log = logging.getLogger(__name__)

TOKEN_PREFIX = "cs_"
# last_used_at is written at most this often per token: not one UPDATE per API request.
LAST_USED_EVERY = dt.timedelta(seconds=60)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def api_token_create(*, user: User, name: str, actor: User) -> tuple[ApiToken, str]:
    """A new token for `user`; returns the row and the token itself (which is never stored)."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Name the token (what system will use it)"})
    if actor.pk != user.pk and not actor.has_perm("api.change_apitoken"):
        raise PermissionDenied("Only a manager can create a token for someone else")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(user=user, name=name[:100], key_hash=token_hash(token), prefix=token[:10])
    audit_record(
        event_type="api_token_created",
        actor=actor,
        payload={"token": row.pk, "user": user.pk, "name": row.name, "prefix": row.prefix},
    )
    return row, token


@transaction.atomic
def api_token_revoke(*, token: ApiToken, actor: User) -> ApiToken:
    """Revoke a token (its owner, or a manager); it answers 401 from now on."""
    if actor.pk != token.user_id and not actor.has_perm("api.change_apitoken"):
        raise PermissionDenied("Only the token's owner or a manager can revoke it")
    locked = ApiToken.objects.select_for_update().get(pk=token.pk)
    if locked.revoked_at is None:
        locked.revoked_at, locked.revoked_by = timezone.now(), actor
        locked.save(update_fields=["revoked_at", "revoked_by", "updated_at"])
        audit_record(
            event_type="api_token_revoked",
            actor=actor,
            payload={"token": locked.pk, "user": locked.user_id, "prefix": locked.prefix},
        )
    return locked


# One statement for what every API request needs: the token, its user, the user's role and
# permissions. Through the ORM these were three queries whose compiling alone was 8 of a
# partners page's 13 ms of CPU (bench/api_bench.py).
_AUTH_SQL = """
SELECT u.*, t.id AS token_id, t.name AS token_name, t.prefix AS token_prefix,
       t.last_used_at AS token_last_used_at,
       EXISTS (SELECT 1 FROM auth_user_groups ug JOIN auth_group g ON g.id = ug.group_id
               WHERE ug.user_id = u.id AND g.name = %s) AS in_managers,
       EXISTS (SELECT 1 FROM auth_user_groups ug JOIN auth_group g ON g.id = ug.group_id
               WHERE ug.user_id = u.id AND g.name = %s) AS in_retention,
       {permissions} AS permissions
FROM api_apitoken t JOIN auth_user u ON u.id = t.user_id
WHERE t.key_hash = %s AND t.revoked_at IS NULL AND u.is_active
"""


def api_token_authenticate(token: str) -> ApiToken | None:
    """The active token (with its user, role and permissions) for a presented token, and its
    last use noted."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    sql = _AUTH_SQL.format(permissions=permissions_sql(connection.vendor, "u.id"))
    # Any: the row carries the extra columns (token_*, in_*, permissions) as attributes.
    user: Any = next(iter(User.objects.raw(sql, [MANAGERS, RETENTION, token_hash(token)])), None)
    if user is None:
        return None
    user_access_prime(
        user, in_managers=user.in_managers, in_retention=user.in_retention, permissions=user.permissions
    )
    last_used = user.token_last_used_at
    # SQLite hands an extra column back as text or a naive datetime (in UTC).
    if isinstance(last_used, str):
        last_used = parse_datetime(last_used)
    if last_used is not None and timezone.is_naive(last_used):
        last_used = timezone.make_aware(last_used, dt.UTC)
    row = ApiToken(
        id=user.token_id, user=user, name=user.token_name, prefix=user.token_prefix, last_used_at=last_used
    )
    row._state.adding, row._state.db = False, "default"
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
        # Conditional: of concurrent requests one writes, the others find it fresh.
        stale = dt.datetime.min.replace(tzinfo=dt.UTC) if row.last_used_at is None else now - LAST_USED_EVERY
        ApiToken.objects.filter(pk=row.pk).exclude(last_used_at__gt=stale).update(last_used_at=now)
        row.last_used_at = now
    return row


def rate_limit_hit(*, token_id: int, now: float | None = None) -> int | None:
    """Count one request of this token in the current window. Returns None when allowed, else the
    seconds until the window ends (Retry-After). Without Redis the cache drops the count and the
    request is allowed: the API degrades like the rest of the site instead of failing."""
    limit, window = settings.API_RATE_LIMIT, max(1, settings.API_RATE_WINDOW)
    if limit <= 0:
        return None
    now = timezone.now().timestamp() if now is None else now
    start = int(now // window) * window
    key = f"api-rate:{token_id}:{start}"
    count = _window_count(key, ttl=window + 5)
    if count is None or count <= limit:
        return None
    return max(1, int(start + window - now + 0.999))


def _window_count(key: str, *, ttl: int) -> int | None:
    """The key's count with this request, or None when nothing can count (Redis down)."""
    redis_client = getattr(cache, "client", None)  # django-redis
    if redis_client is None:  # the local-memory cache (no REDIS_URL)
        cache.add(key, 0, timeout=ttl)
        try:
            return cache.incr(key)
        except ValueError:
            return None
    # One round trip on every API request instead of add() then incr(): INCR starts a missing
    # counter at 1 (atomic), EXPIRE keeps it no longer than its window needs.
    full_key = redis_client.make_key(key)
    try:
        pipe = redis_client.get_client(write=True).pipeline(transaction=False)
        pipe.incr(full_key)
        pipe.expire(full_key, ttl)
        count, _ = pipe.execute()
    except (RedisError, OSError):
        return None
    return int(count)
