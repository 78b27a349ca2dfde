"""Who may do what, in one place (the permission matrix in the README).

- The roles are two groups; `GROUP_PERMISSIONS` is their exact permission set, applied by a data
  migration (retention 0007) and again after every `migrate` (a new model's permission lands
  without hand-editing groups). Anything not listed is removed from the group.
- Every view wears `@permission_required("app.codename")` from this module, nothing else.
- `RoleRequiredMiddleware` answers a logged-in user in neither group with the "no role" page
  (403) on every URL but logout, the admin's included; anonymous visitors are sent to the login
  page by Django's LoginRequiredMiddleware before either runs.
- A refused write (POST and friends) is audited as `access_refused`.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django_htmx.middleware import HtmxDetails

from agent.audit import audit_record

RETENTION = "Retention"
MANAGERS = "Managers"

_READ = [
    "retention.view_partner",
    "retention.view_monthlyactivity",
    "retention.view_invoice",
    "retention.view_intervention",
    "retention.view_roiassumptions",
    "ml.view_modelversion",
    "ml.view_riskscore",
    "ml.view_validationrun",
    "agent.view_agentrun",
    "agent.view_auditevent",
    "agent.view_agentconfig",
    "agent.view_donotcontact",
    "agent.view_followup",
    "agent.view_interventionreview",
    "crm_sim.view_crmtask",
]
# "app_label.codename". Retention: read everything, log interventions and draft/send manual
# emails (add_intervention; the send service applies the send rules), resolve *pending*
# outcomes (change_intervention; the outcome service refuses a resolved one without
# correct_outcome), work CRM tasks, run the agent and Start/Stop it, put a partner on the
# do-not-contact list (it only ever stops contact).
RETENTION_PERMISSIONS = _READ + [
    "retention.add_intervention",
    "retention.change_intervention",
    "crm_sim.change_crmtask",
    "agent.run_agent",
    "agent.add_donotcontact",
    "api.add_apitoken",
]
# Managers, in addition: the guardrail settings, approve/reject, correcting a resolved
# outcome, ROI assumptions, importing data, taking a partner off do-not-contact, the partner
# record and which model version scores.
MANAGER_PERMISSIONS = RETENTION_PERMISSIONS + [
    "agent.change_agentconfig",
    "retention.approve_intervention",
    "retention.correct_outcome",
    "retention.change_roiassumptions",
    "retention.import_data",
    "retention.change_partner",
    "agent.delete_donotcontact",
    "ml.change_modelversion",
    "api.view_apitoken",
    "api.change_apitoken",
    "api.view_webhooksubscription",
    "api.add_webhooksubscription",
    "api.change_webhooksubscription",
    "api.delete_webhooksubscription",
    "api.view_webhookdelivery",
]
GROUP_PERMISSIONS = {RETENTION: RETENTION_PERMISSIONS, MANAGERS: MANAGER_PERMISSIONS}

NO_ROLE_MESSAGE = "Your account has no role yet: ask a manager to add you to the Retention or Managers group."


class HtmxHttpRequest(HttpRequest):
    """A request that went through django-htmx's middleware (every request here does)."""

    htmx: HtmxDetails


class AuthedHttpRequest(HtmxHttpRequest):
    """What a view behind `permission_required` receives: a logged-in user with a role."""

    user: User


_UNKNOWN = object()


def user_role(user: User | AnonymousUser) -> str | None:
    """MANAGERS, RETENTION or None. Superusers count as managers (they hold every permission)."""
    if isinstance(user, AnonymousUser) or not user.is_active:
        return None
    if user.is_superuser:
        return MANAGERS
    # Cached on the user object (as Django caches permissions in `_perm_cache`): the middleware
    # and the decorator both ask, once per request; DeskModelBackend sets it when it loads the
    # user. getattr/setattr, not vars(): request.user is a lazy proxy whose own __dict__ is
    # not the user's.
    role = getattr(user, "_churnsite_role", _UNKNOWN)
    if role is _UNKNOWN:
        names = set(user.groups.filter(name__in=GROUP_PERMISSIONS).values_list("name", flat=True))
        role = MANAGERS if MANAGERS in names else RETENTION if RETENTION in names else None
        setattr(user, "_churnsite_role", role)  # noqa: B010 - not a declared attribute of User
    return cast(str | None, role)


# A user's permissions as one comma-separated string, correlated on the outer query's user id
# column: the API's token lookup and the site's user load (desk.backends) read them in their one
# statement instead of Django's two permission queries. string_agg / group_concat is the one
# difference between PostgreSQL and SQLite.
_PERMISSION = "ct.app_label || '.' || p.codename"
_AGGREGATE = {"postgresql": f"string_agg({_PERMISSION}, ',')", "sqlite": f"group_concat({_PERMISSION}, ',')"}


