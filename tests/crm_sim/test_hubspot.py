"""The HubSpot CRM backend against a local fake of HubSpot's CRM v3 API (tests/hubspot_server.py),
through the same calls the agent, the outcome service and the CRM page make."""

import datetime as dt
import time

import pytest

from agent.models import AuditEvent
from agent.services import followup_schedule
from crm_sim.client import (
    CreateTask,
    CrmError,
    TaskQuery,
    UpdateTask,
    crm_backend_is_simulated,
    get_crm_client,
)
from crm_sim.models import CrmTask
from retention.models import Intervention
from retention.services import intervention_set_outcome
from tests.factories import InterventionFactory, PartnerFactory, UserFactory
from tests.hubspot_server import TOKEN, FakeHubSpot


@pytest.fixture
def hubspot(settings):
    server = FakeHubSpot().start()
    settings.CRM_BACKEND = "crm_sim.hubspot.HubSpotCrmBackend"
    settings.HUBSPOT_BASE_URL = server.url
    settings.HUBSPOT_TOKEN = TOKEN
    settings.CRM_TIMEOUT = 5.0
    yield server
    server.stop()


def spec(partner, key="agent-followup-1", **kwargs) -> CreateTask:
    defaults = dict(
        partner_external_id=partner.external_id,
        kind="retention_call",
        title="Call about the overdue invoices",
        due_on=dt.date(2026, 12, 9),
        idempotency_key=key,
    )
    return CreateTask(**{**defaults, **kwargs})


def test_a_task_is_created_in_hubspot_as_the_docs_describe_and_linked_to_the_partners_company(db, hubspot):
    partner = PartnerFactory(external_id="P10342")
    company = hubspot.add_company("P10342")
    owner = UserFactory(username="olga", email="olga@churnsite.example")
    owner_id = hubspot.add_owner("olga@churnsite.example")

    record = get_crm_client().create_task(spec(partner, assigned_to_username="olga", notes="Ask about Q4"))

    method, path, body, headers = hubspot.calls("POST", "/crm/v3/objects/tasks")[-1]
    assert path == "/crm/v3/objects/tasks"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    props = body["properties"]
    assert props["hs_timestamp"] == "2026-12-09T00:00:00.000Z"
    assert props["hs_task_subject"] == "Call about the overdue invoices"
    assert props["hs_task_body"] == "Ask about Q4"
    assert props["hs_task_status"] == "NOT_STARTED"
    assert props["hs_task_type"] == "CALL"
    assert props["hubspot_owner_id"] == owner_id
    assert props["churnsite_key"] == "agent-followup-1"
    assert body["associations"] == [
        {
            "to": {"id": company},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 192}],
        }
    ]
    assert record.external_id in hubspot.tasks
    assert (record.partner_external_id, record.status, record.outcome) == ("P10342", "open", "none")
    assert record.due_on == dt.date(2026, 12, 9)
    assert record.assigned_to_username == owner.username
    assert not CrmTask.objects.exists()  # HubSpot holds it, not the simulated table
    assert AuditEvent.objects.get(event_type="crm_task_created").payload["backend"] == "hubspot"


def test_a_repeated_create_with_the_same_key_returns_the_first_task_and_posts_once(db, hubspot):
    partner = PartnerFactory()
    client = get_crm_client()

    first = client.create_task(spec(partner))
    again = client.create_task(spec(partner, title="Another title"))

    assert again == first
    assert len(hubspot.tasks) == 1
    assert len(hubspot.calls("POST", "/crm/v3/objects/tasks")) == 3  # search, create, search
    assert len([r for r in hubspot.requests if r[0] == "POST" and r[1] == "/crm/v3/objects/tasks"]) == 1


def test_a_create_the_unique_key_refuses_returns_the_task_that_won(db, hubspot):
    """HubSpot's search lags its writes: a racing create misses the first task, HubSpot answers
    409 for the unique churnsite_key, and the adapter returns the first task."""
    partner = PartnerFactory()
    first = get_crm_client().create_task(spec(partner))
    hubspot.search_misses = 1

    again = get_crm_client().create_task(spec(partner))

    assert again.external_id == first.external_id
    assert len(hubspot.tasks) == 1


def test_a_key_reused_for_another_partner_is_a_conflict(db, hubspot):
    get_crm_client().create_task(spec(PartnerFactory()))

    with pytest.raises(CrmError) as caught:
        get_crm_client().create_task(spec(PartnerFactory()))

    assert caught.value.code == "conflict"


