"""/api/v1/: the NinjaAPI, its error answers, and the docs' access check.

Why django-ninja (not DRF): the API is a thin layer over existing services and selectors, not
over model serializers; ninja's typed function views match the site's function views, and its
OpenAPI document comes from the same pydantic types that validate requests (pydantic is already
installed with the openai client)."""

from collections.abc import Callable
from functools import wraps
from typing import Any

import pydantic_core
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import path
from ninja import NinjaAPI
from ninja.errors import AuthenticationError
from ninja.renderers import BaseRenderer
from ninja.responses import NinjaJSONEncoder

from api import reads, writes
from api.auth import AUTH, RateLimited, TokenAuth
from churnsite.access import user_role


def docs_access(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The schema and the interactive docs: for a user with a role (session) or a valid token."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            header = request.headers.get("Authorization", "")
            user = None
            if header.lower().startswith("bearer "):
                try:
                    user = TokenAuth().authenticate(request, header[7:].strip())
                except RateLimited as exc:
                    return _rate_limited(exc)
                except AuthenticationError:
                    user = None
            if user is None:
                if request.path.endswith("/docs"):
                    return redirect_to_login(request.get_full_path())
                return JsonResponse({"detail": "Unauthorized"}, status=401)
        if user_role(request.user) is None:
            return JsonResponse({"detail": "Your account has no role"}, status=403)
        return view(request, *args, **kwargs)

    return wrapped


@docs_access
def api_home(request: HttpRequest) -> HttpResponse:
    return redirect("api-v1:openapi-view")


api_root = path("", api_home, name="api-root")


class JSONRenderer(BaseRenderer):
    """Answers encoded by pydantic-core (Rust): a page of 50 partners in 0.25 ms instead of
    json.dumps' 1.4 ms, whose Python-level default() ran for every date (bench/api_bench.py).
    A type it does not know (a lazy string) falls back to ninja's encoder."""

    media_type = "application/json"
    _fallback = staticmethod(NinjaJSONEncoder().default)

    def render(self, request: HttpRequest, data: Any, *, response_status: int) -> bytes:
        return pydantic_core.to_json(data, fallback=self._fallback)


api = NinjaAPI(
    title="churnsite API",
    version="1",
    description="Partners, risk scores, interventions and outcomes of the retention desk (docs/api.md).",
    urls_namespace="api-v1",
    auth=AUTH,
    docs_decorator=docs_access,
    renderer=JSONRenderer(),
)
api.add_router("", reads.router)
api.add_router("", writes.router)


def _rate_limited(exc: RateLimited) -> HttpResponse:
    response = JsonResponse({"detail": str(exc)}, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(RateLimited)
def rate_limited(request: HttpRequest, exc: RateLimited) -> HttpResponse:
    return _rate_limited(exc)


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return api.create_response(request, {"detail": "; ".join(exc.messages)}, status=400)


@api.exception_handler(PermissionDenied)
def permission_denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Not allowed"}, status=403)