def permissions_sql(vendor: str, user_id: str) -> str:
    """The scalar subquery of the permissions (own and through groups) of the user whose id is
    the SQL expression `user_id`."""
    return f"""(SELECT {_AGGREGATE[vendor]} FROM auth_permission p
        JOIN django_content_type ct ON ct.id = p.content_type_id
        WHERE p.id IN (SELECT up.permission_id FROM auth_user_user_permissions up WHERE up.user_id = {user_id}
                       UNION
                       SELECT gp.permission_id FROM auth_group_permissions gp
                       JOIN auth_user_groups ug ON ug.group_id = gp.group_id WHERE ug.user_id = {user_id}))"""


def user_access_prime(user: User, *, in_managers: bool, in_retention: bool, permissions: str | None) -> None:
    """Set on a user loaded with its role and permissions what `user_role` and the auth backend
    would otherwise query for. Superusers hold every permission without either."""
    if user.is_superuser:
        return
    setattr(user, "_churnsite_role", MANAGERS if in_managers else RETENTION if in_retention else None)  # noqa: B010
    setattr(user, "_perm_cache", set(filter(None, (permissions or "").split(","))))  # noqa: B010


def access_refusal(user: Any, perm: str, message: str) -> str | None:
    """What a refused `user` is told for `perm` ("app_label.codename"), or None when allowed:
    a role first, then the permission. The site's views and the API's operations both ask it."""
    if user_role(user) is None:
        return NO_ROLE_MESSAGE
    if not user.has_perm(perm):
        return message
    return None


def audit_refused_write(request: HttpRequest, *, permission: str = "", **extra: str) -> None:
    """A refused write (POST and friends) by a logged-in user is audited as `access_refused`."""
    if request.method in ("GET", "HEAD", "OPTIONS") or not request.user.is_authenticated:
        return
    audit_record(
        event_type="access_refused",
        actor=request.user,
        payload={
            "method": request.method,
            "path": request.path[:300],
            "permission": permission,
            "role": user_role(request.user) or "",
            **extra,
        },
    )


def refuse(request: HttpRequest, *, message: str, permission: str = "") -> TemplateResponse:
    """The 403 page; a refused write is audited first. A response, not PermissionDenied,
    because a refusal is expected and needs no traceback in the log."""
    audit_refused_write(request, permission=permission)
    template = "403.html" if user_role(request.user) else "no_role.html"
    return TemplateResponse(request, template, {"exception": message}, status=403)


def permission_required(perm: str, *, message: str = "Your role does not allow this.") -> Callable:
    """The one access check on every view: a role, and `perm` ("app_label.codename");
    `message` is what the 403 page says to someone whose role lacks it."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            refusal = access_refusal(request.user, perm, message)
            if refusal is not None:
                return refuse(request, message=refusal, permission=perm)
            return view(request, *args, **kwargs)

        # Read by tests/test_access.py: every URL's view must carry one.
        wrapped.access_permission = perm  # type: ignore[attr-defined]
        return wrapped

    return decorator


class RoleRequiredMiddleware:
    """A logged-in user in neither group gets the "no role" page on every URL but logout."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Callable, view_args: Any, view_kwargs: Any):
        if not request.user.is_authenticated or not getattr(view_func, "login_required", True):
            return None  # anonymous (LoginRequiredMiddleware decided) or a public page
        if request.resolver_match is not None and request.resolver_match.url_name == "logout":
            return None
        if user_role(request.user) is None:
            return refuse(request, message=NO_ROLE_MESSAGE).render()
        return None


def apply_group_permissions(apps: Any, schema_editor: Any) -> None:
    """The data migration (retention 0007): create the two groups and set each one's
    permissions to exactly its list; extra permissions granted by hand are removed."""
    from django.contrib.auth.management import create_permissions

    # Inside a migration the Permission rows do not exist yet on a fresh database (post_migrate
    # creates them at the end): make them for the historical models now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    _set_group_permissions(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


def sync_group_permissions(**kwargs: Any) -> None:
    """After every migrate: a model added later gets its listed permissions onto the groups
    without a new data migration. Permissions of apps not migrated yet are skipped."""
    from django.contrib.auth.models import Group, Permission

    _set_group_permissions(Group, Permission)


def _set_group_permissions(Group: Any, Permission: Any) -> None:
    for name, perms in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            wanted.extend(Permission.objects.filter(content_type__app_label=app_label, codename=codename))
        group.permissions.set(wanted)