def test_a_429_is_retried_after_its_retry_after(db, hubspot):
    partner = PartnerFactory()
    hubspot.fail(429, retry_after=1, message="You have reached your secondly limit.")

    started = time.monotonic()
    record = get_crm_client().create_task(spec(partner))

    assert time.monotonic() - started >= 1.0
    assert record.external_id in hubspot.tasks
    assert len(hubspot.requests) == 4  # search (429), search again, company search, create


def test_5xx_answers_are_retried_a_bounded_number_of_times_then_fail_as_unavailable(db, hubspot, settings):
    settings.HUBSPOT_MAX_RETRIES = 2
    for _ in range(5):
        hubspot.fail(502)

    with pytest.raises(CrmError) as caught:
        get_crm_client().list_tasks(TaskQuery(status="open"))

    assert (caught.value.code, caught.value.retryable) == ("unavailable", True)
    assert "502" in str(caught.value) and "correlationId" in str(caught.value)
    assert len(hubspot.requests) == 3  # the request and two retries


def test_a_5xx_then_success_returns_the_answer(db, hubspot):
    record = get_crm_client().create_task(spec(PartnerFactory()))
    hubspot.fail(500)
    hubspot.fail(503)

    tasks = get_crm_client().list_tasks(TaskQuery(status="open"))

    assert [t.external_id for t in tasks] == [record.external_id]


def test_a_wrong_token_is_permission_denied_and_not_retried(db, hubspot, settings):
    settings.HUBSPOT_TOKEN = "pat-na1-revoked"

    with pytest.raises(CrmError) as caught:
        get_crm_client().list_tasks(TaskQuery())

    assert (caught.value.code, caught.value.retryable) == ("permission_denied", False)
    assert "401" in str(caught.value)
    assert len(hubspot.requests) == 1


def test_a_slow_hubspot_fails_as_a_timeout_within_crm_timeout(db, hubspot, settings):
    settings.CRM_TIMEOUT = 0.5
    hubspot.latency = 2.0

    started = time.monotonic()
    with pytest.raises(CrmError) as caught:
        get_crm_client().list_tasks(TaskQuery())

    assert (caught.value.code, caught.value.retryable) == ("timeout", True)
    assert time.monotonic() - started < 1.5


def test_a_retry_after_beyond_the_budget_fails_at_once_instead_of_late(db, hubspot, settings):
    settings.CRM_TIMEOUT = 2.0
    hubspot.fail(429, retry_after=30)

    started = time.monotonic()
    with pytest.raises(CrmError) as caught:
        get_crm_client().list_tasks(TaskQuery())

    assert (caught.value.code, caught.value.retryable) == ("unavailable", True)
    assert time.monotonic() - started < 1.0


def test_a_task_hubspot_does_not_know_is_not_found(db, hubspot):
    with pytest.raises(CrmError) as caught:
        get_crm_client().complete_task("123456", outcome="none")

    assert caught.value.code == "not_found"


def test_an_update_changes_only_the_given_fields_and_cancel_defers_the_task(db, hubspot):
    record = get_crm_client().create_task(spec(PartnerFactory()))

    moved = get_crm_client().update_task(record.external_id, UpdateTask(due_on=dt.date(2026, 12, 20)))
    cancelled = get_crm_client().update_task(record.external_id, UpdateTask(status="cancelled"))

    assert hubspot.calls("PATCH", "/crm/v3/objects/tasks/")[0][2] == {
        "properties": {"hs_timestamp": "2026-12-20T00:00:00.000Z"}
    }
    assert (moved.due_on, moved.title) == (dt.date(2026, 12, 20), record.title)
    assert cancelled.status == "cancelled"
    assert hubspot.tasks[record.external_id]["properties"]["hs_task_status"] == "DEFERRED"
    with pytest.raises(CrmError) as caught:
        get_crm_client().update_task(record.external_id, UpdateTask(title="Too late"))
    assert caught.value.code == "invalid"


def test_completing_a_task_resolves_its_intervention_through_the_outcome_service(db, hubspot, retention_user):
    intervention = InterventionFactory()
    record = get_crm_client().create_task(spec(intervention.partner, intervention_id=intervention.pk))

    done = get_crm_client().complete_task(record.external_id, outcome="saved", actor=retention_user)
    again = get_crm_client().complete_task(record.external_id, outcome="saved", actor=retention_user)

    assert (done.status, done.outcome) == ("completed", "saved")
    assert done.completed_at is not None and again == done
    assert hubspot.tasks[record.external_id]["properties"]["hs_task_status"] == "COMPLETED"
    intervention.refresh_from_db()
    assert (intervention.outcome, intervention.outcome_set_by) == ("saved", retention_user)
    assert AuditEvent.objects.filter(event_type="outcome_set", intervention=intervention).count() == 1
    with pytest.raises(CrmError) as caught:
        get_crm_client().complete_task(record.external_id, outcome="churned", actor=retention_user)
    assert caught.value.code == "invalid"


