"""The LLM client against a real local HTTP server, through the real openai client."""

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.llm import LlmError, chat_complete, llm_configured
from tests.openai_server import GOOD_REPLY, TEST_API_KEY, Reply

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
    reply = chat_complete(messages=MESSAGES, model="agent-model")

    assert json.loads(reply.text) == GOOD_REPLY
    assert reply.attempts == 1
    [request] = openai_server.chat_requests
    assert request.headers["authorization"] == f"Bearer {TEST_API_KEY}"
    assert request.model == "agent-model"
    assert request.messages == MESSAGES


def test_the_model_defaults_to_the_setting(llm_settings, openai_server):
    llm_settings.OPENAI_MODEL = "configured-model"
    chat_complete(messages=MESSAGES)
    assert openai_server.chat_requests[0].model == "configured-model"


def test_one_server_error_is_retried_by_the_client(llm_settings, openai_server):
    openai_server.queue(openai_server.fail(1, status=503))

    reply = chat_complete(messages=MESSAGES)

    assert reply.attempts == 2
    assert [r.retry_count for r in openai_server.chat_requests] == [0, 1]


def test_persistent_server_errors_become_a_server_error_after_bounded_retries(llm_settings, openai_server):
    llm_settings.OPENAI_MAX_RETRIES = 2
    openai_server.queue(openai_server.fail(10))

    with pytest.raises(LlmError) as err:
        chat_complete(messages=MESSAGES)

    assert err.value.kind == "server_error"
    assert err.value.attempts == 3
    assert len(openai_server.chat_requests) == 3


def test_a_hanging_server_becomes_a_timeout(llm_settings, openai_server):
    llm_settings.OPENAI_TIMEOUT = 0.5
    openai_server.queue(openai_server.hang(5, times=2))

    with pytest.raises(LlmError) as err:
        chat_complete(messages=MESSAGES)

    assert err.value.kind == "timeout"
    assert err.value.attempts == 2  # the first try and one retry, then it gives up
    assert len(openai_server.chat_requests) == 2


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
    # Every handler waits for the other three: a server handling one request at a time would
    # break the barrier instead of answering.
    barrier = threading.Barrier(4, timeout=15)  # generous: a loaded CI box is slow

    def together(_request):
        barrier.wait()
        return GOOD_REPLY

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
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert json.loads(out["text"]) == GOOD_REPLY
    assert openai_server.chat_requests[-1].user_prompt == "from a worker"
