"""Backtest and drift: validate_model judges past scores by what happened, and says when the
data has moved away from the training window."""

import datetime as dt
import json
from io import StringIO

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from churnsite.schedules import PERIODIC_TASKS
from ml import tasks
from ml.backtest import PSI_WARNING, population_stability
from ml.models import RiskScore, ValidationRun
from tests.factories import ModelVersionFactory, PartnerFactory, ScoringRunFactory
from tests.ml.backtest_helpers import expected_curve

SCORED_ON = dt.date(2026, 3, 31)


def test_the_stability_index_of_a_distribution_against_itself_is_about_zero_and_of_a_shifted_one_large():
    rng = np.random.default_rng(3)
    training = pd.Series(rng.gamma(2.0, 10.0, 5_000))
    assert population_stability(training, pd.Series(rng.gamma(2.0, 10.0, 5_000))) < 0.02
    assert population_stability(training, training) == pytest.approx(0.0, abs=1e-9)
    assert population_stability(training, training * 1.8) > PSI_WARNING
    flags = pd.Series(rng.random(5_000) < 0.1)
    assert population_stability(flags, pd.Series(rng.random(5_000) < 0.5)) > PSI_WARNING


def score(partner, run, risk: float) -> RiskScore:
    return RiskScore.objects.create(
        partner=partner, model_version=run.model_version, run=run, risk=risk, p_7d=risk / 2,
        p_30d=risk / 4, p_90d=risk / 4, p_later=1 - risk, bucket="later", scored_at=timezone.now(),
    )  # fmt: skip


@pytest.mark.django_db
def test_validate_model_judges_only_live_scores_old_enough_and_counts_what_happened():
    live = ScoringRunFactory(as_of=SCORED_ON)
    recent = ScoringRunFactory(as_of=SCORED_ON + dt.timedelta(days=60), model_version=live.model_version)
    backfill = ScoringRunFactory(
        as_of=SCORED_ON - dt.timedelta(days=30), backfill=True, model_version=live.model_version
    )
    rng = np.random.default_rng(5)
    for _ in range(120):
        risk = float(rng.random())
        churns = rng.random() < risk
        when = SCORED_ON + dt.timedelta(days=int(rng.integers(1, 150))) if churns else None
        partner = PartnerFactory(
            joined_on=dt.date(2024, 1, 1), status="churned" if when else "active", churned_on=when
        )
        for run in (live, recent, backfill):
            score(partner, run, risk)
    gone = PartnerFactory(
        joined_on=dt.date(2024, 1, 1), status="churned", churned_on=SCORED_ON - dt.timedelta(days=3)
    )
    score(gone, live, 0.95)  # had left before the score: not judged

    out = StringIO()
    call_command("validate_model", "--as-of", "2026-07-15", stdout=out)
    summary = json.loads(out.getvalue().strip().splitlines()[-1])

    expected = expected_curve(dt.date(2026, 7, 15))
    assert {b["bin"]: (b["n"], b["churned"]) for b in summary["reliability"]} == expected
    assert summary["scores"] == sum(n for n, _ in expected.values()) == 120  # the live run only
    assert summary["scored_until"] == "2026-04-16" and summary["churned"] == sum(
        c for _, c in expected.values()
    )
    run = ValidationRun.objects.get(pk=summary["validation"])
    assert run.reliability == summary["reliability"] and run.as_of == dt.date(2026, 7, 15)


@pytest.mark.django_db
def test_the_model_page_says_what_happened_to_past_scores_when_last_validated_and_warns_of_drift(
    retention_client,
):
    version = ModelVersionFactory(is_active=True, metrics={"roc_auc": 0.8})
    ValidationRun.objects.create(
        model_version=version, as_of=dt.date(2026, 7, 15), scored_until=dt.date(2026, 4, 16), n_scores=140,
        n_churned=40, reliability=[{"bin": 6, "n": 25, "churned": 16, "predicted": 0.64, "observed": 0.64},
                                   {"bin": 1, "n": 115, "churned": 24, "predicted": 0.15, "observed": 0.2087}],
        psi={"days_overdue": 0.41, "trend_velocity": 0.03}, max_psi=0.41,
    )  # fmt: skip
    html = retention_client.get(reverse("ml:model")).content.decode()
    assert "Of partners shown at 60-70%, 64% churned within 90 days (16 of 25 scores)." in html
    assert "Of partners shown at 10-20%, 21% churned within 90 days (24 of 115 scores)." in html
    assert html.index("60-70%, 64%") < html.index("10-20%, 21%")  # riskiest first
    validated = ValidationRun.objects.get().created_at
    assert f"last validated {timezone.localtime(validated):%Y-%m-%d %H:%M} against what happened" in html
    assert 'id="drift-warning"' in html and "Days overdue" in html.split('id="drift-warning"')[1][:600]


@pytest.mark.django_db
def test_no_drift_warning_when_every_feature_is_stable(retention_client):
    ModelVersionFactory(is_active=True, metrics={"roc_auc": 0.8})
    ValidationRun.objects.create(
        as_of=dt.date(2026, 7, 15),
        scored_until=dt.date(2026, 4, 16),
        psi={"days_overdue": 0.02},
        max_psi=0.02,
    )
    html = retention_client.get(reverse("ml:model")).content.decode()
    assert 'id="drift-warning"' not in html and 'id="drift"' in html
    assert "No scores made 90+ days before the end of the data (2026-07-15) yet" in html


def test_the_nightly_validation_is_declared_in_the_one_schedules_module():
    assert {"name": "nightly model validation (backtest and drift)", "task": "ml.tasks.validate_model",
            "crontab": {"minute": "45", "hour": "3"}} in PERIODIC_TASKS  # fmt: skip
    assert tasks.validate_model.name == "ml.tasks.validate_model"


@pytest.mark.django_db
def test_managers_read_validation_runs_in_the_admin_but_cannot_add_change_or_delete_them(manager_client):
    run = ValidationRun.objects.create(
        model_version=ModelVersionFactory(), as_of=dt.date(2026, 6, 30), scored_until=SCORED_ON,
        n_scores=40, n_churned=7, max_psi=0.31,
    )  # fmt: skip
    listing = manager_client.get(reverse("admin:ml_validationrun_changelist"))
    assert listing.status_code == 200
    assert f"Validation {run.pk} as of 2026-06-30" in listing.content.decode()
    assert reverse("admin:ml_validationrun_add") not in listing.content.decode()
    detail = manager_client.get(reverse("admin:ml_validationrun_change", args=[run.pk]))
    assert detail.status_code == 200 and b"Save" not in detail.content
    assert (
        manager_client.post(
            reverse("admin:ml_validationrun_delete", args=[run.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert manager_client.get(reverse("admin:ml_validationrun_add")).status_code == 403
    assert ValidationRun.objects.filter(pk=run.pk).exists()
