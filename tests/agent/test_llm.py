"""The LLM client against a real local HTTP server, through the real openai client."""

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.llm import CircuitBreaker, LlmError, chat_complete, is_local, llm_concurrency, llm_configured
from tests.conftest import last_json
from tests.openai_server import TEST_API_KEY, Reply

HELLO = "Hello there, from the model."

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]


def test_the_llm_counts_as_configured_only_with_an_api_key(settings):
    settings.OPENAI_API_KEY = ""
    assert llm_configured() is False
    settings.OPENAI_API_KEY = "sk-anything"
    assert llm_configured() is True


def test_without_a_key_the_client_refuses_before_any_request(settings, openai_server):
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = openai_server.base_url
    with pytest.raises(LlmError) as err:
        chat_complete(messages=MESSAGES)
    assert err.value.kind == "not_configured"
    assert openai_server.requests == []


def test_a_reply_comes_back_over_http_with_the_key_model_and_messages_sent(llm_settings, openai_server):
    openai_server.reply(HELLO)
    reply = chat_complete(messages=MESSAGES, model="agent-model")

    assert reply.text == HELLO
    assert reply.attempts == 1
    [request] = openai_server.chat_requests
    assert request.headers["authorization"] == f"Bearer {TEST_API_KEY}"
    assert request.model == "agent-model"
    assert request.messages == MESSAGES


def test_the_model_defaults_to_the_setting(llm_settings, openai_server):
    llm_settings.OPENAI_MODEL = "configured-model"
    chat_complete(messages=MESSAGES)
    assert openai_server.chat_requests[0].model == "configured-model"


def test_one_server_error_is_retried(llm_settings, openai_server):
    openai_server.queue(openai_server.fail(1, status=503))

    reply = chat_complete(messages=MESSAGES)

    assert reply.attempts == 2
    assert len(openai_server.chat_requests) == 2


def test_persistent_server_errors_become_a_server_error_after_bounded_retries(llm_settings, openai_server):
    llm_settings.OPENAI_MAX_RETRIES = 2
    openai_server.queue(openai_server.fail(10))

    with pytest.raises(LlmError) as err:
        chat_complete(messages=MESSAGES)

    assert err.value.kind == "server_error"
    assert err.value.attempts == 3
    assert len(openai_server.chat_requests) == 3


def test_a_hanging_local_server_is_a_timeout_and_is_not_asked_again(llm_settings, openai_server):
    """A local one-at-a-time server is still computing the abandoned request: a retry would
    only queue behind it."""
    llm_settings.OPENAI_TIMEOUT = 0.5
    openai_server.queue(openai_server.hang(5, times=2))

    with pytest.raises(LlmError) as err:
        chat_complete(messages=MESSAGES)

    assert err.value.kind == "timeout"
    assert err.value.attempts == 1
    assert len(openai_server.chat_requests) == 1


def test_a_429_is_retried_only_when_the_server_says_when(llm_settings, openai_server):
    body = b'{"error": {"message": "slow down"}}'
    openai_server.queue(Reply(status=429, raw_body=body, headers={"retry-after-ms": "50"}))
    assert chat_complete(messages=MESSAGES).attempts == 2

    openai_server.reset()
    openai_server.queue(Reply(status=429, raw_body=body))
    with pytest.raises(LlmError) as err:
        chat_complete(messages=MESSAGES)
    assert err.value.kind == "rate_limited" and err.value.attempts == 1


def test_a_structured_output_refusal_is_reported_as_refused(llm_settings, openai_server):
    openai_server.queue(Reply(refusal="I can't help with that."))
    with pytest.raises(LlmError) as err:
        chat_complete(messages=MESSAGES)
    assert err.value.kind == "refused" and "can't help" in err.value.raw


def test_a_reply_cut_off_at_the_token_limit_keeps_its_text_for_the_audit(llm_settings, openai_server):
    openai_server.queue(Reply(content="Subject: Hi\n\nHello Acme, we", finish_reason="length"))
    with pytest.raises(LlmError) as err:
        chat_complete(messages=MESSAGES)
    assert err.value.detail == "reply cut off at the token limit"
    assert err.value.raw.startswith("Subject: Hi")


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8091/v1", True),
        ("http://localhost:11434/v1", True),
        ("http://10.0.0.5/v1", True),
        ("http://llm.internal/v1", True),
        ("https://api.openai.com/v1", False),
        ("https://my-resource.openai.azure.com/v1", False),
    ],
)
def test_concurrency_defaults_to_one_for_a_local_server_and_eight_for_a_hosted_api(settings, url, local):
    settings.OPENAI_BASE_URL, settings.OPENAI_CONCURRENCY = url, 0
    assert is_local(url) is local
    assert llm_concurrency() == (1 if local else 8)
    settings.OPENAI_CONCURRENCY = 3
    assert llm_concurrency() == 3


