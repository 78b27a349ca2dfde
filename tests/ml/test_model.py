"""The trained model on a small simulated world: consistency, SHAP additivity, drivers, artifacts."""

import numpy as np
import pandas as pd
import pytest

from ml import features as F
from ml.churn_model import AT_RISK_LEVEL, ArtifactChecksumError, load_model, save_model


@pytest.fixture(scope="module")
def holdout(small_world, trained):
    model, _ = trained
    w = small_world
    X = F.build_features(w.partners, w.activity, w.invoices, w.today, churn_table=model.churn_table)
    return X


def test_the_report_has_the_agreed_metrics_and_oracle_figures(trained):
    _, report = trained
    for key in (
        "roc_auc",
        "pr_auc",
        "brier",
        "ece",
        "bucket_macro_f1",
        "bucket_confusion",
        "n_train",
        "n_test",
    ):
        assert report[key] is not None, key
    assert report["bucket_confusion"]["labels"] == ["7d", "30d", "90d", "later"]
    assert 0.6 < report["roc_auc"] <= 1 and 0.6 < report["oracle_auc"] <= 1
    assert report["auc_ratio"] == pytest.approx(report["roc_auc"] / report["oracle_auc"], abs=1e-3)
    assert report["ece"] < 0.1
    # The logistic baseline on the same rows sits beside the model, figure for figure.
    assert 0.5 < report["baseline_roc_auc"] <= 1 and report["baseline_brier"] > 0
    assert report["baseline_ece"] is not None and report["baseline_reliability"]
    assert report["feature_importance"][0]["mean_abs_shap"] > 0
    # Out of time: every test cutoff is after every training cutoff.
    assert max(report["train_cutoffs"]) < min(report["test_cutoffs"])


def test_bucket_probabilities_sum_to_one_and_agree_with_the_risk(trained, holdout):
    model, _ = trained
    pred = model.predict(holdout)
    probs = pred[["p_7d", "p_30d", "p_90d", "p_later"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(pred["p_later"], 1.0 - pred["risk"], atol=1e-12)
    high = pred["risk"] >= AT_RISK_LEVEL  # shown at risk: a churn window, else "Low risk"
    assert high.any() and (~high).any()
    assert (pred.loc[high, "bucket"] != "later").all()
    assert (pred.loc[~high, "bucket"] == "later").all()


def test_base_value_plus_shap_values_equals_the_raw_log_odds(trained, holdout):
    model, _ = trained
    base, phi = model.shap_values(holdout)
    raw = model.raw_log_odds(holdout)
    np.testing.assert_allclose(base + phi.sum(axis=1), raw, atol=1e-6, rtol=0)


def test_drivers_are_three_to_five_sentences_whose_points_add_up_to_the_risk(trained, holdout):
    model, _ = trained
    rows = holdout.iloc[:40]
    drivers = model.drivers(rows)
    for d in drivers:
        assert 3 <= len(d) <= 5
        assert set(d[0]) == {"feature", "text", "value", "points"}
        assert [abs(x["points"]) for x in d] == sorted((abs(x["points"]) for x in d), reverse=True)
        assert all(isinstance(x["text"], str) and x["text"] for x in d)
    # With every feature listed, the points add up to risk - base risk (in points).
    everything = model.drivers(rows, top=100)
    assert not any(x["feature"] == "data_age_days" for d in everything for x in d)
    # ... to the risk less that day's base: the base with the rows' age (the same for all) in it.
    base, phi = model.shap_values(rows)
    base = base + phi[:, model.features.index("data_age_days")]
    base_risk = 1 / (1 + np.exp(-(model.calib_a * base + model.calib_b)))
    risk = model.predict(rows)["risk"].to_numpy()
    total = np.array([sum(x["points"] for x in d) for d in everything])
    # each driver's points are rounded to 0.1
    np.testing.assert_allclose(total, (risk - base_risk) * 100, atol=0.05 * len(model.features))


def test_an_overdue_payment_driver_reads_in_words(trained, holdout):
    model, _ = trained
    overdue = holdout[holdout["days_overdue"] > 20]
    assert len(overdue)
    texts = [x["text"] for d in model.drivers(overdue.iloc[:20], top=100) for x in d]
    assert any(t.startswith("Payment ") and t.endswith("days overdue") for t in texts)


def test_an_artifact_loads_only_with_its_checksum(trained, holdout, tmp_path):
    model, _ = trained
    path = tmp_path / "m.skops"
    sha = save_model(model, path)
    loaded = load_model(path, sha256=sha)
    np.testing.assert_allclose(loaded.predict(holdout)["risk"], model.predict(holdout)["risk"])
    with pytest.raises(ArtifactChecksumError):
        load_model(path, sha256="0" * 64)


def test_training_takes_every_age_of_the_monthly_rows_and_no_label_reaches_the_holdout(small_world):
    """The desk scores every day, so training partner-months are taken 0-25 days after their month
    end (one row per partner-month still), and no 90-day label window reaches the first test cutoff."""
    from ml.training import TRAIN_PHASE_DAYS, phased_training_table, plan_cutoffs

    w = small_world
    first = w.activity["month"].min().date()
    ends, test = plan_cutoffs(first, w.today)
    table = phased_training_table(w.partners, w.activity, w.invoices, ends, labels_before=test[0])
    ages = np.where(table["cutoff"].dt.is_month_end, 0, table["cutoff"].dt.day)
    assert set(np.unique(ages)) == set(TRAIN_PHASE_DAYS)
    assert (table["data_age_days"].to_numpy() == ages).all()
    assert (table["cutoff"] + pd.Timedelta(days=F.HORIZON_DAYS) <= pd.Timestamp(test[0])).all()
    month_end = table["cutoff"] - pd.to_timedelta(table["data_age_days"], unit="D")
    assert set(month_end.dt.date) <= set(ends)
    assert not pd.DataFrame({"p": table["external_id"], "m": month_end}).duplicated().any()
    whole = F.build_training_table(w.partners, w.activity, w.invoices, ends)
    assert abs(len(table) - len(whole)) < 0.05 * len(whole)  # about as many rows as month ends alone
