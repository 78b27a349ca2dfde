"""Chat alerts through a real local webhook server: queued by scoring, sent by the task,
retried with backoff when the webhook fails, audited, deduplicated per partner per day."""

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from agent.models import AuditEvent
from desk.models import ChatAlert
from desk.services import chat_alerts_enqueue_at_risk, chat_alerts_send_due
from desk.tasks import send_chat_alerts
from tests.desk.conftest import run_scoring
from tests.factories import InterventionFactory, PartnerFactory

pytestmark = pytest.mark.django_db


class Webhook:
    """A local incoming-webhook server: answers with the queued statuses (then 200), optionally slowly."""

    def __init__(self, statuses=(), delay: float = 0.0):
        self.statuses, self.delay, self.bodies = list(statuses), delay, []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's hook name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.bodies.append(body)
                time.sleep(hook.delay)
                self.send_response(hook.statuses.pop(0) if hook.statuses else 200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(settings):
    hooks = []

    def start(**kwargs):
        hook = Webhook(**kwargs)
        hooks.append(hook)
        settings.CHAT_WEBHOOK_URL = hook.url
        settings.CHAT_WEBHOOK_TIMEOUT = 1.0
        return hook

    yield start
    for hook in hooks:
        hook.close()


def test_a_partner_crossing_into_at_risk_is_posted_once_as_text(webhook):
    hook = webhook()
    partner = PartnerFactory(external_id="P100", name="Acme")
    calm = PartnerFactory(external_id="P101")
    run_scoring({partner: 0.3, calm: 0.2}, as_of=dt.date(2026, 12, 1))
    run = run_scoring({partner: 0.8, calm: 0.25}, as_of=dt.date(2026, 12, 2))

    assert chat_alerts_send_due()["sent"] == 1
    assert hook.bodies == [{"text": ChatAlert.objects.get().text}]
    assert "P100 Acme is now at risk: 80% (was 30%)" in hook.bodies[0]["text"]
    # The same partner again today (another run): no second message.
    assert chat_alerts_enqueue_at_risk(run_id=run.pk, day=timezone.localdate()) == 0
    chat_alerts_send_due()
    assert len(hook.bodies) == 1


def test_a_failing_webhook_is_retried_with_backoff_and_every_failure_is_audited(webhook, settings):
    hook = webhook(statuses=[500, 503])
    partner = PartnerFactory(external_id="P100")
    run_scoring({partner: 0.3}, as_of=dt.date(2026, 12, 1))
    run_scoring({partner: 0.9}, as_of=dt.date(2026, 12, 2))
    now = timezone.now()

    assert chat_alerts_send_due(now=now) == {"sent": 0, "retry": 1, "failed": 0}
    alert = ChatAlert.objects.get()
    assert (
        alert.status == "pending" and alert.attempts == 1 and alert.last_error == "HTTP 500 from the webhook"
    )
    assert alert.next_attempt_at == now + dt.timedelta(seconds=30)
    assert chat_alerts_send_due(now=now + dt.timedelta(seconds=10))["retry"] == 0  # not due yet
    assert chat_alerts_send_due(now=now + dt.timedelta(seconds=31))["retry"] == 1
    alert.refresh_from_db()
    assert alert.next_attempt_at == now + dt.timedelta(seconds=31 + 60)  # doubled
    assert chat_alerts_send_due(now=now + dt.timedelta(seconds=200))["sent"] == 1
    alert.refresh_from_db()
    assert alert.status == "sent" and alert.attempts == 3 and len(hook.bodies) == 3
    failures = AuditEvent.objects.filter(event_type="chat_alert_failed").order_by("pk")
    assert [e.payload["attempt"] for e in failures] == [1, 2]


def test_an_alert_is_given_up_after_the_last_attempt_and_shown_on_the_agent_page(
    webhook, settings, retention_client
):
    webhook(statuses=[500] * 10)
    settings.CHAT_ALERT_MAX_ATTEMPTS = 2
    partner = PartnerFactory(external_id="P100")
    run_scoring({partner: 0.3}, as_of=dt.date(2026, 12, 1))
    run_scoring({partner: 0.9}, as_of=dt.date(2026, 12, 2))
    now = timezone.now()
    chat_alerts_send_due(now=now)

    assert chat_alerts_send_due(now=now + dt.timedelta(minutes=5))["failed"] == 1
    assert ChatAlert.objects.get().status == "failed"
    assert AuditEvent.objects.filter(event_type="chat_alert_failed", payload__gave_up=True).exists()
    html = retention_client.get("/agent/").content.decode()
    assert 'data-chat="failed">1<' in html and "HTTP 500 from the webhook" in html


def test_a_slow_webhook_never_holds_up_the_scoring_run(webhook):
    hook = webhook(delay=3.0)
    partners = [PartnerFactory(external_id=f"P{100 + i}") for i in range(5)]
    run_scoring(dict.fromkeys(partners, 0.3), as_of=dt.date(2026, 12, 1))

    started = time.monotonic()
    run_scoring(dict.fromkeys(partners, 0.9), as_of=dt.date(2026, 12, 2))

    assert time.monotonic() - started < 2.5
    assert hook.bodies == []  # scoring only queued them
    assert ChatAlert.objects.filter(status="pending").count() == 5


def test_a_platinum_draft_waiting_for_approval_is_alerted_by_the_task(webhook):
    hook = webhook()
    platinum = PartnerFactory(external_id="P900", name="Big Co", tier="platinum")
    InterventionFactory(partner=platinum, source="agent", review_status="awaiting")
    InterventionFactory(partner=PartnerFactory(tier="gold"), source="agent", review_status="awaiting")

    result = send_chat_alerts.apply().get()
    send_chat_alerts.apply().get()  # every minute: still one alert per partner per day

    assert result["queued"] == 1 and result["sent"] == 1
    assert len(hook.bodies) == 1 and "Platinum partner P900 Big Co" in hook.bodies[0]["text"]
