"""The headline numbers in a real browser: the Outcomes headline, the Model page's first
sentence, and the desk on a 390 px phone."""

import re

import pytest
from playwright.sync_api import expect

from retention.models import Intervention
from tests.conftest import browser_login, scored_partner
from tests.factories import InterventionFactory, ModelVersionFactory
from tests.ml.test_views import METRICS
from tests.retention.test_outcomes import make_arm

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_the_outcomes_headline_is_the_incremental_roi_with_its_interval(page, retention_user):
    make_arm(n=20, churned=10, holdout=True, start=0, tier="gold")
    make_arm(n=20, churned=4, holdout=False, start=100, tier="gold")
    browser_login(page, "rita")

    page.goto("/outcomes/")

    headline = page.locator("#incremental-headline")
    expect(headline).to_contain_text("Incremental ROI: what the contacts caused, net of their cost")
    expect(page.locator("#incremental-roi")).to_have_text("+17,900%")
    expect(page.locator("#incremental-roi-ci")).to_have_text(
        re.compile(r"^95% interval \+[\d,]+% to \+[\d,]+%$")
    )
    # The gross figure is there, smaller and below, and says it is not causal.
    expect(page.get_by_text("Gross value retained (not causal)")).to_be_visible()
    big = page.locator("#incremental-roi").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    small = page.locator("#realized-roi").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    assert big > small


def test_the_model_page_opens_with_a_reliability_statement_in_words(page, retention_user):
    ModelVersionFactory(is_active=True, metrics=METRICS)
    browser_login(page, "rita")

    page.goto("/model/")

    first = page.locator("#model-detail p").first
    expect(first).to_have_text(
        re.compile(r"^Of partners we showed at \d+-\d+% risk, \d+% churned within 90 days")
    )


def test_the_feed_partner_page_and_log_fit_a_390_px_phone(page, retention_user):
    page.set_viewport_size({"width": 390, "height": 844})
    for i in range(12):
        scored_partner(
            external_id=f"P{30000 + i}",
            name=f"Northwind Traders International Holdings {i}",
            risk=0.94 - i / 20,
        )
    partner = scored_partner(external_id="P18477", name="Contoso", risk=0.94, bucket="7d")
    InterventionFactory(partner=partner, action="email_sent", note="Asked about the renewal " * 5)
    browser_login(page, "rita")

    page.goto("/")
    expect(page.locator("table.feed tbody tr").first).to_be_visible()
    assert no_horizontal_scroll(page), "the Live Feed scrolls sideways at 390 px"
    page.goto(f"/partners/{partner.external_id}/")
    expect(page.locator("#risk-now")).to_have_text("94%")
    assert no_horizontal_scroll(page), "the partner page scrolls sideways at 390 px"
    page.goto("/interventions/")
    expect(page.get_by_label("Status of P18477")).to_be_visible()
    assert Intervention.objects.count() == 1
    assert no_horizontal_scroll(page), "the Intervention Log scrolls sideways at 390 px"
