"""Settings for churnsite, read from the environment.

Defaults serve the embedded demo (SQLite, in-process agent); DATABASE_URL and
REDIS_URL switch to PostgreSQL and Redis. A bad value fails loudly at start-up.
"""

import datetime as dt
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false)")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from exc


def env_date(name: str) -> dt.date | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a date (YYYY-MM-DD)") from exc


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


# Core
DEBUG = env_bool("DEBUG", False)
# The demo key is public (it is in this file), so only a DEBUG site may sign sessions with it.
# The test suite (pyproject's pytest env), manage.py's non-serving commands and the bench
# scripts set their own throwaway key.
DEMO_SECRET_KEY = "django-insecure-churnsite-demo-key-change-me"
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off: set a long random SECRET_KEY "
            "(or DEBUG=true for the demo, which uses a public demo key)"
        )
    SECRET_KEY = DEMO_SECRET_KEY
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "django_celery_beat",
    "retention",
    "ml",
    "agent",
    "crm_sim",
    "desk",
    "ninja",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # After the login check: a logged-in user in neither role group gets the "no role" page.
    "churnsite.access.RoleRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "churnsite.urls"
# Django's model backend, plus the desk's per-user feed settings loaded with the user.
AUTHENTICATION_BACKENDS = ["desk.backends.DeskModelBackend"]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "desk.context_processors.saved_views",
            ],
            # {% partialdef %} everywhere without a {% load %}.
            "builtins": ["template_partials.templatetags.partials"],
        },
    },
]

WSGI_APPLICATION = "churnsite.wsgi.application"

# Database
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The demo runs web, worker and beat against one file: wait for locks.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    DATABASES["default"]["CONN_MAX_AGE"] = 0
if env_str("TEST_DATABASE_NAME"):
    # Lets several suites share one PostgreSQL server without clobbering each other.
    DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
IS_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")
if IS_POSTGRES:
    # The default (4.0) prices random reads for spinning disks and made the planner hash-join
    # all 100k partners to count one urgency bucket (26 ms instead of 4 ms, bench/feed_bench.py).
    # Parallel query: a page's 50-row query split over worker processes wins alone and loses
    # under load on a small box (10 clients, 2 cores: Live Feed p95 162-201 ms with it, see the
    # README's benchmark table); 0 keeps each request on its own backend. Raise it for
    # analytics on bigger hosts. JIT compiles any query the planner prices above jit_above_cost,
    # and the pages' aggregates over the history (the Outcomes page's at 1M partners) paid
    # 400 ms of compiling for ~800 ms of work; PG_JIT=on brings it back.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
        f"-c random_page_cost={env_float('PG_RANDOM_PAGE_COST', 1.1)}"
        f" -c max_parallel_workers_per_gather={env_int('PG_MAX_PARALLEL_WORKERS_PER_GATHER', 0)}"
        f" -c jit={'on' if env_bool('PG_JIT', False) else 'off'}"
    )
    # psycopg prepares a precompiled statement (churnsite.compiled: the feed's, the strip's, the
    # session's and the user's) once it ran this many times on a connection, so PostgreSQL
    # stops planning it on every page; Django's own queries are never prepared. 0 = off, e.g.
    # behind a transaction-pooling PgBouncer that does not track prepared statements.
    if (prepare_threshold := env_int("DB_PREPARE_THRESHOLD", 5)) > 0:
        DATABASES["default"]["OPTIONS"]["prepare_threshold"] = prepare_threshold

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Sessions live in the database only: every page reads the session, and with cached_db a Redis
# outage turned every logged-in page and the login POST into a 500 (issue 9).
# churnsite.sessions is Django's database backend reading a session in one precompiled statement.
SESSION_ENGINE = "churnsite.sessions"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "retention:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static and media
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG and env_bool("WHITENOISE_MANIFEST", False)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "media/"

# Security (production values come from the environment; check --deploy is clean with them)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_PROXY") else None
X_FRAME_OPTIONS = "DENY"

# Celery
REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or None
# Without a broker the demo runs tasks in-process (and says so on the Agent page).
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL and env_bool("CELERY_EAGER_WITHOUT_BROKER", True)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 600)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 540)
# Tasks must finish well inside this, or Redis redelivers them to another worker.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "churnsite")

# Agent time limits (seconds) and the every-minute sweep (agent/sweep.py). A run still "running"
# past its task's hard time limit plus AGENT_SWEEP_GRACE has lost its worker: the sweep fails it
# (audited) and releases its claims. Queued runs and outbox emails older than the grace are
# enqueued again from the database; a run still queued after AGENT_QUEUED_RUN_LIMIT is failed.
AGENT_RUN_TIME_LIMIT = env_int("AGENT_RUN_TIME_LIMIT", 1260)
AGENT_PARTNER_TIME_LIMIT = env_int("AGENT_PARTNER_TIME_LIMIT", 330)
AGENT_QUEUED_RUN_LIMIT = env_int("AGENT_QUEUED_RUN_LIMIT", 1800)
AGENT_SWEEP_GRACE = env_int("AGENT_SWEEP_GRACE", 30)
# Send attempts per outbox email before it is marked failed (retries back off from 60 s).
AGENT_OUTBOX_MAX_ATTEMPTS = env_int("AGENT_OUTBOX_MAX_ATTEMPTS", 5)

