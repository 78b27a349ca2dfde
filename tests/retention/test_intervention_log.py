import csv
import datetime as dt
import io
import re

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from agent.models import AuditEvent
from retention.models import Intervention
from retention.services import intervention_set_outcome
from tests.conftest import htmx
from tests.factories import InterventionFactory, PartnerFactory, UserFactory

pytestmark = pytest.mark.django_db


# The outcome service -----------------------------------------------------------------


def test_a_pending_intervention_resolves_to_saved_with_who_and_when(retention_user):
    intervention = InterventionFactory()

    resolved = intervention_set_outcome(intervention=intervention, outcome="saved", actor=retention_user)

    assert resolved.outcome == "saved"
    assert resolved.outcome_set_by == retention_user and resolved.outcome_set_at is not None
    event = AuditEvent.objects.get(intervention=intervention, event_type="outcome_set")
    assert event.payload["from"] == "pending" and event.payload["to"] == "saved"
    assert event.actor_user == retention_user


def test_a_resolved_outcome_is_changed_only_by_a_manager(retention_user, manager):
    intervention = InterventionFactory(outcome="churned")

    with pytest.raises(PermissionDenied):
        intervention_set_outcome(intervention=intervention, outcome="saved", actor=retention_user)
    intervention.refresh_from_db()
    assert intervention.outcome == "churned"
    assert AuditEvent.objects.filter(intervention=intervention, event_type="outcome_change_refused").exists()

    corrected = intervention_set_outcome(
        intervention=intervention, outcome="saved", actor=manager, reason="Renewed after the call"
    )
    assert corrected.outcome == "saved" and corrected.outcome_set_by == manager
    event = AuditEvent.objects.get(intervention=intervention, event_type="outcome_corrected")
    assert event.payload["reason"] == "Renewed after the call"


def test_a_manager_correction_without_a_reason_is_refused_and_changes_nothing(manager):
    intervention = InterventionFactory(outcome="churned")

    with pytest.raises(ValidationError) as refused:
        intervention_set_outcome(intervention=intervention, outcome="saved", actor=manager, reason="  ")

    assert refused.value.messages == [
        "A correction of a resolved outcome needs a reason: say why it changes."
    ]
    intervention.refresh_from_db()
    assert intervention.outcome == "churned"
    assert not AuditEvent.objects.filter(intervention=intervention, event_type="outcome_corrected").exists()


def test_an_unknown_outcome_is_refused(retention_user):
    with pytest.raises(ValidationError):
        intervention_set_outcome(intervention=InterventionFactory(), outcome="maybe", actor=retention_user)


# The Intervention Log page ----------------------------------------------------------


def test_the_log_lists_interventions_with_action_time_member_source_and_status(retention_client):
    member = UserFactory(username="carl", first_name="Carl", last_name="Case", groups=["Retention"])
    InterventionFactory(partner=PartnerFactory(external_id="P1"), action="meeting", assigned_to=member)
    InterventionFactory(partner=PartnerFactory(external_id="P2"), source="agent", action="email_sent")

    html = retention_client.get("/interventions/").content.decode()

    assert 'class="mainnav"' in html and 'href="/partners/P1/"' in html and 'href="/partners/P2/"' in html
    assert "Meeting" in html and "Carl Case" in html and "Agent" in html and "Manual" in html
    assert '<option value="saved" >Saved ✓</option>' in html


def test_the_summary_counts_saved_churned_pending_and_the_save_rate(retention_client):
    InterventionFactory.create_batch(3, outcome="saved")
    InterventionFactory(outcome="churned")
    InterventionFactory.create_batch(2)
    InterventionFactory(action="holdout", source="agent", outcome="churned")  # control group: not counted

    html = retention_client.get("/interventions/").content.decode()

    assert "3 saved, 1 churned, 2 pending" in html
    assert '<div class="stat" data-stat="save-rate">75%</div>' in html


def test_the_log_filters_and_the_summary_follows_the_filters(retention_client):
    InterventionFactory(partner=PartnerFactory(external_id="P1", tier="gold"), outcome="saved")
    InterventionFactory(partner=PartnerFactory(external_id="P2", tier="bronze"))
    InterventionFactory(partner=PartnerFactory(external_id="P3", tier="gold"), source="agent")

    def listed(html):
        # Partner links, not bare ids: "P2" can turn up inside a random CSRF token.
        return set(re.findall(r'href="/partners/(P\d+)/"', html))

    html = retention_client.get("/interventions/", {"tier": "gold"}).content.decode()
    assert listed(html) == {"P1", "P3"}
    assert "1 saved, 0 churned, 1 pending" in html

    html = retention_client.get("/interventions/", {"source": "agent", "outcome": "pending"}).content.decode()
    assert listed(html) == {"P3"}


