"""The CRM page, as a full page and as its htmx partials."""

import datetime as dt

import pytest
from django.utils import timezone

from agent.models import AuditEvent
from crm_sim.client import get_crm_client
from crm_sim.models import CrmTask
from retention.models import Intervention
from tests.conftest import htmx
from tests.factories import PartnerFactory, UserFactory


@pytest.fixture
def two_tasks(retention_user, make_task):
    """An open retention call for P18477 and a task for P08821 completed as Saved."""
    today = timezone.localdate()
    open_task = make_task(
        partner=PartnerFactory(external_id="P18477"),
        title="Retention Call",
        due_on=today + dt.timedelta(days=1),
        assigned_to=retention_user,
        intervention=True,
    )
    done = make_task(partner=PartnerFactory(external_id="P08821"), title="Check-in call", due_on=today)
    get_crm_client().complete_task(done.external_id, outcome="saved", actor=retention_user)
    return open_task, done


def test_the_crm_page_reads_like_a_crm_task_list_in_simulation_mode(retention_client, two_tasks):
    open_task, _ = two_tasks
    due = open_task.due_on

    response = retention_client.get("/crm/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" in html and 'id="results"' in html
    assert "Simulation Mode" in html
    assert "In production, this syncs with the CRM API" in html
    line = f'P18477</a>\n      - <span class="crm-title">Retention Call</span>\n      - <span class="crm-due">Due: {due.month}/{due.day}</span>'
    assert line in html
    assert "☐" in html and "✓" in html
    assert (
        '<span class="crm-status">Completed</span> - <span class="crm-outcome crm-outcome-saved">Saved</span>'
        in html
    )
    assert f'hx-post="/crm/tasks/{open_task.external_id}/complete/"' in html


def test_an_overdue_task_says_so(retention_client, make_task):
    make_task(due_on=timezone.localdate() - dt.timedelta(days=3))
    html = retention_client.get("/crm/").content.decode()
    assert "crm-due crm-overdue" in html and "Overdue</span>" in html


def test_a_filter_request_from_htmx_gets_only_the_results_partial(
    retention_client, manager, two_tasks, make_task
):
    make_task(partner=PartnerFactory(external_id="P55555"), assigned_to=manager)

    response = retention_client.get("/crm/?view=mine", headers=htmx("results"))

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and "Simulation Mode" not in html
    assert html.lstrip().startswith('<div id="results" hx-swap="outerHTML">')
    assert "P18477" in html and "P55555" not in html
    assert 'aria-current="true">Mine <span class="badge">1</span>' in html


def test_completing_inline_returns_the_completed_row_and_resolves_the_intervention(
    retention_client, retention_user, two_tasks
):
    open_task, _ = two_tasks

    response = retention_client.post(
        f"/crm/tasks/{open_task.external_id}/complete/", {"outcome": "saved"}, headers=htmx()
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    # The row leaves the open list (nothing but out-of-band parts) and is first in the closed list.
    assert html.lstrip().startswith(
        '<nav class="filters crm-views" id="crm-views" aria-label="Task filters" hx-swap-oob="true">'
    )
    closed = html.split('<ul class="crm-tasks" id="closed-tasks" hx-swap-oob="true">')[1]
    assert closed.lstrip().startswith(f'<li class="crm-task crm-closed" id="task-{open_task.external_id}"')
    assert "✓" in closed and "crm-outcome-saved" in closed
    intervention = Intervention.objects.get(pk=open_task.intervention_id)
    assert (intervention.outcome, intervention.outcome_set_by) == ("saved", retention_user)
    event = AuditEvent.objects.get(event_type="crm_task_completed", intervention=intervention)
    assert event.actor_user == retention_user


def test_completing_without_javascript_redirects_back_with_a_message(retention_client, two_tasks):
    open_task, _ = two_tasks
    response = retention_client.post(
        f"/crm/tasks/{open_task.external_id}/complete/", {"outcome": "churned"}, follow=True
    )
    assert response.redirect_chain == [("/crm/", 302)]
    assert f"{open_task.external_id} completed: Churned" in response.content.decode()
    assert CrmTask.objects.get(external_id=open_task.external_id).outcome == "churned"


def test_a_refused_completion_shows_the_reason_in_the_row(retention_client, two_tasks):
    open_task, _ = two_tasks
    Intervention.objects.filter(pk=open_task.intervention_id).update(outcome="churned")

    response = retention_client.post(
        f"/crm/tasks/{open_task.external_id}/complete/", {"outcome": "saved"}, headers=htmx()
    )

    html = response.content.decode()
    assert 'class="crm-task crm-open"' in html
    assert "Only a manager can change a resolved outcome" in html
    assert CrmTask.objects.get(external_id=open_task.external_id).status == "open"


def test_an_unknown_outcome_is_refused(retention_client, two_tasks):
    open_task, _ = two_tasks
    html = retention_client.post(
        f"/crm/tasks/{open_task.external_id}/complete/", {"outcome": "maybe"}, headers=htmx()
    ).content.decode()
    assert "Choose an outcome." in html
    assert CrmTask.objects.get(external_id=open_task.external_id).status == "open"


def test_completing_needs_a_post_and_the_crm_permission(client, retention_client, two_tasks):
    open_task, _ = two_tasks
    url = f"/crm/tasks/{open_task.external_id}/complete/"
    assert retention_client.get(url).status_code == 405

    client.force_login(UserFactory(username="nobody"))
    assert client.get("/crm/").status_code == 403
    assert client.post(url, {"outcome": "saved"}).status_code == 403
    assert CrmTask.objects.get(external_id=open_task.external_id).status == "open"


def test_the_filter_counts_refresh_as_their_own_partial(retention_client, two_tasks):
    response = retention_client.get("/crm/?view=week", headers=htmx("crm-views"))

    html = response.content.decode()
    assert html.lstrip().startswith('<nav class="filters crm-views" id="crm-views"')
    assert html.rstrip().endswith("</nav>")
    assert 'All open <span class="badge">1</span>' in html
    assert "hx-swap-oob" not in html


def test_completing_a_task_updates_the_counters_in_the_same_response(
    retention_client, retention_user, make_task
):
    today = timezone.localdate()
    tasks = [make_task(assigned_to=retention_user, due_on=today + dt.timedelta(days=i)) for i in range(3)]
    page = retention_client.get("/crm/?view=mine").content.decode()
    assert 'id="open-count">(3)</span>' in page and "No completed tasks yet." in page
    assert 'Mine <span class="badge">3</span>' in page
    assert '<input type="hidden" name="view" value="mine">' in page

    response = retention_client.post(
        f"/crm/tasks/{tasks[0].external_id}/complete/", {"outcome": "none", "view": "mine"}, headers=htmx()
    )

    html = response.content.decode()
    # Out of band, in this one response: the filter counts, "Open tasks (2)", the closed list.
    assert '<span class="muted" id="open-count" hx-swap-oob="true">(2)</span>' in html
    assert 'Mine <span class="badge">2</span>' in html and 'All open <span class="badge">2</span>' in html
    closed = html.split('<ul class="crm-tasks" id="closed-tasks" hx-swap-oob="true">')[1].split("</ul>")[0]
    assert f'id="task-{tasks[0].external_id}"' in closed and "No completed tasks yet." not in closed
    assert 'id="open-tasks"' not in html  # two still open: the list keeps its rows
    assert "HX-Trigger" not in response

    for task in tasks[1:]:
        html = retention_client.post(
            f"/crm/tasks/{task.external_id}/complete/", {"outcome": "none", "view": "mine"}, headers=htmx()
        ).content.decode()
    assert "(0)</span>" in html
    assert (
        '<ul class="crm-tasks" id="open-tasks" hx-swap-oob="true"><li class="empty">No open tasks in this view.</li></ul>'
        in html
    )


def test_the_page_query_count_does_not_grow_with_the_tasks_shown(
    retention_client, retention_user, make_task, django_assert_max_num_queries
):
    for i in range(6):
        make_task(assigned_to=retention_user, due_on=timezone.localdate() + dt.timedelta(days=i))
    for _ in range(6):
        done = make_task(assigned_to=retention_user)
        get_crm_client().complete_task(done.external_id, outcome="none", actor=retention_user)

    # 10: session, user, groups, 2 permission reads, the navigation's saved views, and the
    # page's own 4 (open count, filter counts, the task page, recently completed).
    with django_assert_max_num_queries(10):
        assert retention_client.get("/crm/").status_code == 200
