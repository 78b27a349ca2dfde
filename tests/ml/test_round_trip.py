"""Round trip: a simulated world exported to the contract's files and imported into an empty
database with no simulator state trains the same model and fills the same Live Feed."""

from io import StringIO

import pytest
from django.core.management import call_command

from ml.models import ModelVersion, PartnerScore, RiskScore, ScoringRun, SimulatedWorld
from retention.models import Invoice, MonthlyActivity, Partner
from retention.selectors import partner_live_feed
from tests.conftest import last_json
from tests.ml.conftest import load_world


def train_and_score() -> tuple[dict, list[str]]:
    out = StringIO()
    call_command("train_churn_model", stdout=out, stderr=StringIO())
    report = last_json(out)
    call_command("score_partners", stdout=StringIO())
    top = list(partner_live_feed().values_list("external_id", flat=True)[:50])
    return report, top


@pytest.mark.slow
def test_an_exported_world_imported_into_an_empty_database_gives_the_same_model_and_feed(
    db, small_world, tmp_path, settings
):
    settings.MEDIA_ROOT = tmp_path / "media"
    load_world(small_world)
    SimulatedWorld.objects.create(
        seed=7, n_partners=1500, months=18, started_on=small_world.today, today=small_world.today,
        state_path="worlds/missing.json.gz",
    )  # fmt: skip
    simulated, simulated_top = train_and_score()
    exported = StringIO()
    call_command("export_data", str(tmp_path / "export"), stdout=exported)
    rows = last_json(exported)["rows"]
    assert rows["partners"] == 1500 and rows["activity"] == MonthlyActivity.objects.count()

    # An empty database: no partners, no history, no scores, no simulated world.
    PartnerScore.objects.all().delete()
    RiskScore.objects.all().delete()
    ScoringRun.objects.all().delete()
    Partner.objects.all().delete()
    SimulatedWorld.objects.all().delete()
    assert not Invoice.objects.exists()

    imported = StringIO()
    call_command("import_data", str(tmp_path / "export"), stdout=imported)
    assert last_json(imported)["written"] is True
    real, real_top = train_and_score()

    assert abs(real["roc_auc"] - simulated["roc_auc"]) <= 0.01
    assert "oracle_auc" not in real and real["baseline_roc_auc"] is not None
    assert len(real_top) == 50 and set(real_top) == set(simulated_top)
    assert ModelVersion.objects.get(is_active=True).pk == real["model_version"]
