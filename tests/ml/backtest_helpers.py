"""The realized reliability curve as a test computes it, from the score history and the churn dates."""

import datetime as dt

from ml.models import RiskScore


def expected_curve(as_of: dt.date, horizon: int = 90) -> dict[int, tuple[int, int]]:
    """Per 10-point band: (live scores made horizon+ days before as_of, partners of those
    scores who churned within the horizon after it). Partners gone before the score are out."""
    out: dict[int, list[int]] = {}
    for s in RiskScore.objects.select_related("run", "partner"):
        made = s.run.as_of
        if s.run.backfill or made > as_of - dt.timedelta(days=horizon):
            continue
        churned_on = s.partner.churned_on
        if churned_on is not None and churned_on <= made:
            continue
        band = out.setdefault(min(int(s.risk * 10), 9), [0, 0])
        band[0] += 1
        band[1] += churned_on is not None and churned_on <= made + dt.timedelta(days=horizon)
    return {k: (n, c) for k, (n, c) in out.items()}
