import datetime as dt
from decimal import Decimal

import pytest

from agent.models import AuditEvent
from retention.models import Intervention, Partner, RoiAssumptions
from retention.roi import control_group_uplift, roi_breakdown, roi_totals
from tests.conftest import htmx
from tests.factories import InterventionFactory, PartnerFactory

pytestmark = pytest.mark.django_db


def make_arm(
    *, n: int, churned: int, holdout: bool, tier: str = "silver", revenue: str = "2500.00", start: int = 0
):
    """n resolved agent interventions (holdouts for the control arm), `churned` of them churned."""
    partners = Partner.objects.bulk_create(
        [
            Partner(
                external_id=f"P{start + i}",
                name=f"Partner {start + i}",
                tier=tier,
                region="na",
                segment="reseller",
                monthly_revenue=Decimal(revenue),
                contact_email=f"p{start + i}@x.example",
                joined_on=dt.date(2023, 1, 1),
            )
            for i in range(n)
        ]
    )
    Intervention.objects.bulk_create(
        [
            Intervention(
                partner=p,
                action="holdout" if holdout else "email_sent",
                source="agent",
                outcome="churned" if i < churned else "saved",
                risk_at_action=0.8,
            )
            for i, p in enumerate(partners)
        ]
    )


def test_uplift_is_control_churn_minus_treated_churn_with_newcombes_interval():
    # Newcombe (1998), example (a): 56/70 vs 48/80, hybrid score interval 0.0524 to 0.3339.
    make_arm(n=70, churned=56, holdout=True, start=0)
    make_arm(n=80, churned=48, holdout=False, start=1000)

    result = control_group_uplift()

    assert (result["control_n"], result["control_churned"]) == (70, 56)
    assert (result["treated_n"], result["treated_churned"]) == (80, 48)
    assert result["control_rate"] == pytest.approx(0.8) and result["treated_rate"] == pytest.approx(0.6)
    assert result["uplift"] == pytest.approx(0.2)
    assert result["ci_low"] == pytest.approx(0.0524, abs=5e-4)
    assert result["ci_high"] == pytest.approx(0.3339, abs=5e-4)
    # 0.2 x 80 treated partners x $2,500 a month x 6 months
    assert result["incremental_partners"] == pytest.approx(16)
    assert result["incremental_revenue"] == Decimal("240000.00")
    # ... net of 80 emails at $25 ($2,000 of contacts), per dollar spent: (240,000 - 2,000) / 2,000.
    assert result["treated_cost"] == Decimal("2000.00") and result["incremental_roi"] == pytest.approx(119.0)
    # The interval is the uplift's, through the same formula: 0.0524 x 80 x 2,500 x 6 = 62,880.
    assert result["roi_low"] == pytest.approx((0.0524 * 1_200_000 - 2000) / 2000, rel=1e-2)
    assert result["roi_high"] == pytest.approx((0.3339 * 1_200_000 - 2000) / 2000, rel=1e-2)
    assert result["roi_settled"]


def test_the_interval_stays_inside_minus_one_to_one_with_extreme_small_arms():
    make_arm(n=3, churned=3, holdout=True, start=0)
    make_arm(n=4, churned=0, holdout=False, start=100)

    result = control_group_uplift()

    assert result["uplift"] == pytest.approx(1.0)
    assert -1 <= result["ci_low"] < 1 and result["ci_high"] <= 1
    assert result["ci_low"] > 0


def test_uplift_ignores_pending_manual_and_old_interventions():
    make_arm(n=10, churned=5, holdout=True, start=0)
    make_arm(n=10, churned=2, holdout=False, start=100)
    InterventionFactory(source="agent", action="holdout")  # pending: not counted
    InterventionFactory(source="manual", outcome="churned")  # the desk's own: not in the experiment
    old = InterventionFactory(source="agent", action="email_sent", outcome="churned")
    Intervention.objects.filter(pk=old.pk).update(created_at="2020-01-01T00:00Z")

    assert control_group_uplift()["treated_n"] == 11
    since = control_group_uplift(since=dt.datetime(2021, 1, 1, tzinfo=dt.UTC))
    assert (since["treated_n"], since["control_n"]) == (10, 10)
    assert since["uplift"] == pytest.approx(0.3)