def test_with_concurrency_one_requests_never_overlap_and_the_deadline_counts_the_queue(
    llm_settings, openai_server
):
    import time

    llm_settings.OPENAI_TIMEOUT = 5
    openai_server.latency = 0.4
    openai_server.reply(HELLO)
    outcomes = []

    def call():
        try:
            outcomes.append(chat_complete(messages=MESSAGES, deadline=time.monotonic() + 1.0).queued_ms)
        except LlmError as exc:
            outcomes.append(exc.kind)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    starts = sorted(r.received_at for r in openai_server.chat_requests)
    assert all(b - a >= 0.35 for a, b in zip(starts, starts[1:], strict=False))  # one at a time
    # Within a 1 s deadline only two 0.4 s answers fit; the others ran out of time in the
    # queue (or with what was left), instead of waiting a full timeout each.
    assert outcomes.count("timeout") == 2 and len(outcomes) == 4


def test_the_circuit_breaker_opens_after_n_consecutive_failures_and_announces_once():
    breaker = CircuitBreaker(threshold=3)
    breaker.record(ok=False, kind="timeout")
    breaker.record(ok=False, kind="timeout")
    breaker.record(ok=True)  # a success resets the count
    for _ in range(2):
        breaker.record(ok=False, kind="server_error")
    assert breaker.allow()
    breaker.record(ok=False, kind="server_error")
    assert not breaker.allow()
    assert breaker.take_announcement() == {"consecutive_failures": 3, "last_failure": "server_error"}
    assert breaker.take_announcement() is None


@pytest.mark.parametrize(
    "raw",
    [b"<html>502 Bad Gateway</html>\x00\xff", b"not json at all", b"[1, 2]", b'{"choices": []}'],
)
def test_a_body_that_is_not_a_chat_completion_is_an_invalid_reply(llm_settings, openai_server, raw):
    openai_server.queue(openai_server.garbage(raw))

    with pytest.raises(LlmError) as err:
        chat_complete(messages=MESSAGES)

    assert err.value.kind == "invalid_reply"
    assert err.value.attempts == 1


def test_an_empty_message_is_an_invalid_reply(llm_settings, openai_server):
    openai_server.queue(Reply(content="   "))
    with pytest.raises(LlmError) as err:
        chat_complete(messages=MESSAGES)
    assert err.value.kind == "invalid_reply"


def test_a_wrong_key_is_an_auth_error_and_is_not_retried(llm_settings, openai_server):
    llm_settings.OPENAI_API_KEY = "sk-wrong"
    with pytest.raises(LlmError) as err:
        chat_complete(messages=MESSAGES)
    assert err.value.kind == "auth_error"
    assert len(openai_server.chat_requests) == 1


def test_a_bad_request_is_reported_as_such(llm_settings, openai_server):
    openai_server.queue(openai_server.fail(1, status=400))
    with pytest.raises(LlmError) as err:
        chat_complete(messages=MESSAGES)
    assert err.value.kind == "bad_request"


def test_an_unreachable_server_is_a_connection_error(llm_settings):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm_settings.OPENAI_BASE_URL = f"http://127.0.0.1:{port}/v1"
    llm_settings.OPENAI_MAX_RETRIES = 0

    with pytest.raises(LlmError) as err:
        chat_complete(messages=MESSAGES)

    assert err.value.kind == "connection_error"


def test_the_server_answers_concurrent_requests_in_parallel(llm_settings, openai_server):
    llm_settings.OPENAI_TIMEOUT = 10
    llm_settings.OPENAI_CONCURRENCY = 4
    # Every handler waits for the other three: a server handling one request at a time would
    # break the barrier instead of answering.
    barrier = threading.Barrier(4, timeout=15)  # generous: a loaded CI box is slow

    def together(_request):
        barrier.wait()
        return HELLO

    openai_server.reply(together)
    results, errors = [], []

    def call():
        try:
            results.append(chat_complete(messages=MESSAGES))
        except LlmError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)

    assert errors == []
    assert len(results) == 4
    assert all(r.attempts == 1 for r in results)


@pytest.mark.slow
def test_another_process_reaches_the_server_through_the_environment(openai_server):
    """What a Celery worker does: it only knows the server through OPENAI_* variables."""
    openai_server.latency = 0.2
    openai_server.reply(HELLO)
    script = (
        "import django, json; django.setup();"
        "from agent.llm import chat_complete;"
        "r = chat_complete(messages=[{'role': 'user', 'content': 'from a worker'}]);"
        "print(json.dumps({'text': r.text, 'attempts': r.attempts}))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "churnsite.settings", **openai_server.env()}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        # A guard against a hang, not a speed test: django.setup() alone took 55 s (7 s of CPU)
        # at load 10 on this 2-core machine.
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    out = last_json(done.stdout)
    assert out["text"] == HELLO
    assert openai_server.chat_requests[-1].user_prompt == "from a worker"
