"""The API as another system uses it: tokens, reads, writes through the site's services."""

import datetime as dt
import random

import pytest
from django.core.cache import cache

from agent.models import AuditEvent, DoNotContact
from api.models import ApiToken
from retention.models import Intervention
from tests.api.conftest import bearer
from tests.factories import InterventionFactory, ModelVersionFactory, PartnerFactory, PartnerScoreFactory

pytestmark = pytest.mark.django_db


def test_a_token_is_stored_only_as_its_hash_and_notes_its_last_use(client, api_users, token_for):
    token = token_for(api_users["retention"])
    row = ApiToken.objects.get()
    assert token.startswith("cs_") and token not in (row.key_hash, row.prefix) and len(row.key_hash) == 64
    assert row.last_used_at is None
    assert client.get("/api/v1/partners", **bearer(token)).status_code == 200
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_no_token_and_a_revoked_token_get_401(client, tokens):
    assert client.get("/api/v1/partners").status_code == 401
    assert client.get("/api/v1/partners", **bearer(tokens["revoked"])).status_code == 401
    assert client.get("/api/v1/partners", **bearer("cs_not-a-token")).status_code == 401


def test_partners_page_through_with_a_cursor_and_filters(
    client, tokens, scored_partners, django_assert_max_num_queries
):
    headers = bearer(tokens["retention"])
    first = client.get("/api/v1/partners?limit=2", **headers).json()
    assert [p["id"] for p in first["items"]] == ["P20000", "P20001"]
    assert first["items"][0]["score"]["risk"] == pytest.approx(0.9)
    second = client.get(f"/api/v1/partners?limit=2&cursor={first['next_cursor']}", **headers).json()
    assert [p["id"] for p in second["items"]] == ["P20002", "P20003"]
    third = client.get(f"/api/v1/partners?limit=2&cursor={second['next_cursor']}", **headers).json()
    assert [p["id"] for p in third["items"]] == ["P20004"] and third["next_cursor"] is None
    gold = client.get("/api/v1/partners?tier=gold", **headers).json()
    assert [p["id"] for p in gold["items"]] == ["P20001"]
    assert client.get("/api/v1/partners?search=p20003", **headers).json()["items"][0]["id"] == "P20003"
    assert client.get("/api/v1/partners?cursor=!!!", **headers).status_code == 422
    assert client.get("/api/v1/partners?cursor=AAAA", **headers).status_code == 400


def _page_through(client, headers, query: str, limit: int) -> list[str]:
    ids, cursor = [], None
    for _ in range(50):
        url = f"/api/v1/partners?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, **headers).json()
        assert len(page["items"]) <= limit
        ids += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError(f"{query}: the cursor never ran out")


def test_filtered_partners_page_through_exactly_the_matching_partners_in_id_order(client, tokens):
    # Created out of id order (the page reads ids first, then rows: neither may fall back to
    # the primary key's order), with every bucket, some partners unscored and some churned.
    rng = random.Random(14)
    numbers = list(range(40))
    rng.shuffle(numbers)
    expected = []
    for n in numbers:
        tier = ["bronze", "silver", "gold", "platinum"][n % 4]
        churned = n % 7 == 0
        partner = PartnerFactory(
            external_id=f"P{30000 + n}",
            name=f"{'Globex' if n % 3 == 0 else 'Initech'} {n}",
            tier=tier,
            status="churned" if churned else "active",
            churned_on=dt.date(2026, 6, 1) if churned else None,
        )
        bucket = None if n % 9 == 4 else ["7d", "30d", "90d", "later", "later"][n % 5]
        if bucket is not None:
            rank = ["7d", "30d", "90d", "later"].index(bucket)
            PartnerScoreFactory(partner=partner, risk_value=0.8, bucket=bucket, urgency_rank=rank)
        expected.append((partner.external_id, tier, "churned" if churned else "active", bucket, partner.name))
    expected.sort()
    headers = bearer(tokens["retention"])
    cases = {
        "bucket=7d": lambda p: p[3] == "7d",
        "bucket=later&status=active": lambda p: p[3] == "later" and p[2] == "active",
        "bucket=30d&tier=platinum": lambda p: p[3] == "30d" and p[1] == "platinum",
        "bucket=7d&status=churned": lambda p: p[3] == "7d" and p[2] == "churned",
        "tier=gold": lambda p: p[1] == "gold",
        "status=churned": lambda p: p[2] == "churned",
        "search=globex&bucket=later": lambda p: "Globex" in p[4] and p[3] == "later",
    }
    for query, matches in cases.items():
        want = [p[0] for p in expected if matches(p)]
        assert want, query  # every case matches someone, so an empty answer cannot pass
        for limit in (1, 3, 50):
            assert _page_through(client, headers, query, limit) == want, (query, limit)


