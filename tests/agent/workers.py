"""Real Celery worker processes for the agent's tests (no eager mode).

A pool of `celery -A churnsite worker` subprocesses bound to the pytest test database, Redis
db from REDIS_URL, a queue of their own, and the file email backend (so the test can count the
mail every process sent). Always terminated, with bounded waits.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from django.conf import settings

from churnsite.celery import app

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
    def __init__(self, *, count: int, outbox: Path, extra_env: dict | None = None):
        self.count = count
        self.outbox = outbox
        self.queue = f"agent-test-{uuid.uuid4().hex[:8]}"
        self.names = [f"w{i}-{self.queue}@localhost" for i in range(count)]
        self.extra_env = extra_env or {}
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
            for reply in app.control.ping(destination=self.names, timeout=1.0) or []:
                seen.update(reply)
            if seen >= set(self.names):
                return
            time.sleep(0.5)
        raise RuntimeError(f"workers not ready after {timeout}s: {sorted(set(self.names) - seen)}")

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
