"""Today's CRM tasks worked inline in the feed, and saved feed views."""

import datetime as dt
import re

import pytest
from django.utils import timezone

from agent.models import AuditEvent
from crm_sim.models import CrmTask
from desk.models import SavedView
from tests.conftest import htmx
from tests.desk.conftest import run_scoring
from tests.factories import PartnerFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(retention_user):
    partner = PartnerFactory(external_id="P100", account_owner=retention_user)
    run_scoring({partner: 0.7}, as_of=dt.date(2026, 12, 1))
    yesterday = timezone.localdate() - dt.timedelta(days=1)
    task = CrmTask.objects.create(
        partner=partner, kind="retention_call", title="Call Acme", due_on=yesterday, idempotency_key="k1"
    )
    task.external_id = "SIM-000001"
    task.save()
    return task


def test_the_feed_lists_my_tasks_due_today_or_overdue(retention_client, task):
    other = PartnerFactory(external_id="P200", account_owner=UserFactory(username="olga"))
    CrmTask.objects.create(partner=other, kind="meeting", title="Not mine", due_on=timezone.localdate(), idempotency_key="k2")  # fmt: skip
    later = CrmTask.objects.create(partner=task.partner, kind="meeting", title="Next week", due_on=timezone.localdate() + dt.timedelta(days=7), idempotency_key="k3")  # fmt: skip

    html = retention_client.get("/").content.decode()

    assert "Call Acme" in html and "Overdue" in html
    assert "Not mine" not in html and later.title not in html


def test_the_today_list_shows_the_ten_oldest_due_first_in_the_order_they_were_made(retention_client, task):
    today = timezone.localdate()
    # Made in this order; due today, three days ago or yesterday (the fixture's task, "Call Acme").
    for n, days in enumerate([0, 3, 1, 3, 0, 1, 3, 0, 1, 0, 3]):
        CrmTask.objects.create(partner=task.partner, kind="meeting", title=f"Task {n:02d}",
                               due_on=today - dt.timedelta(days=days), idempotency_key=f"t{n}")  # fmt: skip

    html = retention_client.get("/").content.decode()

    shown = [t for t in re.findall(r"(Call Acme|Task \d\d)", html)]
    assert shown == ["Task 01", "Task 03", "Task 06", "Task 10", "Call Acme", "Task 02", "Task 05", "Task 08",
                     "Task 00", "Task 04"]  # fmt: skip


def test_snoozing_a_task_for_a_week_moves_it_and_is_audited(retention_client, task, retention_user):
    response = retention_client.post(f"/desk/tasks/{task.external_id}/snooze/", {"days": "7"}, headers=htmx())

    task.refresh_from_db()
    week = timezone.localdate() + dt.timedelta(days=7)
    assert task.due_on == week and task.is_open
    assert f"Snoozed to {week.day} {week:%b}" in response.content.decode()
    assert "<html" not in response.content.decode()  # the row partial, not a page
    event = AuditEvent.objects.get(event_type="crm_task_snoozed")
    assert event.actor_user == retention_user and event.payload["days"] == 7
    assert event.payload["to"] == week.isoformat()
    assert "Call Acme" not in retention_client.get("/").content.decode()


def test_a_snooze_other_than_a_day_or_a_week_is_refused(retention_client, task):
    retention_client.post(f"/desk/tasks/{task.external_id}/snooze/", {"days": "30"}, headers=htmx())

    task.refresh_from_db()
    assert task.due_on == timezone.localdate() - dt.timedelta(days=1)
    assert not AuditEvent.objects.filter(event_type="crm_task_snoozed").exists()


def test_completing_a_task_inline_closes_it(retention_client, task):
    response = retention_client.post(
        f"/desk/tasks/{task.external_id}/complete/", {"outcome": "none"}, headers=htmx()
    )

    task.refresh_from_db()
    assert task.status == "completed" and "Completed" in response.content.decode()
    assert AuditEvent.objects.filter(event_type="crm_task_completed").exists()


def test_a_saved_view_is_listed_in_the_navigation_and_reopens_the_filters(retention_client, retention_user):
    response = retention_client.post(
        "/desk/views/", {"name": "Gold, worse", "query": "tier=gold&change=worse&page=3", "shared": ""}
    )
    view = SavedView.objects.get(owner=retention_user)

    assert view.query == "tier=gold&change=worse" and not view.shared
    assert response.status_code == 302
    html = retention_client.get("/").content.decode()
    assert "Gold, worse" in html and f"/desk/views/{view.pk}/" in html
    opened = retention_client.get(f"/desk/views/{view.pk}/")
    assert opened.url == "/?tier=gold&change=worse"


def test_a_shared_view_is_listed_for_the_team_and_a_private_one_is_not(client, retention_user):
    SavedView.objects.create(owner=retention_user, name="Team platinum", query="tier=platinum", shared=True)
    private = SavedView.objects.create(owner=retention_user, name="My secret list", query="tier=gold")
    colleague = UserFactory(username="olga", groups=["Retention"])
    client.force_login(colleague)

    html = client.get("/").content.decode()

    assert "Team platinum" in html and "My secret list" not in html
    # A colleague's shared view says whose it is.
    owner_name = retention_user.get_full_name() or retention_user.username
    assert f'Team platinum</a> <span class="muted">(team · {owner_name})</span>' in html
    assert client.get(f"/desk/views/{private.pk}/").status_code == 404
    client.post(f"/desk/views/{SavedView.objects.get(name='Team platinum').pk}/delete/")
    assert SavedView.objects.filter(name="Team platinum").exists()  # only its owner deletes it
