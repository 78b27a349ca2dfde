"""The CRM client contract, against the simulated backend on real PostgreSQL (or SQLite)."""

import datetime as dt
import re
import threading
import time

import pytest
from django.db import connection, connections, transaction

from agent.models import AuditEvent
from crm_sim.client import CreateTask, CrmError, TaskQuery, UpdateTask, get_crm_client
from crm_sim.models import CrmTask
from crm_sim.services import crm_task_create
from crm_sim.simulated import SimulatedCrmBackend
from retention.models import Intervention
from tests.factories import InterventionFactory, PartnerFactory

postgres_only = pytest.mark.skipif(
    not connection.vendor == "postgresql", reason="row locks and statement_timeout need PostgreSQL"
)


def spec(partner, key="agent-run-7-partner-1", **kwargs) -> CreateTask:
    defaults = dict(
        partner_external_id=partner.external_id,
        kind="follow_up_email",
        title="Follow up on the retention email",
        due_on=dt.date(2026, 2, 9),
        idempotency_key=key,
    )
    return CreateTask(**{**defaults, **kwargs})


def test_a_repeated_create_with_the_same_key_returns_the_first_task(db):
    partner = PartnerFactory(external_id="P10342")
    client = get_crm_client()

    first = client.create_task(spec(partner))
    again = client.create_task(
        spec(partner, title="A retried call with a new title", due_on=dt.date(2026, 3, 1))
    )

    assert again == first
    assert re.fullmatch(r"SIM-\d{6}", first.external_id)
    assert (first.partner_external_id, first.status, first.outcome) == ("P10342", "open", "none")
    assert CrmTask.objects.count() == 1
    assert AuditEvent.objects.filter(event_type="crm_task_created").count() == 1


def test_reusing_a_key_for_another_partner_is_refused(db):
    client = get_crm_client()
    client.create_task(spec(PartnerFactory()))

    with pytest.raises(CrmError) as err:
        client.create_task(spec(PartnerFactory()))

    assert err.value.code == "invalid"
    assert CrmTask.objects.count() == 1


def test_unknown_partners_users_and_tasks_are_not_found_errors(db):
    client = get_crm_client()
    partner = PartnerFactory()
    for call in (
        lambda: client.create_task(CreateTask("P99999", "meeting", "Meet", dt.date(2026, 2, 8), "k1")),
        lambda: client.create_task(spec(partner, key="k2", assigned_to_username="nobody")),
        lambda: client.complete_task("SIM-999999", outcome="saved"),
    ):
        with pytest.raises(CrmError) as err:
            call()
        assert err.value.code == "not_found"
    assert CrmTask.objects.count() == 0


def test_bad_input_is_an_invalid_error_not_a_database_error(db):
    partner = PartnerFactory()
    client = get_crm_client()
    with pytest.raises(CrmError) as err:
        client.create_task(spec(partner, kind="carrier_pigeon"))
    assert err.value.code == "invalid"
    with pytest.raises(CrmError):
        client.create_task(spec(partner, key="  "))
    with pytest.raises(CrmError):
        client.create_task(spec(partner, intervention_id=InterventionFactory().pk))  # another partner's
    assert CrmTask.objects.count() == 0


def test_the_backend_and_timeout_come_from_settings(settings):
    settings.CRM_BACKEND = "tests.crm_sim.test_client.RecordingBackend"
    settings.CRM_TIMEOUT = 1.5
    client = get_crm_client()
    assert isinstance(client, RecordingBackend)
    assert client.timeout == 1.5
    settings.CRM_BACKEND = "crm_sim.simulated.SimulatedCrmBackend"
    assert get_crm_client().timeout == 1.5


class RecordingBackend:
    def __init__(self, timeout: float):
        self.timeout = timeout


def test_update_changes_only_the_given_fields_and_cancels(db, retention_user, make_task):
    task = make_task(title="Call the owner")
    client = get_crm_client()

    moved = client.update_task(
        task.external_id, UpdateTask(due_on=dt.date(2026, 2, 20), assigned_to_username="rita")
    )
    assert (moved.title, moved.due_on, moved.assigned_to_username) == (
        "Call the owner",
        dt.date(2026, 2, 20),
        "rita",
    )

    cancelled = client.update_task(task.external_id, UpdateTask(status="cancelled"))
    assert cancelled.status == "cancelled"
    with pytest.raises(CrmError) as err:
        client.update_task(task.external_id, UpdateTask(title="too late"))
    assert err.value.code == "invalid"
    assert AuditEvent.objects.filter(event_type="crm_task_updated").count() == 2


def test_list_tasks_filters_by_status_partner_user_and_due_date(db, retention_user, make_task):
    partner = PartnerFactory(external_id="P18477")
    early = make_task(partner=partner, due_on=dt.date(2026, 2, 8), assigned_to=retention_user)
    late = make_task(partner=partner, due_on=dt.date(2026, 2, 15))
    other = make_task(due_on=dt.date(2026, 2, 1))
    client = get_crm_client()
    client.complete_task(other.external_id, outcome="none")

    def ids(**query):
        return [t.external_id for t in client.list_tasks(TaskQuery(**query))]

    assert ids() == [other.external_id, early.external_id, late.external_id]
    assert ids(status="open") == [early.external_id, late.external_id]
    assert ids(partner_external_id="P18477", due_before=dt.date(2026, 2, 10)) == [early.external_id]
    assert ids(assigned_to_username="rita") == [early.external_id]
    assert ids(due_on_or_after=dt.date(2026, 2, 9)) == [late.external_id]
    assert ids(limit=1) == [other.external_id]


