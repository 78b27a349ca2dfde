import datetime as dt

import pytest
from django.core import mail

from agent.models import AuditEvent
from retention.charts import bar_chart, line_chart
from retention.models import Intervention
from tests.conftest import htmx, scored_partner
from tests.factories import (
    InterventionFactory,
    InvoiceFactory,
    MonthlyActivityFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def test_the_partner_page_shows_risk_bucket_drivers_charts_and_timeline(retention_client):
    partner = scored_partner(external_id="P18477", name="Northwind", risk=0.94, bucket="7d")
    MonthlyActivityFactory(partner=partner, month=dt.date(2026, 1, 1), transactions=120)
    MonthlyActivityFactory(partner=partner, month=dt.date(2026, 2, 1), transactions=70)
    InvoiceFactory(partner=partner, issued_on=dt.date(2026, 1, 1), due_on=dt.date(2026, 1, 31), paid_on=None)
    InterventionFactory(partner=partner, action="meeting", note="Met the CFO")

    html = retention_client.get("/partners/P18477/").content.decode()

    assert 'id="risk-now">94%' in html and "~7 days" in html
    assert "Payment 45 days overdue" in html and "Transactions down 38% in 3 months" in html
    assert html.count("<svg") >= 4  # risk, transactions, revenue, payments
    assert "Transactions Jan 26: 120" in html  # a bar's tooltip
    assert "Met the CFO" in html and "Meeting" in html
    assert "Open invoice 2026-01-01" in html


def test_the_partner_page_htmx_partial_is_just_the_workspace(retention_client):
    scored_partner(external_id="P1", risk=0.9)

    html = retention_client.get("/partners/P1/", headers=htmx("workspace")).content.decode()

    assert html.lstrip().startswith('<div id="workspace"')
    assert "Log intervention" in html and 'class="mainnav"' not in html and "<svg" not in html


def test_an_unknown_partner_is_a_404(retention_client):
    assert retention_client.get("/partners/P404/").status_code == 404


def test_logging_an_intervention_through_htmx_records_it_with_the_risk_of_the_moment(
    retention_client, retention_user
):
    partner = scored_partner(external_id="P1", risk=0.9)
    colleague = UserFactory(username="carl", first_name="Carl", groups=["Retention"])

    response = retention_client.post(
        "/partners/P1/interventions/",
        {"action": "call_scheduled", "assigned_to": colleague.pk, "note": "Call on Friday"},
        headers=htmx(),
    )

    html = response.content.decode()
    intervention = Intervention.objects.get(partner=partner)
    assert (intervention.action, intervention.source, intervention.outcome) == (
        "call_scheduled",
        "manual",
        "pending",
    )
    assert intervention.assigned_to == colleague and intervention.created_by == retention_user
    assert intervention.risk_at_action == 0.9 and intervention.bucket_at_action == "7d"
    assert intervention.drivers_at_action[0]["feature"] == "days_overdue"
    assert html.lstrip().startswith('<div id="workspace"') and "Logged: Call scheduled" in html
    assert "Call on Friday" in html
    assert AuditEvent.objects.filter(intervention=intervention, event_type="intervention_logged").exists()


def test_a_person_cannot_log_a_control_group_holdout_or_assign_a_stranger(retention_client):
    scored_partner(external_id="P1", risk=0.9)
    stranger = UserFactory(username="stranger")

    holdout = retention_client.post("/partners/P1/interventions/", {"action": "holdout"}, headers=htmx())
    stranger_response = retention_client.post(
        "/partners/P1/interventions/",
        {"action": "meeting", "assigned_to": stranger.pk},
        headers=htmx(),
    )

    assert Intervention.objects.count() == 0
    assert "Select a valid choice" in holdout.content.decode()
    assert "Select a valid choice" in stranger_response.content.decode()


def test_logging_without_htmx_redirects_back_to_the_partner(retention_client):
    scored_partner(external_id="P1", risk=0.9)

    response = retention_client.post("/partners/P1/interventions/", {"action": "other", "note": "x"})

    assert response.status_code == 302 and response["Location"] == "/partners/P1/"
    assert Intervention.objects.get().action == "other"


def test_drafting_an_email_uses_the_agents_writer_and_is_audited(retention_client, settings):
    settings.OPENAI_API_KEY = ""  # the template writer: no LLM configured
    partner = scored_partner(external_id="P1", risk=0.9, name="Northwind")

    response = retention_client.post("/partners/P1/draft-email/", headers=htmx())

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="draft"')
    assert 'name="subject"' in html and 'name="body"' in html and "Log email sent" in html
    assert "template writer" in html
    event = AuditEvent.objects.get(event_type="email_drafted")
    assert event.partner == partner and event.payload["writer"] == "template"
    assert event.payload["fallback_reason"] == "no_api_key"


def test_an_edited_draft_is_logged_as_the_persons_text_and_sent(retention_client):
    partner = scored_partner(external_id="P1", risk=0.9)

    retention_client.post(
        "/partners/P1/send-email/",
        {
            "subject": "Let us help",
            "body": "Hello, edited by Rita.",
            "writer": "template",
            "original_body": "Hello from the template.",
            "send": "on",
        },
        headers=htmx(),
    )

    intervention = Intervention.objects.get(partner=partner)
    assert intervention.action == "email_sent" and intervention.writer == "manual"
    assert intervention.email_body == "Hello, edited by Rita." and intervention.sent_at is not None
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [partner.contact_email]
    assert AuditEvent.objects.filter(intervention=intervention, event_type="email_sent").exists()


def test_a_draft_without_a_subject_comes_back_with_its_error_in_place_of_the_draft(retention_client):
    partner = scored_partner(external_id="P1", risk=0.9)

    response = retention_client.post(
        "/partners/P1/send-email/",
        {"subject": "", "body": "Hello, edited by Rita.", "writer": "template", "original_body": "Hello."},
        headers=htmx(),
    )

    # The success target is the whole workspace; an error must replace only the draft form
    # (it used to land in #workspace, wiping the timeline, and the next submit went nowhere).
    assert response["HX-Retarget"] == "#draft"
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="draft"') and "This field is required." in html
    assert "Hello, edited by Rita." in html  # the person's text is kept
    assert not Intervention.objects.filter(partner=partner).exists()


def test_an_unedited_draft_keeps_its_writer_and_is_not_sent_unless_asked(retention_client):
    partner = scored_partner(external_id="P1", risk=0.9)

    retention_client.post(
        "/partners/P1/send-email/",
        {"subject": "S", "body": "Same text", "writer": "llm", "original_body": "Same text"},
        headers=htmx(),
    )

    intervention = Intervention.objects.get(partner=partner)
    assert intervention.writer == "llm" and intervention.sent_at is None and mail.outbox == []


def test_text_from_people_and_the_model_is_escaped_on_the_page(retention_client):
    partner = scored_partner(external_id="P1", risk=0.9, name="<script>alert(1)</script>")
    score = partner.current_score
    score.drivers = [{"feature": "x", "text": "<img src=x onerror=alert(2)>", "value": 1, "points": 3.0}]
    score.save()
    InterventionFactory(partner=partner, note="<b>bold</b>", email_subject="<i>hi</i>")

    html = retention_client.get("/partners/P1/").content.decode()

    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "<img src=x" not in html and "<b>bold</b>" not in html and "<i>hi</i>" not in html


def test_chart_labels_and_titles_are_escaped():
    svg = line_chart(["<a>"], {"<s>": [1.0]}, title="</svg><script>")
    bars = bar_chart(["<a>", "b"], {"x&y": [1, 2]}, title="t")

    assert "<script>" not in svg and "&lt;/svg&gt;&lt;script&gt;" in svg
    assert "<a>" not in svg and "&lt;a&gt;" in svg and "&lt;s&gt;" in svg
    assert "x&amp;y" in bars and "<a>" not in bars


def test_an_unscored_partner_page_still_renders(retention_client):
    from tests.factories import PartnerFactory

    PartnerFactory(external_id="P2")
    html = retention_client.get("/partners/P2/").content.decode()
    assert "Not scored yet" in html and "No drivers computed yet" in html


def test_a_churned_partner_page_says_it_is_no_longer_scored(retention_client):
    import datetime as dt

    from tests.factories import PartnerFactory

    PartnerFactory(external_id="P3", status="churned", churned_on=dt.date(2026, 10, 1))
    html = retention_client.get("/partners/P3/").content.decode()
    assert "Churned 2026-10-01: no longer scored" in html and "Not scored yet" not in html


def test_the_partner_page_does_not_query_per_intervention(retention_client, django_assert_max_num_queries):
    partner = scored_partner(external_id="P1", risk=0.9)
    member = UserFactory(username="carl", groups=["Retention"])
    for _ in range(20):
        InterventionFactory(partner=partner, assigned_to=member, created_by=member)

    with django_assert_max_num_queries(20):
        response = retention_client.get("/partners/P1/")
    assert response.content.decode().count('class="outcome-pending"') == 20


def test_open_invoices_read_overdue_or_due_as_of_the_simulated_world_today(retention_client):
    from ml.models import SimulatedWorld

    SimulatedWorld.objects.create(
        seed=1,
        n_partners=1,
        months=1,
        started_on=dt.date(2026, 3, 1),
        today=dt.date(2026, 3, 11),
        state_path="x",
    )
    partner = scored_partner(external_id="P18477", risk=0.9)
    InvoiceFactory(partner=partner, issued_on=dt.date(2026, 2, 1), due_on=dt.date(2026, 3, 1), paid_on=None)
    InvoiceFactory(partner=partner, issued_on=dt.date(2026, 3, 1), due_on=dt.date(2026, 3, 31), paid_on=None)

    html = retention_client.get("/partners/P18477/").content.decode()

    # Ten days past due in the simulated world, whatever the real date is.
    assert "Open invoice 2026-02-01: 10 days overdue." in html
    assert "Open invoice 2026-03-01: due 2026-03-31." in html


def test_chart_axes_step_in_round_numbers():
    from retention.charts import nice_top

    assert [nice_top(v) for v in (41, 23, 40, 0.7, 543)] == [60, 24, 40, 0.8, 600]
    svg = bar_chart(["a", "b"], {"Days late": [41, 3]}, title="Payments")
    assert ">15<" in svg and ">60<" in svg and ">31<" not in svg


def test_the_partner_page_gives_the_window_with_its_probability_if_it_churns(retention_client):
    partner = scored_partner(external_id="P7", risk=0.8, bucket="7d")

    html = retention_client.get(f"/partners/{partner.external_id}/").content.decode()

    assert "Churn in: <strong>~7 days</strong>" in html
    assert 'id="window-note">If it churns: ~7 d 50%, ~30 d 30%, ~90 d 20%' in html


def test_a_low_risk_partner_page_says_low_risk_and_the_at_risk_level(retention_client):
    partner = scored_partner(external_id="P8", risk=0.1, bucket="later")

    html = retention_client.get(f"/partners/{partner.external_id}/").content.decode()

    assert "<strong>Low risk</strong>" in html and "at-risk level of 30%" in html
    assert "Churn in:" not in html
