"""The one client module for the LLM (any OpenAI-compatible server).

It owns how hard we lean on the server and what a failure means, and nothing here knows about
emails:
- Concurrency: at most OPENAI_CONCURRENCY requests in flight per base URL in this process
  (default 1 for a local server, which serves one completion at a time, 8 for a hosted API).
- A deadline per call that includes the wait for a slot, so a queue behind a slow local server
  costs the caller its deadline, not a minute per attempt.
- Retries only for what a retry can fix: 5xx, connection errors, 429 when the server says when
  (Retry-After), and timeouts against a hosted API. A timed-out request to a local one-at-a-time
  server is not retried: the server is still computing it, and a retry would queue behind it.
- The reply format the server supports (JSON schema or plain text), learnt once per base URL and
  model and remembered (this process, and the cache for the other workers).
- A circuit breaker a caller (one agent run) owns: after N consecutive transport failures the
  rest of the run stops calling; it also keeps the run's budget of retries after unusable
  replies (they stop once they no longer rescue drafts).
Every failure is translated into one error type, `LlmError`, whose `kind` the caller records.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from django.conf import settings

if TYPE_CHECKING:
    # The openai package is imported where a call is made, not here: the admin pulls this
    # module into every manage.py command and web process, and openai's types alone took
    # 2-3 s of each start-up (import_data's included) that never calls a model.
    import openai

log = logging.getLogger(__name__)

FORMAT_JSON_SCHEMA = "json_schema"  # response_format json_schema: OpenAI, vLLM, llama.cpp's server
FORMAT_JSON_OBJECT = "json_object"  # response_format json_object + schema: llama-cpp-python's server
FORMAT_PLAIN = "plain"
# What to ask for next when a server refuses a response_format.
FORMAT_FALLBACK = {FORMAT_JSON_SCHEMA: FORMAT_JSON_OBJECT, FORMAT_JSON_OBJECT: FORMAT_PLAIN}
# Kinds that mean the server could not answer (the breaker counts these); the others mean it
# answered with something we cannot use, which a second try may fix.
TRANSPORT_KINDS = frozenset(
    {"timeout", "connection_error", "server_error", "rate_limited", "auth_error", "client_error"}
)


class LlmError(Exception):
    """Any failure to get a usable reply from the LLM.

    kind: "not_configured" | "timeout" | "connection_error" | "server_error" | "rate_limited" |
          "auth_error" | "bad_request" | "refused" | "invalid_reply" | "client_error"
    attempts: HTTP requests sent (our retries included).
    """

    def __init__(self, kind: str, detail: str = "", *, attempts: int = 0, raw: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        self.attempts = attempts
        self.raw = raw  # the reply's text when there was one (cut off, refused...)

    @property
    def transport(self) -> bool:
        return self.kind in TRANSPORT_KINDS

    @property
    def refuses_response_format(self) -> bool:
        """The server does not take the response_format we sent (a 400/422, or the 500 some
        servers answer with for a request body they cannot validate)."""
        if self.kind == "bad_request":
            return True
        return self.kind == "server_error" and "response_format" in self.raw


@dataclass(frozen=True)
class LlmReply:
    text: str
    model: str
    attempts: int  # HTTP requests sent, our retries included
    duration_ms: int  # including the wait for a slot
    queued_ms: int = 0


def llm_configured() -> bool:
    """True when an API key is set; without one the product uses the template writer."""
    return bool(settings.OPENAI_API_KEY)


def base_url() -> str:
    return settings.OPENAI_BASE_URL or "https://api.openai.com/v1"


def model_name(model: str | None = None) -> str:
    return model or settings.OPENAI_MODEL


def writer_key(model: str | None = None) -> str:
    """Which model on which server: the unit that earns trust and has a reply format."""
    return f"{base_url()} {model_name(model)}"


def is_local(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host in {"localhost", ""} or host.endswith((".local", ".localhost", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def llm_concurrency() -> int:
    """Requests in flight at once per process: OPENAI_CONCURRENCY, else 1 local / 8 hosted."""
    configured = getattr(settings, "OPENAI_CONCURRENCY", None)
    if configured:
        return max(1, int(configured))
    return 1 if is_local(base_url()) else 8


_slots_lock = threading.Lock()
_slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}


def _slot(url: str) -> threading.BoundedSemaphore:
    size = llm_concurrency()
    with _slots_lock:
        return _slots.setdefault((url, size), threading.BoundedSemaphore(size))


@functools.lru_cache(maxsize=8)
def _client(pid: int, api_key: str, base: str | None) -> openai.OpenAI:
    import openai  # slow import: see the top

    # Keyed on the pid so a Celery prefork child never reuses the parent's connection pool.
    # The client's own retries are off: this module decides what is worth retrying.
    return openai.OpenAI(api_key=api_key, base_url=base, max_retries=0)


def get_client() -> openai.OpenAI:
    if not llm_configured():
        raise LlmError("not_configured", "OPENAI_API_KEY is not set")
    return _client(os.getpid(), settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL or None)


# Reply format, learnt once per server and model ------------------------------------------

_formats: dict[str, str] = {}


def _format_cache_key(key: str) -> str:
    return "llm-format:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def reply_format(key: str) -> str:
    """What the server behind `key` answers in: json_schema (until it proves otherwise) or plain."""
    if key in _formats:
        return _formats[key]
    try:
        from django.core.cache import cache

        known = cache.get(_format_cache_key(key))
    except Exception:  # noqa: BLE001 - no cache (Redis down): this process re-learns it once
        known = None
    if known in (FORMAT_JSON_SCHEMA, FORMAT_JSON_OBJECT, FORMAT_PLAIN):
        _formats[key] = known
        return known
    return FORMAT_JSON_SCHEMA


def remember_format(key: str, fmt: str) -> None:
    if _formats.get(key) == fmt:
        return
    _formats[key] = fmt
    log.info("LLM reply format for %s: %s", key, fmt)
    try:
        from django.core.cache import cache

        cache.set(_format_cache_key(key), fmt, timeout=7 * 24 * 3600)
    except Exception:  # noqa: BLE001 - remembered in this process at least
        pass


def forget_formats(*keys: str) -> None:
    """Tests: start from nothing learnt (for `keys` and everything this process learnt)."""
    known = set(keys) | set(_formats)
    _formats.clear()
    try:
        from django.core.cache import cache

        cache.delete_many([_format_cache_key(k) for k in known])
    except Exception:  # noqa: BLE001 - no cache, nothing to forget there
        pass


# Circuit breaker ------------------------------------------------------------------------


class CircuitBreaker:
    """Owned by one caller (an agent run): after `threshold` consecutive transport failures it
    opens, and `allow()` says no for the rest of the run. Thread-safe (drafts run on a pool).

    It also keeps the run's retry budget for unusable replies (a second request per draft, which
    doubles that draft's cost): the first RETRY_FREE retries of a run are tried; after them a
    retry only while at least one in RETRY_RESCUE_EVERY has rescued its draft, and never more
    than one retry per RETRY_SHARE_EVERY drafts (plus the free ones). A model that fails the
    gate the same way twice in a row usually fails it on the retry too: its run stops paying.
    """

    RETRY_FREE = 2
    RETRY_RESCUE_EVERY = 3
    RETRY_SHARE_EVERY = 4

    def __init__(self, threshold: int | None = None):
        self.threshold = threshold or int(settings.OPENAI_BREAKER_FAILURES)
        self._lock = threading.Lock()
        self.consecutive = 0
        self.is_open = False
        self.last_failure = ""
        self._announced = False
        self.drafts = 0
        self.retries = 0
        self.rescued = 0

    def note_draft(self) -> None:
        with self._lock:
            self.drafts += 1

    def allow_retry(self) -> bool:
        """Take a retry from the budget (True) or say it is spent (False)."""
        with self._lock:
            if self.retries >= self.RETRY_FREE:
                if self.rescued * self.RETRY_RESCUE_EVERY < self.retries:
                    return False
                if self.retries >= self.RETRY_FREE + self.drafts // self.RETRY_SHARE_EVERY:
                    return False
            self.retries += 1
            return True

    def retry_refusal(self) -> str:
        with self._lock:
            return (
                f"the run's retry budget is spent ({self.rescued} of {self.retries} retries rescued "
                f"their draft, {self.drafts} drafts so far)"
            )

    def record_retry(self, *, rescued: bool) -> None:
        with self._lock:
            self.rescued += int(rescued)

    def allow(self) -> bool:
        with self._lock:
            return not self.is_open

    def record(self, *, ok: bool, kind: str = "") -> None:
        with self._lock:
            if ok:
                self.consecutive = 0
                return
            self.consecutive += 1
            self.last_failure = kind
            if self.consecutive >= self.threshold:
                self.is_open = True

    def take_announcement(self) -> dict | None:
        """Once, after it opened: what to audit (so exactly one llm_circuit_open per run)."""
        with self._lock:
            if not self.is_open or self._announced:
                return None
            self._announced = True
            return {"consecutive_failures": self.consecutive, "last_failure": self.last_failure}


# One completion ---------------------------------------------------------------------------


def _retry_after(exc: Exception) -> float | None:
    """What a 429's Retry-After header asks for, in seconds (None: it says nothing usable)."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                return None
    return None


