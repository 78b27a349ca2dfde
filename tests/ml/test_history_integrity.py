"""The score history has no database key on the partner (ml.models.RiskScore): a chunk guards
its partners instead (a shared advisory lock, then one count), and on PostgreSQL a partner
deleted while a chunk writes its history is refused, as the key refused it, and a chunk
started during a delete waits for it (migrations ml 0014 and 0016)."""

import threading
import time

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from ml import score_store
from ml.models import PartnerScore, RiskScore
from retention.models import Partner
from tests.factories import PartnerFactory, ScoringRunFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_partner_deleted_while_a_chunk_writes_its_history_is_refused_after_the_chunk_commits():
    if connection.vendor != "postgresql":
        pytest.skip("the lock and the trigger are PostgreSQL's")
    partner = PartnerFactory()
    run = ScoringRunFactory()
    rows = [(partner.pk, 0.5, 0.1, 0.2, 0.3, 0.4, "30d", 1, None)]
    outcome: dict = {}

    def delete_partner() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cur:
                cur.execute("DELETE FROM retention_partner WHERE id = %s", [partner.pk])
            outcome["deleted"] = True
        except IntegrityError as exc:
            outcome["refused"] = str(exc)
        finally:
            connections.close_all()

    deleter = threading.Thread(target=delete_partner)
    with transaction.atomic():
        score_store._persist_copy(run, rows, current=False, now=timezone.now())
        deleter.start()
        time.sleep(0.5)
        assert deleter.is_alive(), "the delete waits for the chunk's hold on the history guard"
    deleter.join(timeout=10)
    assert not deleter.is_alive()
    assert "still has score history" in outcome.get("refused", ""), outcome
    assert Partner.objects.filter(pk=partner.pk).exists()
    assert RiskScore.objects.filter(partner=partner, run=run).count() == 1


@pytest.mark.parametrize("delete_ends", ["commit", "rollback"])
def test_a_chunk_that_starts_during_a_partners_delete_waits_for_it_and_fails_if_it_committed(delete_ends):
    if connection.vendor != "postgresql":
        pytest.skip("the guard and the trigger are PostgreSQL's")
    partner = PartnerFactory()
    run = ScoringRunFactory()
    rows = [(partner.pk, 0.5, 0.1, 0.2, 0.3, 0.4, "30d", 1, None)]
    outcome: dict = {}

    def write_chunk() -> None:
        try:
            score_store._persist_copy(run, rows, current=False, now=timezone.now())
            outcome["written"] = True
        except IntegrityError as exc:
            outcome["failed"] = str(exc)
        finally:
            connections.close_all()

    writer = threading.Thread(target=write_chunk)
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("DELETE FROM retention_partner WHERE id = %s", [partner.pk])
        writer.start()
        time.sleep(0.5)
        assert writer.is_alive(), "the chunk waits for the delete's guard"
        if delete_ends == "rollback":
            transaction.set_rollback(True)
    writer.join(timeout=10)
    assert not writer.is_alive()
    if delete_ends == "commit":
        assert "1 of the chunk's partners are gone" in outcome.get("failed", ""), outcome
        assert not RiskScore.objects.filter(run=run).exists()
    else:
        assert outcome == {"written": True}
        assert RiskScore.objects.filter(partner=partner, run=run).count() == 1


def test_a_chunk_delivered_twice_at_once_keeps_the_first_commits_rows():
    if connection.vendor != "postgresql":
        pytest.skip("the plain insert and its fallback are PostgreSQL's")
    partner = PartnerFactory()
    run = ScoringRunFactory()
    first = [(partner.pk, 0.5, 0.1, 0.2, 0.3, 0.4, "30d", 1, None)]
    again = [(partner.pk, 0.9, 0.6, 0.2, 0.1, 0.1, "7d", 3, None)]
    outcome: dict = {}

    def deliver_again() -> None:
        try:
            score_store._persist_copy(run, again, current=False, now=timezone.now())
            outcome["written"] = True
        except Exception as exc:  # noqa: BLE001 (the assertion below shows it)
            outcome["failed"] = repr(exc)
        finally:
            connections.close_all()

    second = threading.Thread(target=deliver_again)
    with transaction.atomic():
        score_store._persist_copy(run, first, current=False, now=timezone.now())
        second.start()
        time.sleep(0.5)
        assert second.is_alive(), "the second delivery waits on the unique index for the first"
    second.join(timeout=10)
    assert outcome == {"written": True}
    assert list(RiskScore.objects.filter(run=run).values_list("partner_id", "risk", "bucket")) == [
        (partner.pk, 0.5, "30d")
    ]


def test_a_partner_renamed_while_a_chunk_writes_waits_for_it_and_the_runs_close_has_the_new_name():
    """The Live Feed's copy of the name (migration 0017): a rename waits for the chunk in flight,
    whose staged row keeps the name it read; the run's close re-reads it, so the swapped-in
    scores carry the new name."""
    if connection.vendor != "postgresql":
        pytest.skip("the guard, the trigger and the staged scores are PostgreSQL's")
    partner = PartnerFactory(name="Old Name Co")
    run = ScoringRunFactory(status="running", finished_at=None)
    rows = [(partner.pk, 0.5, 0.1, 0.2, 0.3, 0.4, "30d", 1, None)]
    assert score_store.current_stage_open(run=run)
    outcome: dict = {}

    def rename() -> None:
        try:
            with transaction.atomic():
                Partner.objects.filter(pk=partner.pk).update(name="New Name Co")
            outcome["renamed"] = True
        finally:
            connections.close_all()

    renamer = threading.Thread(target=rename)
    with transaction.atomic():
        score_store._persist_copy(run, rows, current=True, now=timezone.now())
        renamer.start()
        time.sleep(0.5)
        assert renamer.is_alive(), "the rename waits for the chunk's hold on the history guard"
    renamer.join(timeout=10)
    assert outcome == {"renamed": True}
    with connection.cursor() as cur:
        cur.execute(f"SELECT partner_name FROM {score_store.current_stage_name(run.pk)}")
        assert cur.fetchall() == [("Old Name Co",)]  # what the chunk read before the rename

    with transaction.atomic():
        assert score_store.current_stage_swap(run=run) is not None

    assert PartnerScore.objects.get(partner=partner).partner_name == "New Name Co"
