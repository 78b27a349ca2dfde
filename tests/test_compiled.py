"""Precompiled statements (churnsite.compiled) prepared by psycopg on PostgreSQL after
DB_PREPARE_THRESHOLD runs on a connection, so PostgreSQL stops planning them on every page."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from retention.selectors import LiveFeedQuery
from tests.conftest import scored_partner
from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's"),
]


def _prepared_feed_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s", ["%retention_partner%"]
        )
        return [row[0] for row in cursor.fetchall()]


def _feed(owner_id: int) -> LiveFeedQuery:
    # A filter combination no other test of this file runs: its statement is new on the connection.
    return LiveFeedQuery(sort="revenue", tier="gold", owner=owner_id, search="north")


@pytest.fixture
def olga(db):
    olga = UserFactory(username="olga", groups=["Retention"])
    scored_partner(external_id="P1", name="Northwind", tier="gold", risk=0.9, account_owner=olga)
    scored_partner(external_id="P2", name="Northwind East", tier="gold", risk=0.4, account_owner=olga)
    scored_partner(external_id="P3", name="Contoso", tier="gold", risk=0.8, account_owner=olga)
    return olga


def test_a_feed_query_run_past_the_threshold_is_prepared_with_the_same_rows(olga):
    threshold = settings.DATABASES["default"]["OPTIONS"]["prepare_threshold"]
    assert connection.connection.prepare_threshold == threshold == 5  # the default

    # Client-side binding, as Django's own queries run: the reference rows.
    connection.connection.prepare_threshold = None
    try:
        unprepared = _feed(olga.pk)[0:50]
    finally:
        connection.connection.prepare_threshold = threshold
    for _ in range(threshold):
        assert _feed(olga.pk)[0:50] == unprepared
    assert _prepared_feed_statements() == []

    with CaptureQueriesContext(connection) as queries:
        prepared = _feed(olga.pk)[0:50]  # the run past the threshold prepares it

    assert [row["external_id"] for row in prepared] == ["P1", "P2"]
    assert prepared == unprepared
    assert len(queries) == 1  # still one query in Django's log (the page's query count)
    [statement] = _prepared_feed_statements()
    # The owner and the search are its parameters; the tier, part of the query's shape, is
    # written in, so the plan PostgreSQL keeps for the statement knows it.
    assert "$1" in statement and "$2" in statement and "$3" not in statement
    assert "'gold'" in statement and "LIMIT 50 OFFSET 0" in statement
    # Prepared, it still takes each run's own arguments.
    assert _feed(UserFactory(username="piet").pk)[0:50] == []
    assert _feed(olga.pk)[0:50] == unprepared


def test_nothing_is_prepared_when_the_threshold_is_off(olga):
    threshold = connection.connection.prepare_threshold
    # What DB_PREPARE_THRESHOLD=0 leaves on the connection (Django's default: None).
    connection.connection.prepare_threshold = None
    try:
        rows = [_feed(olga.pk)[0:50] for _ in range(10)]
        assert _prepared_feed_statements() == []
    finally:
        connection.connection.prepare_threshold = threshold
    assert [row["external_id"] for row in rows[-1]] == ["P1", "P2"]


@pytest.mark.parametrize(("value", "expected"), [("", "5"), ("3", "3"), ("0", "None")])
def test_db_prepare_threshold_sets_psycopgs_threshold_and_zero_turns_it_off(value, expected):
    code = (
        "from django.conf import settings; "
        "print(settings.DATABASES['default']['OPTIONS'].get('prepare_threshold'))"
    )
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "churnsite.settings", "DB_PREPARE_THRESHOLD": value}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
