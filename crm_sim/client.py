"""The CRM contract: the types, the one error and the protocol every CRM backend meets.

Callers get a backend with `get_crm_client()`; the class comes from settings.CRM_BACKEND
(default: `crm_sim.simulated.SimulatedCrmBackend`, which stores tasks in crm_sim.CrmTask and
is the system of record while no CRM API is reachable). This module imports no first-party
code, so anything (the agent, the outcome service) may depend on it without a cycle.

Contract every backend (a real Salesforce/HubSpot adapter included) must meet
---------------------------------------------------------------------------
- `create_task(CreateTask, *, actor=None) -> CrmTaskRecord`
  Idempotent on `CreateTask.idempotency_key`: calling it again with the same key (a retried
  Celery task, a double click, two workers racing) returns the task the first call created
  and never creates a second one. The first call wins; later payloads are ignored. Reusing a
  key for a different partner is an error. A real adapter passes the key to the CRM's own
  idempotency mechanism (e.g. an external-id upsert field) so it holds across processes.
- `update_task(external_id, UpdateTask, *, actor=None) -> CrmTaskRecord`
  Changes only the fields given (None = leave alone) on an OPEN task; `status="cancelled"`
  cancels it. Completion is not an update.
- `complete_task(external_id, *, outcome, actor=None, resolve_intervention=True) -> CrmTaskRecord`
  outcome is "saved" | "churned" | "none". Completing again with the same outcome is a no-op,
  and "none" on a task that is already closed returns it unchanged (closing it is done);
  another outcome on a closed task is an "invalid" error.
  A saved/churned outcome on a task linked to an intervention resolves that intervention
  through `retention.services.intervention_set_outcome` (a real adapter does this when the
  CRM reports the completion: webhook or sync job). `resolve_intervention=False` is for
  completions that come from the intervention's own outcome (closing its open tasks once it
  is resolved): the task records the outcome and nothing is echoed back.
- `list_tasks(TaskQuery) -> list[CrmTaskRecord]`, soonest due first, at most `limit`.
- Every call finishes within `timeout` seconds (settings.CRM_TIMEOUT) or fails.
- Every failure raises `CrmError` (never a driver or HTTP exception): `code` says what
  ("timeout", "not_found", "invalid", "conflict", "permission_denied", "unavailable") and
  `retryable` whether the same call may succeed later. Thanks to idempotency, retrying a
  create after a timeout is always safe.
- Records are plain frozen dataclasses: no ORM objects cross this boundary.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.contrib.auth.models import User
from django.utils.module_loading import import_string

KINDS = ("retention_call", "follow_up_email", "meeting", "escalation")
STATUSES = ("open", "completed", "cancelled")
OUTCOMES = ("saved", "churned", "none")


class CrmError(Exception):
    """The one error type of the CRM client."""

    def __init__(self, message: str, *, code: str = "unavailable", retryable: bool = False):
        super().__init__(message)
        self.code = code
        self.retryable = retryable


@dataclass(frozen=True)
class CreateTask:
    partner_external_id: str
    kind: str  # one of KINDS
    title: str
    due_on: dt.date
    idempotency_key: str
    intervention_id: int | None = None
    assigned_to_username: str | None = None
    notes: str = ""


@dataclass(frozen=True)
class UpdateTask:
    title: str | None = None
    due_on: dt.date | None = None
    assigned_to_username: str | None = None
    notes: str | None = None
    status: str | None = None  # "cancelled" (or "open": no change)


@dataclass(frozen=True)
class TaskQuery:
    status: str | None = None
    partner_external_id: str | None = None
    assigned_to_username: str | None = None
    intervention_id: int | None = None
    due_before: dt.date | None = None
    due_on_or_after: dt.date | None = None
    limit: int = 100


@dataclass(frozen=True)
class CrmTaskRecord:
    external_id: str
    partner_external_id: str
    kind: str
    title: str
    due_on: dt.date
    status: str
    outcome: str
    intervention_id: int | None
    assigned_to_username: str | None
    notes: str = ""
    completed_at: dt.datetime | None = None


class CrmBackend(Protocol):
    timeout: float

    def create_task(self, spec: CreateTask, *, actor: User | None = None) -> CrmTaskRecord: ...

    def update_task(
        self, external_id: str, changes: UpdateTask, *, actor: User | None = None
    ) -> CrmTaskRecord: ...

    def complete_task(
        self,
        external_id: str,
        *,
        outcome: str,
        actor: User | None = None,
        resolve_intervention: bool = True,
    ) -> CrmTaskRecord: ...

    def list_tasks(self, query: TaskQuery) -> list[CrmTaskRecord]: ...


def crm_backend_is_simulated() -> bool:
    """Whether settings.CRM_BACKEND keeps tasks in churnsite's own database (the CRM page then
    shows its Simulation Mode banner and reads the table directly)."""
    return bool(getattr(import_string(settings.CRM_BACKEND), "simulated", False))


def get_crm_client() -> CrmBackend:
    """The configured backend (settings.CRM_BACKEND), with settings.CRM_TIMEOUT."""
    backend_class = import_string(settings.CRM_BACKEND)
    return backend_class(timeout=settings.CRM_TIMEOUT)
