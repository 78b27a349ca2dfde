"""How much of the oracle's churn-window F1 can sub-monthly activity buy? (issue 12)

    .venv/bin/python bench/window_ceiling.py VARIANT [--partners 20000] [--seed 42]

Trains and evaluates exactly as bench/ml_quality.py (same world, cutoffs, holdout, model),
with the activity rows changed per VARIANT:

- `monthly`: the monthly rows only (the optional last-14/7-day counts dropped);
- `shipped`: the rows as the simulator writes them (what `train_churn_model` sees);
- `weekly`: also the last 21 and 28 days of each month, split from the simulator's daily
  activity as the engine splits the 14 and 7 (what a weekly activity file would give at a
  month end), and the step-down estimate over all of those stretches;
- `truth`: the shipped rows plus the true number of days each partner had been winding down
  at each month's end, read from the hidden state: not observable, a ceiling;
- `oracle`: no model; the oracle's window F1 on the same holdout rows, and again with the
  oracle blind to each partner's own wind-down length (drawn at creation within
  `winddown_days`; 42-49 days until 2026-12-04, when it became the same 45-day notice for
  every partner, so that blind equals exact): for a partner winding down at the cutoff it
  knows the very day it will be gone, which no data shows.

`weekly` and `truth` weigh a winding-down day at `winddown_level` flat (the wind-down before
2026-12-04); the shipped one fades out (`winddown_power` 2), so their split is approximate.

Prints the headline figures and the bucket confusion (rows and columns 7d, 30d, 90d, later).
"""

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ml import features as F  # noqa: E402
from ml import steps  # noqa: E402
from ml.churn_model import bucket_from_probabilities, bucket_metrics  # noqa: E402
from ml.sim import simulator as S  # noqa: E402
from ml.training import holdout_partners, plan_cutoffs, train_and_evaluate  # noqa: E402


