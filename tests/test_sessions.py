"""Sessions (churnsite.sessions: Django's database sessions, read by a precompiled statement)."""

import datetime as dt

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db


def test_a_signed_in_person_stays_signed_in_from_page_to_page(retention_client):
    assert retention_client.get("/").status_code == 200
    assert retention_client.get("/interventions/").status_code == 200


def test_an_expired_session_is_signed_out(retention_client):
    key = retention_client.cookies[settings.SESSION_COOKIE_NAME].value
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - dt.timedelta(seconds=1))

    response = retention_client.get("/")

    assert response.status_code == 302 and response.url.startswith("/login/")


def test_a_made_up_or_malformed_session_cookie_is_nobody(client, retention_user):
    for value in ("x" * 32, "short", "a' OR '1'='1"):
        client.cookies[settings.SESSION_COOKIE_NAME] = value
        response = client.get("/")
        assert response.status_code == 302 and response.url.startswith("/login/")


def test_each_session_loads_its_own_person(retention_user, manager):
    rita, maria = Client(), Client()
    rita.force_login(retention_user)
    maria.force_login(manager)
    signed_in_as = (
        '<span>Rita Retention</span>\n      <button type="submit" class="linklike">Log out</button>'
    )

    for _ in range(2):  # alternately: the compiled statement is run with each one's key
        assert signed_in_as in rita.get("/").content.decode()
        assert signed_in_as not in maria.get("/").content.decode()