def _translate(exc: Exception, *, timeout: float) -> LlmError:
    import openai  # loaded already: the client raised exc

    if isinstance(exc, openai.APITimeoutError):
        return LlmError("timeout", f"no reply within {timeout:.1f}s")
    if isinstance(exc, openai.APIConnectionError):
        return LlmError("connection_error", str(exc)[:200])
    if isinstance(exc, openai.RateLimitError):
        return LlmError("rate_limited", "HTTP 429")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return LlmError("auth_error", f"HTTP {exc.status_code}")
    if isinstance(exc, openai.APIStatusError):
        kind = "server_error" if exc.status_code >= 500 else "bad_request"
        return LlmError(kind, f"HTTP {exc.status_code}", raw=str(getattr(exc, "message", ""))[:2000])
    if isinstance(exc, openai.APIResponseValidationError | ValueError | TypeError | AttributeError):
        # A 200 whose body is not a chat completion (HTML, binary, truncated JSON...).
        return LlmError("invalid_reply", f"unreadable response ({type(exc).__name__})")
    return LlmError("client_error", f"{type(exc).__name__}: {str(exc)[:200]}")


def _wait_for_retry(exc: Exception, error: LlmError, *, retry: int, local: bool) -> float | None:
    """Seconds to wait before retrying, or None when a retry would not help."""
    if error.kind == "server_error" or error.kind == "connection_error":
        return min(0.25 * 2**retry, 2.0)
    if error.kind == "rate_limited":
        return _retry_after(exc)  # only when the server says when
    if error.kind == "timeout" and not local:
        return 0.0
    return None


