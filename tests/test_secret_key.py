"""Without SECRET_KEY a production site (DEBUG off) refuses to start instead of signing
sessions with the public demo key (issue 9)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_SITE = "import churnsite.wsgi; from django.conf import settings; print(settings.SECRET_KEY)"


def _start(**env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")} | env
    return subprocess.run(
        [sys.executable, "-c", START_SITE], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )


def test_the_site_refuses_to_start_without_a_secret_key_when_debug_is_off():
    result = _start(DEBUG="false")
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_the_site_starts_on_the_key_it_is_given():
    result = _start(DEBUG="false", SECRET_KEY="a-long-random-production-key")
    assert result.returncode == 0 and result.stdout.strip() == "a-long-random-production-key"


def test_the_demo_with_debug_on_falls_back_to_the_demo_key():
    result = _start(DEBUG="true")
    assert result.returncode == 0 and result.stdout.strip().startswith("django-insecure-")


def test_management_commands_run_without_a_key():
    environ = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
