"""Every page needs a login, except the login page itself, /healthz and the favicon."""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

PUBLIC = {"login", "healthz", "favicon"}
SAMPLE_ARGS = {
    "int": "1",
    "str": "P10000",
    "slug": "x",
    "path": "x",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


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


def test_the_site_has_pages_to_protect():
    assert "/" in all_paths()
    assert "/admin/" in all_paths()


@pytest.mark.django_db
@pytest.mark.parametrize("path", all_paths())
def test_an_anonymous_visitor_is_sent_to_a_login_page(client, path):
    response = client.get(path)
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
