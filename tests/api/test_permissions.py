"""Every API operation x {no token, revoked token, Retention token, Manager token}, against the
README's permission matrix; and the send guardrails hold for API callers too."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from agent.models import AuditEvent, DoNotContact
from agent.services import agent_config_update
from api.api import api
from retention.models import Intervention
from tests.api.conftest import bearer
from tests.factories import InterventionFactory, PartnerFactory

RETENTION, MANAGER = "retention", "manager"
# The least role that may call each operation (operation ids from the OpenAPI document).
API_MATRIX = {
    "partners_list": RETENTION,
    "partner_get": RETENTION,
    "partner_risk_history": RETENTION,
    "interventions_list": RETENTION,
    "intervention_get": RETENTION,
    "outcomes_summary": RETENTION,
    "models_list": RETENTION,
    "model_get": RETENTION,
    "intervention_log": RETENTION,
    "partner_email_send": RETENTION,
    "intervention_set_outcome": RETENTION,
    "do_not_contact_add": RETENTION,
    "do_not_contact_remove": MANAGER,
    "scoring_run_start": MANAGER,
    "scoring_run_get": RETENTION,
    "agent_run_start": RETENTION,
    "agent_run_get": RETENTION,
    "import_start": MANAGER,
    "import_get": MANAGER,
}
BODIES = {
    "intervention_log": {"action": "meeting"},
    "partner_email_send": {"subject": "Hello", "body": "Checking in.", "send": False},
    "intervention_set_outcome": {"outcome": "saved"},
    "do_not_contact_add": {"reason": "test"},
    "agent_run_start": {"dry_run": True},
}


def operations():
    schema = api.get_openapi_schema()
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            yield op["operationId"], method, path.replace("{partner_id}", "P10000")


def test_every_operation_is_in_the_matrix_and_wears_the_access_check():
    ids = [op for op, _, _ in operations()]
    assert sorted(ids) == sorted(API_MATRIX), "add new API operations to API_MATRIX (and the README)"
    for router in api._routers:
        for path_view in router[1].path_operations.values():
            for operation in path_view.operations:
                assert getattr(operation.view_func, "access_permission", None), operation.operation_id


def _call(client, method, url, op_id, headers):
    if op_id == "import_start":
        upload = SimpleUploadedFile("partners.csv", b"partner_id,name\n", content_type="text/csv")
        return client.post(url, {"files": [upload]}, **headers)
    kwargs = {"content_type": "application/json"} if op_id in BODIES else {}
    data = BODIES.get(op_id)
    return (
        getattr(client, method)(url, data, **kwargs, **headers)
        if data
        else getattr(client, method)(url, **headers)
    )


@pytest.mark.django_db
@pytest.mark.parametrize(("op_id", "method", "url"), list(operations()))
def test_each_operation_answers_each_token_as_the_matrix_says(
    client, tokens, settings, tmp_path, op_id, method, url
):
    settings.MEDIA_ROOT = str(tmp_path)
    partner = PartnerFactory(external_id="P10000")
    intervention = InterventionFactory(partner=partner)
    url = url.replace("{intervention_id}", str(intervention.pk))
    for param in ("model_id", "run_id", "import_id"):
        url = url.replace("{" + param + "}", "1")
    least = API_MATRIX[op_id]
    for who in ["no token", "revoked", "no group", RETENTION, MANAGER]:
        headers = {} if who == "no token" else bearer(tokens[who])
        before = AuditEvent.objects.filter(event_type="access_refused").count()
        response = _call(client, method, url, op_id, headers)
        code = response.status_code
        if who in ("no token", "revoked"):
            assert code == 401, f"{who}: {code}"
        elif who == MANAGER or (who == RETENTION and least == RETENTION):
            assert code not in (401, 403) and code < 500, f"{who}: {code} {response.content[:300]}"
        else:
            assert code == 403, f"{who}: {code}"
            refused = AuditEvent.objects.filter(event_type="access_refused").count() - before
            assert refused == (0 if method == "get" else 1), who


@pytest.mark.django_db
def test_an_api_email_to_a_do_not_contact_partner_is_refused_and_audited(client, tokens, mailoutbox):
    partner = PartnerFactory(external_id="P40001")
    DoNotContact.objects.create(partner=partner, reason="asked")
    response = client.post(
        "/api/v1/partners/P40001/emails",
        {"subject": "Hi", "body": "Hello there"},
        content_type="application/json",
        **bearer(tokens[MANAGER]),
    )
    assert response.status_code == 409 and response.json()["code"] == "do_not_contact"
    assert mailoutbox == [] and not Intervention.objects.filter(partner=partner).exists()
    event = AuditEvent.objects.get(event_type="email_refused", partner=partner)
    assert event.actor_user.username == "max" and event.payload["reason"] == "do_not_contact"
    agent_config_update(actor=None, enabled=True)
    intervene = client.post(
        "/api/v1/agent-runs",
        {"partner": "P40001"},
        content_type="application/json",
        **bearer(tokens[RETENTION]),
    )
    assert intervene.status_code == 409 and intervene.json()["code"] == "do_not_contact"
    assert AuditEvent.objects.filter(event_type="intervene_refused", partner=partner).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("who", [RETENTION, MANAGER])
def test_an_api_email_to_a_platinum_partner_is_not_sent_but_held_for_approval(
    client, tokens, mailoutbox, who
):
    partner = PartnerFactory(external_id="P40002", tier="platinum")
    response = client.post(
        "/api/v1/partners/P40002/emails",
        {"subject": "Hi", "body": "Hello there"},
        content_type="application/json",
        **bearer(tokens[who]),
    )
    assert response.status_code == 202 and response.json()["result"] == "held_for_review"
    assert mailoutbox == []
    intervention = Intervention.objects.get(partner=partner)
    assert intervention.review_status == "awaiting" and intervention.sent_at is None
    assert AuditEvent.objects.filter(event_type="held_for_review", intervention=intervention).count() == 1
