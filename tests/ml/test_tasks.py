"""The nightly scoring task: a group of chunk tasks over the same service the command uses."""

from churnsite.celery import app
from churnsite.schedules import PERIODIC_TASKS
from ml import tasks


def test_the_nightly_schedule_is_declared_for_setup_periodic_tasks():
    assert [spec for spec in PERIODIC_TASKS if spec["task"].startswith("ml.")] == [
        {
            "name": "nightly scoring",
            "task": "ml.tasks.score_all_partners",
            "crontab": {"minute": "30", "hour": "2"},
        },
        {
            "name": "nightly model validation (backtest and drift)",
            "task": "ml.tasks.validate_model",
            "crontab": {"minute": "45", "hour": "3"},
        },
    ]
    assert "ml.tasks.score_all_partners" in app.tasks and "ml.tasks.validate_model" in app.tasks


def test_the_nightly_task_skips_quietly_when_no_model_is_active(db):
    assert "skipped" in tasks.score_all_partners.apply().get()
