"""The CRM client: the one module that talks to "the CRM" (owns timeouts and errors).

Callers get a backend with `get_crm_client()`; the class comes from settings.CRM_BACKEND
(default: the simulated backend below, which stores tasks in crm_sim.CrmTask and is the
system of record while no CRM API is reachable).

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
- `complete_task(external_id, *, outcome, actor=None) -> CrmTaskRecord`
  outcome is "saved" | "churned" | "none". Completing again with the same outcome is a no-op,
  and "none" on a task that is already closed returns it unchanged (closing it is done);
  another outcome on a closed task is an "invalid" error.
  A saved/churned outcome on a task linked to an intervention resolves that intervention
  through `retention.services.intervention_set_outcome` (a real adapter does this when the
  CRM reports the completion: webhook or sync job).
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
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

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

    def create_task(self, spec: CreateTask, *, actor: AbstractBaseUser | None = None) -> CrmTaskRecord: ...

    def update_task(
        self, external_id: str, changes: UpdateTask, *, actor: AbstractBaseUser | None = None
    ) -> CrmTaskRecord: ...

    def complete_task(
        self, external_id: str, *, outcome: str, actor: AbstractBaseUser | None = None
    ) -> CrmTaskRecord: ...

    def list_tasks(self, query: TaskQuery) -> list[CrmTaskRecord]: ...


def get_crm_client() -> CrmBackend:
    """The configured backend (settings.CRM_BACKEND), with settings.CRM_TIMEOUT."""
    backend_class = import_string(settings.CRM_BACKEND)
    return backend_class(timeout=settings.CRM_TIMEOUT)


T = TypeVar("T")


class SimulatedCrmBackend:
    """Stores tasks in crm_sim.CrmTask, through crm_sim.services.

    Timeout: each call runs in its own transaction (a savepoint inside a caller's) with
    PostgreSQL's `SET LOCAL statement_timeout`, so a call stuck behind a lock (say, a
    racing create holding the same idempotency key) fails as CrmError("timeout") instead
    of hanging a worker. The previous value is restored before returning, so a caller's
    enclosing transaction keeps its own timeout. SQLite (the embedded demo) has no
    statement timeout; there the connection's busy timeout (20 s) bounds lock waits.
    """

    def __init__(self, timeout: float | None = None):
        self.timeout = float(settings.CRM_TIMEOUT if timeout is None else timeout)
        if self.timeout <= 0:
            raise CrmError("CRM timeout must be positive", code="invalid")

    # Public API ----------------------------------------------------------------

    def create_task(self, spec: CreateTask, *, actor: AbstractBaseUser | None = None) -> CrmTaskRecord:
        from crm_sim.services import crm_task_create
        from retention.models import Intervention, Partner

        def call():
            partner = self._get(Partner, external_id=spec.partner_external_id)
            intervention = (
                self._get(Intervention, pk=spec.intervention_id) if spec.intervention_id is not None else None
            )
            task, _ = crm_task_create(
                partner=partner,
                kind=spec.kind,
                title=spec.title,
                due_on=spec.due_on,
                idempotency_key=spec.idempotency_key,
                intervention=intervention,
                assigned_to=self._user(spec.assigned_to_username),
                notes=spec.notes,
                actor=actor,
            )
            return self._record(task)

        return self._run(call)

    def update_task(
        self, external_id: str, changes: UpdateTask, *, actor: AbstractBaseUser | None = None
    ) -> CrmTaskRecord:
        from crm_sim.services import crm_task_update

        def call():
            task = self._task(external_id)
            fields = {}
            for name in ("title", "due_on", "notes", "status"):
                if getattr(changes, name) is not None:
                    fields[name] = getattr(changes, name)
            if changes.assigned_to_username is not None:
                fields["assigned_to"] = self._user(changes.assigned_to_username)
            if fields:
                task = crm_task_update(task=task, actor=actor, **fields)
            return self._record(task)

        return self._run(call)

    def complete_task(
        self, external_id: str, *, outcome: str, actor: AbstractBaseUser | None = None
    ) -> CrmTaskRecord:
        from crm_sim.services import crm_task_complete

        return self._run(
            lambda: self._record(
                crm_task_complete(task=self._task(external_id), outcome=outcome, actor=actor)
            )
        )

    def list_tasks(self, query: TaskQuery) -> list[CrmTaskRecord]:
        from crm_sim.selectors import crm_task_list

        if query.limit < 1 or query.limit > 1000:
            raise CrmError("limit must be between 1 and 1000", code="invalid")
        return self._run(
            lambda: [
                self._record(task)
                for task in crm_task_list(
                    status=query.status,
                    partner_external_id=query.partner_external_id,
                    assigned_to_username=query.assigned_to_username,
                    intervention_id=query.intervention_id,
                    due_before=query.due_before,
                    due_on_or_after=query.due_on_or_after,
                    limit=query.limit,
                )
            ]
        )

    # Plumbing --------------------------------------------------------------------

    def _run(self, call: Callable[[], T]) -> T:
        denied: PermissionDenied | None = None
        try:
            with transaction.atomic(), self._statement_timeout():
                try:
                    return call()
                except PermissionDenied as exc:
                    # Commit what the service recorded before refusing (its audit of the refusal).
                    denied = exc
        except CrmError:
            raise
        except OperationalError as exc:
            if _is_query_canceled(exc):
                raise CrmError(
                    f"CRM call took longer than {self.timeout:g}s", code="timeout", retryable=True
                ) from exc
            raise CrmError(f"CRM store unavailable: {exc}", code="unavailable", retryable=True) from exc
        except ValidationError as exc:
            raise CrmError("; ".join(_messages(exc)), code="invalid") from exc
        except IntegrityError as exc:
            raise CrmError(f"CRM rejected the change: {exc}", code="conflict") from exc
        except DatabaseError as exc:
            raise CrmError(f"CRM store error: {exc}", code="unavailable") from exc
        raise CrmError(str(denied) or "Not allowed", code="permission_denied") from denied

    @contextmanager
    def _statement_timeout(self) -> Iterator[None]:
        if connection.vendor != "postgresql":
            yield
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('statement_timeout')")
            previous = cursor.fetchone()[0]
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, true)", [f"{max(1, int(self.timeout * 1000))}ms"]
            )
        yield
        # Only reached on success; on an error the savepoint/transaction rollback undoes SET LOCAL.
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])

    @staticmethod
    def _get(model, **lookup):
        try:
            return model.objects.get(**lookup)
        except model.DoesNotExist as exc:
            raise CrmError(f"No {model._meta.verbose_name} with {lookup}", code="not_found") from exc

    def _task(self, external_id: str):
        from crm_sim.models import CrmTask

        return self._get(CrmTask, external_id=external_id)

    @staticmethod
    def _user(username: str | None):
        if not username:
            return None
        User = get_user_model()
        try:
            return User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist as exc:
            raise CrmError(f"No CRM user {username!r}", code="not_found") from exc

    @staticmethod
    def _record(task) -> CrmTaskRecord:
        return CrmTaskRecord(
            external_id=task.external_id,
            partner_external_id=task.partner.external_id,
            kind=task.kind,
            title=task.title,
            due_on=task.due_on,
            status=task.status,
            outcome=task.outcome,
            intervention_id=task.intervention_id,
            assigned_to_username=task.assigned_to.get_username() if task.assigned_to_id else None,
            notes=task.notes,
            completed_at=task.completed_at,
        )


def _is_query_canceled(exc: BaseException) -> bool:
    # psycopg raises QueryCanceled (SQLSTATE 57014) when statement_timeout fires.
    cause = exc.__cause__ or exc
    return getattr(cause, "sqlstate", None) == "57014"


def _messages(exc: ValidationError) -> list[str]:
    if hasattr(exc, "message_dict"):
        return [f"{field}: {msg}" for field, msgs in exc.message_dict.items() for msg in msgs]
    return list(exc.messages)
