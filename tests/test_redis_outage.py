"""Redis down degrades the site, it does not take it down (issue 9).

The site runs as a real gunicorn process and the agent as a real Celery worker, both on a
redis-server of this test's own (on a free port, so stopping it disturbs nobody else) and the
pytest PostgreSQL database. The test logs in over HTTP, stops Redis mid-session, and checks
what a user would: pages and logins work, /healthz says degraded, and an agent run started
meanwhile is queued (not failed: the Agent page says it waits for the queue, the failed enqueue is
audited) and, once Redis is back (empty), beat's sweep (agent/sweep.py) enqueues it again and the
worker finishes it: the partner contacted once, every step audited.
"""

import datetime as dt
import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery
from django.db import connection
from django.utils import timezone

from agent.models import AgentConfig, AgentRun, AuditEvent
from retention.models import Intervention
from tests.agent.workers import subprocess_env
from tests.conftest import PASSWORD, scored_partner
from tests.factories import UserFactory
from tests.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Browser:
    """A cookie-keeping HTTP client: what a browser without JavaScript does."""

    def __init__(self, base: str):
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def request(self, path: str, data: dict | None = None) -> tuple[int, str, str]:
        body = None
        if data is not None:
            body = urllib.parse.urlencode({"csrfmiddlewaretoken": self.csrf(), **data}).encode()
        try:
            with self.opener.open(self.base + path, data=body, timeout=20) as response:
                return response.status, response.geturl(), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.geturl(), exc.read().decode()

    def csrf(self) -> str:
        return next(c.value for c in self.cookies if c.name == "csrftoken")

    def login(self, username: str) -> tuple[int, str, str]:
        self.request("/login/")
        return self.request("/login/", {"username": username, "password": PASSWORD})


def _answers(base: str) -> bool:
    try:
        return Browser(base).request("/healthz")[0] == 200
    except OSError:  # not listening yet
        return False


@pytest.fixture
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@dataclass
class Site:
    base: str
    queue: str
    mail: Path

    def sent_to(self) -> list[str]:
        """The To: of every email the site's processes sent (the file email backend)."""
        return [
            m
            for path in sorted(self.mail.glob("*.log"))
            for m in re.findall(r"^To: (\S+)$", path.read_text(), re.M)
        ]


@pytest.fixture
def site(redis_server, tmp_path):
    """gunicorn and one Celery worker on the test's Redis and database."""
    if connection.vendor != "postgresql":
        pytest.skip("the outage test runs the site as separate processes on PostgreSQL")
    port = free_port()
    mail = tmp_path / "mail"
    mail.mkdir()
    env = subprocess_env(
        REDIS_URL=redis_server.url,
        CELERY_QUEUE=f"outage-{uuid.uuid4().hex[:8]}",
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(mail),
        # The sweep re-enqueues a queued run older than this (60 s in production).
        AGENT_SWEEP_GRACE="2",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "churnsite.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1",
             "--timeout", "60"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "churnsite", "worker", "--pool=solo", "-Q", env["CELERY_QUEUE"],
             "-n", f"outage-{port}@localhost", "--without-gossip", "--without-mingle", "--loglevel=WARNING"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        ),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(base), timeout=60, what="gunicorn")
        yield Site(base=base, queue=env["CELERY_QUEUE"], mail=mail)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def beat_sweep(redis_server: RedisServer, queue: str) -> None:
    """What Celery beat does every minute: send `agent.sweep` (to the site's worker)."""
    control = Celery("outage-beat", broker=redis_server.url, backend=None, set_as_current=False)
    try:
        control.send_task("agent.sweep", queue=queue)
    finally:
        control.close()


