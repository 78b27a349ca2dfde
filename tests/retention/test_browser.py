"""The desk's main flow in a real browser: feed -> partner -> log -> resolve -> stats change."""

import re

import pytest
from playwright.sync_api import expect

from retention.models import Intervention
from tests.conftest import browser_login, scored_partner

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_retention_user_triages_the_feed_logs_an_intervention_and_records_it_saved(page, retention_user):
    scored_partner(external_id="P18477", name="Northwind Traders", risk=0.94, bucket="7d")
    scored_partner(external_id="P10342", name="Contoso Retail", risk=0.97, bucket="90d")
    scored_partner(external_id="P20001", name="Fabrikam", risk=0.60, bucket="7d")
    browser_login(page, "rita")

    page.goto("/?sort=risk")
    rows = page.locator("table.feed tbody tr")
    expect(rows.first).to_have_attribute("data-partner", "P10342")

    # Sort by urgency through the filter form: htmx swaps the rows and keeps the URL in step.
    page.get_by_label("Sort").select_option("urgency")
    expect(rows.first).to_have_attribute("data-partner", "P18477")
    expect(page).to_have_url(re.compile(r"sort=urgency"))
    assert [rows.nth(i).get_attribute("data-partner") for i in range(3)] == ["P18477", "P20001", "P10342"]
    expect(rows.first).to_contain_text("🔴 P18477 • Risk: 94% • Churn in: ~7 days")

    page.get_by_role("link", name=re.compile("P18477 • Risk")).click()
    # A user acts once the page has loaded: htmx and the deferred scripts are in place by then.
    page.wait_for_url("**/partners/P18477/")
    expect(page.locator("h1")).to_contain_text("Northwind Traders")
    expect(page.locator("#risk-now")).to_have_text("94%")

    page.locator("#id_action").select_option("call_scheduled")
    page.locator("#id_note").fill("Call the CFO on Friday")
    page.get_by_role("button", name="Log intervention").click()
    expect(page.locator("#act .notice")).to_have_text("Logged: Call scheduled")
    expect(page.locator("#timeline")).to_contain_text("Call the CFO on Friday")
    intervention = Intervention.objects.get(partner__external_id="P18477")

    page.get_by_role("link", name="Interventions").click()
    page.wait_for_url("**/interventions/")
    expect(page.locator("#summary-line")).to_contain_text("0 saved, 0 churned, 1 pending")
    status = page.get_by_label("Status of P18477")

    # The change asks first; cancelled, nothing is saved and the menu shows the row's outcome.
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    status.select_option("saved")
    expect(status).to_have_value("pending")
    assert questions == ["Mark P18477 as Saved ✓? You can undo it for 10 seconds."]
    intervention.refresh_from_db()
    assert intervention.outcome == "pending"

    # Confirmed, it saves inline, offers an Undo, and the summary refreshes from the server.
    page.once("dialog", lambda dialog: dialog.accept())
    status.select_option("saved")
    expect(page.locator("#summary-line")).to_contain_text("1 saved, 0 churned, 0 pending")
    page.get_by_role("button", name="Undo").click()
    expect(page.locator("#summary-line")).to_contain_text("0 saved, 0 churned, 1 pending")
    expect(status).to_have_value("pending")
    intervention.refresh_from_db()
    assert intervention.outcome == "pending"

    page.once("dialog", lambda dialog: dialog.accept())
    status.select_option("saved")
    expect(page.locator("#summary-line")).to_contain_text("1 saved, 0 churned, 0 pending")
    # The Undo offer goes once its 10 seconds are over.
    expect(page.get_by_role("button", name="Undo")).to_be_hidden(timeout=15_000)
    expect(page.locator('[data-stat="save-rate"]')).to_have_text("100%")
    intervention.refresh_from_db()
    assert (intervention.outcome, intervention.outcome_set_by_id) == ("saved", retention_user.pk)

    # It lives in the database: a fresh load shows the same.
    page.reload()
    expect(page.get_by_label("Status of P18477")).to_have_value("saved")
