"""The Agent Control page and the review queue in a real headless Chromium."""

import pytest
from playwright.sync_api import expect

from churnsite.celery import app
from retention.models import Intervention, Partner
from tests.conftest import browser_login, scored_partner
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def in_process_tasks():
    # The page is what is under test here; real workers are exercised in test_workers.py.
    previous = app.conf.task_always_eager
    app.conf.update(task_always_eager=True)
    yield
    app.conf.update(task_always_eager=previous)


def test_a_retention_user_starts_the_agent_and_watches_a_run(page, in_process_tasks, mailoutbox):
    from agent.models import AgentConfig

    UserFactory(username="rita", groups=["Retention"])
    partner = scored_partner(risk=0.95, name="Northwind Traders")
    # Stopped, and no control-group draw: this one partner must be contacted, not held out.
    AgentConfig.objects.update_or_create(pk=1, defaults={"enabled": False, "control_fraction": 0})
    page.goto("/agent/")
    browser_login(page, "rita")
    page.goto("/agent/")
    assert "Template writer: no OPENAI_API_KEY" in page.locator("#writer").inner_text()
    page.click("button:has-text('Start')")
    expect(page.locator("#status")).to_contain_text("Running")
    page.click("button:has-text('Run now')")
    page.locator("#progress >> text=Finished").wait_for()
    assert Intervention.objects.get(partner=partner).sent_at is not None
    # The activity log refreshes itself.
    page.locator("#log code", has_text="email_sent").first.wait_for()
    page.click("button:has-text('Stop')")
    expect(page.locator("#status")).to_contain_text("Stopped")


def test_a_manager_edits_and_approves_a_held_platinum_draft(page, in_process_tasks, mailoutbox):
    from agent import services, workflow
    from agent.models import AgentConfig

    UserFactory(username="max", is_staff=True, groups=["Managers"])
    AgentConfig.objects.update_or_create(pk=1, defaults={"enabled": True, "control_fraction": 0})
    partner = scored_partner(risk=0.97, tier=Partner.Tier.PLATINUM)
    run = services.agent_run_create(trigger="command")
    workflow.agent_run_execute(run_id=run.pk)
    intervention = Intervention.objects.get(partner=partner)
    browser_login(page, "max")
    page.goto("/admin/agent/interventionreview/")
    page.get_by_role("link", name="Review", exact=True).click()
    assert "Payment 45 days overdue" in page.locator("#drivers").inner_text()
    page.fill("#id_email_subject", "A personal note from your account team")
    page.click("button:has-text('Approve and send')")
    page.wait_for_url("**/admin/agent/interventionreview/")
    intervention.refresh_from_db()
    assert intervention.review_status == "approved" and intervention.sent_at is not None
    assert intervention.email_subject == "A personal note from your account team"