def test_completing_a_task_as_saved_resolves_its_intervention(db, retention_user, make_task):
    task = make_task(intervention=True)
    intervention = Intervention.objects.get()

    done = get_crm_client().complete_task(task.external_id, outcome="saved", actor=retention_user)

    assert (done.status, done.outcome) == ("completed", "saved")
    assert done.completed_at is not None
    intervention.refresh_from_db()
    assert intervention.outcome == "saved"
    assert intervention.outcome_set_by == retention_user
    events = list(AuditEvent.objects.filter(intervention=intervention).values_list("event_type", flat=True))
    assert {"crm_task_completed", "outcome_set"} <= set(events)


def test_completing_with_no_outcome_leaves_the_intervention_pending(db, make_task):
    task = make_task(intervention=True)
    get_crm_client().complete_task(task.external_id, outcome="none")
    assert Intervention.objects.get().outcome == "pending"


def test_completing_again_is_a_no_op_but_a_different_outcome_is_refused(db, retention_user, make_task):
    task = make_task(intervention=True)
    client = get_crm_client()
    client.complete_task(task.external_id, outcome="churned", actor=retention_user)
    again = client.complete_task(task.external_id, outcome="churned", actor=retention_user)
    assert again.outcome == "churned"
    assert AuditEvent.objects.filter(event_type="crm_task_completed").count() == 1

    with pytest.raises(CrmError) as err:
        client.complete_task(task.external_id, outcome="saved", actor=retention_user)
    assert err.value.code == "invalid"
    assert Intervention.objects.get().outcome == "churned"


def test_closing_a_task_a_person_already_completed_keeps_their_outcome(db, retention_user, make_task):
    # The agent's follow-up check closes its task with "none"; the team may have been first.
    task = make_task(intervention=True)
    client = get_crm_client()
    client.complete_task(task.external_id, outcome="saved", actor=retention_user)

    closed = client.complete_task(task.external_id, outcome="none")

    assert (closed.status, closed.outcome) == ("completed", "saved")
    assert Intervention.objects.get().outcome == "saved"


def test_a_task_whose_intervention_was_resolved_otherwise_stays_open_and_the_refusal_is_kept(
    db, retention_user, make_task
):
    task = make_task(intervention=True)
    Intervention.objects.update(outcome="churned")

    with pytest.raises(CrmError) as err:
        get_crm_client().complete_task(task.external_id, outcome="saved", actor=retention_user)

    assert err.value.code == "permission_denied"
    assert CrmTask.objects.get().status == "open"
    assert Intervention.objects.get().outcome == "churned"
    assert AuditEvent.objects.filter(event_type="outcome_change_refused").count() == 1


def test_a_manager_completing_such_a_task_corrects_the_outcome(db, manager, make_task):
    task = make_task(intervention=True)
    Intervention.objects.update(outcome="churned")
    get_crm_client().complete_task(task.external_id, outcome="saved", actor=manager)
    assert Intervention.objects.get().outcome == "saved"
    assert AuditEvent.objects.filter(event_type="outcome_corrected").count() == 1


# Concurrency and timeouts: real threads, real PostgreSQL connections --------------------


def _in_thread(target, results: dict, name: str) -> threading.Thread:
    def run():
        try:
            results[name] = target()
        except Exception as exc:  # noqa: BLE001 - handed to the test to assert on
            results[name] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread


def _wait_for_a_blocked_backend(timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            # Statistics views are snapshotted per transaction; the caller is inside one.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return True
        time.sleep(0.02)
    return False


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_with_the_same_key_make_one_task():
    partner = PartnerFactory()
    barrier = threading.Barrier(4)
    results: dict = {}

    def create():
        barrier.wait(timeout=10)
        return get_crm_client().create_task(spec(partner, key="retry-storm"))

    threads = [_in_thread(create, results, f"t{i}") for i in range(4)]
    for thread in threads:
        thread.join(timeout=20)

    records = list(results.values())
    assert len(records) == 4 and not any(isinstance(r, Exception) for r in records), records
    assert len({r.external_id for r in records}) == 1
    assert CrmTask.objects.count() == 1


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_create_that_loses_the_race_returns_the_winners_task():
    partner = PartnerFactory()
    results: dict = {}
    with transaction.atomic():
        winner, created = crm_task_create(
            partner=partner, kind="meeting", title="Meet", due_on=dt.date(2026, 2, 8), idempotency_key="race"
        )
        # The loser's pre-check cannot see the uncommitted row, so its INSERT waits on
        # the unique index and then fails: the IntegrityError path, deterministically.
        loser = _in_thread(lambda: get_crm_client().create_task(spec(partner, key="race")), results, "loser")
        assert _wait_for_a_blocked_backend(), "the second create never reached the unique index"
    loser.join(timeout=20)

    assert created
    assert not isinstance(results["loser"], Exception), results["loser"]
    assert results["loser"].external_id == winner.external_id
    assert CrmTask.objects.count() == 1


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_call_stuck_behind_a_lock_fails_with_a_timeout_error():
    partner = PartnerFactory()
    results: dict = {}
    with transaction.atomic():
        crm_task_create(
            partner=partner, kind="meeting", title="Meet", due_on=dt.date(2026, 2, 8), idempotency_key="slow"
        )
        stuck = _in_thread(
            lambda: SimulatedCrmBackend(timeout=0.3).create_task(spec(partner, key="slow")), results, "stuck"
        )
        stuck.join(timeout=20)
        assert not stuck.is_alive()
    error = results["stuck"]
    assert isinstance(error, CrmError), error
    assert (error.code, error.retryable) == ("timeout", True)


@postgres_only
def test_the_timeout_does_not_leak_into_the_callers_transaction(db):
    partner = PartnerFactory()
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        before = cursor.fetchone()[0]
        SimulatedCrmBackend(timeout=0.25).create_task(spec(partner))
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == before