def test_the_log_htmx_partials_are_the_results_and_the_summary(retention_client):
    InterventionFactory(partner=PartnerFactory(external_id="P1"), outcome="saved")

    results = retention_client.get("/interventions/", headers=htmx("results")).content.decode()
    summary = retention_client.get("/interventions/", headers=htmx("summary")).content.decode()

    assert results.lstrip().startswith('<div id="results">')
    assert summary.lstrip().startswith('<div id="summary"') and "1 saved" in summary
    assert 'href="/partners/P1/"' in results and "/partners/P1/" not in summary


def test_setting_saved_inline_saves_it_and_tells_the_page_to_refresh_its_stats(
    retention_client, retention_user
):
    intervention = InterventionFactory()

    response = retention_client.post(
        f"/interventions/{intervention.pk}/outcome/", {"outcome": "saved"}, headers=htmx()
    )

    intervention.refresh_from_db()
    assert intervention.outcome == "saved" and intervention.outcome_set_by == retention_user
    html = response.content.decode()
    assert html.lstrip().startswith(f'<tr id="intervention-{intervention.pk}"')
    assert "outcome-changed" in response["HX-Trigger"]
    # A resolved outcome is locked for a non-manager.
    assert "disabled" in html


def test_a_non_manager_cannot_reopen_a_resolved_outcome_from_the_log(retention_client):
    intervention = InterventionFactory(outcome="churned")

    response = retention_client.post(
        f"/interventions/{intervention.pk}/outcome/", {"outcome": "saved"}, headers=htmx()
    )

    intervention.refresh_from_db()
    assert intervention.outcome == "churned"
    assert "Only a manager can change a resolved outcome" in response.content.decode()
    assert "HX-Trigger" not in response


def test_a_manager_correction_needs_a_reason_and_the_log_shows_it(manager_client, manager):
    intervention = InterventionFactory(partner=PartnerFactory(external_id="P10430"), outcome="churned")
    url = f"/interventions/{intervention.pk}/outcome/"

    # Without a reason: refused, saying what is missing, with the field to give it.
    refused = manager_client.post(url, {"outcome": "saved"}, headers=htmx())

    html = refused.content.decode()
    intervention.refresh_from_db()
    assert intervention.outcome == "churned"
    assert "A correction of a resolved outcome needs a reason: say why it changes." in html
    assert 'name="reason"' in html and "Save correction" in html
    assert '<option value="saved" selected>' in html  # the outcome asked for stays chosen
    assert "HX-Trigger" not in refused

    saved = manager_client.post(
        url, {"outcome": "saved", "reason": "Renewed for 12 months after the call"}, headers=htmx()
    )

    intervention.refresh_from_db()
    assert intervention.outcome == "saved" and intervention.outcome_set_by == manager
    event = AuditEvent.objects.get(intervention=intervention, event_type="outcome_corrected")
    assert event.payload["reason"] == "Renewed for 12 months after the call"
    assert "corrected by Max Manager: Renewed for 12 months after the call" in saved.content.decode()
    # And on the log itself, for everyone.
    row = manager_client.get("/interventions/").content.decode().split('href="/partners/P10430/"')[1]
    assert "corrected by Max Manager: Renewed for 12 months after the call" in row.split("</tr>")[0]


def test_resolving_a_pending_outcome_needs_no_reason_and_shows_no_correction(retention_client):
    intervention = InterventionFactory()

    html = retention_client.post(
        f"/interventions/{intervention.pk}/outcome/", {"outcome": "churned"}, headers=htmx()
    ).content.decode()

    intervention.refresh_from_db()
    assert intervention.outcome == "churned"
    assert "needs a reason" not in html and "corrected by" not in html


# Undo ------------------------------------------------------------------------------


def later(monkeypatch, seconds: float):
    """The outcome services' clock, `seconds` from now (audit events keep their real time)."""
    import datetime as dt

    from django.utils import timezone

    from retention import log_selectors, services

    class Clock:
        @staticmethod
        def now():
            return timezone.now() + dt.timedelta(seconds=seconds)

    monkeypatch.setattr(services, "timezone", Clock)
    monkeypatch.setattr(log_selectors, "timezone", Clock)