def chat_complete(
    *,
    messages: list[dict[str, str]],
    model: str | None = None,
    temperature: float = 0.4,
    max_tokens: int = 600,
    response_format: dict | None = None,
    deadline: float | None = None,
    max_retries: int | None = None,
) -> LlmReply:
    """One chat completion; returns the assistant's text or raises LlmError.

    `deadline` (a time.monotonic() value) bounds the whole call, the wait for a slot included;
    each request's timeout is OPENAI_TIMEOUT or what is left, whichever is less.
    """
    client = get_client()
    model = model_name(model)
    retries = int(settings.OPENAI_MAX_RETRIES if max_retries is None else max_retries)
    deadline = (
        deadline
        if deadline is not None
        else time.monotonic() + float(settings.OPENAI_TIMEOUT) * (retries + 1)
    )
    url = base_url()
    local = is_local(url)
    started = time.monotonic()
    slot = _slot(url)
    if not slot.acquire(timeout=max(0.0, deadline - started)):
        raise LlmError("timeout", "no free slot before the deadline (queued behind other drafts)")
    queued_ms = int((time.monotonic() - started) * 1000)
    attempts = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                raise LlmError("timeout", "deadline reached", attempts=attempts)
            timeout = min(float(settings.OPENAI_TIMEOUT), remaining)
            attempts += 1
            extra: dict[str, Any] = {"response_format": response_format} if response_format else {}
            try:
                completion = client.with_options(timeout=timeout).chat.completions.create(
                    model=model,
                    # The callers' {"role", "content"} dicts are the message params' shape.
                    messages=cast("list[openai.types.chat.ChatCompletionMessageParam]", messages),
                    temperature=temperature,
                    max_tokens=max_tokens,
                    **extra,
                )
                break
            except Exception as exc:  # noqa: BLE001 - the client raises bare decode errors on garbage bodies
                import openai  # loaded already: the client raised exc

                if not isinstance(exc, openai.OpenAIError | ValueError | TypeError | AttributeError):
                    log.exception("Unexpected error from the openai client")
                error = _translate(exc, timeout=timeout)
                error.attempts = attempts
                wait = (
                    None
                    if error.refuses_response_format
                    else _wait_for_retry(exc, error, retry=attempts - 1, local=local)
                )
                if wait is None or attempts > retries or time.monotonic() + wait >= deadline - 0.05:
                    raise error from exc
                time.sleep(wait)
    finally:
        slot.release()

    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise LlmError("invalid_reply", "response has no choices", attempts=attempts)
    choice = choices[0]
    message = getattr(choice, "message", None)
    text = getattr(message, "content", None)
    refusal = getattr(message, "refusal", None)
    if refusal:
        raise LlmError("refused", str(refusal)[:200], attempts=attempts, raw=str(refusal))
    if getattr(choice, "finish_reason", None) == "length":
        raise LlmError(
            "invalid_reply", "reply cut off at the token limit", attempts=attempts, raw=str(text or "")
        )
    if not isinstance(text, str) or not text.strip():
        raise LlmError("invalid_reply", "empty reply", attempts=attempts)
    return LlmReply(
        text=text,
        model=str(getattr(completion, "model", None) or model),
        attempts=attempts,
        duration_ms=int((time.monotonic() - started) * 1000),
        queued_ms=queued_ms,
    )
