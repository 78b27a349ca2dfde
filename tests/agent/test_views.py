import re

import pytest
from django.urls import reverse

from agent import services, workflow
from agent.models import AgentConfig, AgentRun, AuditEvent, DoNotContact
from retention.models import Intervention, Partner
from tests.conftest import htmx, scored_partner
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
URL = "/agent/"


def held_intervention(**partner_fields) -> Intervention:
    partner = scored_partner(risk=0.97, tier=Partner.Tier.PLATINUM, **partner_fields)
    run = services.agent_run_create(trigger=AgentRun.Trigger.COMMAND)
    workflow.agent_run_execute(run_id=run.pk)
    return Intervention.objects.get(partner=partner)


def test_the_agent_page_needs_a_login(client):
    response = client.get(URL)
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_someone_outside_the_teams_is_refused(client):
    client.force_login(UserFactory(username="guest"))
    assert client.get(URL).status_code == 403


def test_the_page_says_which_writer_and_broker_are_active(retention_client):
    response = retention_client.get(URL)
    assert response.status_code == 200
    body = response.content.decode()
    assert "Agent Control" in body and "<html" in body
    assert "Template writer: no OPENAI_API_KEY" in body
    assert "Stopped" in body and "Hourly budget used" in body


def test_the_page_names_the_llm_when_a_key_is_set(retention_client, settings):
    settings.OPENAI_API_KEY = "sk-x"
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
    settings.OPENAI_MODEL = "gpt-test"
    assert "LLM: gpt-test at http://127.0.0.1:9/v1" in retention_client.get(URL).content.decode()


@pytest.mark.parametrize("partial", ["log", "budget", "queue"])
def test_each_live_section_is_served_as_an_htmx_partial(retention_client, partial):
    response = retention_client.get(URL, headers=htmx(partial))
    body = response.content.decode()
    assert response.status_code == 200
    assert f'id="{partial}"' in body and "<html" not in body


def test_the_activity_log_filters_by_run_and_type(retention_client, agent_on):
    scored_partner(risk=0.95)
    first = services.agent_run_create(trigger=AgentRun.Trigger.COMMAND)
    workflow.agent_run_execute(run_id=first.pk)
    second = services.agent_run_create(trigger=AgentRun.Trigger.COMMAND)
    response = retention_client.get(URL, {"run": second.pk}, headers=htmx("log"))
    body = response.content.decode()
    assert "run_requested" in body and "email_sent" not in body
    response = retention_client.get(URL, {"type": "email_sent"}, headers=htmx("log"))
    body = response.content.decode()
    assert "email_sent" in body and "run_started" not in body


def test_start_and_stop_flip_the_flag_and_are_audited(retention_client, retention_user):
    retention_client.post(reverse("agent:toggle"), {"enabled": "1"})
    assert AgentConfig.objects.get().enabled is True
    retention_client.post(reverse("agent:toggle"), {"enabled": "0"})
    assert AgentConfig.objects.get().enabled is False
    assert AuditEvent.objects.filter(event_type="config_changed", actor_user=retention_user).count() == 2


