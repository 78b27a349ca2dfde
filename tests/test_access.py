"""Every page needs a login, except the login page itself, /healthz and the favicon; behind
the login, the permission matrix of the README, walked over every URL pattern the site has."""

import re

import pytest
from django.urls import Resolver404, URLPattern, URLResolver, get_resolver, resolve

from agent.models import AuditEvent
from tests.factories import InterventionFactory, PartnerFactory, UserFactory

PUBLIC = {"login", "healthz", "favicon"}
SAMPLE_ARGS = {
    "int": "1",
    "id": "1",
    "str": "P10000",
    "slug": "x",
    "path": "x",
    "uuid": "00000000-0000-0000-0000-000000000000",
}

# The README's permission matrix, by URL name: the least role that may use it. A new view must
# be added here (the walk below fails on a URL it does not know).
RETENTION, MANAGER = "retention", "manager"
MATRIX = {
    "retention:home": RETENTION,
    "retention:feed_poll": RETENTION,
    "retention:feed_export": RETENTION,
    "desk:scope": RETENTION,
    "desk:task_complete": RETENTION,
    "desk:task_snooze": RETENTION,
    "desk:saved_view_create": RETENTION,
    "desk:saved_view_open": RETENTION,
    "desk:saved_view_delete": RETENTION,
    "desk:digest_preview": RETENTION,
    "retention:partner_list": RETENTION,
    "retention:partner_detail": RETENTION,
    "retention:partner_log_intervention": RETENTION,
    "retention:partner_draft_email": RETENTION,
    "retention:partner_send_email": RETENTION,
    "retention:intervention_list": RETENTION,
    "retention:intervention_export": RETENTION,
    "retention:intervention_outcome": RETENTION,
    "retention:intervention_outcome_undo": RETENTION,
    "retention:outcomes": RETENTION,
    "retention:outcomes_assumptions": MANAGER,
    "retention:import": MANAGER,
    "agent:control": RETENTION,
    "agent:run_progress": RETENTION,
    "agent:toggle": RETENTION,
    "agent:run_now": RETENTION,
    "agent:intervene": RETENTION,
    "agent:dnc_add": RETENTION,
    "agent:dnc_remove": MANAGER,
    "agent:config": MANAGER,
    "agent:review_approve": MANAGER,
    "agent:review_reject": MANAGER,
    "crm_sim:task_list": RETENTION,
    "crm_sim:task_complete": RETENTION,
    "ml:model": RETENTION,
    "ml:activate": MANAGER,
    "api:tokens": RETENTION,
    "api:token_create": RETENTION,
    "api:token_revoke": RETENTION,
    "api:webhooks": MANAGER,
    "api:webhook_create": MANAGER,
    "api:webhook_delete": MANAGER,
    "api:delivery_detail": MANAGER,
    "api:delivery_replay": MANAGER,
}
# /api/v1/ authenticates each request itself (a token or the session): anonymous callers get
# 401, not the login page, and tests/api/test_permissions.py walks its operations x tokens.
API_PREFIX = "/api/v1/"


def _walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p.name


def _to_path(route: str) -> str | None:
    if route.startswith("^") or "(?P" in route:
        route = route.lstrip("^").rstrip("$").replace("\\Z", "").replace("\\", "")
        if "(" in route:  # regex admin patterns with groups: fill one sample
            route = re.sub(r"\(\?P<\w+>[^)]*\)", "1", route)
            if "(" in route:
                return None
    route = re.sub(r"<(?:(\w+):)?\w+>", lambda m: SAMPLE_ARGS.get(m.group(1) or "str", "x"), route)
    return "/" + route


def all_paths():
    paths = set()
    for route, name in _walk(get_resolver().url_patterns):
        if name in PUBLIC or route.startswith("static") or route.startswith("media"):
            continue
        path = _to_path(route)
        if path is not None:
            paths.add(path)
    return sorted(paths)


def site_paths():
    """The site's own pages (not the admin's, not logout), with their URL names."""
    out = []
    for path in all_paths():
        match = resolve(path)
        if match.view_name.startswith("admin:") or match.view_name == "logout" or path.startswith(API_PREFIX):
            continue
        out.append((match.view_name, path))
    return out


def admin_paths():
    return [p for p in all_paths() if p.startswith("/admin/") and resolve(p).url_name != "logout"]


@pytest.fixture
def sample_objects(db):
    """Something behind the sample URLs, so allowed requests reach the view's own code."""
    partner = PartnerFactory(external_id="P10000")
    InterventionFactory(partner=partner, pk=1)
    return partner


@pytest.fixture
def users(db, settings):
    # Hashing three passwords per case with the real hasher made the walk take minutes.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return {
        "no group": UserFactory(username="nora"),
        RETENTION: UserFactory(username="rita", groups=["Retention"]),
        MANAGER: UserFactory(username="max", is_staff=True, groups=["Managers"]),
    }


def test_every_site_url_is_in_the_matrix_and_wears_the_access_decorator():
    names = {name for name, _ in site_paths()}
    assert names == set(MATRIX), "add new views to MATRIX (and the README's matrix)"
    for name, path in site_paths():
        callback = resolve(path).func
        assert getattr(callback, "access_permission", None), f"{name} has no @permission_required"


