"""Real Celery worker processes for the agent's tests (no eager mode).

A pool of `celery -A churnsite worker` subprocesses bound to the pytest test database, Redis
db from REDIS_URL, a queue of their own, and the file email backend (so the test can count the
mail every process sent). Always terminated, with bounded waits.
"""

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.utils import timezone

from churnsite.celery import app
from ml.models import PartnerScore
from retention.models import Partner
from tests.factories import ModelVersionFactory

ROOT = Path(__file__).resolve().parents[2]


def subprocess_env(**overrides: str) -> dict:
    """The environment for a site or worker process on the pytest test database."""
    db = settings.DATABASES["default"]
    user = quote(db["USER"] or "postgres", safe="")
    if db.get("PASSWORD"):
        user += ":" + quote(db["PASSWORD"], safe="")
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "DB_CONN_MAX_AGE": "0",
        "OPENAI_API_KEY": "",
        "OPENAI_BASE_URL": "",
        "LOG_LEVEL": "WARNING",
        **overrides,
    }
    env.pop("TEST_DATABASE_NAME", None)
    return env


class WorkerPool:
    def __init__(
        self,
        *,
        count: int,
        outbox: Path,
        extra_env: dict | None = None,
        queue: str | None = None,
        control_app=None,
    ):
        self.count = count
        self.outbox = outbox
        self.queue = queue or f"agent-test-{uuid.uuid4().hex[:8]}"
        # Unique names even when a second pool serves the same queue (the fault tests).
        self.names = [f"w{i}-{uuid.uuid4().hex[:6]}-{self.queue}@localhost" for i in range(count)]
        self.extra_env = extra_env or {}
        # The Celery app that pings the workers: one on the test's own Redis for the fault tests.
        self.control_app = control_app or app
        self.procs: list[subprocess.Popen] = []

    def env(self) -> dict:
        return subprocess_env(
            CELERY_QUEUE=self.queue,
            EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
            EMAIL_FILE_PATH=str(self.outbox),
            **self.extra_env,
        )

    def start(self) -> "WorkerPool":
        env = self.env()
        for name in self.names:
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable, "-m", "celery", "-A", "churnsite", "worker",
                        "--pool=prefork", "-c", "1", "-Q", self.queue, "-n", name,
                        "--without-gossip", "--without-mingle", "--loglevel=WARNING",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )  # fmt: skip
        self._wait_ready(timeout=90)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited early with code {proc.returncode}")
            for reply in self.control_app.control.ping(destination=self.names, timeout=1.0) or []:
                seen.update(reply)
            if seen >= set(self.names):
                return
            time.sleep(0.5)
        raise RuntimeError(f"workers not ready after {timeout}s: {sorted(set(self.names) - seen)}")

    def kill(self) -> None:
        """kill -9 every worker process (the main process and its pool child) at once."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait(timeout=10)
        self.procs = []

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs = []

    def sent_messages(self) -> list[str]:
        """Every message the file backend wrote (one file per connection, messages separated)."""
        messages = []
        for path in sorted(self.outbox.glob("*.log")):
            for chunk in path.read_text().split("-" * 79):
                if "X-Churnsite-Intervention:" in chunk:
                    messages.append(chunk)
        return messages


def make_partners(n: int, *, platinum_every: int = 0) -> list[Partner]:
    version = ModelVersionFactory()
    partners = Partner.objects.bulk_create(
        Partner(
            external_id=f"W{i:05d}",
            name=f"Worker Test Partner {i}",
            tier=Partner.Tier.PLATINUM if platinum_every and i % platinum_every == 0 else Partner.Tier.SILVER,
            region=Partner.Region.NA,
            segment=Partner.Segment.RESELLER,
            monthly_revenue=Decimal("1000"),
            contact_email=f"ops@w{i:05d}.example",
            joined_on=dt.date(2023, 1, 1),
        )
        for i in range(n)
    )
    now = timezone.now()
    drivers = [{"feature": "days_overdue", "text": "Payment 45 days overdue", "value": 45, "points": 18.0}]
    PartnerScore.objects.bulk_create(
        PartnerScore(
            partner=p,
            partner_name=p.name,
            model_version=version,
            risk=0.86 + (i % 100) / 1000,
            p_7d=0.4,
            p_30d=0.3,
            p_90d=0.16,
            p_later=0.14,
            bucket="7d",
            urgency_rank=0,
            drivers=drivers,
            scored_at=now,
        )
        for i, p in enumerate(partners)
    )
    return partners