def test_no_uplift_without_both_arms():
    make_arm(n=5, churned=1, holdout=False)

    result = control_group_uplift()

    assert result["uplift"] is None and result["ci_low"] is None and result["treated_rate"] == 0.2


def test_realized_roi_is_value_retained_over_cost_and_predicted_roi_uses_the_assumptions():
    partner = PartnerFactory(monthly_revenue=Decimal("1000"), tier="gold")
    InterventionFactory(partner=partner, action="meeting", outcome="saved", risk_at_action=0.5)
    InterventionFactory(action="email_sent", outcome="churned", risk_at_action=0.9)  # revenue 2500
    InterventionFactory(action="holdout", source="agent", outcome="saved")  # no cost, no value

    totals = roi_totals()

    # saved: 1000 x 6 months; cost: meeting 400 + email 25
    assert totals["value"] == Decimal("6000.00") and totals["cost"] == Decimal("425.00")
    assert totals["roi"] == pytest.approx(6000 / 425)
    # predicted: (0.5 x 1000 + 0.9 x 2500) x 6 months x 0.3 save rate
    assert totals["predicted_value"] == Decimal("4950.00")
    assert totals["predicted_roi"] == pytest.approx(4950 / 425)
    by_tier = {r["key"]: r for r in roi_breakdown(by="tier")}
    assert by_tier["gold"]["saved"] == 1 and by_tier["silver"]["churned"] == 1
    by_action = {r["key"]: r for r in roi_breakdown(by="action")}
    assert set(by_action) == {"meeting", "email_sent"} and by_action["meeting"]["cost"] == Decimal("400.00")


def test_the_outcomes_page_shows_roi_uplift_and_breakdowns(retention_client):
    make_arm(n=20, churned=10, holdout=True, start=0, tier="gold")
    make_arm(n=20, churned=4, holdout=False, start=100, tier="gold")

    html = retention_client.get("/outcomes/").content.decode()

    assert 'class="mainnav"' in html and "Outcomes &amp; ROI" in html
    assert "Uplift: +30.0 pts" in html and "95% interval" in html
    assert 'id="incremental-revenue">$90,000' in html  # 0.3 x 20 x 2500 x 6
    # (90,000 - 500 for 20 emails at $25) / 500, its interval from the uplift's: above zero.
    assert 'id="incremental-roi">+17,900%' in html
    assert "95% interval +" in html and "not yet distinguishable from zero" not in html
    assert "Gross value retained (not causal)" in html
    assert "Breakdown by tier" in html and "Breakdown by action type" in html
    assert html.count("<svg") >= 3
    # Not a manager: assumptions are shown, not editable.
    assert 'name="months_of_revenue_saved"' not in html and "Managers can change these" in html


def test_the_incremental_roi_headline_says_when_its_interval_spans_zero(retention_client):
    make_arm(n=10, churned=5, holdout=True, start=0, tier="gold")
    make_arm(n=10, churned=4, holdout=False, start=100, tier="gold")
    result = control_group_uplift()

    html = retention_client.get("/outcomes/").content.decode()

    # uplift 0.1 x 10 x 2500 x 6 = 15,000 over $250: +5,900%, but the interval crosses 0.
    assert result["incremental_roi"] == pytest.approx((15000 - 250) / 250)
    assert result["roi_low"] < 0 < result["roi_high"] and not result["roi_settled"]
    assert 'id="incremental-roi">+5,900%' in html and "not yet distinguishable from zero" in html


