"""The guardrails with real Celery worker processes on Redis and PostgreSQL."""

import re

import pytest
from django.db import connection

from agent import services
from agent.models import AgentConfig, AgentRun, AuditEvent
from agent.tasks import execute_intervention, run_agent
from retention.models import Intervention
from tests.agent.workers import WorkerPool, make_partners

pytestmark = [pytest.mark.celery, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def workers(django_db_setup, django_db_blocker, tmp_path_factory):
    if connection.vendor != "postgresql":
        pytest.skip("worker tests need PostgreSQL (set DATABASE_URL)")
    from django.conf import settings

    if not settings.REDIS_URL:
        pytest.skip("worker tests need Redis (set REDIS_URL)")
    pool = WorkerPool(count=4, outbox=tmp_path_factory.mktemp("outbox"))
    try:
        pool.start()
        yield pool
    finally:
        pool.stop()


@pytest.fixture
def outbox(workers):
    for path in workers.outbox.glob("*"):
        path.unlink()
    return workers


def enable(**fields) -> AgentConfig:
    config, _ = AgentConfig.objects.get_or_create(pk=1)
    for name, value in {"enabled": True, **fields}.items():
        setattr(config, name, value)
    config.save()
    return config


def test_four_workers_never_exceed_the_hourly_cap_nor_contact_a_partner_twice(outbox):
    enable(control_fraction=0.1, max_per_hour=50)
    partners = make_partners(500, platinum_every=10)
    # Two overlapping scheduled-style runs plus 150 per-partner tasks, all at once on 4 processes.
    runs = [services.agent_run_create(trigger=AgentRun.Trigger.MANUAL) for _ in range(2)]
    singles = AgentRun.objects.bulk_create(AgentRun(trigger=AgentRun.Trigger.PARTNER) for _ in range(150))
    # Singles first, so the batch runs meet partners already claimed and a budget in use
    # (otherwise one batch run could take all 50 before a single task commits).
    results = [
        execute_intervention.apply_async(args=[run.pk, partner.pk], queue=outbox.queue)
        for run, partner in zip(singles, partners[::3], strict=False)
    ]
    results += [run_agent.apply_async(args=[run.pk], queue=outbox.queue) for run in runs]
    for result in results:
        result.get(timeout=240)

    agent = Intervention.objects.filter(source=Intervention.Source.AGENT)
    contacts = agent.exclude(action=Intervention.Action.HOLDOUT)
    assert contacts.count() == 50  # the cap is reached, and never passed
    assert agent.values("partner").distinct().count() == agent.count()  # no partner twice
    sent = contacts.filter(sent_at__isnull=False)
    held = contacts.filter(review_status=Intervention.Review.AWAITING)
    assert sent.count() + held.count() == 50
    assert not held.filter(sent_at__isnull=False).exists()
    assert set(held.values_list("partner__tier", flat=True)) <= {"platinum"}
    # As many audit events as actions, and as many messages as the log says were sent.
    events = AuditEvent.objects
    assert events.filter(event_type="intervention_logged").count() == agent.count()
    assert events.filter(event_type="email_drafted").count() == contacts.count()
    assert events.filter(event_type="email_sent").count() == sent.count()
    assert events.filter(event_type="held_for_review").count() == held.count()
    assert events.filter(event_type="holdout_assigned").count() == agent.filter(action="holdout").count()
    messages = outbox.sent_messages()
    assert len(messages) == sent.count()
    recipients = sorted(re.search(r"^To: (.+)$", m, re.M).group(1) for m in messages)
    assert recipients == sorted(sent.values_list("partner__contact_email", flat=True))
    assert events.filter(event_type="rate_limited").exists()
    assert not AgentRun.objects.filter(status=AgentRun.Status.RUNNING).exists()
    # The work really was shared: contacts came from several runs (processes) at once.
    assert contacts.values("agent_run").distinct().count() > 1


def test_two_overlapping_runs_make_no_duplicates(outbox):
    enable(control_fraction=0.0, max_per_hour=50)
    make_partners(30)
    runs = [services.agent_run_create(trigger=AgentRun.Trigger.MANUAL) for _ in range(2)]
    results = [run_agent.apply_async(args=[run.pk], queue=outbox.queue) for run in runs]
    for result in results:
        result.get(timeout=120)
    agent = Intervention.objects.filter(source=Intervention.Source.AGENT)
    assert agent.count() == 30
    assert agent.values("partner").distinct().count() == 30
    assert len(outbox.sent_messages()) == 30
    statuses = sorted(AgentRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True))
    assert set(statuses) <= {"finished", "skipped"}
    # A run redelivered to a worker does nothing the second time.
    again = run_agent.apply_async(args=[runs[0].pk], queue=outbox.queue).get(timeout=60)
    assert again["note"] == "already processed"
    assert Intervention.objects.count() == 30
