"""One send path: every email (agent, partner page, approval) goes through the outbox and its
re-checks; the bypasses of issue 9 now fail closed; the pages say queued until an email is sent."""

import datetime as dt
import random

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from agent import outbox, services, sweep, workflow
from agent.models import AgentRun, AuditEvent, EmailOutbox, PartnerClaim
from retention.models import Intervention, Partner
from tests.conftest import htmx, scored_partner

pytestmark = pytest.mark.django_db

SEND_URL = "/partners/{}/send-email/"


def manual_email(client, partner, **fields):
    data = {"subject": "Let us help", "body": "Hello from Rita.", "writer": "manual", "original_body": ""}
    data.update(fields)
    return client.post(SEND_URL.format(partner.external_id), {**data, "send": "on"}, headers=htmx())


def held_draft(partner: Partner) -> Intervention:
    run = services.agent_run_create(trigger=AgentRun.Trigger.COMMAND)
    workflow.agent_run_execute(run_id=run.pk)
    return Intervention.objects.get(partner=partner)


def test_a_manual_email_to_a_platinum_partner_is_held_for_approval_and_not_sent(retention_client, agent_on):
    platinum = scored_partner(risk=0.4, tier=Partner.Tier.PLATINUM)

    response = manual_email(retention_client, platinum)

    assert mail.outbox == []
    intervention = Intervention.objects.get(partner=platinum)
    assert intervention.review_status == "awaiting" and intervention.sent_at is None
    assert not EmailOutbox.objects.exists()
    assert "held for a manager&#x27;s approval" in response.content.decode()
    # The same review queue as the agent's drafts, and a manager's approval sends it once.
    assert intervention in list(services.selectors.review_queue())
    assert AuditEvent.objects.filter(event_type="held_for_review", intervention=intervention).exists()


def test_a_held_manual_email_is_sent_once_when_a_manager_approves_it(retention_client, manager, agent_on):
    platinum = scored_partner(risk=0.4, tier=Partner.Tier.PLATINUM)
    manual_email(retention_client, platinum)
    intervention = Intervention.objects.get(partner=platinum)

    services.intervention_approve(intervention=intervention, actor=manager)

    [message] = mail.outbox
    assert message.to == [platinum.contact_email] and message.body == "Hello from Rita."
    intervention.refresh_from_db()
    assert intervention.sent_at is not None and intervention.email_outbox.status == "sent"


def test_a_manual_email_to_a_do_not_contact_partner_is_refused_and_audited(
    retention_client, retention_user, agent_on
):
    listed = scored_partner(risk=0.9, tier=Partner.Tier.SILVER)
    services.do_not_contact_add(partner=listed, reason="asked us to stop", actor=retention_user)

    response = manual_email(retention_client, listed)

    assert mail.outbox == [] and not Intervention.objects.filter(partner=listed).exists()
    html = response.content.decode()
    assert "Not sent" in html and "do-not-contact list" in html
    refused = AuditEvent.objects.get(event_type="email_refused", partner=listed)
    assert refused.payload["reason"] == "do_not_contact" and refused.actor_user == retention_user


def test_approving_a_draft_of_a_partner_listed_do_not_contact_after_drafting_is_refused_with_the_reason(
    manager, manager_client, agent_on
):
    platinum = scored_partner(risk=0.97, tier=Partner.Tier.PLATINUM)
    draft = held_draft(platinum)
    services.do_not_contact_add(partner=platinum, reason="legal hold", actor=manager)

    review = manager_client.get(reverse("admin:agent_interventionreview_review", args=[draft.pk]))
    assert "Approving will not send it" in review.content.decode()
    assert "do-not-contact list" in review.content.decode()
    with pytest.raises(ValidationError) as refused:
        services.intervention_approve(intervention=draft, actor=manager)
    assert "do-not-contact list" in refused.value.messages[0] and "legal hold" in refused.value.messages[0]
    response = manager_client.post(
        reverse("admin:agent_interventionreview_review", args=[draft.pk]),
        {"decision": "approve", "email_subject": draft.email_subject, "email_body": draft.email_body},
    )
    assert "do-not-contact list" in response.content.decode()
    draft.refresh_from_db()
    assert draft.review_status == "awaiting" and draft.sent_at is None and mail.outbox == []
    assert (
        AuditEvent.objects.filter(event_type="review_refused", payload__reason="do_not_contact").count() == 2
    )


def test_the_agent_control_approve_button_says_why_it_refused(manager, manager_client, agent_on):
    platinum = scored_partner(risk=0.97, tier=Partner.Tier.PLATINUM)
    draft = held_draft(platinum)
    services.do_not_contact_add(partner=platinum, reason="", actor=manager)

    response = manager_client.post(reverse("agent:review_approve", args=[draft.pk]), follow=True)

    assert "Not approved" in response.content.decode() and "do-not-contact list" in response.content.decode()
    assert mail.outbox == []


