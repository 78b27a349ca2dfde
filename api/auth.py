"""Who calls the API: a per-user token (Authorization: Bearer ...) or the browser's session (with
its CSRF token on writes). The caller's own role and permissions apply (churnsite.access), the
same as on the site's pages; a refused write is audited as `access_refused`, as on the site."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.models import User
from django.http import HttpRequest
from ninja.errors import AuthenticationError, HttpError
from ninja.security import HttpBearer, SessionAuth

from api.tokens import api_token_authenticate, rate_limit_hit
from churnsite.access import access_refusal, audit_refused_write


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many requests for this token: retry in {retry_after} s")
        self.retry_after = retry_after


class TokenAuth(HttpBearer):
    openapi_description = "A personal API token from /profile/tokens/ (`Authorization: Bearer cs_...`)"

    def authenticate(self, request: HttpRequest, token: str) -> User | None:
        row = api_token_authenticate(token)
        if row is None:
            # A token that was presented and is wrong, revoked or expired is refused outright,
            # even beside a session cookie: the caller meant to be that token.
            raise AuthenticationError()
        retry_after = rate_limit_hit(token_id=row.pk)
        if retry_after is not None:
            raise RateLimited(retry_after)
        request.user = row.user
        request.api_token = row  # type: ignore[attr-defined]
        return row.user


class BrowserSessionAuth(SessionAuth):
    """The logged-in browser (the interactive docs); ninja checks the CSRF token on writes."""

    openapi_description = "The site's session cookie (writes need the CSRF token in X-CSRFToken)"


AUTH = [TokenAuth(), BrowserSessionAuth()]


def _refuse(request: HttpRequest, *, perm: str, message: str) -> HttpError:
    audit_refused_write(request, permission=perm, via="api")
    return HttpError(403, message)


def needs(perm: str, *, message: str = "Your role does not allow this.") -> Callable:
    """The access check on every API operation, like churnsite.access.permission_required:
    a role, and `perm`. Read by the API permission test (`access_permission`)."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            refusal = access_refusal(request.user, perm, message)
            if refusal is not None:
                raise _refuse(request, perm=perm, message=refusal)
            return view(request, *args, **kwargs)

        wrapped.access_permission = perm  # type: ignore[attr-defined]
        return wrapped

    return decorator
