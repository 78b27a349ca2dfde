"""A small fake of HubSpot's CRM v3 API for tests (stdlib only), on 127.0.0.1.

It speaks the requests crm_sim.hubspot makes, with the request and response shapes of
HubSpot's public docs ("Activities | Tasks", "CRM search", "Owners"):

    POST  /crm/v3/objects/tasks              -> 201 {"id", "properties", "createdAt", "updatedAt", "archived"}
    GET   /crm/v3/objects/tasks/{id}         -> 200 the same, or 404 OBJECT_NOT_FOUND
    PATCH /crm/v3/objects/tasks/{id}         -> 200 the same
    POST  /crm/v3/objects/{type}/search      -> 200 {"total", "results", "paging": {"next": {"after"}}}
    GET   /crm/v3/owners?email=              -> 200 {"results": [{"id", "email", ...}]}

Errors are HubSpot's error body ({"status": "error", "message", "correlationId", "category"}).
A wrong bearer token gets 401 INVALID_AUTHENTICATION; a second task with the same
churnsite_key (a "unique value" property) gets 409. A test scripts failures for the next
requests, in order:

    server.fail(429, retry_after=1)  # RATE_LIMITS with Retry-After
    server.fail(503)                  # a 5xx
    server.latency = 2.0              # added to every request
    server.requests[-1]               # (method, path, json body, headers) as received
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
import urllib.parse
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "pat-na1-test-churnsite"
CATEGORIES = {401: "INVALID_AUTHENTICATION", 404: "OBJECT_NOT_FOUND", 409: "CONFLICT", 429: "RATE_LIMITS"}


class FakeHubSpot:
    def __init__(self) -> None:
        self.tasks: dict[str, dict] = {}
        self.associations: dict[str, list] = {}
        self.companies: list[dict] = []
        self.owners: list[dict] = []
        self.requests: list[tuple[str, str, Any, dict]] = []
        self.failures: deque[tuple[int, dict]] = deque()
        self.latency = 0.0
        self.page_size = 200  # search results per page (HubSpot's maximum); lower to test paging
        self.search_misses = 0  # the next N task searches find nothing (search is eventually consistent)
        self._ids = itertools.count(90001)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeHubSpot:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, status: int, *, retry_after: float | None = None, message: str = "") -> None:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        self.failures.append((status, {"headers": headers, "message": message or f"fake failure {status}"}))

    def add_company(self, partner_external_id: str) -> str:
        company_id = str(next(self._ids))
        self.companies.append({"id": company_id, "properties": {"churnsite_partner_id": partner_external_id}})
        return company_id

    def add_owner(self, email: str) -> str:
        owner_id = str(next(self._ids))
        self.owners.append(
            {"id": owner_id, "email": email, "firstName": "", "lastName": "", "archived": False}
        )
        return owner_id

    def calls(self, method: str, prefix: str) -> list[tuple[str, str, Any, dict]]:
        return [r for r in self.requests if r[0] == method and r[1].startswith(prefix)]

    # Serving ------------------------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with fake._lock:
                    fake.requests.append((method, self.path, body, dict(self.headers)))
                    failure = fake.failures.popleft() if fake.failures else None
                if fake.latency:
                    time.sleep(fake.latency)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._error(401, "Authentication credentials not found.")
                if failure is not None:
                    status, extra = failure
                    return self._error(status, extra["message"], headers=extra["headers"])
                with fake._lock:
                    status, answer = fake._route(method, self.path, body)
                if status >= 400:
                    return self._error(status, answer)
                self._send(status, answer)

            def _error(self, status: int, message: str, headers: dict | None = None) -> None:
                body = {
                    "status": "error",
                    "message": message,
                    "correlationId": "4a4d1b0e-7e8f-4c1e-9b5a-0c1d2e3f4a5b",
                    "category": CATEGORIES.get(
                        status, "VALIDATION_ERROR" if status < 500 else "INTERNAL_ERROR"
                    ),
                }
                self._send(status, body, headers)

            def _send(self, status: int, body: Any, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

        return Handler

    def _route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        url = urllib.parse.urlsplit(path)
        parts = url.path.strip("/").split("/")
        query = urllib.parse.parse_qs(url.query)
        if parts[:3] == ["crm", "v3", "owners"] and method == "GET":
            email = (query.get("email") or [""])[0]
            return 200, {"results": [o for o in self.owners if not email or o["email"] == email]}
        if parts[:3] != ["crm", "v3", "objects"] or len(parts) < 4:
            return 404, f"No route {path}"
        object_type, rest = parts[3], parts[4:]
        if rest == ["search"] and method == "POST":
            return 200, self._search(object_type, body)
        if object_type != "tasks":
            return 404, f"No route {path}"
        if not rest and method == "POST":
            return self._create(body)
        if len(rest) == 1 and rest[0] in self.tasks:
            task = self.tasks[rest[0]]
            if method == "PATCH":
                now = _now()
                task["properties"].update(body["properties"])
                if body["properties"].get("hs_task_status") == "COMPLETED":
                    task["properties"]["hs_task_completion_date"] = now
                task["updatedAt"] = now
                task["properties"]["hs_lastmodifieddate"] = now
            return 200, task
        if len(rest) == 1:
            return 404, "resource not found"
        return 404, f"No route {path}"

    def _create(self, body: dict) -> tuple[int, Any]:
        props = dict(body.get("properties") or {})
        if not props.get("hs_timestamp"):
            return 400, "Property values were not valid: hs_timestamp is required"
        key = props.get("churnsite_key")
        if key and any(t["properties"].get("churnsite_key") == key for t in self.tasks.values()):
            return 409, f"A task with churnsite_key={key} already exists"
        task_id = str(next(self._ids))
        now = _now()
        props |= {"hs_createdate": now, "hs_lastmodifieddate": now, "hs_object_id": task_id}
        task = {"id": task_id, "properties": props, "createdAt": now, "updatedAt": now, "archived": False}
        self.tasks[task_id] = task
        self.associations[task_id] = body.get("associations") or []
        return 201, task

    def _search(self, object_type: str, body: dict) -> dict:
        rows = list(self.tasks.values()) if object_type == "tasks" else list(self.companies)
        if object_type == "tasks" and self.search_misses:
            self.search_misses -= 1
            rows = []
        groups = body.get("filterGroups") or []
        if groups:
            rows = [r for r in rows if any(all(_match(r, f) for f in g["filters"]) for g in groups)]
        for sort in reversed(body.get("sorts") or []):
            rows.sort(
                key=lambda r: str(r["properties"].get(sort["propertyName"]) or ""),
                reverse=sort["direction"] == "DESCENDING",
            )
        start = int(body.get("after") or 0)
        size = min(int(body.get("limit") or 10), self.page_size)
        page = rows[start : start + size]
        answer: dict[str, Any] = {"total": len(rows), "results": page}
        if start + size < len(rows):
            answer["paging"] = {"next": {"after": str(start + size)}}
        return answer


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _millis(value: str) -> int:
    if value.isdigit():
        return int(value)
    return int(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def _match(row: dict, f: dict) -> bool:
    value = row["properties"].get(f["propertyName"])
    op = f["operator"]
    if op == "HAS_PROPERTY":
        return value not in (None, "")
    if op == "EQ":
        return value == f["value"]
    if op == "NEQ":
        return value != f["value"]
    if op == "IN":
        return value in f["values"]
    if op == "NOT_IN":
        return value not in f["values"]
    if f["propertyName"] == "hs_timestamp" and value:
        left, right = _millis(value), int(f["value"])
        return {"LT": left < right, "LTE": left <= right, "GT": left > right, "GTE": left >= right}[op]
    raise ValueError(f"fake HubSpot: operator {op} not supported")