def test_control_rows_in_the_log_read_stayed_or_churned_not_contacted(retention_client):
    InterventionFactory(action="holdout", source="agent", outcome="saved")

    html = retention_client.get("/interventions/").content.decode()

    assert '<option value="saved" selected>Stayed (not contacted)</option>' in html
    assert '<option value="churned" >Churned (not contacted)</option>' in html


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("months_of_revenue_saved", 0, "Between 1 and 36 months"),
        ("months_of_revenue_saved", 100000, "Between 1 and 36 months"),
        ("assumed_save_rate", -0.1, "A save rate between 0 and 1"),
        ("cost_meeting", -5, "A cost cannot be negative"),
    ],
)
def test_an_assumption_out_of_bounds_is_refused_with_a_clear_error(manager_client, field, value, message):
    data = {
        "months_of_revenue_saved": 6,
        "assumed_save_rate": 0.3,
        "cost_email_sent": 25,
        "cost_call_scheduled": 150,
        "cost_meeting": 400,
        "cost_discount_offered": 500,
        "cost_other": 50,
    } | {field: value}

    html = manager_client.post("/outcomes/assumptions/", data, headers=htmx()).content.decode()

    assert message in html
    assert RoiAssumptions.objects.get().months_of_revenue_saved == 6


def test_the_outcomes_page_explains_when_there_is_no_control_group_yet(retention_client):
    InterventionFactory(outcome="saved")

    html = retention_client.get("/outcomes/").content.decode()

    assert "No control-group comparison yet" in html


def test_the_outcomes_htmx_partial_is_the_figures(retention_client):
    html = retention_client.get("/outcomes/", headers=htmx("figures")).content.decode()
    assert html.lstrip().startswith('<div id="figures">') and 'class="mainnav"' not in html


def test_a_manager_edits_the_assumptions_and_the_change_is_audited(manager_client, manager):
    InterventionFactory(action="meeting", outcome="saved")  # revenue 2500

    response = manager_client.post(
        "/outcomes/assumptions/",
        {
            "months_of_revenue_saved": 12,
            "assumed_save_rate": 0.25,
            "cost_email_sent": 10,
            "cost_call_scheduled": 100,
            "cost_meeting": 500,
            "cost_discount_offered": 300,
            "cost_other": 20,
        },
        headers=htmx(),
    )

    assumptions = RoiAssumptions.objects.get()
    assert assumptions.months_of_revenue_saved == 12 and assumptions.cost_meeting == Decimal("500")
    assert assumptions.updated_by == manager
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="figures">')
    assert 'id="realized-roi">$30,000 · 60.00x of cost' in html  # 2500 x 12 / 500
    event = AuditEvent.objects.get(event_type="roi_assumptions_changed")
    assert event.actor_user == manager
    assert event.payload["before"]["months_of_revenue_saved"] == "6"
    assert event.payload["after"]["months_of_revenue_saved"] == "12"


def test_a_bad_assumption_is_refused_with_a_message(manager_client):
    response = manager_client.post(
        "/outcomes/assumptions/",
        {
            "months_of_revenue_saved": 6,
            "assumed_save_rate": 1.5,
            "cost_email_sent": -1,
            "cost_call_scheduled": 100,
            "cost_meeting": 500,
            "cost_discount_offered": 300,
            "cost_other": 20,
        },
        headers=htmx(),
    )

    html = response.content.decode()
    assert "A cost cannot be negative" in html
    assert RoiAssumptions.objects.get().assumed_save_rate == 0.3
    assert not AuditEvent.objects.filter(event_type="roi_assumptions_changed").exists()


def test_the_retention_team_cannot_change_the_assumptions(retention_client):
    response = retention_client.post("/outcomes/assumptions/", {"months_of_revenue_saved": 60})

    assert response.status_code == 403
    assert RoiAssumptions.objects.filter(months_of_revenue_saved=60).count() == 0


def test_a_partner_saved_after_several_contacts_is_retained_once_and_split_between_them():
    partner = PartnerFactory(monthly_revenue=Decimal("1000.00"))
    for action in ("email_sent", "call_scheduled", "email_sent"):
        InterventionFactory(partner=partner, action=action, outcome="saved")
    months = RoiAssumptions.objects.get_or_create(pk=RoiAssumptions.SINGLETON_PK)[0].months_of_revenue_saved

    totals = roi_totals()
    by_action = {r["key"]: r for r in roi_breakdown(by="action")}

    assert totals["value"] == Decimal(1000 * months)  # once, not three times
    assert totals["saved_partners"] == 1 and totals["saved"] == 3
    assert by_action["email_sent"]["value"] == Decimal(1000 * months * 2 / 3).quantize(Decimal("0.01"))
    assert by_action["call_scheduled"]["value"] == Decimal(1000 * months / 3).quantize(Decimal("0.01"))


