import re

import pytest

from tests.factories import InterventionFactory, PartnerFactory

pytestmark = pytest.mark.django_db


def test_managers_search_and_filter_partners_in_the_admin(manager_client):
    PartnerFactory(external_id="P18477", name="Northwind Traders", tier="gold")
    PartnerFactory(external_id="P10342", name="Contoso Retail", tier="bronze")

    searched = manager_client.get("/admin/retention/partner/", {"q": "northwind"}).content.decode()
    filtered = manager_client.get("/admin/retention/partner/", {"tier__exact": "bronze"}).content.decode()

    assert "P18477" in searched and "P10342" not in searched
    assert "P10342" in filtered and "P18477" not in filtered


def test_the_intervention_admin_lists_by_review_status_and_keeps_outcomes_read_only(manager_client):
    intervention = InterventionFactory(partner=PartnerFactory(external_id="P1"), review_status="awaiting")

    listing = manager_client.get("/admin/retention/intervention/", {"review_status__exact": "awaiting"})
    change = manager_client.get(f"/admin/retention/intervention/{intervention.pk}/change/").content.decode()

    assert listing.status_code == 200 and re.search(r">P1\b", listing.content.decode())  # a cell, not a token
    # Outcomes change only through the audited service (the Intervention Log), not this form.
    assert 'name="outcome"' not in change


PROTECTED = ["source", "action", "sent_at", "review_status", "agent_run", "email_subject", "email_body"]


def _change_form_post(client, intervention, **data):
    return client.post(
        f"/admin/retention/intervention/{intervention.pk}/change/",
        {"note": intervention.note, "assigned_to": "", "_save": "Save"} | data,
    )


def test_a_staff_retention_user_cannot_approve_a_held_draft_in_the_admin(client):
    from tests.factories import UserFactory

    client.force_login(UserFactory(username="sam", is_staff=True, groups=["Retention"]))
    held = InterventionFactory(
        source="agent", review_status="awaiting", email_subject="Hi", email_body="Hello"
    )

    form = client.get(f"/admin/retention/intervention/{held.pk}/change/").content.decode()
    response = _change_form_post(client, held, review_status="approved", sent_at="2026-01-01 10:00:00")

    assert 'name="review_status"' not in form
    assert response.status_code in (200, 302, 403)
    held.refresh_from_db()
    assert held.review_status == "awaiting" and held.sent_at is None


def test_a_manager_cannot_rewrite_a_sent_agent_intervention_in_the_admin(manager_client):
    from django.utils import timezone

    sent = InterventionFactory(source="agent", sent_at=timezone.now(), email_subject="Hi", email_body="Hello")
    before = {f: getattr(sent, f) for f in PROTECTED}

    form = manager_client.get(f"/admin/retention/intervention/{sent.pk}/change/").content.decode()
    response = _change_form_post(
        manager_client, sent, source="manual", sent_at="", action="call", email_body="Other", review_status=""
    )

    assert response.status_code == 302
    assert [f for f in PROTECTED if f'name="{f}"' in form] == []
    sent.refresh_from_db()
    assert {f: getattr(sent, f) for f in PROTECTED} == before


def test_the_note_edited_in_the_admin_is_audited(manager_client):
    from agent.models import AuditEvent

    intervention = InterventionFactory(note="first call")

    _change_form_post(manager_client, intervention, note="called back, wants a discount")

    intervention.refresh_from_db()
    event = AuditEvent.objects.get(event_type="intervention_updated")
    assert intervention.note == "called back, wants a discount"
    assert event.payload == {"from": {"note": "first call"}, "to": {"note": "called back, wants a discount"}}
    assert event.actor_user.username == "max"


def test_interventions_cannot_be_added_or_deleted_in_the_admin(manager_client):
    intervention = InterventionFactory()
    assert manager_client.get("/admin/retention/intervention/add/").status_code == 403
    assert (
        manager_client.post(
            f"/admin/retention/intervention/{intervention.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )


def test_a_held_draft_reads_as_a_review_and_an_edit_shows_side_by_side(manager_client, manager, mailoutbox):
    from agent.services import intervention_approve

    partner = PartnerFactory(external_id="P10430", name="Cobalt Tech Co", tier="platinum")
    held = InterventionFactory(
        partner=partner,
        source="agent",
        action="email_sent",
        review_status="awaiting",
        risk_at_action=0.3347237286597048,
        drivers_at_action=[
            {"feature": "days_overdue", "text": "Payment 45 days overdue", "value": 45, "points": 18.0},
            {"feature": "tenure_months", "text": "", "value": 40, "points": -2.5},
        ],
        email_subject="Your account with us",
        email_body="Hello Cobalt team,\nWe noticed a late payment.\nBest, Max",
    )
    url = f"/admin/retention/intervention/{held.pk}/change/"

    page = manager_client.get(url).content.decode()

    assert "<h1>Held for approval: P10430 Cobalt Tech Co, Platinum</h1>" in page
    assert "<title>Held for approval: P10430 Cobalt Tech Co, Platinum" in page
    assert "Email sent for" not in page
    assert ">33%<" in page and "0.3347" not in page
    assert "<li>Payment 45 days overdue (adds 18.0 points to the risk)</li>" in page
    assert "(takes 2.5 points off the risk)" in page and '"feature"' not in page  # words, not JSON
    assert "We noticed a late payment." in page  # the draft

    intervention_approve(
        intervention=held,
        actor=manager,
        subject="Your account with us",
        body="Hello Cobalt team,\nWe noticed a payment is 45 days late.\nBest regards, Max",
    )
    page = manager_client.get(url).content.decode()

    assert "<h1>Approved: P10430 Cobalt Tech Co, Platinum</h1>" in page
    table = page.split('<div class="edit-diff">')[1].split("</table>")[0].replace("&nbsp;", " ")
    assert "Draft as written" in table and "As approved and sent" in table
    # One row per line, the draft's on the left and the sent text on the right.
    row = next(r for r in table.split("<tr>") if "noticed" in r)
    assert row.index("late payment") < row.index("45 days late")
    assert 'class="diff_chg"' in row or 'class="diff_sub"' in row
    assert "Best regards, Max" in table and "Best, Max" in table
    [mail] = mailoutbox
    assert "45 days late" in mail.body
