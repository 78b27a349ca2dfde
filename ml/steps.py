"""When did a partner's transactions step down? A change-point estimate (pure numpy, no Django).

A partner that decides to leave usually moves its volumes elsewhere at once: its daily rate
of transactions steps down and stays down (or fades further) until it is gone. How long ago that happened says
when it will be gone, which the monthly totals hide (a step in a month's last fortnight is a
10-40% dip of one monthly row, inside normal month-to-month noise). The activity file's
optional counts of a month's last 14 and 7 days cut each of the last two complete months
into three stretches (the month's start, days 14-8 and 7-1 before its end); with the
partner's usual rate from the months before, the estimate is the most likely step:

    for d = 1 .. 61 days before the end of the last complete month, and a level rho:
        the rate is r before the step and rho * r after it (the stretches count Poisson),
        r fitted to the counts (its maximum likelihood given d and rho);
    step = the (d, rho) of highest likelihood, and its log-likelihood ratio against a
    steady rate (how clear the step is).

A month without the optional counts is one stretch (the estimate is then as coarse as the
monthly rows); a partner with no usual rate (under three months of history) gets no step.
Only complete months are read, so the estimate never looks past the cutoff.
"""

from __future__ import annotations

import numpy as np

MAX_DAYS = 61  # the last two complete months, at most 31 + 30 days
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def transaction_step(
    tx: np.ndarray, last14: np.ndarray, last7: np.ndarray, month_days: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(days before the end of the last month, level after/before, log-likelihood ratio) of
    each row's most likely step down; (0, 1.0, 0.0) when there is none to see.

    tx, last14, last7: (n, months) counts of the complete months up to the last one (NaN =
    unknown); month_days: (months,) their lengths in days."""
    n, months = tx.shape
    days = np.asarray(month_days, dtype=float)
    before = tx[:, : months - 2]
    usual_n = np.nansum(before, axis=1)
    usual_days = np.where(np.isfinite(before), days[None, : months - 2], 0.0).sum(axis=1)
    counts, lengths = [], []
    for j in (months - 2, months - 1):
        total, a14, a7 = tx[:, j], last14[:, j], last7[:, j]
        split = np.isfinite(a14) & np.isfinite(a7)
        # Without the month's last 14 and 7 days the month is one stretch.
        counts += [
            np.where(split, total - a14, total),
            np.where(split, a14 - a7, 0.0),
            np.where(split, a7, 0.0),
        ]
        lengths += [
            np.where(split, days[j] - 14, days[j]),
            np.where(split, 7.0, 0.0),
            np.where(split, 7.0, 0.0),
        ]
    x = np.column_stack(counts)
    length = np.column_stack(lengths)
    ok = np.isfinite(x).all(axis=1) & (usual_days >= 60) & (x >= 0).all(axis=1)
    x = np.where(ok[:, None], x, 0.0)
    length = np.where(ok[:, None], length, 0.0)
    # Each stretch as days before the end: (stop, start], newest last.
    start = np.cumsum(length[:, ::-1], axis=1)[:, ::-1]
    stop = start - length
    total = x.sum(axis=1) + usual_n

    # The log-likelihood, up to terms equal for every step: with the rate at its best for the
    # step, the expected counts add up to the observed total, so what is left is
    # sum(x log(effective days)) - total log(usual days + all effective days). A step at d
    # leaves the stretches before it whole, multiplies the days of those after it by the
    # level, and cuts one stretch in two: so only that stretch needs a logarithm per level.
    with np.errstate(divide="ignore", invalid="ignore"):
        whole = np.where(x > 0, x * np.log(length), 0.0).sum(axis=1)
    days_total = usual_days + length.sum(axis=1)
    steady = whole - total * np.log(np.maximum(days_total, 1e-9))
    best = np.full(n, -np.inf)
    best_days, best_level = np.zeros(n), np.ones(n)
    # Per day, what every level shares is computed once, and the running best is updated in
    # place: the same arithmetic on each candidate as before (so the same step), ~2x faster.
    log_levels = [(level, np.log(level), 1 - level) for level in LEVELS]
    better = np.empty(n, dtype=bool)
    for d in range(1, MAX_DAYS + 1):
        after = np.clip(np.minimum(start, d) - stop, 0.0, None)  # days of each stretch after the step
        full = (after >= length) & (length > 0)
        cut = (after > 0) & ~full
        x_after = (x * full).sum(axis=1)
        x_cut, days_cut, after_cut = (
            (x * cut).sum(axis=1),
            (length * cut).sum(axis=1),
            (after * cut).sum(axis=1),
        )
        shift = after.sum(axis=1)
        reach = d <= start[:, 0]
        has_cut = x_cut > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            log_days_cut = np.log(days_cut)
        for level, log_level, rest in log_levels:
            with np.errstate(divide="ignore", invalid="ignore"):
                partial = np.where(has_cut, x_cut * (np.log(days_cut - rest * after_cut) - log_days_cut), 0.0)
            value = whole + log_level * x_after + partial
            value -= total * np.log(np.maximum(days_total - rest * shift, 1e-9))
            np.greater(value, best, out=better)
            better &= reach
            np.copyto(best, value, where=better)
            np.copyto(best_days, d, where=better)
            np.copyto(best_level, level, where=better)
    ratio = best - steady
    seen = ok & (ratio > 1e-9)
    return np.where(seen, best_days, 0.0), np.where(seen, best_level, 1.0), np.where(seen, ratio, 0.0)
