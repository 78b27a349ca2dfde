"""The one client module for the LLM (any OpenAI-compatible server).

It owns the timeout, the bounded retries (the openai client's own: 408/409/429/5xx, timeouts and
connection errors are retried with backoff) and the translation of every failure into one
error type, `LlmError`, whose `kind` the caller records. Nothing here knows about emails.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass

import openai
from django.conf import settings

log = logging.getLogger(__name__)


class LlmError(Exception):
    """Any failure to get a usable reply from the LLM.

    kind: "not_configured" | "timeout" | "connection_error" | "server_error" | "rate_limited" |
          "auth_error" | "bad_request" | "invalid_reply" | "client_error"
    attempts: HTTP requests sent (the client's retries included).
    """

    def __init__(self, kind: str, detail: str = "", *, attempts: int = 0):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        self.attempts = attempts


@dataclass(frozen=True)
class LlmReply:
    text: str
    model: str
    attempts: int  # HTTP requests sent, the client's retries included
    duration_ms: int


def llm_configured() -> bool:
    """True when an API key is set; without one the product uses the template writer."""
    return bool(settings.OPENAI_API_KEY)


@functools.lru_cache(maxsize=8)
def _client(pid: int, api_key: str, base_url: str | None, timeout: float, max_retries: int) -> openai.OpenAI:
    # Keyed on the pid so a Celery prefork child never reuses the parent's connection pool.
    return openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)


def get_client() -> openai.OpenAI:
    if not llm_configured():
        raise LlmError("not_configured", "OPENAI_API_KEY is not set")
    return _client(
        os.getpid(),
        settings.OPENAI_API_KEY,
        settings.OPENAI_BASE_URL or None,
        float(settings.OPENAI_TIMEOUT),
        int(settings.OPENAI_MAX_RETRIES),
    )


def _attempts_from(exc: BaseException) -> int:
    """How many HTTP requests the client sent before giving up.

    The openai client stamps each request with `x-stainless-retry-count`; the error carries
    the last request, so its counter + 1 is the number of requests sent.
    """
    request = getattr(exc, "request", None)
    if request is None:
        response = getattr(exc, "response", None)
        request = getattr(response, "request", None)
    try:
        return int(request.headers.get("x-stainless-retry-count", "0")) + 1
    except (AttributeError, TypeError, ValueError):
        return 1


def _translate(exc: Exception) -> LlmError:
    attempts = _attempts_from(exc)
    if isinstance(exc, openai.APITimeoutError):
        return LlmError("timeout", f"no reply within {settings.OPENAI_TIMEOUT}s", attempts=attempts)
    if isinstance(exc, openai.APIConnectionError):
        return LlmError("connection_error", str(exc)[:200], attempts=attempts)
    if isinstance(exc, openai.RateLimitError):
        return LlmError("rate_limited", "HTTP 429", attempts=attempts)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return LlmError("auth_error", f"HTTP {exc.status_code}", attempts=attempts)
    if isinstance(exc, openai.APIStatusError):
        kind = "server_error" if exc.status_code >= 500 else "bad_request"
        return LlmError(kind, f"HTTP {exc.status_code}", attempts=attempts)
    if isinstance(exc, openai.APIResponseValidationError | ValueError | TypeError | AttributeError):
        # A 200 whose body is not a chat completion (HTML, binary, truncated JSON...).
        return LlmError("invalid_reply", f"unreadable response ({type(exc).__name__})", attempts=attempts)
    return LlmError("client_error", f"{type(exc).__name__}: {str(exc)[:200]}", attempts=attempts)


def chat_complete(
    *,
    messages: list[dict[str, str]],
    model: str | None = None,
    temperature: float = 0.4,
    max_tokens: int = 800,
    max_retries: int | None = None,
) -> LlmReply:
    """One chat completion; returns the assistant's text or raises LlmError.

    Worst case it takes (retries + 1) x OPENAI_TIMEOUT plus the client's backoff (0.5 s, 1 s, ...).
    `max_retries` overrides OPENAI_MAX_RETRIES for this call.
    """
    client = get_client()
    if max_retries is not None:
        client = client.with_options(max_retries=max_retries)
    model_name = model or settings.OPENAI_MODEL
    started = time.monotonic()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model_name, messages=messages, temperature=temperature, max_tokens=max_tokens
        )
        completion = raw.parse()
        attempts = raw.retries_taken + 1
    except openai.OpenAIError as exc:
        raise _translate(exc) from exc
    except Exception as exc:  # noqa: BLE001 - the client raises bare decode errors on garbage bodies
        if not isinstance(exc, ValueError | TypeError | AttributeError):
            log.exception("Unexpected error from the openai client")
        raise _translate(exc) from exc

    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise LlmError("invalid_reply", "response has no choices", attempts=attempts)
    choice = choices[0]
    message = getattr(choice, "message", None)
    text = getattr(message, "content", None)
    if getattr(choice, "finish_reason", None) == "length":
        raise LlmError("invalid_reply", "reply cut off at the token limit", attempts=attempts)
    if not isinstance(text, str) or not text.strip():
        raise LlmError("invalid_reply", "empty reply", attempts=attempts)
    return LlmReply(
        text=text,
        model=str(getattr(completion, "model", None) or model_name),
        attempts=attempts,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