def test_a_change_offers_an_undo_that_reverts_it_through_the_service(retention_client, retention_user):
    intervention = InterventionFactory()
    url = f"/interventions/{intervention.pk}/outcome/"

    html = retention_client.post(url, {"outcome": "saved"}, headers=htmx()).content.decode()

    event = AuditEvent.objects.get(intervention=intervention, event_type="outcome_set")
    assert f'hx-post="{url}undo/"' in html and f'name="event" value="{event.pk}"' in html
    assert "Saved as Saved ✓." in html and "Undo</button>" in html

    undone = retention_client.post(f"{url}undo/", {"event": event.pk}, headers=htmx())

    intervention.refresh_from_db()
    assert intervention.outcome == "pending"
    assert intervention.outcome_set_by is None and intervention.outcome_set_at is None
    audit = AuditEvent.objects.get(intervention=intervention, event_type="outcome_undone")
    assert audit.actor_user == retention_user
    assert (audit.payload["from"], audit.payload["to"], audit.payload["undoes"]) == (
        "saved",
        "pending",
        event.pk,
    )
    html = undone.content.decode()
    assert "outcome-changed" in undone["HX-Trigger"]
    assert "Undo</button>" not in html and "disabled" not in html  # pending again: open to everyone


def test_an_undo_after_ten_seconds_is_refused_with_a_message(retention_client, monkeypatch):
    intervention = InterventionFactory()
    url = f"/interventions/{intervention.pk}/outcome/"
    retention_client.post(url, {"outcome": "churned"}, headers=htmx())
    event = AuditEvent.objects.get(intervention=intervention, event_type="outcome_set")

    later(monkeypatch, 11)
    html = retention_client.post(f"{url}undo/", {"event": event.pk}, headers=htmx()).content.decode()

    intervention.refresh_from_db()
    assert intervention.outcome == "churned"
    assert (
        "Too late to undo: the change is 11 seconds old (undo works for 10 seconds); ask a manager to correct it."
        in html
    )
    assert not AuditEvent.objects.filter(event_type="outcome_undone").exists()


def test_only_the_person_who_changed_it_can_undo_and_only_the_latest_change(
    retention_client, manager_client, retention_user, manager
):
    from django.test import Client

    intervention = InterventionFactory(outcome="churned")
    url = f"/interventions/{intervention.pk}/outcome/"
    manager_client.post(url, {"outcome": "saved", "reason": "Paid the overdue invoices"}, headers=htmx())
    correction = AuditEvent.objects.get(event_type="outcome_corrected")

    rita = Client()
    rita.force_login(retention_user)
    html = rita.post(f"{url}undo/", {"event": correction.pk}, headers=htmx()).content.decode()
    assert "Only the person who changed this outcome can undo it." in html

    # The manager's own undo puts the churned outcome back with who set it before.
    manager_client.post(f"{url}undo/", {"event": correction.pk}, headers=htmx())
    intervention.refresh_from_db()
    assert intervention.outcome == "churned" and intervention.outcome_set_by is None
    html = manager_client.post(f"{url}undo/", {"event": correction.pk}, headers=htmx()).content.decode()
    assert "Nothing to undo: the outcome changed again since." in html


def test_undoing_a_resolution_reopens_the_crm_follow_ups_it_closed(
    retention_client, django_capture_on_commit_callbacks
):
    import datetime as dt

    from crm_sim.client import CreateTask, get_crm_client
    from crm_sim.models import CrmTask

    intervention = InterventionFactory()
    get_crm_client().create_task(
        CreateTask(
            partner_external_id=intervention.partner.external_id,
            kind="retention_call",
            title="Retention Call",
            due_on=dt.date.today() + dt.timedelta(days=3),
            idempotency_key="t1",
            intervention_id=intervention.pk,
        )
    )
    url = f"/interventions/{intervention.pk}/outcome/"
    with django_capture_on_commit_callbacks(execute=True):
        retention_client.post(url, {"outcome": "saved"}, headers=htmx())
    assert not CrmTask.objects.filter(intervention=intervention, status="open").exists()
    event = AuditEvent.objects.get(event_type="outcome_set")

    with django_capture_on_commit_callbacks(execute=True):
        retention_client.post(f"{url}undo/", {"event": event.pk}, headers=htmx())

    reopened = CrmTask.objects.get(intervention=intervention, status="open")
    assert reopened.title == "Retention Call" and reopened.kind == "retention_call"


def test_the_outcome_form_works_without_javascript(retention_client):
    intervention = InterventionFactory()

    response = retention_client.post(
        f"/interventions/{intervention.pk}/outcome/",
        {"outcome": "churned", "next": "/interventions/?tier=gold"},
    )

    assert response.status_code == 302 and response["Location"] == "/interventions/?tier=gold"
    intervention.refresh_from_db()
    assert intervention.outcome == "churned"


