from io import StringIO

import pytest
from django.core.management import call_command

from agent.models import AgentRun
from agent.tasks import PARTNER_TIME_LIMIT, RUN_SOFT_TIME_LIMIT, RUN_TIME_LIMIT, run_agent
from retention.models import Intervention
from tests.conftest import last_json, scored_partner

pytestmark = pytest.mark.django_db


def test_run_agent_dry_run_prints_a_json_summary_and_contacts_nobody(agent_on, mailoutbox):
    scored_partner(risk=0.95)
    scored_partner(risk=0.5)
    out = StringIO()
    call_command("run_agent", "--dry-run", stdout=out)
    summary = last_json(out)
    assert summary["eligible"] == 1 and summary["scanned"] == 2 and summary["executed"] == 0
    assert summary["not_reached"] == 0  # a dry run reports, it does not stop short
    assert set(summary) >= {"run_id", "held_for_review", "holdouts", "rate_limited", "failed"}
    assert Intervention.objects.count() == 0 and mailoutbox == []


def test_run_agent_acts_like_the_celery_task(agent_on, mailoutbox):
    scored_partner(risk=0.95)
    out = StringIO()
    call_command("run_agent", stdout=out)
    summary = last_json(out)
    assert summary["executed"] == 1 and len(mailoutbox) == 1
    assert AgentRun.objects.get(pk=summary["run_id"]).status == "finished"


def test_setup_periodic_tasks_upserts_every_declared_schedule_once():
    from django_celery_beat.models import PeriodicTask

    out = StringIO()
    call_command("setup_periodic_tasks", stdout=out)
    first = last_json(out)
    call_command("setup_periodic_tasks", stdout=out)
    second = last_json(out)
    assert second["created"] == [] and sorted(second["updated"]) == sorted(first["created"])
    tasks = {t.task: t for t in PeriodicTask.objects.all()}
    assert tasks["agent.run_agent"].interval.every == 15 and tasks["agent.run_agent"].expire_seconds == 600
    assert tasks["agent.check_followups"].crontab.minute == "5"
    assert PeriodicTask.objects.count() == first["total"]


def test_task_time_limits_sit_above_the_llm_timeout_and_below_the_visibility_timeout(settings):
    worst_draft = settings.OPENAI_TIMEOUT * (settings.OPENAI_MAX_RETRIES + 1) * 2
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert worst_draft < PARTNER_TIME_LIMIT < visibility / 2
    assert RUN_SOFT_TIME_LIMIT < RUN_TIME_LIMIT < visibility / 2
    assert run_agent.acks_late and run_agent.soft_time_limit == RUN_SOFT_TIME_LIMIT