def test_the_partner_page_and_the_live_feed_show_a_do_not_contact_badge(retention_client, retention_user):
    listed = scored_partner(risk=0.9, external_id="P7", name="Listed Ltd")
    scored_partner(risk=0.8, external_id="P8", name="Other Ltd")
    services.do_not_contact_add(partner=listed, reason="asked", actor=retention_user)

    page = retention_client.get("/partners/P7/").content.decode()
    feed = retention_client.get("/").content.decode()

    assert "badge-dnc" in page and "Do not contact" in page
    assert feed.count("badge-dnc") == 1
    assert "badge-dnc" not in retention_client.get("/partners/P8/").content.decode()


def test_an_email_carries_its_outbox_key_as_message_id_and_goes_out_once_if_delivered_twice(agent_on):
    partner = scored_partner(risk=0.95)
    run = services.agent_run_create(trigger=AgentRun.Trigger.COMMAND)
    workflow.agent_run_execute(run_id=run.pk)
    row = EmailOutbox.objects.get(intervention__partner=partner)

    assert outbox.email_outbox_deliver(outbox_id=row.pk) == "sent"  # the task run again

    [message] = mail.outbox
    assert message.extra_headers["Message-ID"].startswith(f"<{row.key}@")
    assert message.extra_headers["X-Churnsite-Outbox"] == str(row.key)
    assert AuditEvent.objects.filter(event_type="email_sent", intervention=row.intervention).count() == 1


def test_a_failed_send_stays_queued_the_page_says_queued_and_the_retry_sends_it(
    retention_client, agent_on, settings
):
    partner = scored_partner(risk=0.9, external_id="P9")
    settings.EMAIL_BACKEND = "tests.agent.test_send_path.BrokenBackend"

    response = manual_email(retention_client, partner)

    intervention = Intervention.objects.get(partner=partner)
    assert intervention.sent_at is None and intervention.email_outbox.status == "queued"
    assert "queued (not sent yet)" in response.content.decode()
    page = retention_client.get("/partners/P9/").content.decode()
    assert (
        "<strong>Email queued (not sent yet)</strong>" in page and "<strong>Email sent</strong>" not in page
    )
    failed = AuditEvent.objects.get(event_type="email_failed", intervention=intervention)
    assert failed.payload["will_retry"] is True

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert outbox.email_outbox_deliver(outbox_id=intervention.email_outbox.pk) == "sent"
    assert len(mail.outbox) == 1
    assert "<strong>Email sent</strong>" in retention_client.get("/partners/P9/").content.decode()


def test_a_queued_email_is_refused_at_send_time_when_the_partner_was_listed_meanwhile(
    agent_on, retention_user
):
    partner = scored_partner(risk=0.95)
    intervention = services.partner_email_send(
        partner=partner, subject="S", body="B", writer="manual", actor=retention_user, send=False
    )[0]
    row = outbox.email_outbox_queue(intervention=intervention, actor=retention_user)
    services.do_not_contact_add(partner=partner, reason="asked", actor=retention_user)

    assert outbox.email_outbox_deliver(outbox_id=row.pk) == "refused"

    assert mail.outbox == []
    assert AuditEvent.objects.get(event_type="email_refused", intervention=intervention).payload[
        "reason"
    ] == ("do_not_contact")


class BrokenBackend:
    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("mail server down")


# Intervene now says what happened ------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "control_fraction", "expected"),
    [
        (Partner.Tier.SILVER, 0.0, "was contacted: the email is sent"),
        (Partner.Tier.PLATINUM, 0.0, "held for a manager's approval"),
        (Partner.Tier.SILVER, 0.5, "drawn into the control group"),
    ],
)
def test_intervene_now_reports_what_actually_happened(
    retention_client, agent_on, tier, control_fraction, expected, monkeypatch
):
    agent_on.control_fraction = control_fraction
    agent_on.save()
    partner = scored_partner(risk=0.3, tier=tier)
    # A control fraction of 0.5 with this draw puts the partner in the control group.
    monkeypatch.setattr(workflow.random, "SystemRandom", lambda: random.Random(1))
    run = services.agent_run_create(trigger=AgentRun.Trigger.PARTNER, partner=partner)

    summary = workflow.agent_partner_execute(run_id=run.pk, partner_id=partner.pk, skip_threshold=True)

    assert expected in summary["outcome"] and partner.external_id in summary["outcome"]
    page = retention_client.get(reverse("agent:control") + f"?run={run.pk}").content.decode()
    assert 'id="run-outcome"' in page


def test_intervene_now_says_the_agent_is_stopped_or_capped_instead_of_intervening(retention_client, agent_on):
    partner = scored_partner(risk=0.3)
    agent_on.max_per_hour = 0
    agent_on.save()
    capped = retention_client.post(reverse("agent:intervene"), {"partner": partner.external_id})
    assert capped.status_code == 400 and "hourly cap of 0 contacts is reached" in capped.content.decode()
    agent_on.enabled = False
    agent_on.save()
    stopped = retention_client.post(reverse("agent:intervene"), {"partner": partner.external_id})
    assert stopped.status_code == 400 and "the agent is stopped" in stopped.content.decode()
    assert not AgentRun.objects.filter(trigger="partner").exists()


