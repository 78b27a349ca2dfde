"""Train and evaluate the same risk model on a team's own table (no Django).

Column types are inferred: numbers (or text that parses as numbers) are numeric; other
columns with a modest number of distinct values are one-hot encoded (top 30 levels; rare
ones share the all-zero "other"); columns that look like free text or ids (mostly unique)
are dropped and listed in the report. Missing numbers get the training median and a
``<col>_missing`` flag, so the trees and SHAP never see NaN.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ml.churn_model import (
    ChurnModel,
    _hash_share,
    baseline_metrics,
    binary_metrics,
    fit_baseline,
    fit_churn_model,
    reliability_curve,
    risk_histogram,
)

POSITIVE = {"yes", "y", "true", "t", "1", "1.0", "churned", "churn"}
NEGATIVE = {"no", "n", "false", "f", "0", "0.0", "retained", "active", "stayed"}
MAX_LEVELS = 30


class TableError(ValueError):
    pass


def parse_labels(values: pd.Series) -> np.ndarray:
    """yes/no, true/false or 1/0 (any case) -> 1/0; anything else is an error naming it."""
    text = values.astype(str).str.strip().str.lower()
    bad = sorted(set(text[~text.isin(POSITIVE | NEGATIVE)]))
    if bad:
        raise TableError(f"label values not understood: {bad[:5]} (use yes/no, true/false or 1/0)")
    y = text.isin(POSITIVE).to_numpy().astype(int)
    if len(np.unique(y)) < 2:
        raise TableError("the label has a single value; nothing to learn")
    return y


def infer_schema(df: pd.DataFrame) -> dict:
    numeric, categorical, dropped = [], {}, []
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            numeric.append(col)
            continue
        parsed = pd.to_numeric(s, errors="coerce")
        if s.notna().sum() and parsed.notna().sum() >= 0.95 * s.notna().sum():
            numeric.append(col)
            continue
        levels = s.astype(str).str.strip().value_counts()
        if len(levels) > max(50, 0.5 * len(s)):
            dropped.append(col)  # free text or an id: nothing a tree can generalise from
            continue
        categorical[col] = [str(v) for v in levels.index[:MAX_LEVELS]]
    return {"numeric": numeric, "categorical": categorical, "dropped": dropped}


def encode(df: pd.DataFrame, schema: dict) -> pd.DataFrame:
    out = {}
    for col in schema["numeric"]:
        v = (
            pd.to_numeric(df[col], errors="coerce").astype(float)
            if col in df
            else pd.Series(np.nan, index=df.index)
        )
        if col in schema["medians"]:
            out[f"{col}_missing"] = v.isna().astype(float)
        out[col] = v.fillna(schema["medians"].get(col, 0.0))
    for col, levels in schema["categorical"].items():
        s = df[col].astype(str).str.strip() if col in df else pd.Series("", index=df.index)
        for level in levels:
            out[f"{col}={level}"] = (s == level).astype(float)
    return pd.DataFrame(out, index=df.index)


def train_on_table(
    df: pd.DataFrame,
    *,
    target: str,
    id_col: str | None = None,
    test_df: pd.DataFrame | None = None,
    seed: int = 0,
    test_share: float = 0.25,
) -> tuple[ChurnModel, dict]:
    t0 = time.perf_counter()
    if target not in df.columns:
        raise TableError(f"no column {target!r}; columns are {list(df.columns)}")
    if id_col and id_col not in df.columns:
        raise TableError(f"no id column {id_col!r}")
    if test_df is None:
        ids = df[id_col].astype(str).to_numpy() if id_col else np.arange(len(df)).astype(str)
        is_test = _hash_share(ids, seed + 11) < test_share
        train_df, test_df = df[~is_test], df[is_test]
    else:
        train_df = df
    y_train = parse_labels(train_df[target])
    y_test = parse_labels(test_df[target]) if len(test_df) else np.array([], dtype=int)
    inputs = train_df.drop(columns=[c for c in (target, id_col) if c])
    schema = infer_schema(inputs)
    numeric = inputs[schema["numeric"]].apply(pd.to_numeric, errors="coerce")
    schema["medians"] = {c: float(numeric[c].median()) for c in schema["numeric"] if numeric[c].isna().any()}
    schema["onehot"] = {
        f"{col}={level}": [col, level] for col, levels in schema["categorical"].items() for level in levels
    }
    X_train = encode(train_df, schema)
    X_test = encode(test_df, schema)
    features = list(X_train.columns)
    groups = train_df[id_col].astype(str).to_numpy() if id_col else np.arange(len(train_df)).astype(str)
    model = fit_churn_model(
        X_train, y_train, groups=groups, features=features, seed=seed, kind="csv", schema=schema
    )
    risk = model.predict(X_test)["risk"].to_numpy()
    report = binary_metrics(y_test, risk)
    baseline = fit_baseline(X_train, y_train, features=features)
    report.update(baseline_metrics(baseline, X_test, y_test, features=features))
    report.update(
        {
            "bucket_macro_f1": None,  # a team's table has no time-to-churn column
            "bucket_confusion": None,
            "reliability": reliability_curve(y_test, risk),
            "risk_histogram": risk_histogram(risk),
            "feature_importance": model.global_importance(X_test.head(3000)) if len(X_test) else [],
            "n_train": len(X_train),
            "n_test": len(X_test),
            "columns": {
                "numeric": schema["numeric"],
                "categorical": list(schema["categorical"]),
                "dropped": schema["dropped"],
            },
            "seconds": round(time.perf_counter() - t0, 2),
        }
    )
    return model, report