def test_run_now_queues_a_run_through_celery_after_commit_and_polls_its_progress(
    retention_client, agent_on, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = retention_client.post(reverse("agent:run_now"), headers=htmx())
    run = AgentRun.objects.get()
    assert run.trigger == "manual" and run.status == "queued"
    assert len(callbacks) == 1  # the task is sent only once the run row is committed
    body = response.content.decode()
    assert 'id="progress"' in body and 'hx-trigger="every 1s"' in body and "<html" not in body
    progress = retention_client.get(reverse("agent:run_progress", args=[run.pk]), headers=htmx())
    assert f"#{run.pk}" in progress.content.decode()


def test_a_finished_run_stops_polling(retention_client, agent_on):
    run = services.agent_run_create(trigger=AgentRun.Trigger.COMMAND)
    workflow.agent_run_execute(run_id=run.pk)
    body = retention_client.get(reverse("agent:run_progress", args=[run.pk])).content.decode()
    assert "Finished" in body and "every 1s" not in body


def test_the_configuration_form_validates_and_saves(manager_client):
    data = {
        "risk_threshold": "1.5",
        "max_per_hour": "50",
        "cooldown_days": "30",
        "follow_up_days": "7",
        "approval_tiers": ["platinum"],
        "control_fraction": "0.1",
        "llm_model": "",
    }
    response = manager_client.post(reverse("agent:config"), data)
    assert response.status_code == 400 and "between 0 and 1" in response.content.decode()
    # A negative cooldown gets the form's own range, the same one the browser enforces.
    html = manager_client.post(
        reverse("agent:config"), {**data, "risk_threshold": "0.9", "cooldown_days": "-3"}
    ).content.decode()
    assert "Between 1 and 365 days." in html and "greater than or equal to 0" not in html
    cooldown_input = re.search(r'<input[^>]*name="cooldown_days"[^>]*>', html).group(0)
    assert 'min="1"' in cooldown_input and 'max="365"' in cooldown_input
    response = manager_client.post(
        reverse("agent:config"), {**data, "risk_threshold": "0.9", "approval_tiers": ["gold", "platinum"]}
    )
    assert response.status_code == 302
    config = AgentConfig.objects.get()
    assert config.risk_threshold == 0.9 and config.approval_tiers == ["gold", "platinum"]


def test_the_do_not_contact_list_can_be_added_to_by_retention_and_emptied_by_a_manager(
    retention_client, manager
):
    partner = scored_partner()
    retention_client.post(reverse("agent:dnc_add"), {"partner": partner.external_id, "reason": "legal"})
    assert DoNotContact.objects.get().partner == partner
    assert partner.external_id in retention_client.get(URL).content.decode()
    # Taking a partner off the list lets the agent contact it again: a manager's call.
    assert retention_client.post(reverse("agent:dnc_remove", args=[partner.pk])).status_code == 403
    assert DoNotContact.objects.exists()
    retention_client.force_login(manager)
    retention_client.post(reverse("agent:dnc_remove", args=[partner.pk]))
    assert not DoNotContact.objects.exists()


def test_a_retention_user_cannot_switch_the_guardrails_off(retention_client):
    """Issue 9: Retention POSTed no approval tiers and max_per_hour=1000, and it was saved."""
    before = AgentConfig.objects.get_or_create(pk=1)[0]
    response = retention_client.post(
        reverse("agent:config"),
        {"risk_threshold": "0.1", "max_per_hour": "1000", "cooldown_days": "1", "follow_up_days": "7"}
        | {"control_fraction": "0", "llm_model": ""},
    )
    assert response.status_code == 403
    after = AgentConfig.objects.get(pk=1)
    assert (after.max_per_hour, after.approval_tiers) == (before.max_per_hour, before.approval_tiers)
    refused = AuditEvent.objects.get(event_type="access_refused")
    assert (
        refused.actor_user.username == "rita" and refused.payload["permission"] == "agent.change_agentconfig"
    )


def test_intervene_now_queues_one_partner(retention_client, agent_on, django_capture_on_commit_callbacks):
    partner = scored_partner(risk=0.1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        retention_client.post(reverse("agent:intervene"), {"partner": partner.external_id})
    assert len(callbacks) == 1
    run = AgentRun.objects.get(trigger="partner")
    assert run.requested_by.username == "rita"
    response = retention_client.post(reverse("agent:intervene"), {"partner": "NOPE"})
    assert response.status_code == 400


def test_intervene_now_says_why_a_partner_cannot_be_contacted_instead_of_queueing(
    retention_client, retention_user, agent_on, django_capture_on_commit_callbacks
):
    partner = scored_partner(risk=0.9)
    services.do_not_contact_add(partner=partner, reason="asked", actor=retention_user)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = retention_client.post(reverse("agent:intervene"), {"partner": partner.external_id})

    assert response.status_code == 400 and callbacks == []
    assert f"{partner.external_id} is on the do-not-contact list" in response.content.decode()
    assert not AgentRun.objects.filter(trigger="partner").exists()


def test_a_retention_user_cannot_approve_and_the_attempt_is_audited(
    retention_client, retention_user, agent_on, mailoutbox
):
    intervention = held_intervention()
    response = retention_client.post(reverse("agent:review_approve", args=[intervention.pk]))
    assert response.status_code == 403
    refused = AuditEvent.objects.get(event_type="access_refused", actor_user=retention_user)
    assert refused.payload["permission"] == "retention.approve_intervention"
    intervention.refresh_from_db()
    assert intervention.review_status == "awaiting" and mailoutbox == []


def test_llm_text_is_escaped_on_the_agent_page(retention_client, agent_on):
    intervention = held_intervention()
    Intervention.objects.filter(pk=intervention.pk).update(email_subject="<script>alert(1)</script>")
    body = retention_client.get(URL).content.decode()
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;" in body


# The review queue in the admin ------------------------------------------------------


def test_managers_see_the_review_queue_and_the_draft_with_its_drivers(manager_client, agent_on):
    intervention = held_intervention()
    Intervention.objects.filter(pk=intervention.pk).update(email_body="Hello <b>team</b>")
    changelist = manager_client.get(reverse("admin:agent_interventionreview_changelist"))
    assert changelist.status_code == 200 and intervention.partner.external_id in changelist.content.decode()
    page = manager_client.get(reverse("admin:agent_interventionreview_review", args=[intervention.pk]))
    body = page.content.decode()
    partner = intervention.partner
    assert f"<h1>Held for approval: {partner.external_id} {partner.name}, Platinum</h1>" in body
    assert '<span id="risk">97%</span>' in body
    assert "Payment 45 days overdue (adds 18.0 points to the risk)" in body
    assert "Hello &lt;b&gt;team&lt;/b&gt;" in body


def test_the_queue_refreshes_itself_and_links_the_admin_review_for_managers_only(
    retention_client, manager, agent_on
):
    intervention = held_intervention()
    review_url = reverse("admin:agent_interventionreview_review", args=[intervention.pk])

    queue = retention_client.get(URL, headers=htmx("queue")).content.decode()
    assert queue.lstrip().startswith('<div id="queue"') and 'hx-trigger="every 10s"' in queue
    assert ">97%</td>" in queue  # risk as the rest of the product shows it
    assert review_url not in queue and "A manager approves it" in queue  # no dead admin link

    retention_client.force_login(manager)
    queue = retention_client.get(URL, headers=htmx("queue")).content.decode()
    assert review_url in queue


def test_a_manager_approves_an_edited_draft_in_the_admin(manager_client, manager, agent_on, mailoutbox):
    intervention = held_intervention()
    url = reverse("admin:agent_interventionreview_review", args=[intervention.pk])
    response = manager_client.post(
        url,
        {"email_subject": "Edited subject", "email_body": "Edited body", "reason": "", "decision": "approve"},
    )
    assert response.status_code == 302
    [mail] = mailoutbox
    assert mail.subject == "Edited subject" and mail.to == [intervention.partner.contact_email]
    event = AuditEvent.objects.get(event_type="review_approved")
    assert event.actor_user == manager and "+Edited body" in event.payload["diff"]
    # The sent text is the manager's now; the audit keeps who drafted it.
    intervention.refresh_from_db()
    assert intervention.writer == "manual" and event.payload["drafted_by"] == "template"
    # The review page now reads as done, with the edit side by side (draft left, sent right).
    page = manager_client.get(url).content.decode().replace("&nbsp;", " ")
    partner = intervention.partner
    assert f"<h1>Approved: {partner.external_id} {partner.name}, Platinum</h1>" in page
    side_by_side = page.split('id="edit-side-by-side"')[1].split("</table>")[0]
    assert "Draft as written" in side_by_side and "As approved and sent" in side_by_side
    assert "Edited subject" in side_by_side and event.payload["draft"]["subject"] in side_by_side


def test_a_manager_rejects_with_a_reason_in_the_admin(manager_client, agent_on, mailoutbox):
    intervention = held_intervention()
    url = reverse("admin:agent_interventionreview_review", args=[intervention.pk])
    data = {
        "email_subject": intervention.email_subject,
        "email_body": intervention.email_body,
        "decision": "reject",
    }
    assert manager_client.post(url, {**data, "reason": ""}).status_code == 200  # the reason is required
    assert manager_client.post(url, {**data, "reason": "Renewal call already booked"}).status_code == 302
    intervention.refresh_from_db()
    assert intervention.review_status == "rejected" and mailoutbox == []


def test_staff_without_the_approve_permission_get_403_and_are_audited(client, agent_on, mailoutbox):
    clerk = UserFactory(username="clerk", is_staff=True, groups=["Retention"])
    client.force_login(clerk)
    intervention = held_intervention()
    url = reverse("admin:agent_interventionreview_review", args=[intervention.pk])
    response = client.post(url, {"email_subject": "x", "email_body": "y", "decision": "approve"})
    assert response.status_code == 403
    assert AuditEvent.objects.filter(event_type="review_refused", actor_user=clerk).exists()
    assert mailoutbox == []


def test_a_refused_approval_says_why_on_the_403_page(retention_client, agent_on, mailoutbox):
    intervention = held_intervention()

    response = retention_client.post(reverse("agent:review_approve", args=[intervention.pk]))

    assert response.status_code == 403
    html = response.content.decode()
    assert "Only managers can approve held interventions" in html and 'class="mainnav"' in html
    assert mailoutbox == []


def test_the_audit_trail_is_read_only_in_the_admin():
    from django.contrib.admin.sites import site

    from agent.models import AuditEvent as Model

    model_admin = site._registry[Model]
    request = type("R", (), {"user": UserFactory(username="root", is_staff=True, is_superuser=True)})()
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


def test_the_page_says_how_many_partners_a_run_would_act_on(retention_client):
    AgentConfig.objects.update_or_create(pk=1, defaults={"risk_threshold": 0.85})
    scored_partner(risk=0.9)
    scored_partner(risk=0.95)
    scored_partner(risk=0.5)
    page = retention_client.get(URL, headers=htmx("budget")).content.decode()
    assert "<strong>2</strong> partners eligible now" in page

    AgentConfig.objects.filter(pk=1).update(risk_threshold=0.99)
    page = retention_client.get(URL).content.decode()
    assert "<strong>0</strong> partners eligible now" in page and "a run would contact nobody" in page


@pytest.mark.parametrize("partial", ["log", "budget", "queue"])
def test_a_live_poll_computes_only_what_its_section_shows(retention_client, partial):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    scored_partner(risk=0.95)
    with CaptureQueriesContext(connection) as queries:
        response = retention_client.get(URL, headers=htmx(partial))
    assert response.status_code == 200
    sql = [q["sql"] for q in queries.captured_queries]
    # The event-type list scans the whole audit trail: only the full page's select needs it.
    assert not any("DISTINCT" in s and "agent_auditevent" in s for s in sql)
    # Only the budget section counts eligible partners.
    counts_eligible = any("COUNT(*)" in s and "ml_partnerscore" in s for s in sql)
    assert counts_eligible == (partial == "budget")


def test_the_full_page_still_lists_the_event_types_to_filter_by(retention_client):
    services.agent_set_enabled(enabled=True, actor=None)
    page = retention_client.get(URL).content.decode()
    assert '<option value="config_changed">config_changed</option>' in page


def test_the_activity_log_rounds_numbers_and_keeps_the_stored_payload_whole(retention_client):
    from agent.audit import audit_record

    event = audit_record(
        event_type="partner_selected",
        payload={"risk": 0.5905516338182899, "threshold": 0.5, "due_at": "2026-12-02T16:47:47.493526+00:00"},
    )

    log = retention_client.get(URL, headers=htmx("log")).content.decode()

    assert "risk=0.591 " in log and "threshold=0.5 " in log and "0.59055" not in log
    assert "due_at=2026-12-02 16:47 " in log
    event.refresh_from_db()
    assert event.payload["risk"] == 0.5905516338182899


@pytest.mark.parametrize("number", ["9" * 30, "9223372036854775808", "1" + "0" * 400])
def test_a_huge_run_number_in_the_activity_log_filter_is_a_form_error_not_a_500(retention_client, number):
    """SQLite raised OverflowError past 2**63-1 (issue 9); the filter refuses such a number and
    the log shows every event, as for any invalid filter."""
    from agent.forms import ActivityFilterForm

    services.agent_run_create(trigger=AgentRun.Trigger.COMMAND)
    page = retention_client.get(URL, {"run": number})
    log = retention_client.get(URL, {"run": number}, headers=htmx("log"))
    assert page.status_code == 200 and log.status_code == 200
    assert "run_requested" in log.content.decode()
    assert not ActivityFilterForm({"run": number}).is_valid()
