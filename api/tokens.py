"""API tokens: created (shown once), looked up by their hash, revoked; and the per-token rate limit."""

import datetime as dt
import hashlib
import logging
import secrets

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from agent.audit import audit_record
from api.models import ApiToken
from churnsite.access import MANAGERS, RETENTION

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


def api_token_authenticate(token: str) -> ApiToken | None:
    """The active token (with its user) for a presented token, and its last use noted."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    memberships = User.groups.through.objects.filter(user_id=OuterRef("user_id"))
    row = (
        ApiToken.objects.select_related("user")
        # The caller's role with the token, in the same query (as DeskModelBackend does for the
        # session's user): one query fewer on every API request.
        .annotate(
            in_managers=Exists(memberships.filter(group__name=MANAGERS)),
            in_retention=Exists(memberships.filter(group__name=RETENTION)),
        )
        .filter(key_hash=token_hash(token), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if row is None:
        return None
    if not row.user.is_superuser:
        # What churnsite.access.user_role would otherwise query for.
        role = MANAGERS if row.in_managers else RETENTION if row.in_retention else None
        setattr(row.user, "_churnsite_role", role)  # noqa: B010 - not a declared attribute of User
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
    try:
        # add() sets the counter only if missing; incr() is atomic in Redis.
        cache.add(key, 0, timeout=window + 5)
        count = cache.incr(key)
    except ValueError:  # the key vanished between add and incr (Redis down, or evicted)
        return None
    if count is None or count <= limit:
        return None
    return max(1, int(start + window - now + 0.999))