def test_the_csv_export_has_the_filtered_rows_and_neutralises_formulas(retention_client, retention_user):
    member = UserFactory(username="carl", groups=["Retention"])
    saved = InterventionFactory(
        partner=PartnerFactory(external_id="P1", name="=HYPERLINK(1)", tier="gold"),
        action="meeting",
        assigned_to=member,
        risk_at_action=0.91,
        bucket_at_action="7d",
        note="+1 call back",
    )
    InterventionFactory(partner=PartnerFactory(external_id="P2", tier="bronze"))
    from retention.services import intervention_set_outcome

    intervention_set_outcome(intervention=saved, outcome="saved", actor=retention_user)

    response = retention_client.get("/interventions/export.csv", {"tier": "gold"})

    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 1
    row = rows[0]
    assert row["partner_id"] == "P1" and row["partner_name"] == "'=HYPERLINK(1)"
    assert row["action"] == "meeting" and row["status"] == "saved" and row["assigned_to"] == "carl"
    assert row["outcome_set_by"] == "rita" and row["outcome_date"] != ""
    assert row["risk_at_action"] == "0.9100" and row["bucket_at_action"] == "7d"
    assert row["note"] == "'+1 call back" and row["source"] == "manual"
    assert row["review_status"] == "not_required" and row["sent_at"] == ""


def test_a_rejected_draft_exports_and_reads_as_not_sent(retention_client):
    InterventionFactory(
        partner=PartnerFactory(external_id="P4"), source="agent", review_status="rejected", outcome="saved"
    )

    [row] = csv.DictReader(io.StringIO(retention_client.get("/interventions/export.csv").content.decode()))
    html = retention_client.get("/interventions/").content.decode()

    assert row["action"] == "email_sent" and row["review_status"] == "rejected" and row["sent_at"] == ""
    assert "Not sent: the outcome is tracked for the control-group experiment only" in html


def test_the_log_links_to_the_export_with_the_same_filters(retention_client):
    html = retention_client.get("/interventions/", {"tier": "gold", "page": "1"}).content.decode()
    assert "/interventions/export.csv?tier=gold" in html


def test_the_log_page_does_not_query_per_row(retention_client, django_assert_max_num_queries):
    member = UserFactory(username="carl", groups=["Retention"])
    for n in range(30):
        InterventionFactory(partner=PartnerFactory(external_id=f"P{n}"), assigned_to=member, outcome="saved")

    with django_assert_max_num_queries(12):
        response = retention_client.get("/interventions/")
    assert response.content.decode().count('<tr id="intervention-') == 30


def test_the_log_pages_newest_first_and_the_later_logged_first_at_the_same_time(retention_client):
    # The order intv_log_newest_idx serves: created_at descending, then id descending.
    noon = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    days = {"P1": 1, "P2": 0, "P3": 0, "P4": 2} | {f"Q{n}": 30 for n in range(50)}
    for ext, ago in days.items():
        made = InterventionFactory(partner=PartnerFactory(external_id=ext))
        Intervention.objects.filter(pk=made.pk).update(created_at=noon - dt.timedelta(days=ago))

    first = retention_client.get("/interventions/").content.decode()
    second = retention_client.get("/interventions/", {"page": 2}).content.decode()

    shown = re.findall(r'href="/partners/(P\d)/"', first)
    assert list(dict.fromkeys(shown)) == ["P3", "P2", "P1", "P4"]
    assert 'href="/partners/P' not in second and second.count('<tr id="intervention-') == 4


def test_a_held_or_rejected_agent_email_does_not_read_as_sent(retention_client):
    for external_id, review in (("P7", "awaiting"), ("P8", "rejected"), ("P9", "approved")):
        InterventionFactory(
            partner=PartnerFactory(external_id=external_id),
            source="agent",
            action="email_sent",
            review_status=review,
        )

    html = retention_client.get("/interventions/").content.decode()
    rows = {
        m[0]: m[1]
        for m in re.findall(r'href="/partners/(P\d)/".*?</td>\s*<td>.*?</td>\s*<td>(.*?)</td>', html, re.S)
    }

    assert rows["P7"].startswith("Email drafted (not sent)")
    assert rows["P8"].startswith("Email rejected (not sent)")
    assert rows["P9"].startswith("Email sent")


def test_a_saved_partner_that_churned_afterwards_is_flagged_for_correction(retention_client):
    import datetime as dt

    gone = PartnerFactory(
        external_id="P5", status="churned", churned_on=dt.date.today() + dt.timedelta(days=40)
    )
    InterventionFactory(partner=gone, outcome="saved")
    InterventionFactory(partner=PartnerFactory(external_id="P6"), outcome="saved")

    html = retention_client.get("/interventions/").content.decode()

    row = html.split('href="/partners/P5/"')[1].split("</tr>")[0]
    assert (
        f"Churned {gone.churned_on:%Y-%m-%d}, after it was marked Saved: ask a manager to correct it" in row
    )
    assert "after it was marked Saved" not in html.split('href="/partners/P6/"')[1].split("</tr>")[0]
