"""The Model page in words: what a retention lead can check, before the technical metrics.

Pure functions of a ModelVersion's metrics dict (the training report), so every section
reads the same figures the technical table shows. Each returns a list of sentences; the
page renders them in order under one heading, and new evidence (e.g. realized outcomes or
a backtest) adds its own function and its own list.
"""

from __future__ import annotations


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def reliability_sentences(metrics: dict, *, min_rows: int = 20) -> list[str]:
    """ "Of partners we showed at 60-70% risk, 64% churned within 90 days", per 10-point bin
    with enough holdout rows (riskiest first: that is where the desk acts)."""
    out = []
    for b in sorted(metrics.get("reliability", []), key=lambda r: -r["bin"]):
        if b["n"] < min_rows:
            continue
        lo, hi = b["bin"] * 10, b["bin"] * 10 + 10
        out.append(
            f"Of partners we showed at {lo}-{hi}% risk, {_pct(b['observed'])} churned within 90 days "
            f"({b['n']:,} holdout partner-months)."
        )
    return out


def concentration_sentence(metrics: dict) -> str | None:
    share = metrics.get("top_decile_churn_share")
    if share is None:
        return None
    return f"The riskiest 10% of partners hold {_pct(share)} of the churners (10% would be no better than chance)."


def window_sentences(metrics: dict) -> list[str]:
    """How often the shown churn window came true, against the base rate of the at-risk set."""
    w = metrics.get("shown_windows")
    if not w:
        return []
    out = []
    at_risk = w.get("at_risk")
    if at_risk and at_risk.get("n"):
        out.append(
            f"Of partners shown at risk (≥ {_pct(metrics.get('at_risk_level', 0.3))}), "
            f"{_pct(at_risk['churned_90d'])} churned within 90 days and {_pct(at_risk['churned_7d'])} within 7 days."
        )
    d7 = w.get("7d")
    if d7 and d7.get("n"):
        out.append(f"Of partners shown “~7 days”, {_pct(d7['churned_7d'])} churned within 7 days.")
    return out


def model_in_words(metrics: dict) -> list[str]:
    """The sentences, most important first: the first one is always a reliability statement."""
    sentences = reliability_sentences(metrics)
    if not sentences:
        return []
    concentration = concentration_sentence(metrics)
    rest = ([concentration] if concentration else []) + window_sentences(metrics)
    return sentences[:1] + rest + sentences[1:]


def realized_sentences(reliability: list[dict], *, horizon_days: int = 90, min_rows: int = 10) -> list[str]:
    """ "Of partners shown at 60-70%, 64% churned within 90 days": what happened to the
    scores a validation run judged, per band with enough scores, riskiest first."""
    out = []
    for b in sorted(reliability, key=lambda r: -r["bin"]):
        if b["n"] < min_rows:
            continue
        lo, hi = b["bin"] * 10, b["bin"] * 10 + 10
        out.append(
            f"Of partners shown at {lo}-{hi}%, {_pct(b['observed'])} churned within {horizon_days} days "
            f"({b['churned']:,} of {b['n']:,} scores)."
        )
    return out
