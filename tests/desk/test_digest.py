"""The morning digest: per owner, at their local time, plain text and HTML, opt-out, command."""

import datetime as dt
import socket
from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from agent.models import AuditEvent
from crm_sim.models import CrmTask
from desk.models import DeskPreference
from desk.services import digests_send_due
from tests.conftest import last_json
from tests.desk.conftest import run_scoring
from tests.factories import PartnerFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_world(retention_user, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DIGEST_TIME, settings.DIGEST_TIMEZONE = "07:30", "Europe/Berlin"
    rising = PartnerFactory(external_id="P100", name="Acme Rising", account_owner=retention_user)
    steady = PartnerFactory(external_id="P101", account_owner=retention_user)
    run_scoring({rising: 0.30, steady: 0.20}, as_of=dt.date(2026, 12, 1))
    run_scoring({rising: 0.72, steady: 0.20}, as_of=dt.date(2026, 12, 2))
    CrmTask.objects.create(partner=steady, kind="retention_call", title="Call Bob", due_on=timezone.localdate(),
                           idempotency_key="k1")  # fmt: skip
    return retention_user


def berlin(hour: int, minute: int) -> dt.datetime:
    import zoneinfo

    return timezone.now().astimezone(zoneinfo.ZoneInfo("Europe/Berlin")).replace(hour=hour, minute=minute)


def test_the_digest_goes_out_once_after_the_owners_local_time_with_text_and_html(owner_world):
    assert digests_send_due(now=berlin(7, 0))["not_yet"] == 1
    assert mail.outbox == []

    counts = digests_send_due(now=berlin(7, 31))
    assert counts["sent"] == 1
    digests_send_due(now=berlin(7, 46))  # the next tick: not twice a day
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == [owner_world.email]
    assert message.subject == "Your partners today: 1 at risk, 1 new"
    assert "P100 Acme Rising: risk 72% (was 30%)" in message.body
    assert "+42 pts" in message.body and "Call Bob" in message.body
    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html" and "▲ +42 pts" in html and "/partners/P100/" in html
    assert AuditEvent.objects.filter(event_type="digest_sent").count() == 1


def test_an_owner_who_opted_out_gets_no_digest(owner_world, client):
    client.force_login(owner_world)
    client.post("/desk/digest/", {"digest_time": "07:30", "digest_timezone": "Europe/Berlin"})

    assert DeskPreference.objects.get(user=owner_world).digest_enabled is False
    assert digests_send_due(now=berlin(9, 0))["opted_out"] == 1
    assert mail.outbox == []
    assert AuditEvent.objects.filter(event_type="desk_preferences_changed").exists()


def test_an_owner_can_pick_their_own_time_and_zone(owner_world):
    DeskPreference.objects.update_or_create(
        user=owner_world, defaults={"digest_time": dt.time(6, 0), "digest_timezone": "Asia/Tokyo"}
    )
    import zoneinfo

    tokyo_6_05 = timezone.now().astimezone(zoneinfo.ZoneInfo("Asia/Tokyo")).replace(hour=6, minute=5)

    assert digests_send_due(now=tokyo_6_05)["sent"] == 1


def test_send_digest_sends_now_and_prints_a_json_summary(owner_world):
    UserFactory(username="nobody-owns", groups=["Retention"])  # owns no partner: not a recipient
    out = StringIO()
    call_command("send_digest", stdout=out)

    summary = last_json(out)
    assert summary["sent"] == 1 and summary["recipients"] == 1
    assert len(mail.outbox) == 1


def test_the_preview_page_shows_my_digest(owner_world, client):
    client.force_login(owner_world)

    html = client.get("/desk/digest/").content.decode()

    assert "Your partners today: 1 at risk, 1 new" in html
    assert "P100 Acme Rising: risk 72% (was 30%)" in html  # the plain-text part


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_digest_reaches_a_real_smtp_server(owner_world, settings):
    from aiosmtpd.controller import Controller

    received = []

    class Sink:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            received.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", port, False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        out = StringIO()
        call_command("send_digest", "--user", owner_world.username, stdout=out)
    finally:
        controller.stop()

    assert last_json(out)["sent"] == 1
    [envelope] = received
    assert envelope.rcpt_tos == [owner_world.email]
    raw = envelope.content.decode()
    assert "multipart/alternative" in raw and "text/plain" in raw and "text/html" in raw
    assert "Acme Rising" in raw


def test_the_digest_and_alert_schedules_are_upserted_with_the_others():
    from django_celery_beat.models import PeriodicTask

    call_command("setup_periodic_tasks", stdout=StringIO())

    tasks = {t.task: t for t in PeriodicTask.objects.all()}
    assert tasks["desk.send_due_digests"].crontab.minute == "*/15"
    assert tasks["desk.send_chat_alerts"].interval.every == 1
