"""Crash safety with real workers: kill -9 while drafting, between the commit and the send, and
while sending; FLUSHDB with queued runs. Each ends with every partner contacted once or not at
all, every contact audited, no email lost and no run left open (tests/agent/faults.py)."""

import pytest
from django.db import connection

from agent.models import AgentConfig
from tests.agent.faults import FAILPOINTS, FAULTS, FaultRig, run_fault
from tests.agent.workers import make_partners
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.celery, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def own_redis():
    if connection.vendor != "postgresql":
        pytest.skip("fault tests need PostgreSQL (set DATABASE_URL)")
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_rig(own_redis, django_db_setup, django_db_blocker, tmp_path_factory):
    rig = FaultRig(redis_server=own_redis, folder=tmp_path_factory.mktemp("faults"))
    try:
        yield rig
    finally:
        rig.stop()


@pytest.fixture
def rig(module_rig):
    module_rig.reset()
    return module_rig


@pytest.mark.parametrize("fault", FAULTS)
def test_after_the_fault_every_partner_is_contacted_once_or_not_at_all_and_nothing_is_lost(rig, fault):
    config, _ = AgentConfig.objects.get_or_create(pk=1)
    config.enabled, config.control_fraction, config.max_per_hour = True, 0.0, 50
    config.save()
    partners = make_partners(12, platinum_every=6)

    result = run_fault(fault, rig, partners=partners)

    assert result["duplicates"] == 0
    assert result["unaudited"] == 0
    assert result["lost_emails"] == 0
    assert result["stuck_runs"] == 0 and result["stuck_claims"] == 0
    # 10 silver partners emailed once each (by the recovery or the next run), 2 platinum held.
    assert result["contacts"] == 10 and result["held"] == 2
    if fault in ("between", "sending"):  # the killed run had committed one email: the sweep sent it
        assert result["victim_emails_sent"] == 1
    # Killed after the SMTP server accepted its email: the partner has it (counted in contacts,
    # once), the record could not say so, and nothing sends it again (before the claim was
    # committed apart from the send, the sweep sent it a second time: duplicates 2).
    assert result["in_doubt"] == (1 if fault == "sent" else 0)
    if fault in FAILPOINTS:  # its worker died: failed past its limit
        assert result["victim_status"] == "failed" and result["victim_failed_audited"]
    else:  # flushed before any worker saw it: re-enqueued from the database and run
        assert result["victim_status"] == "finished"