def test_a_partners_page_costs_the_same_queries_at_any_size(
    client, tokens, scored_partners, django_assert_num_queries
):
    headers = bearer(tokens["retention"])
    client.get("/api/v1/partners?limit=1", **headers)  # last_used_at written once
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    deep = client.get("/api/v1/partners?limit=2", **headers).json()["next_cursor"]
    counts = []
    for query in ("limit=1", "limit=5", f"limit=2&cursor={deep}", "search=p20003"):
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(f"/api/v1/partners?{query}", **headers).status_code == 200
        counts.append(len(ctx.captured_queries))
    # The token with its user, role and permissions in one; the page in the other.
    assert counts == [2, 2, 2, 2], counts


def test_a_partner_reads_with_its_buckets_drivers_and_history(client, tokens, scored_partners):
    body = client.get("/api/v1/partners/P20000", **bearer(tokens["retention"])).json()
    assert body["current"]["bucket"] == "7d"
    assert body["current"]["p_7d"] + body["current"]["p_30d"] + body["current"]["p_90d"] + body["current"][
        "p_later"
    ] == pytest.approx(1)
    assert body["current"]["drivers"][0]["text"] == "Payment 45 days overdue"
    assert client.get("/api/v1/partners/P20000/risk-history", **bearer(tokens["retention"])).json() == []
    assert client.get("/api/v1/partners/P99999", **bearer(tokens["retention"])).status_code == 404


def test_interventions_filter_like_the_log_and_the_summary_counts_them(client, tokens):
    gold = PartnerFactory(tier="gold")
    InterventionFactory(partner=gold, outcome="saved")
    InterventionFactory(outcome="churned")
    headers = bearer(tokens["retention"])
    items = client.get("/api/v1/interventions?tier=gold", **headers).json()["items"]
    assert [i["partner"] for i in items] == [gold.external_id]
    summary = client.get("/api/v1/outcomes/summary", **headers).json()
    assert (summary["saved"], summary["churned"], summary["save_rate"]) == (1, 1, 0.5)
    page = client.get("/api/v1/interventions?limit=1", **headers).json()
    rest = client.get(f"/api/v1/interventions?limit=1&cursor={page['next_cursor']}", **headers).json()
    assert len(page["items"]) == len(rest["items"]) == 1 and page["items"][0]["id"] != rest["items"][0]["id"]


def test_model_versions_read_with_their_metrics(client, tokens):
    version = ModelVersionFactory(metrics={"auc": 0.81}, is_active=True)
    body = client.get("/api/v1/models", **bearer(tokens["retention"])).json()
    assert body[0]["id"] == version.pk and body[0]["metrics"] == {"auc": 0.81}


def test_logging_an_intervention_goes_through_the_service_and_is_audited(client, tokens, api_users):
    partner = PartnerFactory()
    response = client.post(
        f"/api/v1/partners/{partner.external_id}/interventions",
        {"action": "call_scheduled", "note": "From the CRM", "assigned_to": "rita"},
        content_type="application/json",
        **bearer(tokens["retention"]),
    )
    assert response.status_code == 201, response.content
    intervention = Intervention.objects.get()
    assert (
        intervention.created_by == api_users["retention"]
        and intervention.assigned_to == api_users["retention"]
    )
    assert (
        AuditEvent.objects.filter(event_type="intervention_logged", actor_user=api_users["retention"]).count()
        == 1
    )
    holdout = client.post(
        f"/api/v1/partners/{partner.external_id}/interventions",
        {"action": "holdout"},
        content_type="application/json",
        **bearer(tokens["retention"]),
    )
    assert holdout.status_code == 400 and "control-group" in holdout.json()["detail"]


def test_a_resolved_outcome_is_corrected_only_by_a_manager(client, tokens):
    intervention = InterventionFactory()
    url = f"/api/v1/interventions/{intervention.pk}/outcome"
    saved = client.post(
        url, {"outcome": "saved"}, content_type="application/json", **bearer(tokens["retention"])
    )
    assert saved.status_code == 200 and saved.json()["outcome"] == "saved"
    refused = client.post(
        url, {"outcome": "churned"}, content_type="application/json", **bearer(tokens["retention"])
    )
    assert refused.status_code == 403
    assert AuditEvent.objects.filter(event_type="outcome_change_refused").count() == 1
    corrected = client.post(
        url,
        {"outcome": "churned", "reason": "They left"},
        content_type="application/json",
        **bearer(tokens["manager"]),
    )
    assert corrected.status_code == 200 and corrected.json()["outcome"] == "churned"


