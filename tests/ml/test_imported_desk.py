"""The desk on a team's own history (no simulator state): every page works, the Model page
shows the baseline, and after a later import of churn events, what happened to past scores."""

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from ml.models import PartnerScore, RiskScore, ScoringRun, SimulatedWorld
from ml.sim.today import scoring_as_of
from ml.wording import realized_sentences
from retention.models import Partner
from retention.selectors import partner_live_feed
from tests.ml.backtest_helpers import expected_curve
from tests.ml.conftest import load_world


def last_json(out: StringIO) -> dict:
    return json.loads(out.getvalue().strip().splitlines()[-1])


def imported_world(small_world, tmp_path) -> None:
    """The small world's observable history as a team would bring it: exported to the
    contract's files, the database emptied, the files imported; nothing simulated left."""
    load_world(small_world)
    call_command("export_data", str(tmp_path / "export"), stdout=StringIO())
    Partner.objects.all().delete()
    call_command("import_data", str(tmp_path / "export"), stdout=StringIO())
    assert not SimulatedWorld.objects.exists() and Partner.objects.exists()


@pytest.mark.slow
def test_on_imported_data_the_desk_pages_work_and_the_model_page_shows_the_baseline_then_what_happened(
    db, small_world, tmp_path, settings, retention_client
):
    settings.MEDIA_ROOT = tmp_path / "media"
    imported_world(small_world, tmp_path)
    call_command("train_churn_model", stdout=StringIO(), stderr=StringIO())
    call_command("score_partners", stdout=StringIO())
    end = scoring_as_of()
    assert ScoringRun.objects.get().as_of == end  # the end of the imported history

    # Every desk page renders on it.
    top = partner_live_feed().first()
    for url, text in [
        (reverse("retention:home"), top.external_id),
        (reverse("retention:partner_detail", args=[top.external_id]), f"{top.external_id} · {top.name}"),
        (reverse("retention:outcomes"), "Outcomes &amp; ROI"),
        (reverse("retention:intervention_list"), "Intervention Log"),
    ]:
        response = retention_client.get(url)
        assert response.status_code == 200 and text in response.content.decode(), url

    model_page = retention_client.get(reverse("ml:model")).content.decode()
    assert "Baseline (logistic regression)" in model_page and "Oracle (true probabilities)" not in model_page
    assert 'id="realized"' not in model_page  # nothing validated yet

    # Later, the team imports the churn events of the months after the scores: the riskier
    # partners mostly, a few others, on dates up to 100 days after the scoring run.
    scores = list(PartnerScore.objects.select_related("partner").order_by("partner_id"))
    lines = ["external_id,churned_on,reason"]
    for i, s in enumerate(scores):
        if s.risk >= 0.3 or i % 9 == 0 or i == len(scores) - 1:
            # The last partner's event is the latest: 100 days after the scores.
            days = 100 if i == len(scores) - 1 else 5 + i % 95
            lines.append(f"{s.partner.external_id},{end + dt.timedelta(days=days)},left")
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "churn_events.csv").write_text("\n".join(lines) + "\n")
    imported = StringIO()
    call_command("import_data", str(tmp_path / "later"), stdout=imported)
    assert last_json(imported)["written"] is True
    assert scoring_as_of() == end + dt.timedelta(days=100)

    out = StringIO()
    call_command("validate_model", stdout=out)
    summary = last_json(out)
    expected = expected_curve(end + dt.timedelta(days=100))
    assert {b["bin"]: (b["n"], b["churned"]) for b in summary["reliability"]} == expected
    assert summary["scores"] == RiskScore.objects.count() == len(scores)
    assert summary["churned"] == sum(c for _, c in expected.values()) > 0

    model_page = retention_client.get(reverse("ml:model")).content.decode()
    sentences = realized_sentences(summary["reliability"])
    assert sentences and all(s in model_page for s in sentences)
    assert "last validated" in model_page and 'id="drift"' in model_page
    assert "Baseline (logistic regression)" in model_page
