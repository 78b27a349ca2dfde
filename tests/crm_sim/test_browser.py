"""The CRM flow in a real browser: complete a task as Saved, see it Saved in the Intervention Log."""

import datetime as dt

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from retention.models import Intervention
from tests.conftest import browser_login
from tests.factories import PartnerFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_task_completed_as_saved_in_the_crm_shows_saved_in_the_intervention_log(
    page, retention_user, make_task
):
    due = timezone.localdate() + dt.timedelta(days=2)
    task = make_task(
        partner=PartnerFactory(external_id="P18477"),
        title="Retention Call",
        due_on=due,
        assigned_to=retention_user,
        intervention=True,
    )
    browser_login(page, "rita")

    page.goto("/crm/")
    expect(page.locator(".crm-banner")).to_contain_text("Simulation Mode")
    expect(page.locator(".crm-banner")).to_contain_text("In production, this syncs with the CRM API")
    expect(page.locator("#crm-views")).to_contain_text("All open 1")
    row = page.locator(f"#task-{task.external_id}")
    expect(row).to_contain_text(f"☐ P18477 - Retention Call - Due: {due.month}/{due.day}")

    row.get_by_label("Outcome for P18477").select_option("saved")
    row.get_by_role("button", name="Complete").click()

    # Swapped by htmx, no page load: the row moves to the closed list, the counters come with it.
    expect(page.locator("#closed-tasks")).to_contain_text("✓ P18477 - Completed - Saved")
    expect(page.locator("#open-tasks")).to_contain_text("No open tasks in this view.")
    expect(page.locator("#crm-views")).to_contain_text("All open 0")
    expect(page.locator("#open-count")).to_have_text("(0)")
    assert page.url.endswith("/crm/")

    page.get_by_role("link", name="Mine").click()
    expect(page.locator("#open-tasks")).to_contain_text("No open tasks in this view.")
    expect(page.locator("#closed-tasks")).to_contain_text("P18477 - Completed - Saved")

    # The same outcome, seen where the team tracks interventions.
    page.get_by_role("link", name="Interventions").click()
    log_row = page.locator(f"#intervention-{task.intervention_id}")
    expect(log_row.get_by_label("Status of P18477")).to_have_value("saved")
    expect(log_row).to_contain_text("Rita Retention")
    expect(page.locator('[data-stat="saved"]')).to_have_text("1")
    intervention = Intervention.objects.get(pk=task.intervention_id)
    assert (intervention.outcome, intervention.outcome_set_by_id) == ("saved", retention_user.pk)
