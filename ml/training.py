"""Training and out-of-time evaluation on partner history frames (no Django).

Cutoffs are month ends. The holdout is out-of-time *and* out-of-partner: the latest
``test_cutoffs`` labelled cutoffs (cutoff + 90 days <= today) of a random 20% of partners
never seen in training. Training uses the other partners at cutoffs whose 90-day label
window closed before the first test cutoff, so no training label peeks into the test period.

The desk scores every day, so each training partner-month is taken at one of
``TRAIN_PHASE_DAYS`` after its month end (see ``phased_training_table``); the holdout stays at
the month ends, where the figures of earlier reports were measured.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from ml import features as F
from ml.churn_model import (
    AT_RISK_LEVEL,
    ChurnModel,
    _hash_share,
    baseline_metrics,
    binary_metrics,
    bucket_from_probabilities,
    bucket_metrics,
    fit_baseline,
    fit_churn_model,
    reliability_curve,
    risk_histogram,
)

OracleFn = Callable[[dt.date, int], pd.Series]  # (cutoff, horizon_days) -> P(churn) by external_id


# Days after a month end at which a training partner-month is taken, rotating per partner and
# month. Month ends alone taught the model data 0 days old only: scored on the 20th, a step
# down 20 days before the month's end read as 20 days old when it was 40, and the churn-window
# F1 fell to 0.46 of the oracle's (0.92 at month ends; docs/simulator.md, "Scored mid-month").
TRAIN_PHASE_DAYS = (0, 5, 10, 15, 20, 25)


def plan_cutoffs(first_month: dt.date, today: dt.date, *, test_cutoffs: int = 3, warmup_months: int = 3):
    labelled = [
        c
        for c in F.monthly_cutoffs(pd.Timestamp(first_month) + pd.DateOffset(months=warmup_months), today)
        if c + dt.timedelta(days=F.HORIZON_DAYS) <= today
    ]
    if len(labelled) < test_cutoffs + 2:
        raise ValueError(f"not enough labelled history: {len(labelled)} cutoffs before {today}")
    test = labelled[-test_cutoffs:]
    train = [c for c in labelled if c + dt.timedelta(days=F.HORIZON_DAYS) <= test[0]]
    if not train:
        train = labelled[:-test_cutoffs]
    return train, test


def data_end(partners: pd.DataFrame, activity: pd.DataFrame, invoices: pd.DataFrame) -> dt.date:
    """The last day the history covers: the latest dated event (payment, invoice, churn) or
    the end of the last month of activity."""
    candidates = [
        pd.to_datetime(invoices["paid_on"]).max(),
        pd.to_datetime(invoices["issued_on"]).max(),
        pd.to_datetime(partners["churned_on"]).max(),
        pd.to_datetime(activity["month"]).max() + pd.offsets.MonthEnd(0),
    ]
    return max(c for c in candidates if pd.notna(c)).date()


def train_and_evaluate(
    partners: pd.DataFrame,
    activity: pd.DataFrame,
    invoices: pd.DataFrame,
    *,
    today: dt.date,
    seed: int = 0,
    test_share: float = 0.2,
    test_cutoffs: int = 3,
    max_train_rows: int = 400_000,
    oracle: OracleFn | None = None,
    key: str = "external_id",
    at_risk: float = AT_RISK_LEVEL,
) -> tuple[ChurnModel, dict]:
    t0 = time.perf_counter()
    first_month = pd.to_datetime(activity["month"]).min().date()
    train_cut, test_cut = plan_cutoffs(first_month, today, test_cutoffs=test_cutoffs)
    is_test_partner = holdout_partners(partners, key=key, seed=seed, test_share=test_share)
    train_partners = partners[~is_test_partner]
    test_partners = partners[is_test_partner]

    train = phased_training_table(
        train_partners, activity, invoices, train_cut, labels_before=test_cut[0], key=key, seed=seed
    )
    # Rows in a fixed order, whatever order the database returned them in: the trees' early
    # stopping and the folds draw rows by position, and the same history must train the same
    # model (an exported and re-imported world ranks its partners the same way).
    train = train.sort_values(["cutoff", key], kind="stable").reset_index(drop=True)
    if len(train) > max_train_rows:
        train = train.sample(n=max_train_rows, random_state=seed)
    churn_table = F.fit_churn_table(train)
    train = _with_churn_table(train, churn_table)
    test = F.build_training_table(test_partners, activity, invoices, test_cut, key=key)
    test = _with_churn_table(test, churn_table)
    t_features = time.perf_counter() - t0

    model = fit_churn_model(
        train,
        train["label"].to_numpy(),
        groups=train[key].to_numpy(),
        bucket=train["bucket"].to_numpy(),
        features=F.FEATURES,
        churn_table=churn_table,
        seed=seed,
    )
    t_fit = time.perf_counter() - t0 - t_features

    pred = model.predict(test, at_risk=at_risk)
    report = evaluate(test, pred, model)
    baseline = fit_baseline(train, train["label"].to_numpy(), features=F.FEATURES)
    report.update(baseline_metrics(baseline, test, test["label"].to_numpy(), features=F.FEATURES))
    t_baseline = time.perf_counter() - t0 - t_features - t_fit
    report["at_risk_level"] = at_risk
    sample = test.sample(n=min(len(test), 3000), random_state=seed)
    report["feature_importance"] = model.global_importance(sample)
    if oracle is not None:
        report.update(oracle_metrics(test, pred, oracle, key=key, at_risk=at_risk))
    report.update(
        {
            "n_train": len(train),
            "n_test": len(test),
            "n_train_partners": int(train[key].nunique()),
            "n_test_partners": int(test[key].nunique()),
            "train_cutoffs": [str(c) for c in train_cut],
            "train_phase_days": list(TRAIN_PHASE_DAYS),
            "test_cutoffs": [str(c) for c in test_cut],
            "window_start": str(train_cut[0]),
            "window_end": str(test_cut[-1]),
            "calibration": {"a": round(model.calib_a, 5), "b": round(model.calib_b, 5)},
            "timings": {
                "features_s": round(t_features, 2),
                "fit_s": round(t_fit, 2),
                "baseline_s": round(t_baseline, 2),
            },
        }
    )
    return model, report


def holdout_partners(
    partners: pd.DataFrame, *, key: str = "external_id", seed: int = 0, test_share: float = 0.2
) -> np.ndarray:
    """Which partners train_and_evaluate holds out (a stable hash of the id): a boolean mask."""
    return _hash_share(partners[key].to_numpy(), seed + 7) < test_share


def phased_training_table(
    partners: pd.DataFrame,
    activity: pd.DataFrame,
    invoices: pd.DataFrame,
    month_ends: list[dt.date],
    *,
    labels_before: dt.date,
    key: str = "external_id",
    seed: int = 0,
) -> pd.DataFrame:
    """F.build_training_table with each partner-month taken TRAIN_PHASE_DAYS[i] days after its
    month end, i rotating with the partner's group and the month: one row per partner-month
    as before (same size, same fit time) over every age of the monthly data. A shifted cutoff
    whose 90-day label would reach ``labels_before`` stays at its month end. Each group's
    history is sliced out once, so every row's features are computed once; the six times as
    many calls cost some fixed overhead (features 23.6 -> 34.3 s at 100k partners)."""
    phases = len(TRAIN_PHASE_DAYS)
    group = np.minimum((_hash_share(partners[key].to_numpy(), seed + 3) * phases).astype(int), phases - 1)
    horizon = dt.timedelta(days=F.HORIZON_DAYS)
    parts = []
    for g in range(phases):
        members = partners[group == g]
        if not len(members):
            continue
        ids = members[key]
        cutoffs = []
        for j, end in enumerate(month_ends):
            shifted = end + dt.timedelta(days=TRAIN_PHASE_DAYS[(g + j) % phases])
            cutoffs.append(shifted if shifted + horizon <= labels_before else end)
        parts.append(
            F.build_training_table(
                members,
                activity[activity[key].isin(ids)],
                invoices[invoices[key].isin(ids)],
                cutoffs,
                key=key,
            )
        )
    return pd.concat(parts, ignore_index=True)


def _with_churn_table(table: pd.DataFrame, churn_table: dict) -> pd.DataFrame:
    rate, speed = F.apply_churn_table(churn_table, table["tier"].to_numpy(), table["segment"].to_numpy())
    table = table.copy()
    table["historical_churn_rate"] = rate
    table["historical_churn_speed"] = speed
    return table


def evaluate(test: pd.DataFrame, pred: pd.DataFrame, model: ChurnModel) -> dict:
    y = test["label"].to_numpy()
    risk = pred["risk"].to_numpy()
    report = binary_metrics(y, risk)
    report.update(bucket_metrics(test["bucket"].to_numpy(), pred["bucket"].to_numpy()))
    report["reliability"] = reliability_curve(y, risk)
    report["risk_histogram"] = risk_histogram(risk)
    # For the Model page in words: how concentrated churn is in the riskiest tenth, and how
    # often the shown churn window came true.
    top = risk >= np.quantile(risk, 0.9) if len(risk) else np.zeros(0, bool)
    report["top_decile_churn_share"] = round(float(y[top].sum() / y.sum()), 4) if y.sum() else None
    days = test["days_to_churn"].to_numpy()
    shown = pred["bucket"].to_numpy()
    windows = {}
    for name, mask in (("at_risk", shown != "later"), ("7d", shown == "7d"), ("30d", shown == "30d")):
        n = int(mask.sum())
        windows[name] = {
            "n": n,
            "churned_7d": round(float((days[mask] <= 7).mean()), 4) if n else None,
            "churned_90d": round(float((days[mask] <= 90).mean()), 4) if n else None,
        }
    report["shown_windows"] = windows
    return report


def oracle_metrics(
    test: pd.DataFrame, pred: pd.DataFrame, oracle: OracleFn, *, key: str, at_risk: float = AT_RISK_LEVEL
) -> dict:
    """The simulator's true probabilities at the same holdout rows: the best any model could do."""
    frames = []
    for cutoff, rows in test.groupby("cutoff"):
        c = pd.Timestamp(cutoff).date()
        probs = {h: oracle(c, h) for h in F.BUCKET_LIMITS}
        part = pd.DataFrame({f"o_{h}": probs[h].reindex(rows[key].to_numpy()).to_numpy() for h in probs})
        part.index = rows.index
        frames.append(part)
    o = pd.concat(frames).reindex(test.index)
    ok = o.notna().all(axis=1).to_numpy()
    y = test["label"].to_numpy()[ok]
    p90 = o["o_90"].to_numpy()[ok]
    om = binary_metrics(y, p90)
    q = np.column_stack(
        [
            o["o_7"].to_numpy()[ok],
            (o["o_30"] - o["o_7"]).to_numpy()[ok],
            (o["o_90"] - o["o_30"]).to_numpy()[ok],
        ]
    )
    ob = bucket_metrics(
        test["bucket"].to_numpy()[ok], bucket_from_probabilities(p90, np.clip(q, 0, None), at_risk=at_risk)
    )
    model_auc = binary_metrics(y, pred["risk"].to_numpy()[ok])["roc_auc"]
    return {
        "oracle_auc": om["roc_auc"],
        "oracle_pr_auc": om["pr_auc"],
        "oracle_brier": om["brier"],
        "oracle_ece": om["ece"],
        "oracle_bucket_macro_f1": ob["bucket_macro_f1"],
        "oracle_reliability": reliability_curve(y, p90),
        "oracle_rows": int(ok.sum()),
        "auc_ratio": round(model_auc / om["roc_auc"], 4) if model_auc and om["roc_auc"] else None,
    }
