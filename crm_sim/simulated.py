"""The simulated CRM backend: CRM tasks stored in crm_sim.CrmTask, through crm_sim.services.

It meets the contract in crm_sim/client.py (the default settings.CRM_BACKEND) and is the
system of record while no CRM API is reachable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction

from crm_sim.client import CreateTask, CrmError, CrmTaskRecord, TaskQuery, UpdateTask
from crm_sim.models import CrmTask
from crm_sim.selectors import crm_task_list
from crm_sim.services import crm_task_complete, crm_task_create, crm_task_update
from retention.models import Intervention, Partner

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

    simulated = True

    def __init__(self, timeout: float | None = None):
        self.timeout = float(settings.CRM_TIMEOUT if timeout is None else timeout)
        if self.timeout <= 0:
            raise CrmError("CRM timeout must be positive", code="invalid")

    # Public API ----------------------------------------------------------------

    def create_task(self, spec: CreateTask, *, actor: User | None = None) -> CrmTaskRecord:
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
        self, external_id: str, changes: UpdateTask, *, actor: User | None = None
    ) -> CrmTaskRecord:
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
        self,
        external_id: str,
        *,
        outcome: str,
        actor: User | None = None,
        resolve_intervention: bool = True,
    ) -> CrmTaskRecord:
        return self._run(
            lambda: self._record(
                crm_task_complete(
                    task=self._task(external_id),
                    outcome=outcome,
                    actor=actor,
                    resolve_intervention=resolve_intervention,
                )
            )
        )

    def list_tasks(self, query: TaskQuery) -> list[CrmTaskRecord]:
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
        return self._get(CrmTask, external_id=external_id)

    @staticmethod
    def _user(username: str | None):
        if not username:
            return None
        users = get_user_model()
        try:
            return users.objects.get(**{users.USERNAME_FIELD: username})
        except users.DoesNotExist as exc:
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
