"""Backtest and drift, plain pandas: what happened to the partners past scores described, and
how far today's features have moved from the training window's.

Realized reliability: for scores made at least ``horizon_days`` before the data's today, per
10-point band of the risk shown, the share of those partners that churned within the horizon
after the score ("of partners shown at 60-70%, 64% churned"). Population stability index
(PSI) per feature: sum over bins of (actual - expected) * ln(actual / expected), with the
bins cut at the training distribution's deciles; above 0.25 the population has shifted
enough that the model's figures may no longer hold (the usual rule of thumb).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PSI_WARNING = 0.25
_FLOOR = 1e-4  # an empty bin's share, so ln() stays finite


def realized_reliability(scores: pd.DataFrame, *, horizon_days: int = 90, bins: int = 10) -> list[dict]:
    """``scores``: one row per past score with ``risk``, ``scored_on`` and the partner's
    ``churned_on`` (NaT if still active). A partner who had already churned on the score's
    date is left out (the history arrived late); churned = churned_on within
    (scored_on, scored_on + horizon]. One dict per band with scores, lowest band first."""
    if scores.empty:
        return []
    scored_on = pd.to_datetime(scores["scored_on"])
    churned_on = pd.to_datetime(scores["churned_on"])
    gone = churned_on.notna() & (churned_on <= scored_on)
    s = scores.loc[~gone.to_numpy()]
    scored_on, churned_on = scored_on[~gone], churned_on[~gone]
    churned = churned_on.notna() & (churned_on <= scored_on + pd.Timedelta(days=horizon_days))
    band = np.minimum((s["risk"].to_numpy(dtype=float) * bins).astype(int), bins - 1)
    frame = pd.DataFrame(
        {"band": band, "risk": s["risk"].to_numpy(dtype=float), "churned": churned.to_numpy()}
    )
    out = []
    for b, g in frame.groupby("band", sort=True):
        out.append(
            {
                "bin": int(b),
                "n": len(g),
                "churned": int(g["churned"].sum()),
                "predicted": round(float(g["risk"].mean()), 4),
                "observed": round(float(g["churned"].mean()), 4),
            }
        )
    return out


def population_stability(expected: pd.Series, actual: pd.Series, *, bins: int = 10) -> float:
    """PSI of one feature. Few distinct values (flags, tiers, counts of 0-3): a bin per value;
    otherwise the expected deciles' edges, open at both ends."""
    e, a = expected.dropna(), actual.dropna()
    if e.empty or a.empty:
        return 0.0
    values = np.unique(e.to_numpy())
    if len(values) <= bins or not pd.api.types.is_numeric_dtype(e):
        cats = pd.Index(np.union1d(values, np.unique(a.to_numpy())))
        pe = e.value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy()
        pa = a.value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy()
    else:
        inner = np.unique(np.quantile(e.to_numpy(dtype=float), np.linspace(0, 1, bins + 1)[1:-1]))
        pe = np.bincount(
            np.searchsorted(inner, e.to_numpy(dtype=float), side="right"), minlength=len(inner) + 1
        )
        pa = np.bincount(
            np.searchsorted(inner, a.to_numpy(dtype=float), side="right"), minlength=len(inner) + 1
        )
        pe, pa = pe / pe.sum(), pa / pa.sum()
    pe, pa = np.maximum(pe, _FLOOR), np.maximum(pa, _FLOOR)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


def feature_stability(expected: pd.DataFrame, actual: pd.DataFrame) -> dict[str, float]:
    """PSI per feature the two frames share, rounded to 4 places."""
    return {
        c: round(population_stability(expected[c], actual[c]), 4)
        for c in expected.columns
        if c in actual.columns
    }
