"""The morning desk in a real browser: my partners only, the strip's figures, what changed."""

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from crm_sim.models import CrmTask
from ml.models import PartnerScore
from retention.models import Intervention
from tests.conftest import browser_login
from tests.desk.conftest import run_scoring
from tests.factories import InterventionFactory, PartnerFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def feed_ids(page) -> list[str]:
    return page.locator("table.feed tbody tr[data-partner]").evaluate_all(
        "rows => rows.map(r => r.dataset.partner)"
    )


def test_an_owner_sees_only_their_partners_the_strip_adds_up_and_a_rise_shows_under_worse(
    page, retention_user
):
    other = UserFactory(username="olga", groups=["Retention"])
    mine = [
        PartnerFactory(external_id=f"P{100 + i}", account_owner=retention_user, monthly_revenue=Decimal(1000 + 250 * i))
        for i in range(4)
    ]  # fmt: skip
    theirs = [PartnerFactory(external_id=f"P{200 + i}", account_owner=other) for i in range(3)]
    risks = {mine[0]: 0.35, mine[1]: 0.62, mine[2]: 0.81, mine[3]: 0.10} | dict.fromkeys(theirs, 0.9)
    run_scoring(risks, as_of=dt.date(2026, 11, 30))
    run_scoring(risks | {mine[1]: 0.58}, as_of=dt.date(2026, 12, 1))
    today = timezone.localdate()
    CrmTask.objects.create(
        partner=mine[2], kind="retention_call", title="Call", due_on=today, idempotency_key="a"
    )
    CrmTask.objects.create(partner=theirs[0], kind="meeting", title="Meet", due_on=today, idempotency_key="b")
    InterventionFactory(partner=mine[2], source="agent", review_status=Intervention.Review.AWAITING)

    browser_login(page, "rita")
    page.goto("/")

    assert sorted(feed_ids(page)) == ["P100", "P101", "P102", "P103"]
    # The strip, computed here from the rows themselves.
    my_scores = PartnerScore.objects.filter(partner__account_owner=retention_user)
    at_risk = my_scores.filter(risk__gte=settings.AT_RISK_LEVEL).count()
    monthly = sum(
        s.partner.monthly_revenue * Decimal(repr(s.risk)) for s in my_scores.select_related("partner")
    )
    tasks = CrmTask.objects.filter(
        partner__account_owner=retention_user, status="open", due_on__lte=today
    ).count()
    drafts = Intervention.objects.filter(
        partner__account_owner=retention_user, review_status="awaiting"
    ).count()
    strip = page.locator("#desk-strip")
    expect(strip.locator('[data-stat="at_risk"]')).to_have_text(str(at_risk))
    expect(strip.locator('[data-stat="revenue_at_risk"]')).to_have_text(f"${monthly:,.0f}")
    expect(strip.locator('[data-stat="revenue_at_risk_12m"]')).to_have_text(f"${monthly * 12:,.0f}")
    expect(strip.locator('[data-stat="new_at_risk"]')).to_have_text("0")
    expect(strip.locator('[data-stat="tasks_due"]')).to_have_text(str(tasks))
    expect(strip.locator('[data-stat="drafts_waiting"]')).to_have_text(str(drafts))
    assert (at_risk, tasks, drafts) == (2, 1, 1)

    # A new scoring run: P100 rises 35% -> 71% (new at risk); the page picks it up on reload.
    run_scoring(risks | {mine[0]: 0.71, mine[1]: 0.58}, as_of=dt.date(2026, 12, 2))
    page.reload()
    row = page.locator('tr[data-partner="P100"]')
    expect(row.locator(".change")).to_have_text("▲ +36 pts since 1 Dec")
    expect(row).to_contain_text("New at risk")
    expect(strip.locator('[data-stat="new_at_risk"]')).to_have_text("1")

    page.get_by_label("Since the last run").select_option("worse")
    expect(page).to_have_url(re.compile(r"change=worse"))
    expect(page.locator("table.feed tbody tr[data-partner]")).to_have_count(1)
    assert feed_ids(page) == ["P100"]

    # All partners is one click away, and remembered.
    page.get_by_role("button", name="All partners").click()
    page.goto("/")
    expect(page.locator("table.feed tbody tr[data-partner]")).to_have_count(7)
