"""A small, real OpenAI-compatible HTTP server for tests (stdlib only).

It speaks just enough of `POST /v1/chat/completions` for the real `openai` client, listens on
127.0.0.1 with an OS-chosen port, and serves every request in its own thread, so several
Celery worker processes can call it at once over HTTP. Each test scripts its behaviour:

    server.reply({"subject": "...", "body": "..."})   # default reply for every request
    server.queue(server.fail(2), Reply(content="not json"))  # the next requests, in order
    server.latency = 1.0                                # added to every request
    server.requests[-1].user_prompt                     # what the client sent

By default it answers like a good writer (`writer()`): an email composed from the request's
data block (the greeting line, the facts, the offer, the sender), as JSON when the request asks
for a JSON schema and as "Subject: ..." plain text otherwise. Servers as they are in the wild:

    server.schema = "reject"     # 400 for any request with response_format (old servers)
    server.schema = "json_object"  # 500 for json_schema, honours json_object (llama-cpp-python)
    server.schema = "ignore"     # accepts response_format, answers plain text anyway
    server.reply(writer(style="chatty"))  # chatter, a code fence, the email, more chatter
    server.reply(writer(echo_examples=True))  # copies the first approved example it was given
    server.queue(Reply(refusal="I can't help with that."))  # a structured-output refusal
    server.serial = True         # one completion at a time, the rest queue (llama.cpp)
    server.down = True           # every completion fails with 503 (after `down_hang` seconds)

Worker processes reach it through `server.env()` (OPENAI_BASE_URL, OPENAI_API_KEY, ...).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEST_API_KEY = "sk-test-churnsite"

DATA_BEGIN = "<<<PARTNER_DATA"
DATA_END = "PARTNER_DATA>>>"
GOOD_SUBJECT = "Can we help on your account?"


def compose_email(data: dict, *, echo_examples: bool = False) -> dict:
    """A sensible email from the writer's data block, as a careful model would write it."""
    examples = data.get("approved_examples") or []
    if echo_examples and examples:
        return {"subject": examples[0]["subject"], "body": examples[0]["body"]}
    facts = " ".join(data.get("why_we_write") or [])
    offer = (data.get("what_to_offer") or ["A check-in call."])[0]
    body = (
        f"{data.get('greeting_line') or 'Hello,'}\n\n"
        f"{facts} I would like to help you with this, and here is what I can offer: "
        f"{offer[0].lower() + offer[1:]}\n\n"
        "Would a short call this week or next work for you? Just reply to this email and I will "
        "find a time that suits you.\n\n"
        f"Best regards,\n{data.get('sender_name') or 'Partner Success team'}"
    )
    return {"subject": GOOD_SUBJECT, "body": body}


def writer(*, style: str = "auto", echo_examples: bool = False) -> Callable[[RecordedRequest], str | dict]:
    """A reply that writes from the request's data. style: "auto" (JSON when a schema was asked
    for, else plain), "json", "plain", "chatty" (plain text in a code fence between chatter)."""

    def write(request: RecordedRequest) -> str | dict:
        email = compose_email(request.data_block, echo_examples=echo_examples)
        kind = style
        if kind == "auto":
            kind = "json" if request.wants_json_schema else "plain"
        if kind == "json":
            return email
        plain = f"Subject: {email['subject']}\n\n{email['body']}"
        if kind == "chatty":
            return (
                "Sure! Here is a warm, personal retention email for this partner:\n\n"
                f"```\n{plain}\n```\n\n"
                "Let me know if you would like a shorter version or a different tone!"
            )
        return plain

    return write


@dataclass
class Reply:
    """One scripted response.

    `content` is the assistant message (a dict is sent as JSON text, a callable gets the
    RecordedRequest and returns either); `raw_body` replaces the whole HTTP body (garbage);
    `hang` sleeps that long before answering (to outlast a client timeout).
    """

    content: str | dict | Callable[[RecordedRequest], str | dict] | None = None
    status: int = 200
    raw_body: bytes | None = None
    hang: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    refusal: str | None = None  # a structured-output refusal (content null)
    finish_reason: str = "stop"


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    raw: bytes
    received_at: float
    schema_ignored: bool = False  # the server pretends it was never asked for a schema

    @property
    def messages(self) -> list[dict]:
        return list((self.body or {}).get("messages") or [])

    def _text(self, role: str) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.messages if m.get("role") == role)

    @property
    def system_prompt(self) -> str:
        return self._text("system")

    @property
    def user_prompt(self) -> str:
        return self._text("user")

    @property
    def model(self) -> str:
        return str((self.body or {}).get("model", ""))

    @property
    def wants_json_schema(self) -> bool:
        """A JSON reply was asked for (json_schema, or json_object with a schema)."""
        asked = ((self.body or {}).get("response_format") or {}).get("type") in ("json_schema", "json_object")
        return asked and not self.schema_ignored

    @property
    def data_block(self) -> dict:
        """The writer's partner data (the JSON between the markers) of the first user message."""
        prompt = self.user_prompt
        if DATA_BEGIN not in prompt or DATA_END not in prompt:
            return {}
        inside = prompt.split(DATA_BEGIN, 1)[1].split(DATA_END, 1)[0]
        try:
            return json.loads(inside)
        except ValueError:
            return {}

    @property
    def retry_count(self) -> int:
        """The openai client's own retry counter for this request (0 = first try)."""
        return int(self.headers.get("x-stainless-retry-count", "0") or 0)


class OpenAIServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._lock = threading.Lock()
        self._released = threading.Event()  # set on stop(): hanging handlers give up
        self._ids = itertools.count(1)
        self.requests: list[RecordedRequest] = []
        self._script: deque[Reply] = deque()
        self._default = Reply(content=writer())
        self.latency = 0.0
        self.schema = "accept"  # "accept" | "reject" | "ignore" | "json_object"
        self.serial = False
        self.down = False
        self.down_hang = 0.0
        self._serial_lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # Lifecycle -----------------------------------------------------------------

    def start(self) -> OpenAIServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="openai-test-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL should be (the client appends /chat/completions)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def env(self, *, timeout: float = 2.0, max_retries: int = 1, model: str = "test-model") -> dict[str, str]:
        """Environment for worker processes (Celery) that must reach this server."""
        return {
            "OPENAI_BASE_URL": self.base_url,
            "OPENAI_API_KEY": TEST_API_KEY,
            "OPENAI_MODEL": model,
            "OPENAI_TIMEOUT": str(timeout),
            "OPENAI_MAX_RETRIES": str(max_retries),
        }

    # Behaviour -----------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._script.clear()
            self._default = Reply(content=writer())
            self.latency = 0.0
            self.schema = "accept"
            self.serial = False
            self.down = False
            self.down_hang = 0.0

    def reply(self, content: str | dict | Callable[[RecordedRequest], str | dict]) -> None:
        """Set the default reply (used once the queue is empty)."""
        with self._lock:
            self._default = Reply(content=content)

    def set_default(self, step: Reply) -> None:
        with self._lock:
            self._default = step

    def queue(self, *steps: Reply | list[Reply]) -> None:
        """Script the next requests, in order; afterwards the default reply is used."""
        with self._lock:
            for step in steps:
                self._script.extend(step if isinstance(step, list) else [step])

    @staticmethod
    def fail(times: int = 1, status: int = 500) -> list[Reply]:
        # retry-after-ms keeps the client's exponential backoff out of the test's wall time.
        body = json.dumps({"error": {"message": "simulated failure", "type": "server_error"}}).encode()
        return [Reply(status=status, raw_body=body, headers={"retry-after-ms": "10"}) for _ in range(times)]

    @staticmethod
    def hang(seconds: float = 5.0, times: int = 1) -> list[Reply]:
        return [Reply(hang=seconds) for _ in range(times)]

    @staticmethod
    def garbage(raw: bytes = b"<html>502 Bad Gateway</html>\x00\xff", times: int = 1) -> list[Reply]:
        return [Reply(raw_body=raw) for _ in range(times)]

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # Internals -----------------------------------------------------------------

    def _next_step(self, recorded: RecordedRequest) -> tuple[Reply, float]:
        with self._lock:
            self.requests.append(recorded)
            step = self._script.popleft() if self._script else self._default
            return step, self.latency

    def _completion(self, recorded: RecordedRequest, content: str | None, step: Reply) -> bytes:
        return json.dumps(
            {
                "id": f"chatcmpl-test-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": recorded.model or "test-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": step.refusal},
                        "logprobs": None,
                        "finish_reason": step.finish_reason,
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 80, "total_tokens": 180},
            }
        ).encode()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, simple and robust under concurrency.
            protocol_version = "HTTP/1.0"

            def log_message(self, format, *args):  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing to answer

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    body = json.dumps({"object": "list", "data": [{"id": "test-model", "object": "model"}]})
                    self._send(200, body.encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                recorded = RecordedRequest(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    raw=raw,
                    received_at=time.monotonic(),
                )
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                if recorded.headers.get("authorization") != f"Bearer {TEST_API_KEY}":
                    with server._lock:
                        server.requests.append(recorded)
                    self._send(401, b'{"error": {"message": "bad api key", "type": "invalid_request_error"}}')
                    return
                if server.down:
                    with server._lock:
                        server.requests.append(recorded)
                    if server.down_hang and server._released.wait(server.down_hang):
                        return
                    self._send(503, b'{"error": {"message": "down", "type": "server_error"}}')
                    return
                asked = ((recorded.body or {}).get("response_format") or {}).get("type")
                if asked and server.schema == "reject":
                    with server._lock:
                        server.requests.append(recorded)
                    self._send(400, b'{"error": {"message": "response_format is not supported"}}')
                    return
                if asked == "json_schema" and server.schema == "json_object":
                    # llama-cpp-python's server: a 500 for a body it cannot validate.
                    with server._lock:
                        server.requests.append(recorded)
                    msg = b"Input should be 'text' or 'json_object' ('body', 'response_format', 'type')"
                    self._send(500, b'{"error": {"message": "' + msg + b'"}}')
                    return
                # "ignore": answers as if no schema had been asked for.
                recorded.schema_ignored = server.schema == "ignore"
                if server.serial:
                    # One completion at a time, like llama.cpp's server: the rest wait here.
                    with server._serial_lock:
                        self._answer(recorded)
                else:
                    self._answer(recorded)

            def _answer(self, recorded: RecordedRequest) -> None:
                step, latency = server._next_step(recorded)
                delay = latency + step.hang
                if delay and server._released.wait(delay):
                    return  # server stopping
                if step.raw_body is not None:
                    self._send(step.status, step.raw_body, step.headers)
                    return
                content = step.content(recorded) if callable(step.content) else step.content
                if isinstance(content, dict):
                    content = json.dumps(content)
                if step.refusal:
                    content = None
                self._send(step.status, server._completion(recorded, content, step), step.headers)

        return Handler


if __name__ == "__main__":  # a manual playground: python -m tests.openai_server
    with OpenAIServer() as srv:
        print(srv.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