@pytest.mark.parametrize(("name", "path"), site_paths())
def test_each_url_answers_each_role_as_the_matrix_says(client, users, sample_objects, name, path):
    least = MATRIX[name]
    for method, who in [(m, w) for m in ("get", "post") for w in ["anonymous", *users]]:
        if who == "anonymous":
            response = getattr(client, method)(path)
            assert response.status_code == 302 and response["Location"].startswith("/login/"), method
            continue
        user = users[who]
        client.force_login(user)
        before = AuditEvent.objects.filter(event_type="access_refused").count()
        response = getattr(client, method)(path)
        allowed = who == MANAGER or (who == RETENTION and least == RETENTION)
        if allowed:
            assert response.status_code != 403 and response.status_code < 500, (
                f"{who} {method}: {response.status_code}"
            )
        else:
            assert response.status_code == 403, f"{who} {method} got {response.status_code}"
            if who == "no group":
                assert "no role" in response.content.decode()
            # Refused writes leave a trace; refused reads do not fill the trail.
            refused = AuditEvent.objects.filter(event_type="access_refused").count() - before
            assert refused == (1 if method == "post" else 0)
        client.logout()


@pytest.mark.parametrize("path", admin_paths())
def test_a_staff_user_without_a_role_is_refused_every_admin_page(client, users, path):
    users["no group"].is_staff = True
    users["no group"].save()
    client.force_login(users["no group"])
    for method in ("get", "post"):
        response = getattr(client, method)(path)
        assert response.status_code == 403 and "no role" in response.content.decode(), method


@pytest.mark.django_db
def test_a_user_without_a_role_sees_a_page_saying_so_and_can_log_out(client):
    client.force_login(UserFactory(username="nora"))
    response = client.get("/")
    assert response.status_code == 403
    assert "You have no role" in response.content.decode()
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302  # logged out: back to the login page


def test_the_site_has_pages_to_protect():
    assert "/" in all_paths()
    assert "/admin/" in all_paths()


@pytest.mark.django_db
@pytest.mark.parametrize("path", all_paths())
def test_an_anonymous_visitor_is_sent_to_a_login_page(client, path):
    response = client.get(path)
    if path.startswith(API_PREFIX) and not path.endswith("/docs"):
        # 405: a write-only operation refuses GET before it looks at the caller.
        assert response.status_code in (401, 405), f"{path} answered {response.status_code}"
        return
    assert response.status_code == 302, f"{path} answered {response.status_code}"
    assert "/login/" in response["Location"]


@pytest.mark.django_db
def test_the_login_page_is_public(client):
    response = client.get("/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content


@pytest.mark.django_db
def test_healthz_reports_database_and_broker_without_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is True


def test_the_favicon_needs_no_login(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("/favicon.svg")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/interventions/", "/partners/", "/agent/"])
def test_every_filter_and_form_control_has_an_accessible_name(retention_client, path):
    html = retention_client.get(path).content.decode()
    labelled = set(re.findall(r'<label[^>]*\bfor="([^"]+)"', html))

    def named(control: str) -> bool:
        control_id = re.search(r'\bid="([^"]+)"', control)
        return "aria-label=" in control or (control_id is not None and control_id.group(1) in labelled)

    controls = [
        c
        for c in re.findall(r"<(?:input|select|textarea)\b[^>]*>", html)
        if not re.search(r'type="(?:hidden|submit)"', c)
    ]
    assert controls and [c for c in controls if not named(c)] == []


# The bypasses of issue 9, each now refused ------------------------------------------


@pytest.mark.django_db
def test_a_user_in_no_group_can_neither_set_an_outcome_nor_send_an_email(client, mailoutbox):
    intervention = InterventionFactory(partner=PartnerFactory(external_id="P12773", tier="platinum"))
    client.force_login(UserFactory(username="nora"))

    outcome = client.post(f"/interventions/{intervention.pk}/outcome/", {"outcome": "saved"})
    send = client.post(
        "/partners/P12773/send-email/",
        {"subject": "Hi", "body": "Hello", "writer": "manual", "original_body": "Hello", "send": "on"},
    )

    assert outcome.status_code == 403 and send.status_code == 403
    intervention.refresh_from_db()
    assert intervention.outcome == "pending" and mailoutbox == []
    assert intervention.partner.interventions.count() == 1
    assert AuditEvent.objects.filter(event_type="access_refused", actor_user__username="nora").count() == 2


def test_no_url_takes_an_id_too_large_for_the_database():
    """A 19-digit number overflowed SQLite's INTEGER (a 500): ids in URLs are <id:...>."""
    routes = [(route, name) for route, name in _walk(get_resolver().url_patterns) if "<" in route]
    assert [r for r, _ in routes if "<int:" in r] == []
    for route, name in ((r, n) for r, n in routes if "<id:" in r):
        huge = "/" + re.sub(r"<(?:(\w+):)?\w+>", lambda m: "9" * 30 if m.group(1) == "id" else "P1", route)
        try:
            match = resolve(huge)
        except Resolver404:
            continue
        # The admin's catch-all object URL may take it; this view may not.
        assert match.url_name != name, huge


@pytest.mark.django_db
@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/x", "javascript:alert(1)"])
def test_an_outcome_form_never_redirects_off_site(retention_client, target):
    intervention = InterventionFactory()
    response = retention_client.post(
        f"/interventions/{intervention.pk}/outcome/", {"outcome": "saved", "next": target}
    )
    assert response.status_code == 302 and response["Location"] == "/interventions/"
    on_site = retention_client.post(
        f"/interventions/{intervention.pk}/outcome/",
        {"outcome": "saved", "next": "/interventions/?outcome=saved"},
    )
    assert on_site["Location"] == "/interventions/?outcome=saved"