def test_the_agents_follow_up_lands_in_hubspot_and_the_outcome_closes_it(
    db, hubspot, retention_user, django_capture_on_commit_callbacks
):
    owner = UserFactory(username="owen", email="owen@churnsite.example")
    hubspot.add_owner("owen@churnsite.example")
    intervention = InterventionFactory(partner=PartnerFactory(account_owner=owner))

    followup = followup_schedule(intervention=intervention, follow_up_days=3)

    assert followup.crm_task_id in hubspot.tasks
    props = hubspot.tasks[followup.crm_task_id]["properties"]
    assert (props["hs_task_type"], props["churnsite_intervention"]) == ("EMAIL", str(intervention.pk))
    with django_capture_on_commit_callbacks(execute=True):
        intervention_set_outcome(intervention=intervention, outcome="churned", actor=retention_user)
    props = hubspot.tasks[followup.crm_task_id]["properties"]
    assert (props["hs_task_status"], props["churnsite_outcome"]) == ("COMPLETED", "churned")
    assert Intervention.objects.get(pk=intervention.pk).outcome == "churned"


def test_list_tasks_filters_on_hubspot_and_follows_its_paging(db, hubspot):
    hubspot.page_size = 2
    partner, other = PartnerFactory(), PartnerFactory()
    for day in (5, 3, 9, 1, 7):
        get_crm_client().create_task(spec(partner, key=f"k{day}", due_on=dt.date(2026, 12, day)))
    get_crm_client().create_task(spec(other, key="other"))
    hubspot.tasks["1"] = {"id": "1", "properties": {"hs_timestamp": "2026-12-01T00:00:00Z"}}  # not ours

    mine = get_crm_client().list_tasks(TaskQuery(partner_external_id=partner.external_id, limit=10))
    early = get_crm_client().list_tasks(
        TaskQuery(partner_external_id=partner.external_id, due_before=dt.date(2026, 12, 5), limit=10)
    )
    three = get_crm_client().list_tasks(TaskQuery(limit=3))

    assert [t.due_on.day for t in mine] == [1, 3, 5, 7, 9]
    assert [t.due_on.day for t in early] == [1, 3]
    assert len(three) == 3
    searches = hubspot.calls("POST", "/crm/v3/objects/tasks/search")
    assert searches[-1][2]["filterGroups"][0]["filters"][0] == {
        "propertyName": "churnsite_key",
        "operator": "HAS_PROPERTY",
    }


def test_the_crm_page_lists_hubspot_tasks_without_the_simulation_banner(hubspot, retention_client):
    assert not crm_backend_is_simulated()
    record = get_crm_client().create_task(spec(PartnerFactory(external_id="P20001")))

    response = retention_client.get("/crm/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "Simulation Mode" not in html and "(Simulated)" not in html
    assert f'id="task-{record.external_id}"' in html and "P20001" in html


def test_completing_on_the_crm_page_completes_the_hubspot_task(hubspot, retention_client, retention_user):
    intervention = InterventionFactory()
    record = get_crm_client().create_task(spec(intervention.partner, intervention_id=intervention.pk))

    response = retention_client.post(f"/crm/tasks/{record.external_id}/complete/", {"outcome": "saved"})

    assert response.status_code == 302
    assert hubspot.tasks[record.external_id]["properties"]["churnsite_outcome"] == "saved"
    intervention.refresh_from_db()
    assert (intervention.outcome, intervention.outcome_set_by) == ("saved", retention_user)
    assert (
        'Open tasks <span class="muted" id="open-count">(0)' in retention_client.get("/crm/").content.decode()
    )


def test_the_crm_page_says_so_when_hubspot_is_down(hubspot, retention_client, settings):
    settings.HUBSPOT_MAX_RETRIES = 0
    hubspot.fail(503)

    response = retention_client.get("/crm/")

    assert response.status_code == 502
    assert "The CRM did not answer (unavailable)" in response.content.decode()


def test_the_simulated_backend_keeps_the_simulation_banner(retention_client):
    assert crm_backend_is_simulated()

    assert "Simulation Mode" in retention_client.get("/crm/").content.decode()
