"""Model quality against the simulator's truth, straight from a World's frames (no database).

    .venv/bin/python bench/ml_quality.py [--partners 20000] [--months 24] [--seed 42] [--later]

Trains exactly as `train_churn_model` does (same features, cutoffs, holdout, model) and
prints the report's headline figures beside the oracle's, then the JSON summary.

--later also scores the same holdout partners 5, 10, 15, 20 and 25 days after each test month
end (the desk scores every day; the report's holdout is at month ends) and prints, per day,
the model's and the oracle's figures (in the summary as "later").
"""

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from ml import features as F  # noqa: E402
from ml.sim import simulator  # noqa: E402
from ml.training import (  # noqa: E402
    _with_churn_table,
    evaluate,
    holdout_partners,
    oracle_metrics,
    train_and_evaluate,
)

TODAY = dt.date(2026, 11, 20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partners", type=int, default=20_000)
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--today", type=dt.date.fromisoformat, default=TODAY, help="the world's today")
    ap.add_argument("--out", type=Path, default=Path("bench/out/ml_quality.json"))
    ap.add_argument("--later", action="store_true", help="also score the holdout 5-25 days after month ends")
    args = ap.parse_args()
    t0 = time.perf_counter()
    world = simulator.generate_world(args.partners, months=args.months, seed=args.seed, today=args.today)
    t_world = time.perf_counter() - t0

    def oracle(cutoff, horizon):
        return simulator.true_churn_probability(world, cutoff, horizon)

    t0 = time.perf_counter()
    model, report = train_and_evaluate(
        world.partners, world.activity, world.invoices, today=world.today, oracle=oracle
    )
    seconds = time.perf_counter() - t0
    keys = ["roc_auc", "oracle_auc", "auc_ratio", "pr_auc", "oracle_pr_auc", "brier", "oracle_brier", "ece",
            "oracle_ece", "bucket_macro_f1", "oracle_bucket_macro_f1", "n_train", "n_test",
            "n_test_partners", "test_cutoffs"]  # fmt: skip
    summary = {k: report.get(k) for k in keys}
    summary.update({"world_seconds": round(t_world, 1), "train_eval_seconds": round(seconds, 1)})
    summary["timings"] = report["timings"]
    summary["bucket_confusion"] = report["bucket_confusion"]
    summary["load_average"] = os.getloadavg()
    print(f"world {args.partners} x {args.months} months (seed {args.seed}), today {world.today}")
    print(f"  ROC AUC {report['roc_auc']} vs oracle {report['oracle_auc']}: ratio {report['auc_ratio']}")
    print(f"  Brier {report['brier']} vs oracle {report['oracle_brier']}; ECE {report['ece']}")
    print(f"  bucket macro F1 {report['bucket_macro_f1']} vs oracle {report['oracle_bucket_macro_f1']}")
    if args.later:
        summary["later"] = scored_later(world, model, report, oracle)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(summary, default=str))


def scored_later(world, model, report, oracle) -> dict:
    """The holdout partners scored `days` after each test month end, as the desk scores them
    on those days."""
    tested = holdout_partners(world.partners)
    ends = [dt.date.fromisoformat(c[:10]) for c in report["test_cutoffs"]]
    out = {}
    for days in (5, 10, 15, 20, 25):
        cutoffs = [end + dt.timedelta(days=days) for end in ends]
        test = F.build_training_table(world.partners[tested], world.activity, world.invoices, cutoffs)
        test = _with_churn_table(test, model.churn_table)
        pred = model.predict(test)
        r, o = evaluate(test, pred, model), oracle_metrics(test, pred, oracle, key="external_id")
        share = r["bucket_macro_f1"] / o["oracle_bucket_macro_f1"]
        out[days] = {"auc_ratio": o["auc_ratio"], "ece": r["ece"], "bucket_macro_f1": r["bucket_macro_f1"],
                     "oracle_bucket_macro_f1": o["oracle_bucket_macro_f1"], "of_oracle": round(share, 3),
                     "shown_7d": r["shown_windows"]["7d"]}  # fmt: skip
        print(f"  +{days:2d} days: auc_ratio {o['auc_ratio']}, ECE {r['ece']}, bucket macro F1 "
              f"{r['bucket_macro_f1']} vs oracle {o['oracle_bucket_macro_f1']} ({share:.3f})")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
