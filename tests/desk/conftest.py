import datetime as dt

import pandas as pd
import pytest
from django.conf import settings

from ml import services as ml_services
from ml.models import ModelVersion, ScoringRun
from ml.score_store import scores_persist
from tests.factories import ModelVersionFactory


@pytest.fixture(autouse=True)
def fifty_percent_line(settings):
    """These tests' risks are written around an at-risk level of 50% (the desk reads
    settings.AT_RISK_LEVEL at call time); test_the_default_level_is_the_desks_line checks 30%."""
    settings.AT_RISK_LEVEL = 0.5


def run_scoring(risks: dict, *, as_of: dt.date, version=None) -> ScoringRun:
    """A real scoring run (persistence, comparison with the previous run, summary) whose
    predictions the test chooses: the model is not what these tests are about."""
    from django.utils import timezone

    version = (
        version or ModelVersion.objects.filter(is_active=True).first() or ModelVersionFactory(is_active=True)
    )
    run = ScoringRun.objects.create(model_version=version, started_at=timezone.now(), as_of=as_of)
    rows = []
    for partner, risk in risks.items():
        bucket = "7d" if risk >= settings.AT_RISK_LEVEL else "later"
        rows.append({"pid": partner.pk, "risk": risk, "p_7d": risk * 0.6, "p_30d": risk * 0.3,
                     "p_90d": risk * 0.1, "p_later": 1 - risk, "bucket": bucket})  # fmt: skip
    pred = pd.DataFrame(rows).set_index("pid")
    scores_persist(run=run, pred=pred, drivers={}, current=True, now=timezone.now())  # score_chunk's write
    return ml_services.scoring_run_finish(run_id=run.pk)