def test_do_not_contact_is_added_by_retention_and_removed_only_by_a_manager(client, tokens):
    partner = PartnerFactory()
    url = f"/api/v1/partners/{partner.external_id}/do-not-contact"
    added = client.put(
        url, {"reason": "Asked us to stop"}, content_type="application/json", **bearer(tokens["retention"])
    )
    assert added.status_code == 200 and DoNotContact.objects.filter(partner=partner).exists()
    assert client.delete(url, **bearer(tokens["retention"])).status_code == 403
    assert client.delete(url, **bearer(tokens["manager"])).json()["on_list"] is False
    assert not DoNotContact.objects.filter(partner=partner).exists()
    assert (
        AuditEvent.objects.filter(event_type__in=["do_not_contact_added", "do_not_contact_removed"]).count()
        == 2
    )


def test_an_import_is_queued_with_a_status_url(client, tokens, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("partners.csv", b"partner_id,name\nP1,Acme\n", content_type="text/csv")
    response = client.post(
        "/api/v1/imports", {"files": [upload], "dry_run": "true"}, **bearer(tokens["manager"])
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status_url"] == f"/api/v1/imports/{body['id']}" and body["detail"]["dry_run"] is True
    status = client.get(body["status_url"], **bearer(tokens["manager"]))
    assert status.status_code == 200 and status.json()["detail"]["files"] == ["partners.csv"]


def test_a_scoring_run_without_a_model_is_a_409(client, tokens):
    response = client.post("/api/v1/scoring-runs", **bearer(tokens["manager"]))
    assert response.status_code == 409 and "train_churn_model" in response.json()["detail"]


def test_a_token_over_its_rate_limit_gets_429_with_retry_after(client, tokens, settings):
    cache.clear()
    settings.API_RATE_LIMIT, settings.API_RATE_WINDOW = 3, 60
    headers = bearer(tokens["retention"])
    codes = [client.get("/api/v1/models", **headers).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/api/v1/models", **headers)
    assert 1 <= int(limited["Retry-After"]) <= 60
    # Another token has its own budget.
    assert client.get("/api/v1/models", **bearer(tokens["manager"])).status_code == 200


def test_the_browser_session_needs_the_csrf_token_to_write(api_users):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(api_users["retention"])
    partner = PartnerFactory()
    assert browser.get("/api/v1/partners").status_code == 200
    no_csrf = browser.put(
        f"/api/v1/partners/{partner.external_id}/do-not-contact",
        {"reason": "x"},
        content_type="application/json",
    )
    assert no_csrf.status_code in (401, 403)
    assert not DoNotContact.objects.exists()


def test_the_docs_are_for_logged_in_users(client, api_users, tokens):
    assert client.get("/api/v1/docs").status_code == 302
    assert client.get("/api/v1/openapi.json").status_code == 401
    assert (
        client.get("/api/v1/openapi.json", **bearer(tokens["retention"])).json()["info"]["title"]
        == "churnsite API"
    )
    client.force_login(api_users["retention"])
    assert client.get("/api/v1/docs").status_code == 200


def test_the_profile_page_shows_a_new_token_once_and_revokes_it(client, api_users):
    client.force_login(api_users["retention"])
    created = client.post("/profile/tokens/new/", {"name": "HubSpot workflow"}).content.decode()
    row = ApiToken.objects.get(user=api_users["retention"])
    token = created.split('id="new-token">', 1)[1].split("<", 1)[0]
    assert token.startswith(row.prefix) and len(token) > 40
    listing = client.get("/profile/tokens/").content.decode()
    assert "HubSpot workflow" in listing and token not in listing and "never" in listing
    assert client.get("/api/v1/models", **bearer(token)).status_code == 200
    assert client.post(f"/profile/tokens/{row.pk}/revoke/").status_code == 302
    assert client.get("/api/v1/models", **bearer(token)).status_code == 401
    assert AuditEvent.objects.filter(event_type__in=["api_token_created", "api_token_revoked"]).count() == 2


def test_someone_elses_token_cannot_be_revoked_from_the_profile_page(client, api_users, token_for):
    token_for(api_users["manager"])
    client.force_login(api_users["retention"])
    row = ApiToken.objects.get()
    assert client.post(f"/profile/tokens/{row.pk}/revoke/").status_code == 404
    row.refresh_from_db()
    assert row.revoked_at is None


def test_a_manager_creates_a_token_for_someone_in_the_admin_and_sees_it_once(client, api_users):
    client.force_login(api_users["manager"])
    response = client.post(
        "/admin/api/apitoken/add/", {"user": api_users["retention"].pk, "name": "Billing"}, follow=True
    )
    assert response.status_code == 200
    row = ApiToken.objects.get()
    assert row.user == api_users["retention"]
    shown = [str(m) for m in response.context["messages"]]
    assert any(row.prefix in m for m in shown)
