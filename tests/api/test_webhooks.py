"""Webhooks out, end to end: real HTTP to a local receiver that checks every signature the way
docs/api.md tells a receiver to, is down for the first two attempts, then takes each event once."""

import datetime as dt
import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from api import webhooks
from api.models import WebhookDelivery
from ml import services as ml_services
from tests.api.conftest import bearer
from tests.factories import PartnerFactory, PartnerScoreFactory, ScoringRunFactory

pytestmark = pytest.mark.django_db
SECRET = "whsec-test-0123456789abcdef"


def verify_signature(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """docs/api.md's receiver snippet, independent of api.webhooks."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    timestamp = int(parts["t"])
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


class Receiver:
    """Not listening at first (connection refused); then 503 for everything; then up."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.mode = "503"
        self.received: list[dict] = []
        self.bad_signatures = 0
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.mode == "503":
                    self.send_response(503)
                    self.end_headers()
                    return
                if not verify_signature(SECRET, self.headers["X-Churnsite-Signature"], body):
                    receiver.bad_signatures += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver.received.append({"headers": dict(self.headers), "body": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def _make_events(client, tokens, manager, url: str) -> None:
    """One of each event, through the API as another system would cause them."""
    webhooks.webhook_subscription_create(
        url=url, events=list(webhooks.WEBHOOK_EVENTS), secret=SECRET, actor=manager
    )
    headers = bearer(tokens["retention"])
    silver = PartnerFactory(external_id="P30001", tier="silver")
    platinum = PartnerFactory(external_id="P30002", tier="platinum")
    logged = client.post(
        "/api/v1/partners/P30001/interventions",
        {"action": "meeting"},
        content_type="application/json",
        **headers,
    )
    assert logged.status_code == 201  # intervention.created
    outcome = client.post(
        f"/api/v1/interventions/{logged.json()['id']}/outcome",
        {"outcome": "saved"},
        content_type="application/json",
        **headers,
    )
    assert outcome.status_code == 200  # intervention.outcome_set
    sent = client.post(
        f"/api/v1/partners/{silver.external_id}/emails",
        {"subject": "Checking in", "body": "Hello, how are things going?"},
        content_type="application/json",
        **headers,
    )
    assert sent.json()["result"] == "sent"  # intervention.created + intervention.sent
    held = client.post(
        f"/api/v1/partners/{platinum.external_id}/emails",
        {"subject": "Checking in", "body": "Hello, how are things going?"},
        content_type="application/json",
        **headers,
    )
    assert held.json()["result"] == "held_for_review"  # intervention.created + review.waiting
    run = ScoringRunFactory(status="running", finished_at=None)
    PartnerScoreFactory(
        partner=PartnerFactory(external_id="P30003"), run=run, risk_value=0.9, previous_risk=0.1
    )
    ml_services.scoring_run_finish(run_id=run.pk)  # partner.at_risk


def test_a_receiver_down_twice_gets_exactly_one_signed_delivery_per_event(
    client, tokens, api_users, receiver, settings
):
    settings.WEBHOOK_MAX_ATTEMPTS = 5
    _make_events(client, tokens, api_users["manager"], receiver.url)
    deliveries = list(WebhookDelivery.objects.order_by("pk"))
    assert sorted(d.event for d in deliveries) == sorted(
        ["intervention.created"] * 3
        + ["intervention.outcome_set", "intervention.sent", "review.waiting", "partner.at_risk"]
    )
    t0 = timezone.now()
    # Attempt 1: nothing listens on the port.
    assert webhooks.webhooks_send_due(now=t0) == {"retry": 7}
    # Not due again before its backoff.
    assert webhooks.webhooks_send_due(now=t0 + dt.timedelta(seconds=1)) == {}
    # Attempt 2: the receiver answers 503.
    receiver.start()
    assert webhooks.webhooks_send_due(now=t0 + dt.timedelta(hours=1)) == {"retry": 7}
    # Attempt 3: up.
    receiver.mode = "up"
    assert webhooks.webhooks_send_due(now=t0 + dt.timedelta(hours=2)) == {"delivered": 7}
    assert webhooks.webhooks_send_due(now=t0 + dt.timedelta(hours=3)) == {}

    assert receiver.bad_signatures == 0
    ids = [r["body"]["id"] for r in receiver.received]
    assert len(ids) == len(set(ids)) == 7
    assert {r["body"]["event"] for r in receiver.received} == set(webhooks.WEBHOOK_EVENTS)
    assert {r["headers"]["X-Churnsite-Event-Id"] for r in receiver.received} == set(ids)
    at_risk = next(r["body"] for r in receiver.received if r["body"]["event"] == "partner.at_risk")
    assert at_risk["data"]["partner"]["id"] == "P30003" and at_risk["data"]["previous_risk"] == pytest.approx(
        0.1
    )
    for d in WebhookDelivery.objects.all():
        assert (d.status, d.attempts, d.last_status_code) == ("delivered", 3, 204)
        assert [(a.status_code, bool(a.error)) for a in d.attempt_log.all()] == [
            (None, True),
            (503, True),
            (204, False),
        ]


def test_the_deliveries_page_shows_status_codes_and_replays_a_delivery(client, tokens, api_users, receiver):
    receiver.mode = "up"
    receiver.start()
    _make_events(client, tokens, api_users["manager"], receiver.url)
    webhooks.webhooks_send_due()
    delivery = WebhookDelivery.objects.get(event="review.waiting")
    client.force_login(api_users["manager"])
    page = client.get("/webhooks/").content.decode()
    assert "review.waiting" in page and "204" in page and "Replay" in page
    assert client.post(f"/webhooks/deliveries/{delivery.pk}/replay/").status_code == 302
    webhooks.webhooks_send_due()
    replays = [r for r in receiver.received if r["body"]["id"] == delivery.event_id]
    assert len(replays) == 2  # the same event id again: a receiver may deduplicate on it
    assert client.get(f"/webhooks/deliveries/{delivery.pk}/").status_code == 200


def test_a_receiver_that_never_recovers_is_given_up_after_the_last_attempt(
    tokens, api_users, receiver, settings
):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    webhooks.webhook_subscription_create(
        url=receiver.url, events=["intervention.created"], secret=SECRET, actor=api_users["manager"]
    )
    from retention.services import intervention_log

    intervention_log(partner=PartnerFactory(), action="meeting", actor=api_users["retention"])
    t0 = timezone.now()
    assert webhooks.webhooks_send_due(now=t0) == {"retry": 1}
    assert webhooks.webhooks_send_due(now=t0 + dt.timedelta(hours=1)) == {"failed": 1}
    assert WebhookDelivery.objects.get().status == "failed"


def test_no_subscriber_means_no_delivery_rows(api_users):
    from retention.services import intervention_log

    intervention_log(partner=PartnerFactory(), action="meeting", actor=api_users["retention"])
    assert not WebhookDelivery.objects.exists()


def test_the_signature_is_over_timestamp_and_body():
    header = webhooks.sign(secret=SECRET, timestamp=int(time.time()), body=b'{"a":1}')
    assert verify_signature(SECRET, header, b'{"a":1}')
    assert not verify_signature(SECRET, header, b'{"a":2}')
    assert not verify_signature("another-secret-entirely", header, b'{"a":1}')
    assert webhooks.verify(secret=SECRET, header=header, body=b'{"a":1}')