def test_an_intervene_now_run_that_lost_its_partner_race_says_why(agent_on):
    partner = scored_partner(risk=0.3)
    PartnerClaim.objects.create(partner=partner, token="x" * 32, claimed_at=timezone.now())
    run = services.agent_run_create(trigger=AgentRun.Trigger.PARTNER, partner=partner)

    summary = workflow.agent_partner_execute(run_id=run.pk, partner_id=partner.pk, skip_threshold=True)

    assert summary["result"] == "skipped" and "another run was working on" in summary["outcome"]


# The sweep --------------------------------------------------------------------------


def test_the_sweep_fails_a_run_whose_worker_died_and_releases_its_claims(agent_on):
    partner = scored_partner(risk=0.9)
    run = services.agent_run_create(trigger=AgentRun.Trigger.SCHEDULE)
    started = timezone.now() - sweep.run_time_limit(run) - dt.timedelta(minutes=2)
    AgentRun.objects.filter(pk=run.pk).update(status="running", started_at=started)
    PartnerClaim.objects.create(partner=partner, run=run, token="y" * 32, claimed_at=started)
    fresh = services.agent_run_create(trigger=AgentRun.Trigger.SCHEDULE)
    AgentRun.objects.filter(pk=fresh.pk).update(status="running", started_at=timezone.now())

    counts = sweep.agent_sweep()

    assert counts["runs_failed"] == 1
    run.refresh_from_db()
    fresh.refresh_from_db()
    assert run.status == "failed" and fresh.status == "running"
    assert not PartnerClaim.objects.exists()
    event = AuditEvent.objects.get(event_type="run_failed", run=run)
    assert event.payload["reason"] == "worker_lost" and event.payload["claims_released"] == 1


def test_the_sweep_fails_a_run_queued_past_its_limit(agent_on, settings):
    run = services.agent_run_create(trigger=AgentRun.Trigger.MANUAL)
    AgentRun.objects.filter(pk=run.pk).update(
        created_at=timezone.now() - dt.timedelta(seconds=settings.AGENT_QUEUED_RUN_LIMIT + 1)
    )

    sweep.agent_sweep()

    run.refresh_from_db()
    assert run.status == "failed"
    assert AuditEvent.objects.get(event_type="run_failed", run=run).payload["reason"] == "never_started"


def test_the_sweep_is_declared_every_minute_in_the_one_schedules_module():
    from churnsite.schedules import PERIODIC_TASKS

    [entry] = [spec for spec in PERIODIC_TASKS if spec["task"] == "agent.sweep"]
    assert entry["interval"] == {"every": 1, "period": "minutes"}


def test_an_email_whose_sender_died_mid_send_is_marked_in_doubt_and_never_sent_again(
    retention_client, agent_on, monkeypatch
):
    # The claim commits "sending" before the SMTP call; a sender that dies after it (kill -9 in
    # the SMTP call, or after the server accepted it) leaves the row there. Whether the partner
    # got it is unknown, so the sweep marks it in doubt instead of sending a second copy
    # (tests/agent/test_faults.py kills a real worker at exactly that point: fault "sent").
    partner = scored_partner(risk=0.95, external_id="P31")
    monkeypatch.setattr(outbox, "email_outbox_deliver", lambda *, outbox_id: "queued")
    run = services.agent_run_create(trigger=AgentRun.Trigger.COMMAND)
    workflow.agent_run_execute(run_id=run.pk)
    monkeypatch.undo()
    row = EmailOutbox.objects.get(intervention__partner=partner)
    long_ago = timezone.now() - dt.timedelta(seconds=outbox.SENDER_TIME_LIMIT + 60)
    EmailOutbox.objects.filter(pk=row.pk).update(status="sending", attempts=1, updated_at=long_ago)

    assert outbox.email_outbox_deliver(outbox_id=row.pk) == "sending"  # a live sender's row: left alone
    assert sweep.agent_sweep()["emails_in_doubt"] == 1

    row.refresh_from_db()
    assert row.status == "in_doubt" and "may have gone out" in row.last_error
    assert outbox.email_outbox_deliver(outbox_id=row.pk) == "in_doubt"
    assert sweep.agent_sweep()["emails_in_doubt"] == 0 and outbox.email_outbox_due() == []
    assert mail.outbox == []
    event = AuditEvent.objects.get(event_type="email_in_doubt")
    assert event.intervention == row.intervention and event.payload["outbox"] == str(row.key)
    log = retention_client.get("/interventions/").content.decode()
    assert "Email interrupted mid-send (may have gone out: check before sending again)" in log


def test_a_row_sending_for_less_than_a_senders_time_limit_is_left_to_its_sender(agent_on):
    partner = scored_partner(risk=0.95)
    run = services.agent_run_create(trigger=AgentRun.Trigger.COMMAND)
    workflow.agent_run_execute(run_id=run.pk)
    row = EmailOutbox.objects.get(intervention__partner=partner)
    EmailOutbox.objects.filter(pk=row.pk).update(status="sending", updated_at=timezone.now())

    assert sweep.agent_sweep()["emails_in_doubt"] == 0
    row.refresh_from_db()
    assert row.status == "sending"
