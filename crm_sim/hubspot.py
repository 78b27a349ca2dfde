"""The HubSpot CRM backend: CRM tasks as HubSpot task objects, through its CRM v3 API.

    CRM_BACKEND=crm_sim.hubspot.HubSpotCrmBackend  HUBSPOT_TOKEN=pat-...  (README, "CRM")

It meets the contract in crm_sim/client.py with these HubSpot requests (developers.hubspot.com,
"Activities | Tasks", CRM v3):

- create: POST /crm/v3/objects/tasks {"properties": {...}, "associations": [...]}, associated
  with the partner's company (found by POST /crm/v3/objects/companies/search on the company
  property that holds the partner id, HUBSPOT_COMPANY_PARTNER_PROPERTY) with the default
  task-to-company association type (192).
- update, complete, cancel: GET and PATCH /crm/v3/objects/tasks/{taskId}.
- list: POST /crm/v3/objects/tasks/search (filterGroups on our properties, hs_timestamp sort,
  `after` paging).

Our fields travel in HubSpot properties: hs_task_subject (title), hs_task_body (notes),
hs_timestamp (due date, midnight UTC), hs_task_status (NOT_STARTED = open, COMPLETED =
completed, DEFERRED = cancelled: HubSpot has no cancelled), hs_task_type (CALL / EMAIL / TODO,
from the kind), hubspot_owner_id (the assignee's HubSpot owner, looked up by e-mail), and
custom task properties the HubSpot account must define (README): churnsite_key (the
idempotency key; "unique values" in HubSpot, so a second create with the same key is refused
with 409 and we return the first task instead), churnsite_partner, churnsite_kind,
churnsite_intervention, churnsite_assignee, churnsite_outcome.

Every call finishes within `timeout` seconds: each HTTP request gets what is left of that
budget, and a retry (429 after its Retry-After, 5xx and connection errors after an
exponential backoff, at most HUBSPOT_MAX_RETRIES) is only made if it fits. Every failure is a
CrmError: 401/403 "permission_denied", 404 "not_found", 400/422 "invalid", 409 "conflict",
429/5xx/network "unavailable" (retryable), the budget spent "timeout" (retryable).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied

from agent.audit import audit_record
from crm_sim.client import KINDS, CreateTask, CrmError, CrmTaskRecord, TaskQuery, UpdateTask
from retention.models import Intervention, Partner
from retention.services import intervention_set_outcome

# HubSpot's default association type id for task -> company ("Associations v4: type IDs").
TASK_TO_COMPANY = 192
TASK_TYPES = {"retention_call": "CALL", "follow_up_email": "EMAIL", "meeting": "TODO", "escalation": "TODO"}
TO_HUBSPOT_STATUS = {"open": "NOT_STARTED", "completed": "COMPLETED", "cancelled": "DEFERRED"}
FROM_HUBSPOT_STATUS = {"COMPLETED": "completed", "DEFERRED": "cancelled"}  # the rest are open
PROPERTIES = [
    "hs_task_subject",
    "hs_task_body",
    "hs_timestamp",
    "hs_task_status",
    "hs_task_type",
    "hs_task_completion_date",
    "hubspot_owner_id",
    "churnsite_key",
    "churnsite_partner",
    "churnsite_kind",
    "churnsite_intervention",
    "churnsite_assignee",
    "churnsite_outcome",
]
SEARCH_PAGE = 200  # HubSpot's search endpoints return at most 200 results per request
BACKOFF_BASE = 0.25  # seconds before the first retry of a 5xx; doubles each time


class HubSpotCrmBackend:
    """CRM tasks in HubSpot (CRM v3 objects/tasks), with a private-app or OAuth bearer token."""

    simulated = False

    def __init__(self, timeout: float | None = None):
        self.timeout = float(settings.CRM_TIMEOUT if timeout is None else timeout)
        if self.timeout <= 0:
            raise CrmError("CRM timeout must be positive", code="invalid")
        self.base_url = settings.HUBSPOT_BASE_URL.rstrip("/")
        self.token = settings.HUBSPOT_TOKEN
        self.max_retries = settings.HUBSPOT_MAX_RETRIES
        self.company_property = settings.HUBSPOT_COMPANY_PARTNER_PROPERTY
        self._owners: dict[str, str | None] = {}
        self._deadline = 0.0
        if not self.token:
            raise CrmError("HUBSPOT_TOKEN is not set", code="permission_denied")

    # Public API ----------------------------------------------------------------

    def create_task(self, spec: CreateTask, *, actor: User | None = None) -> CrmTaskRecord:
        self._start()
        if spec.kind not in KINDS:
            raise CrmError(f"Unknown task kind {spec.kind!r}", code="invalid")
        existing = self._find_by_key(spec.idempotency_key)
        if existing is not None:
            return self._checked_same_partner(existing, spec)
        properties = {
            "hs_task_subject": spec.title,
            "hs_task_body": spec.notes,
            "hs_timestamp": _timestamp(spec.due_on),
            "hs_task_status": "NOT_STARTED",
            "hs_task_type": TASK_TYPES[spec.kind],
            "churnsite_key": spec.idempotency_key,
            "churnsite_partner": spec.partner_external_id,
            "churnsite_kind": spec.kind,
            "churnsite_intervention": "" if spec.intervention_id is None else str(spec.intervention_id),
            "churnsite_assignee": spec.assigned_to_username or "",
            "churnsite_outcome": "none",
        }
        properties |= self._owner_property(spec.assigned_to_username)
        body: dict[str, Any] = {"properties": properties}
        company = self._company_id(spec.partner_external_id)
        if company is not None:
            body["associations"] = [
                {
                    "to": {"id": company},
                    "types": [
                        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": TASK_TO_COMPANY}
                    ],
                }
            ]
        try:
            record = self._record(self._request("POST", "/crm/v3/objects/tasks", body))
        except CrmError as exc:
            # The unique churnsite_key refused a second copy (a racing or retried create):
            # the first one wins, as the contract says.
            if exc.code != "conflict":
                raise
            existing = self._find_by_key(spec.idempotency_key)
            if existing is None:
                raise
            return self._checked_same_partner(existing, spec)
        self._audit("crm_task_created", actor, record, partner_external_id=spec.partner_external_id)
        return record

    def update_task(
        self, external_id: str, changes: UpdateTask, *, actor: User | None = None
    ) -> CrmTaskRecord:
        self._start()
        current = self._get_task(external_id)
        if current.status != "open":
            raise CrmError(f"Task {external_id} is already {current.status}", code="invalid")
        properties: dict[str, str] = {}
        if changes.title is not None:
            properties["hs_task_subject"] = changes.title
        if changes.notes is not None:
            properties["hs_task_body"] = changes.notes
        if changes.due_on is not None:
            properties["hs_timestamp"] = _timestamp(changes.due_on)
        if changes.assigned_to_username is not None:
            properties["churnsite_assignee"] = changes.assigned_to_username
            properties |= self._owner_property(changes.assigned_to_username)
        if changes.status == "cancelled":
            properties["hs_task_status"] = TO_HUBSPOT_STATUS["cancelled"]
        elif changes.status not in (None, "open"):
            raise CrmError(f"Status {changes.status!r} is not an update (complete the task)", code="invalid")
        if not properties:
            return current
        return self._record(self._patch(external_id, properties))

    def complete_task(
        self,
        external_id: str,
        *,
        outcome: str,
        actor: User | None = None,
        resolve_intervention: bool = True,
    ) -> CrmTaskRecord:
        if outcome not in ("saved", "churned", "none"):
            raise CrmError(f"Unknown outcome {outcome!r}", code="invalid")
        self._start()
        current = self._get_task(external_id)
        if current.status == "completed" and current.outcome == outcome:
            return current
        if current.status != "open" and outcome == "none":
            return current
        if current.status != "open":
            raise CrmError(f"Task {external_id} is already {current.status}", code="invalid")
        if resolve_intervention and current.intervention_id is not None and outcome != "none":
            # Resolve first: if the outcome service refuses (a correction this actor may not
            # make), the task stays open in HubSpot, as with the simulated backend.
            self._resolve(current, outcome=outcome, actor=actor)
        record = self._record(
            self._patch(external_id, {"hs_task_status": "COMPLETED", "churnsite_outcome": outcome})
        )
        self._audit("crm_task_completed", actor, record, outcome=outcome)
        return record

    def list_tasks(self, query: TaskQuery) -> list[CrmTaskRecord]:
        if query.limit < 1 or query.limit > 1000:
            raise CrmError("limit must be between 1 and 1000", code="invalid")
        self._start()
        # Only the tasks churnsite made (they carry its key), whatever else the account holds.
        filters: list[dict[str, Any]] = [{"propertyName": "churnsite_key", "operator": "HAS_PROPERTY"}]
        if query.status is not None:
            if query.status == "open":
                filters.append(
                    {
                        "propertyName": "hs_task_status",
                        "operator": "NOT_IN",
                        "values": ["COMPLETED", "DEFERRED"],
                    }
                )
            elif query.status in TO_HUBSPOT_STATUS:
                filters.append(
                    {
                        "propertyName": "hs_task_status",
                        "operator": "EQ",
                        "value": TO_HUBSPOT_STATUS[query.status],
                    }
                )
            else:
                raise CrmError(f"Unknown status {query.status!r}", code="invalid")
        for name, value in (
            ("churnsite_partner", query.partner_external_id),
            ("churnsite_assignee", query.assigned_to_username),
            ("churnsite_intervention", None if query.intervention_id is None else str(query.intervention_id)),
        ):
            if value is not None:
                filters.append({"propertyName": name, "operator": "EQ", "value": value})
        if query.due_before is not None:
            filters.append(
                {"propertyName": "hs_timestamp", "operator": "LT", "value": _millis(query.due_before)}
            )
        if query.due_on_or_after is not None:
            filters.append(
                {"propertyName": "hs_timestamp", "operator": "GTE", "value": _millis(query.due_on_or_after)}
            )
        return [self._record(row) for row in self._search("tasks", filters, limit=query.limit)]

    def _start(self) -> None:
        """One time budget for all the requests of one contract call."""
        self._deadline = time.monotonic() + self.timeout

    # HubSpot reads ----------------------------------------------------------------

    def _get_task(self, external_id: str) -> CrmTaskRecord:
        if not external_id.isdigit():
            raise CrmError(f"No CRM task {external_id!r}", code="not_found")
        path = f"/crm/v3/objects/tasks/{external_id}?" + urllib.parse.urlencode(
            {"properties": ",".join(PROPERTIES)}
        )
        return self._record(self._request("GET", path))

    def _patch(self, external_id: str, properties: dict[str, str]) -> dict:
        return self._request("PATCH", f"/crm/v3/objects/tasks/{external_id}", {"properties": properties})

    def _find_by_key(self, key: str) -> CrmTaskRecord | None:
        rows = self._search(
            "tasks", [{"propertyName": "churnsite_key", "operator": "EQ", "value": key}], limit=1
        )
        return self._record(rows[0]) if rows else None

    def _company_id(self, partner_external_id: str) -> str | None:
        rows = self._search(
            "companies",
            [{"propertyName": self.company_property, "operator": "EQ", "value": partner_external_id}],
            limit=1,
            properties=[self.company_property],
        )
        return str(rows[0]["id"]) if rows else None

    def _owner_property(self, username: str | None) -> dict[str, str]:
        """hubspot_owner_id for a churnsite user: the HubSpot owner with the user's e-mail."""
        if not username:
            return {}
        if username not in self._owners:
            users = get_user_model()
            email = (
                users.objects.filter(**{users.USERNAME_FIELD: username})
                .values_list("email", flat=True)
                .first()
            )
            if email is None:
                raise CrmError(f"No CRM user {username!r}", code="not_found")
            owner = None
            if email:
                found = self._request(
                    "GET", "/crm/v3/owners?" + urllib.parse.urlencode({"email": email, "limit": 1})
                )
                results = found.get("results") or []
                owner = str(results[0]["id"]) if results else None
            self._owners[username] = owner
        owner = self._owners[username]
        return {"hubspot_owner_id": owner} if owner else {}

    def _search(
        self, object_type: str, filters: list[dict], *, limit: int, properties: list[str] | None = None
    ) -> list[dict]:
        body: dict[str, Any] = {
            "filterGroups": [{"filters": filters}],
            "properties": properties or PROPERTIES,
            "limit": min(limit, SEARCH_PAGE),
        }
        if object_type == "tasks":
            body["sorts"] = [{"propertyName": "hs_timestamp", "direction": "ASCENDING"}]
        rows: list[dict] = []
        while True:
            page = self._request("POST", f"/crm/v3/objects/{object_type}/search", body)
            rows.extend(page.get("results") or [])
            after = ((page.get("paging") or {}).get("next") or {}).get("after")
            if len(rows) >= limit or not after:
                return rows[:limit]
            body["after"] = after
            body["limit"] = min(limit - len(rows), SEARCH_PAGE)

    # Side effects in churnsite -------------------------------------------------------

    def _resolve(self, record: CrmTaskRecord, *, outcome: str, actor: User | None) -> None:
        if record.intervention_id is None:
            return
        intervention = Intervention.objects.filter(pk=record.intervention_id).first()
        if intervention is None:
            return
        try:
            intervention_set_outcome(
                intervention=intervention,
                outcome=outcome,
                actor=actor,
                reason=f"CRM task {record.external_id} completed",
            )
        except PermissionDenied as exc:
            raise CrmError(str(exc) or "Not allowed", code="permission_denied") from exc

    def _audit(self, event_type: str, actor: User | None, record: CrmTaskRecord, **payload: Any) -> None:
        audit_record(
            event_type=event_type,
            actor=actor,
            partner=Partner.objects.filter(external_id=record.partner_external_id).first(),
            intervention=Intervention.objects.filter(pk=record.intervention_id).first()
            if record.intervention_id is not None
            else None,
            payload={"external_id": record.external_id, "kind": record.kind, "backend": "hubspot"} | payload,
        )

    def _checked_same_partner(self, record: CrmTaskRecord, spec: CreateTask) -> CrmTaskRecord:
        if record.partner_external_id != spec.partner_external_id:
            raise CrmError(
                f"Idempotency key {spec.idempotency_key!r} was used for partner {record.partner_external_id}",
                code="conflict",
            )
        return record

    # HTTP ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One HubSpot request with bounded retries, inside the contract call's time budget."""
        deadline = self._deadline
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CrmError(
                    f"HubSpot did not answer within {self.timeout:g}s", code="timeout", retryable=True
                )
            request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=left) as response:
                    raw = response.read()
                    return json.loads(raw) if raw else {}
            except urllib.error.HTTPError as exc:
                error = _translate(exc)
                wait = _retry_wait(exc, attempt)
            except TimeoutError as exc:
                raise CrmError(
                    f"HubSpot did not answer within {self.timeout:g}s", code="timeout", retryable=True
                ) from exc
            except (urllib.error.URLError, ConnectionError, OSError) as exc:
                if isinstance(getattr(exc, "reason", None), TimeoutError):
                    raise CrmError(
                        f"HubSpot did not answer within {self.timeout:g}s", code="timeout", retryable=True
                    ) from exc
                error = CrmError(f"HubSpot unreachable: {exc}", code="unavailable", retryable=True)
                wait = BACKOFF_BASE * 2**attempt
            except ValueError as exc:  # a body that is not JSON
                raise CrmError(f"HubSpot sent an unreadable answer: {exc}", code="unavailable") from exc
            if wait is None or attempt >= self.max_retries:
                raise error
            if time.monotonic() + wait >= deadline:
                # Waiting as asked would pass the budget: fail now rather than late.
                raise error
            time.sleep(wait)
            attempt += 1

    @staticmethod
    def _record(row: dict) -> CrmTaskRecord:
        p = row.get("properties") or {}
        status = FROM_HUBSPOT_STATUS.get(p.get("hs_task_status") or "", "open")
        intervention = p.get("churnsite_intervention") or ""
        completed = p.get("hs_task_completion_date")
        return CrmTaskRecord(
            external_id=str(row["id"]),
            partner_external_id=p.get("churnsite_partner") or "",
            kind=p.get("churnsite_kind") or "retention_call",
            title=p.get("hs_task_subject") or "",
            due_on=_date(p.get("hs_timestamp")),
            status=status,
            outcome=p.get("churnsite_outcome") or "none",
            intervention_id=int(intervention) if intervention.isdigit() else None,
            assigned_to_username=p.get("churnsite_assignee") or None,
            notes=p.get("hs_task_body") or "",
            completed_at=_datetime(completed) if completed else None,
        )