def test_with_redis_down_pages_and_logins_work_healthz_says_degraded_and_a_run_waits_then_resumes(
    site, redis_server
):
    AgentConfig.objects.update_or_create(pk=1, defaults={"enabled": True, "control_fraction": 0.0})
    UserFactory(username="rita", groups=["Retention"])
    partner = scored_partner(risk=0.95)
    browser = Browser(site.base)
    status, url, _ = browser.login("rita")
    assert status == 200 and "/login/" not in url
    assert browser.request(f"/partners/{partner.external_id}/")[0] == 200

    redis_server.stop()

    # The session is in the database: the same browser is still logged in on every page.
    for path in (
        "/",
        "/partners/",
        f"/partners/{partner.external_id}/",
        "/interventions/",
        "/agent/",
        "/crm/",
    ):
        status, url, _ = browser.request(path)
        assert (status, urllib.parse.urlparse(url).path) == (200, path)
    # A new login works too.
    status, url, body = Browser(site.base).login("rita")
    assert status == 200 and "/login/" not in url and "Live Feed" in body

    status, _, body = browser.request("/healthz")
    health = json.loads(body)
    assert status == 503
    assert health["status"] == "degraded"
    assert health["database"]["ok"] is True and health["broker"]["ok"] is False

    # Run now: the run is recorded *queued* (not failed: nothing was lost, it waits in the
    # database), the page says it waits for the queue, and the failed enqueue is audited.
    status, url, body = browser.request("/agent/run/", {})
    assert status == 200
    run = AgentRun.objects.get()
    assert f"?run={run.pk}" in url
    assert re.search(rf"Run {run.pk} is queued, but the task queue \(Redis\) is unreachable", body)
    assert re.search(rf'Run <strong>#{run.pk}</strong> \(Manual\):\s*<span class="badge">Queued</span>', body)
    assert run.status == AgentRun.Status.QUEUED
    failed = AuditEvent.objects.get(event_type="task_enqueue_failed")
    assert failed.run == run and failed.payload["task"] == "agent.run_agent"
    assert site.sent_to() == []  # nobody contacted while the queue is down

    redis_server.start()  # an empty Redis: the run's message never reached it
    status, _, body = browser.request("/healthz")
    assert (status, json.loads(body)["status"]) == (200, "ok")

    # Beat's next sweep finds the run queued in the database and enqueues it; the worker runs it.
    wait_for(
        lambda: AgentRun.objects.filter(
            pk=run.pk, created_at__lt=timezone.now() - dt.timedelta(seconds=2)
        ).exists(),
        timeout=10,
        what="the sweep's grace",
    )
    beat_sweep(redis_server, site.queue)
    wait_for(
        lambda: AgentRun.objects.get(pk=run.pk).status == AgentRun.Status.FINISHED,
        timeout=90,
        what="the queued run to resume once Redis is back",
    )
    run.refresh_from_db()
    assert run.summary["executed"] == 1
    contact = Intervention.objects.get(partner=partner, agent_run=run)
    assert contact.sent_at is not None
    for event_type in ("intervention_logged", "email_queued", "email_sent"):
        assert AuditEvent.objects.filter(event_type=event_type, intervention=contact).count() == 1, event_type
    assert AuditEvent.objects.get(event_type="email_sent", intervention=contact).run == run
    wait_for(lambda: site.sent_to(), timeout=10, what="the email file")
    assert site.sent_to() == [partner.contact_email]
    status, _, body = browser.request(f"/agent/?run={run.pk}")
    assert re.search(
        rf'Run <strong>#{run.pk}</strong> \(Manual\):\s*<span class="badge">Finished</span>', body
    )

    # With the queue back, Run now starts a run the worker carries out at once (the partner,
    # contacted, is in its cooldown: no second email).
    status, url, body = browser.request("/agent/run/", {})
    assert status == 200 and "is unreachable" not in body
    second = AgentRun.objects.exclude(pk=run.pk).get()
    wait_for(
        lambda: AgentRun.objects.get(pk=second.pk).status == AgentRun.Status.FINISHED,
        timeout=60,
        what="the run after Redis came back",
    )
    assert site.sent_to() == [partner.contact_email]