def test_a_rejected_draft_is_no_contact_no_cost_and_no_save_but_stays_in_the_experiment(client, manager):
    contacted = PartnerFactory(monthly_revenue=Decimal("1000.00"))
    rejected = PartnerFactory(monthly_revenue=Decimal("50000.00"))
    InterventionFactory(partner=contacted, source="agent", action="email_sent", outcome="saved")
    InterventionFactory(
        partner=rejected, source="agent", action="email_sent", outcome="saved", review_status="rejected"
    )
    months = RoiAssumptions.objects.get_or_create(pk=RoiAssumptions.SINGLETON_PK)[0].months_of_revenue_saved

    totals = roi_totals()

    assert totals["value"] == Decimal(1000 * months) and totals["saved_partners"] == 1
    assert totals["n"] == 1 and totals["cost"] == RoiAssumptions.objects.get().cost_of("email_sent")
    # Intent to treat: the randomised experiment keeps every agent draw.
    assert control_group_uplift()["treated_n"] == 2
    client.force_login(manager)
    html = client.get("/interventions/").content.decode()
    assert "1 saved, 0 churned, 0 pending" in html


def test_a_partner_marked_saved_who_churned_since_retains_nothing(retention_client):
    stayed = PartnerFactory(monthly_revenue=Decimal("1000.00"))
    gone = PartnerFactory(
        monthly_revenue=Decimal("9000.00"), status="churned", churned_on=dt.date(2027, 3, 24)
    )
    InterventionFactory(partner=stayed, outcome="saved")
    InterventionFactory(partner=gone, outcome="saved")
    months = RoiAssumptions.objects.get_or_create(pk=RoiAssumptions.SINGLETON_PK)[0].months_of_revenue_saved

    totals = roi_totals()
    html = retention_client.get("/outcomes/").content.decode()

    assert totals["value"] == Decimal(1000 * months) and totals["saved_partners"] == 1
    assert totals["saved_then_churned"] == 1
    assert "1 marked Saved churned since and count for nothing" in html


def test_the_outcomes_page_reads_the_history_in_one_grouped_pass_whatever_its_size(retention_client):
    """The totals, both breakdowns and the uplift fold from one pass over the contacts and the partners it
    joins (each read them again: three passes, every partner hash-joined each, at 1M partners),
    and the page's query count does not grow with the history."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def page_queries() -> list[str]:
        with CaptureQueriesContext(connection) as ctx:
            assert retention_client.get("/outcomes/").status_code == 200
        return [q["sql"] for q in ctx.captured_queries]

    make_arm(n=3, churned=1, holdout=False, start=0, tier="gold")
    page_queries()  # the first view creates the ROI assumptions' row
    few = page_queries()
    make_arm(n=20, churned=5, holdout=False, start=100, tier="silver")
    make_arm(n=20, churned=12, holdout=True, start=200, tier="platinum")
    InterventionFactory.create_batch(5, action="meeting", outcome="saved")
    many = page_queries()

    assert len(many) == len(few)
    # The retained value's sum is in the grouped pass, and only there.
    grouped = [sql for sql in many if 'AS "saved_revenue"' in sql]
    assert len(grouped) == 1
    # The uplift's arms are folded from it too: the partners are joined by two queries only,
    # that pass and the distinct saved partners' count.
    assert 'AS "arm_n"' in grouped[0]
    assert sum('JOIN "retention_partner"' in sql for sql in many) == 2
    html = retention_client.get("/outcomes/").content.decode()
    assert "Breakdown by tier" in html and "Silver" in html and "Gold" in html
