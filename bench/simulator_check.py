"""Check the simulated world's difficulty targets and speed; prints figures.

    .venv/bin/python bench/simulator_check.py [--partners 20000] [--skip-100k]

Out-of-time check: a HistGradientBoostingClassifier trained on point-in-time features at
earlier month-start cutoffs (whose 90-day outcomes are known by the test cutoff) and tested
at a later cutoff, against the oracle (true probabilities) on the same partners.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.sim.simulator import SimulatorParams, generate_world, true_churn_probability  # noqa: E402

TODAY = date(2025, 6, 15)


def features(world, cutoff: pd.Timestamp) -> pd.DataFrame:
    """What a model may know at the end of `cutoff`: complete months, dated events."""
    p = world.partners
    active = p[(p.joined_on <= cutoff) & ~(p.churned_on <= cutoff)].set_index("external_id")
    month0 = cutoff.to_period("M").to_timestamp()
    act = world.activity[world.activity.month < month0]
    act = act[act.external_id.isin(active.index)]
    months = pd.date_range(end=month0 - pd.offsets.MonthBegin(1), periods=6, freq="MS")

    def grid(col):
        g = act.pivot(index="external_id", columns="month", values=col)
        return g.reindex(index=active.index, columns=months).to_numpy(dtype=float)

    tx, rev, users, tk = grid("transactions"), grid("revenue"), grid("active_users"), grid("support_tickets")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: partners too new
        last3 = np.nanmean(tx[:, 3:], axis=1)
        prev3 = np.nanmean(tx[:, :3], axis=1)
        rev_last3 = np.nanmean(rev[:, 3:], axis=1)
        rev_prev3 = np.nanmean(rev[:, :3], axis=1)
    f = pd.DataFrame(index=active.index)
    f["tier"] = active.tier.map({"bronze": 0, "silver": 1, "gold": 2, "platinum": 3})
    f["segment"] = active.segment.map({"reseller": 0, "merchant": 1, "referral": 2})
    f["region"] = active.region.map({"na": 0, "emea": 1, "apac": 2, "latam": 3})
    f["monthly_revenue"] = active.monthly_revenue
    f["tenure_days"] = (cutoff - active.joined_on).dt.days
    f["tx_last"] = tx[:, 5]
    f["tx_last3"] = last3
    f["tx_prev3"] = prev3
    f["tx_trend_3v3"] = np.log((last3 + 1) / (prev3 + 1))
    f["tx_trend_1v3"] = np.log((tx[:, 5] + 1) / (prev3 + 1))
    f["revenue_last3"] = rev_last3
    f["revenue_vs_contract"] = np.log((rev_last3 + 1) / (active.monthly_revenue.to_numpy() + 1))
    f["revenue_trend"] = np.log((rev_last3 + 1) / (rev_prev3 + 1))
    f["users_last"] = users[:, 5]
    f["tickets_last"] = tk[:, 5]
    f["tickets_3m"] = np.nansum(tk[:, 3:], axis=1)
    f["months_of_history"] = np.isfinite(tx).sum(axis=1)

    inv = world.invoices
    inv = inv[(inv.issued_on <= cutoff) & inv.external_id.isin(active.index)].copy()
    paid = inv.paid_on.where(inv.paid_on <= cutoff)
    known_paid = paid.notna()
    upto = paid.fillna(cutoff)
    inv["late"] = (upto - inv.due_on).dt.days.clip(lower=0).where(inv.due_on <= cutoff)
    inv["open_overdue"] = (cutoff - inv.due_on).dt.days.where(~known_paid & (inv.due_on <= cutoff))
    inv["recent"] = (inv.due_on > cutoff - pd.Timedelta(days=90)) & (inv.due_on <= cutoff)
    inv["paid_known"] = paid
    g = inv.groupby("external_id")
    f["late_mean_90"] = inv[inv.recent].groupby("external_id").late.mean()
    f["late_max_90"] = inv[inv.recent].groupby("external_id").late.max()
    f["oldest_overdue"] = g.open_overdue.max()
    f["open_invoices"] = g.open_overdue.count()
    f["days_since_payment"] = (cutoff - g.paid_known.max()).dt.days
    last_paid = inv[known_paid].sort_values("issued_on").groupby("external_id").tail(1)
    f["last_paid_lateness"] = pd.Series(
        (last_paid.paid_known - last_paid.due_on).dt.days.to_numpy(),
        index=last_paid.external_id.to_numpy(),
    )
    f[["late_mean_90", "late_max_90", "oldest_overdue", "open_invoices"]] = f[
        ["late_mean_90", "late_max_90", "oldest_overdue", "open_invoices"]
    ].fillna(0)
    return f


def labels(world, index, cutoff: pd.Timestamp, horizon: int = 90) -> np.ndarray:
    churned = world.partners.set_index("external_id").churned_on.reindex(index)
    return ((churned > cutoff) & (churned <= cutoff + pd.Timedelta(days=horizon))).to_numpy()


def gbm_check(world, train_months, test_month, seed=0):
    starts = pd.date_range(end=pd.Timestamp(world.today).to_period("M").to_timestamp(), periods=25, freq="MS")
    xs, ys = [], []
    for k in train_months:
        c = starts[k]
        x = features(world, c)
        xs.append(x)
        ys.append(labels(world, x.index, c))
    c = starts[test_month]
    x_test = features(world, c)
    y_test = labels(world, x_test.index, c)
    model = HistGradientBoostingClassifier(
        max_iter=400,
        learning_rate=0.05,
        max_leaf_nodes=31,
        min_samples_leaf=100,
        l2_regularization=1.0,
        early_stopping=True,
        validation_fraction=0.15,
        random_state=seed,
        categorical_features=[0, 1, 2],
    )
    model.fit(pd.concat(xs).to_numpy(), np.concatenate(ys))
    pred = model.predict_proba(x_test.to_numpy())[:, 1]
    oracle = true_churn_probability(world, c.date()).reindex(x_test.index).to_numpy()
    auc_gbm = roc_auc_score(y_test, pred)
    auc_oracle = roc_auc_score(y_test, oracle)
    return {
        "cutoff": str(c.date()),
        "n": len(y_test),
        "rate": float(y_test.mean()),
        "auc_oracle": auc_oracle,
        "auc_gbm": auc_gbm,
        "ratio": auc_gbm / auc_oracle,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--partners", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--skip-100k", action="store_true")
    args = ap.parse_args()
    params = SimulatorParams()

    t = time.perf_counter()
    world = generate_world(args.partners, 24, seed=args.seed, params=params, today=TODAY)
    print(f"generate_world({args.partners}, 24): {time.perf_counter() - t:.2f} s")
    print(world.partners.status.value_counts().to_dict())

    starts = pd.date_range(end=pd.Timestamp(TODAY).to_period("M").to_timestamp(), periods=25, freq="MS")
    print("cutoff       active  rate90  oracle_auc  mean_p  0-7d  8-30d  31-90d  oracle_s")
    for k in (12, 14, 16, 18, 20, 21):
        c = starts[k]
        t = time.perf_counter()
        prob = true_churn_probability(world, c.date())
        secs = time.perf_counter() - t
        y = labels(world, prob.index, c)
        churned = world.partners.set_index("external_id").churned_on.reindex(prob.index)
        d = (churned[y] - c).dt.days.to_numpy()
        b = np.histogram(d, [0, 7.5, 30.5, 91])[0] / max(1, len(d))
        print(
            f"{c.date()}  {len(y):6d}  {y.mean():.3f}   {roc_auc_score(y, prob):.3f}      "
            f"{prob.mean():.3f}  {b[0]:.2f}  {b[1]:.2f}   {b[2]:.2f}    {secs:.1f}"
        )

    print("GBM (out of time) vs oracle:")
    for train, test in (
        ((10, 11, 12, 13, 14, 15), 18),
        ((12, 13, 14, 15, 16, 17), 20),
        ((13, 14, 15, 16, 17, 18), 21),
    ):
        r = gbm_check(world, train, test)
        print(
            f"  train {train[0]}..{train[-1]} test {r['cutoff']}: n={r['n']} rate={r['rate']:.3f} "
            f"oracle={r['auc_oracle']:.3f} gbm={r['auc_gbm']:.3f} ratio={r['ratio']:.3f}"
        )

    if not args.skip_100k:
        t = time.perf_counter()
        big = generate_world(100_000, 24, seed=args.seed, params=params, today=TODAY)
        print(
            f"generate_world(100000, 24): {time.perf_counter() - t:.2f} s, "
            f"{len(big.activity)} activity rows, {len(big.invoices)} invoices"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
