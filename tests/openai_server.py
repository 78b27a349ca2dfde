"""A small, real OpenAI-compatible HTTP server for tests (stdlib only).

It speaks just enough of `POST /v1/chat/completions` for the real `openai` client, listens on
127.0.0.1 with an OS-chosen port, and serves every request in its own thread, so several
Celery worker processes can call it at once over HTTP. Each test scripts its behaviour:

    server.reply({"subject": "...", "body": "..."})   # default reply for every request
    server.queue(server.fail(2), Reply(content="not json"))  # the next requests, in order
    server.latency = 1.0                                # added to every request
    server.requests[-1].user_prompt                     # what the client sent

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

GOOD_REPLY = {
    "subject": "Let's get your account back on track",
    "body": (
        "Hi team,\n\n"
        "I noticed a few things on your account that I would like to help with, starting with the "
        "overdue payment and the recent drop in transactions.\n\n"
        "Could we set up a short call this week? I am happy to work around your schedule.\n\n"
        "Best regards,\nPartner Success team"
    ),
}


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


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    raw: bytes
    received_at: float

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
        self._default = Reply(content=GOOD_REPLY)
        self.latency = 0.0
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
            self._default = Reply(content=GOOD_REPLY)
            self.latency = 0.0

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

    def _completion(self, recorded: RecordedRequest, content: str) -> bytes:
        return json.dumps(
            {
                "id": f"chatcmpl-test-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": recorded.model or "test-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
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
                self._send(step.status, server._completion(recorded, content or ""), step.headers)

        return Handler


if __name__ == "__main__":  # a manual playground: python -m tests.openai_server
    with OpenAIServer() as srv:
        print(srv.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