# Translation ---------------------------------------------------------------------------


def _translate(exc: urllib.error.HTTPError) -> CrmError:
    """HubSpot's error answer ({"status": "error", "message", "category", "correlationId"})
    as the contract's CrmError."""
    try:
        detail = json.loads(exc.read() or b"{}")
    except ValueError:
        detail = {}
    message = detail.get("message") or exc.reason or "error"
    text = f"HubSpot {exc.code}: {message}"
    if detail.get("correlationId"):
        text += f" (correlationId {detail['correlationId']})"
    if exc.code in (401, 403):
        return CrmError(text, code="permission_denied")
    if exc.code == 404:
        return CrmError(text, code="not_found")
    if exc.code == 409:
        return CrmError(text, code="conflict")
    if exc.code in (400, 422):
        return CrmError(text, code="invalid")
    if exc.code == 429 or exc.code >= 500:
        return CrmError(text, code="unavailable", retryable=True)
    return CrmError(text, code="unavailable")


def _retry_wait(exc: urllib.error.HTTPError, attempt: int) -> float | None:
    """Seconds to wait before retrying this answer, or None if it is not worth retrying."""
    if exc.code == 429:
        try:
            return max(0.0, float(exc.headers.get("Retry-After", "")))
        except ValueError:
            return BACKOFF_BASE * 2**attempt
    if exc.code >= 500:
        return BACKOFF_BASE * 2**attempt
    return None


def _timestamp(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00.000Z"


def _millis(day: dt.date) -> str:
    return str(int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp() * 1000))


def _datetime(value: str) -> dt.datetime:
    if value.isdigit():  # HubSpot accepts and sometimes returns epoch milliseconds
        return dt.datetime.fromtimestamp(int(value) / 1000, tz=dt.UTC)
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _date(value: str | None) -> dt.date:
    if not value:
        raise CrmError("HubSpot task without hs_timestamp", code="invalid")
    return _datetime(value).astimezone(dt.UTC).date()
