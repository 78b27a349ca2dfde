"""The score history has no database key on the partner (ml.models.RiskScore): a chunk locks
its partners instead, and on PostgreSQL a partner deleted while a chunk writes its history
is refused, as the key refused it (migration ml 0014)."""

import threading
import time

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from ml import score_store
from ml.models import RiskScore
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
        assert deleter.is_alive(), "the delete waits for the chunk's key-share lock"
    deleter.join(timeout=10)
    assert not deleter.is_alive()
    assert "still has score history" in outcome.get("refused", ""), outcome
    assert Partner.objects.filter(pk=partner.pk).exists()
    assert RiskScore.objects.filter(partner=partner, run=run).count() == 1