# Cache (driver explanations on demand are cached here). It is only ever a cache: when Redis is
# down, reads miss and writes are dropped (django-redis IGNORE_EXCEPTIONS, logged), so callers
# compute from the database instead of failing; short timeouts keep a dead Redis from stalling
# pages.
CACHE_SOCKET_TIMEOUT = env_float("CACHE_SOCKET_TIMEOUT", 0.5)
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("CACHE_PREFIX", "churnsite"),
        "OPTIONS": {
            "IGNORE_EXCEPTIONS": True,
            "SOCKET_CONNECT_TIMEOUT": CACHE_SOCKET_TIMEOUT,
            "SOCKET_TIMEOUT": CACHE_SOCKET_TIMEOUT,
        },
    }
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True

# OpenAI (any OpenAI-compatible server via OPENAI_BASE_URL; no key = template writer)
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL") or None
OPENAI_MODEL = env_str("OPENAI_MODEL", "gpt-4o-mini")
OPENAI_TIMEOUT = env_float("OPENAI_TIMEOUT", 20.0)
OPENAI_MAX_RETRIES = env_int("OPENAI_MAX_RETRIES", 2)
# Requests in flight per process and server; 0 = 1 for a local base URL (llama.cpp serves one
# completion at a time and queues the rest), 8 for a hosted API.
OPENAI_CONCURRENCY = env_int("OPENAI_CONCURRENCY", 0)
# One draft's whole budget in seconds (waiting for a slot, both tries, retries), then the template.
OPENAI_DRAFT_DEADLINE = env_float("OPENAI_DRAFT_DEADLINE", 60.0)
# Consecutive failed LLM calls after which the rest of an agent run uses the template at once.
OPENAI_BREAKER_FAILURES = env_int("OPENAI_BREAKER_FAILURES", 3)
# A model's drafts are held for a manager until this many were approved without an edit.
LLM_TRUSTED_AFTER = env_int("LLM_TRUSTED_AFTER", 20)
# The one link retention emails may carry (the LLM may repeat it, never invent others).
RETENTION_BOOKING_URL = env_str("RETENTION_BOOKING_URL")

# Email
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Partner Success <retention@churnsite.example>")
# For EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend (tests count mail across workers).
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(BASE_DIR / "media" / "outbox"))

# CRM
CRM_BACKEND = env_str("CRM_BACKEND", "crm_sim.simulated.SimulatedCrmBackend")
CRM_TIMEOUT = env_float("CRM_TIMEOUT", 5.0)
# CRM_BACKEND=crm_sim.hubspot.HubSpotCrmBackend: HubSpot's CRM v3 API with a private-app (or
# OAuth) token; retries of 429/5xx stay inside CRM_TIMEOUT.
HUBSPOT_TOKEN = env_str("HUBSPOT_TOKEN")
HUBSPOT_BASE_URL = env_str("HUBSPOT_BASE_URL", "https://api.hubapi.com")
HUBSPOT_MAX_RETRIES = env_int("HUBSPOT_MAX_RETRIES", 3)
HUBSPOT_COMPANY_PARTNER_PROPERTY = env_str("HUBSPOT_COMPANY_PARTNER_PROPERTY", "churnsite_partner_id")

# Retention desk: its today on imported data (no simulated world); unset = the end of the
# imported history.
DESK_TODAY = env_date("DESK_TODAY")
# The agent's email writer: drafts written at once per run (LLM requests in flight).
AGENT_DRAFT_CONCURRENCY = env_int("AGENT_DRAFT_CONCURRENCY", 0)
# "At risk": from this 90-day churn risk the desk shows a churn window ("Churn in: ~7 days",
# the most likely window if the partner churns) and scoring computes drivers; below it a
# partner reads "Low risk". 30% by default: well below the agent's contact threshold, so the
# desk sees what is coming before the agent acts; the Model page says how often partners
# shown at risk churned on the holdout.
AT_RISK_LEVEL = env_float("AT_RISK_LEVEL", 0.30)
if not 0 < AT_RISK_LEVEL < 1:
    raise ImproperlyConfigured(f"AT_RISK_LEVEL={AT_RISK_LEVEL} must lie strictly between 0 and 1")


def env_time(name: str, default: str) -> str:
    raw = env_str(name, default).strip()
    hours, _, minutes = raw.partition(":")
    if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a time of day (HH:MM)")
    return f"{int(hours):02d}:{int(minutes):02d}"


def env_timezone(name: str, default: str) -> str:
    import zoneinfo

    raw = env_str(name, default).strip()
    try:
        zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a time zone (e.g. Europe/Berlin)") from exc
    return raw


# Morning digest: each owner's local time (a person may pick their own on the preview page).
DIGEST_TIME = env_time("DIGEST_TIME", "07:30")
DIGEST_TIMEZONE = env_timezone("DIGEST_TIMEZONE", TIME_ZONE)
# Where the site is reached: links in digest emails and chat alerts.
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
# Chat alerts: a Slack or Microsoft Teams incoming-webhook URL (blank = no alerts).
CHAT_WEBHOOK_URL = env_str("CHAT_WEBHOOK_URL")
CHAT_WEBHOOK_TIMEOUT = env_float("CHAT_WEBHOOK_TIMEOUT", 5.0)
CHAT_ALERT_MAX_ATTEMPTS = env_int("CHAT_ALERT_MAX_ATTEMPTS", 5)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# API and webhooks out
# Requests per token per window (a Redis counter; without Redis the limit is not enforced).
API_RATE_LIMIT = env_int("API_RATE_LIMIT", 600)
API_RATE_WINDOW = env_int("API_RATE_WINDOW", 60)
WEBHOOK_TIMEOUT = env_float("WEBHOOK_TIMEOUT", 5.0)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8)
# Seconds before attempt 2, 3, ...: doubling from this, at most an hour.
WEBHOOK_BACKOFF_BASE = env_float("WEBHOOK_BACKOFF_BASE", 30.0)
