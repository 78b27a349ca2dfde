"""The Model page, as a full page and as its htmx partial (factories, no training)."""

import datetime as dt

import pytest
from django.urls import reverse

from agent.models import AuditEvent
from tests.conftest import htmx
from tests.factories import ModelVersionFactory, PartnerScoreFactory, ScoringRunFactory

METRICS = {
    "roc_auc": 0.78, "pr_auc": 0.44, "brier": 0.078, "ece": 0.012, "bucket_macro_f1": 0.33,
    "oracle_auc": 0.81, "oracle_pr_auc": 0.49, "oracle_brier": 0.074, "oracle_ece": 0.009,
    "oracle_bucket_macro_f1": 0.327, "auc_ratio": 0.963, "n_train": 133870, "n_test": 6244,
    "reliability": [{"bin": 0, "predicted": 0.05, "observed": 0.055, "n": 4861},
                    {"bin": 5, "predicted": 0.54, "observed": 0.63, "n": 87}],
    "oracle_reliability": [{"bin": 0, "predicted": 0.05, "observed": 0.05, "n": 4800}],
    "risk_histogram": [10] * 20,
    "feature_importance": [{"feature": "days_overdue", "mean_abs_shap": 0.34},
                           {"feature": "revenue_vs_plan_1m", "mean_abs_shap": 0.32},
                           {"feature": "region_latam", "mean_abs_shap": 0.01},
                           {"feature": "my_csv_column", "mean_abs_shap": 0.005}],
    "bucket_confusion": {"labels": ["7d", "30d", "90d", "later"],
                         "matrix": [[1, 1, 13, 45], [1, 6, 44, 121], [0, 3, 71, 379], [0, 5, 57, 5497]]},
}  # fmt: skip


@pytest.fixture
def active_version(db):
    return ModelVersionFactory(is_active=True, metrics=METRICS)


def test_the_model_page_shows_metrics_beside_the_oracle_with_pictures(retention_client, active_version):
    PartnerScoreFactory(model_version=active_version, risk_value=0.9)
    PartnerScoreFactory(model_version=active_version, risk_value=0.1)
    run = ScoringRunFactory(model_version=active_version, as_of=dt.date(2027, 2, 28))
    response = retention_client.get(reverse("ml:model"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Oracle (true probabilities)" in html
    assert '<td class="num">0.81</td>' in html and "0.963" in html
    assert html.count("<svg") >= 3  # reliability, risk distribution, importance
    assert f"Current scores of all partners (run {run.pk}, as of 2027-02-28)" in html  # the simulated date
    assert "~7 days" in html and "5497" in html
    # Importance bars read as words; a team's own CSV column keeps its name.
    assert ">Days overdue</text>" in html and ">Revenue vs plan, last month</text>" in html
    assert ">Region: LATAM</text>" in html and ">my_csv_column</text>" in html
    assert "<html" in html


def test_the_model_page_speaks_in_words_before_the_metrics(retention_client, db):
    metrics = {**METRICS, "top_decile_churn_share": 0.47, "at_risk_level": 0.3,
               "shown_windows": {"at_risk": {"n": 300, "churned_7d": 0.08, "churned_90d": 0.52},
                                 "7d": {"n": 40, "churned_7d": 0.41, "churned_90d": 0.9}}}  # fmt: skip
    version = ModelVersionFactory(is_active=True, metrics=metrics)

    html = retention_client.get(reverse("ml:model")).content.decode()

    # The first thing said is a reliability statement, riskiest band first, then the rest.
    first = html.index('id="reliability-sentence"')
    assert first < html.index("Technical metrics")
    assert (
        'id="reliability-sentence">Of partners we showed at 50-60% risk, 63% churned within 90 days' in html
    )
    assert "Of partners we showed at 0-10% risk, 6% churned within 90 days" in html
    assert "The riskiest 10% of partners hold 47% of the churners" in html
    assert "Of partners shown “~7 days”, 41% churned within 7 days." in html
    assert f"Last trained {version.trained_at:%Y-%m-%d}" in html
    # Each technical metric has its one-line reading.
    assert "the chance a random churner is ranked above a random stayer" in html


def test_the_version_picker_swaps_only_the_detail_partial(retention_client, active_version):
    old = ModelVersionFactory(metrics={**METRICS, "roc_auc": 0.7123})
    response = retention_client.get(reverse("ml:model"), {"version": old.pk}, headers=htmx("model-detail"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and 'id="model-detail"' in html
    assert "0.7123" in html and f"Model v{old.pk}" in html


def test_without_a_model_the_page_says_how_to_train_one(retention_client, db):
    response = retention_client.get(reverse("ml:model"))
    assert "train_churn_model" in response.content.decode()


def test_only_managers_can_activate_a_version_and_it_is_audited(
    client, retention_user, manager, active_version
):
    other = ModelVersionFactory(metrics=METRICS)
    client.force_login(retention_user)
    assert client.post(reverse("ml:activate", args=[other.pk])).status_code == 403
    client.force_login(manager)
    response = client.post(reverse("ml:activate", args=[other.pk]))
    assert response.status_code == 302
    other.refresh_from_db()
    active_version.refresh_from_db()
    assert other.is_active and not active_version.is_active
    assert AuditEvent.objects.filter(event_type="model_activated", actor_user=manager).exists()


def test_on_imported_data_the_model_page_shows_the_baseline_and_no_oracle(retention_client, db):
    metrics = {k: v for k, v in METRICS.items() if not k.startswith("oracle") and k != "auc_ratio"}
    metrics.update({"baseline_roc_auc": 0.7412, "baseline_brier": 0.0811, "baseline_ece": 0.0173})
    ModelVersionFactory(is_active=True, metrics=metrics)
    html = retention_client.get(reverse("ml:model")).content.decode()
    assert "Baseline (logistic regression)" in html and "Oracle (true probabilities)" not in html
    assert '<td class="num">0.7412</td>' in html and '<td class="num">0.0173</td>' in html
    assert "No simulator truth for this data" in html