def daily_weights(world: S.World, act: pd.DataFrame):
    """weight(a, b): activity the days [month end - a, month end - b) carried per row (1 a
    normal day, the wind-down share a winding-down day), and the row's winding-down days."""
    st = world.state
    row = pd.Index(st.external_id).get_indexer(act.external_id)
    epoch = np.datetime64("1970-01-01")
    m0 = (act.month.to_numpy().astype("datetime64[D]") - epoch).astype(np.int64)
    m1 = ((act.month + pd.offsets.MonthBegin(1)).to_numpy().astype("datetime64[D]") - epoch).astype(np.int64)
    lo, hi, decided = np.maximum(m0, st.join_day[row]), np.minimum(m1, st.churn_day[row]), st.decided_day[row]

    def overlap(a, b, x, y):
        return np.clip(np.minimum(b, y) - np.maximum(a, x), 0, None).astype(float)

    def weight(a, b):
        present = overlap(m1 - a, m1 - b, lo, hi)
        wind = overlap(m1 - a, m1 - b, np.maximum(lo, decided), hi)
        return present - wind + st.params.winddown_level * wind

    return weight, overlap(m0, m1, np.maximum(lo, decided), hi)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=["monthly", "shipped", "weekly", "truth", "oracle"])
    ap.add_argument("--partners", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    world = S.generate_world(args.partners, months=24, seed=args.seed, today=dt.date(2026, 11, 20))
    if args.variant == "oracle":
        return oracle_without_length(world)
    act = world.activity.copy()
    if args.variant == "monthly":
        act = act.drop(columns=list(F.TAIL_COLUMNS))
    elif args.variant in ("weekly", "truth"):
        weight, winding = daily_weights(world, act)
        act["winding_days"] = winding
        if args.variant == "weekly":
            rng = np.random.default_rng(5)
            tx, last = act.transactions.to_numpy(), act.transactions_last_14d.to_numpy(dtype=float)
            whole, seen = weight(31, 0), weight(14, 0)
            for days in (21, 28):
                part = weight(days, 0)
                share = np.clip(
                    np.where(whole > seen, (part - seen) / np.maximum(whole - seen, 1e-9), 0), 0, 1
                )
                last = last + rng.binomial(np.maximum(tx - last, 0).astype(np.int64), share)
                act[f"transactions_last_{days}d"], seen = last, part
    original, base = F.build_features, list(F.FEATURES)

    def build(partners, activity, invoices, cutoff, **kw):
        shown = list(F.FEATURES)
        F.FEATURES[:] = base  # build_features returns its own columns, the wrapper adds the ceiling's
        try:
            f = original(partners, activity, invoices, cutoff, **kw)
        finally:
            F.FEATURES[:] = shown
        key, anchor = kw.get("key", "external_id"), F.last_complete_month(cutoff)
        if args.variant == "truth":
            f["winding_days_1m"] = np.nan_to_num(
                F._window(activity, f.index, anchor, "winding_days", key)[:, -1]
            )
        if args.variant == "weekly":
            step = weekly_step(activity, f.index, anchor, key)
            for name, values in zip(("days", "level", "strength"), step, strict=True):
                f[f"transactions_step_{name}"] = values
        return f

    if args.variant == "truth":
        F.FEATURES.append("winding_days_1m")
    F.build_features = build

    def oracle(cutoff, horizon):
        return S.true_churn_probability(world, cutoff, horizon)

    _, report = train_and_evaluate(world.partners, act, world.invoices, today=world.today, oracle=oracle)
    keys = ("roc_auc", "oracle_auc", "auc_ratio", "ece", "bucket_macro_f1", "oracle_bucket_macro_f1")
    print(args.variant, {k: report[k] for k in keys}, f"load {os.getloadavg()}")
    print("confusion", report["bucket_confusion"]["matrix"], "shown", report["shown_windows"])


def oracle_without_length(world: S.World) -> None:
    st, p = world.state, world.state.params
    first = pd.to_datetime(world.activity["month"]).min().date()
    _, test_cut = plan_cutoffs(first, world.today)
    tested = holdout_partners(world.partners)
    test = F.build_training_table(world.partners[tested], world.activity, world.invoices, test_cut)
    lengths = np.arange(p.winddown_days[0], p.winddown_days[1] + 1)
    parts = []
    for cutoff, rows in test.groupby("cutoff"):
        day = S._day(pd.Timestamp(cutoff).date())
        known = {h: S.true_churn_probability(world, pd.Timestamp(cutoff).date(), h) for h in F.BUCKET_LIMITS}
        idx = pd.Index(st.external_id).get_indexer(rows.external_id.to_numpy())
        decided, gone, length = st.decided_day[idx], st.churn_day[idx], st.winddown[idx].astype(np.int64)
        # Winding down at the cutoff and gone at its wind-down's end (not dunned first).
        by_length = (decided <= day) & (gone > day) & (gone == decided + length) & (length > 0)
        part = {}
        for h in F.BUCKET_LIMITS:
            exact = known[h].reindex(rows.external_id.to_numpy()).to_numpy()
            blind = ((decided[:, None] + lengths[None, :]) <= day + h).mean(axis=1)
            part[f"exact_{h}"], part[f"blind_{h}"] = exact, np.where(by_length, blind, exact)
        parts.append(pd.DataFrame(part, index=rows.index))
    o = pd.concat(parts).reindex(test.index)
    for kind in ("exact", "blind"):
        p7, p30, p90 = (o[f"{kind}_{h}"].to_numpy() for h in F.BUCKET_LIMITS)
        q = np.clip(np.column_stack([p7, p30 - p7, p90 - p30]), 0, None)
        m = bucket_metrics(test.bucket.to_numpy(), bucket_from_probabilities(p90, q))
        print(
            f"oracle ({kind} wind-down length): window F1 {m['bucket_macro_f1']}",
            m["bucket_confusion"]["matrix"],
        )


def weekly_step(activity, keys, anchor, key):
    """ml.steps' estimate over five stretches in each of the last two months (its start, then
    four weeks) instead of three."""
    cols = ("transactions", *(f"transactions_last_{d}d" for d in (28, 21, 14, 7)))
    window = [F._window(activity, keys, anchor, c, key) for c in cols]
    months = range(anchor - F.ACTIVITY_MONTHS + 1, anchor + 1)
    lengths = [pd.Period(ordinal=a - 1970 * 12, freq="M").days_in_month for a in months]
    tx, days = [window[0][:, j] for j in range(10)], lengths[:10]
    for j in (10, 11):
        cuts = [window[i][:, j] for i in range(5)] + [np.zeros(len(keys))]
        tx += [cuts[i] - cuts[i + 1] for i in range(5)]
        days += [lengths[j] - 28, 7, 7, 7, 7]
    return transaction_step_weeks(np.column_stack(tx), np.asarray(days, float))


def transaction_step_weeks(tx, days):
    """The same maximum-likelihood step as ml.steps, over arbitrary stretches (newest last)."""
    usual_n = np.nansum(tx[:, :-10], axis=1)
    usual_days = np.where(np.isfinite(tx[:, :-10]), days[None, :-10], 0).sum(axis=1)
    x = tx[:, -10:]
    length = np.broadcast_to(days[-10:], x.shape).astype(float)
    ok = np.isfinite(x).all(axis=1) & (usual_days >= 60)
    x = np.where(ok[:, None], x, 0.0)
    start = np.cumsum(length[:, ::-1], axis=1)[:, ::-1]
    stop = start - length
    total = x.sum(axis=1) + usual_n

    def score(effective):
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(x > 0, x * np.log(effective), 0.0)
        return logs.sum(axis=1) - total * np.log(np.maximum(usual_days + effective.sum(axis=1), 1e-9))

    steady, best = score(length), np.full(len(x), -np.inf)
    best_days, best_level = np.zeros(len(x)), np.ones(len(x))
    for d in range(1, steps.MAX_DAYS + 1):
        after = np.clip(np.minimum(start, d) - stop, 0.0, None)
        for level in steps.LEVELS:
            value = score(length - (1 - level) * after)
            better = value > best
            best, best_days, best_level = (np.where(better, value, best), np.where(better, d, best_days),
                                           np.where(better, level, best_level))  # fmt: skip
    seen = ok & (best - steady > 1e-9)
    return np.where(seen, best_days, 0.0), np.where(seen, best_level, 1.0), np.where(seen, best - steady, 0.0)


if __name__ == "__main__":
    main()
