"""Train the churn model on the partner history in the database (or on a team's CSV table),
evaluate it on an out-of-time holdout, register it, and print a JSON report (last line)."""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ml.csv_training import TableError, train_on_table
from ml.frames import history_frames
from ml.services import model_version_register
from ml.sim import simulator, store
from ml.sim.today import history_end, simulated_today
from ml.threads import model_threads
from ml.training import data_end, train_and_evaluate
from retention.models import Partner

SUMMARY_KEYS = [
    "roc_auc", "pr_auc", "brier", "ece", "bucket_macro_f1", "bucket_confusion", "n_train", "n_test",
    "seconds", "model_version", "oracle_auc", "oracle_brier", "auc_ratio", "oracle_bucket_macro_f1",
    "oracle_ece", "window_start", "window_end", "source", "baseline_roc_auc", "baseline_brier",
    "baseline_ece",
]  # fmt: skip


# Training scales by sampling, not by memory: above this many partners, the history of a
# random sample this size is loaded (the training table is then capped at 400,000 rows, see
# ml.training). 200,000 partners x 24 months is about twice the memory of the 100k run.
PARTNER_BUDGET = 200_000


def partner_sample(*, budget: int, seed: int) -> list[int] | None:
    """A random `budget` partner ids (the same for the same seed and database), or None
    (everybody) when the database holds no more than that."""
    if not budget or Partner.objects.count() <= budget:
        return None
    ids = np.fromiter(Partner.objects.order_by("pk").values_list("pk", flat=True), dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(ids, size=budget, replace=False)).tolist()


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--report", type=Path, help="write the full JSON report here")
        parser.add_argument("--csv", type=Path, help="train on this table instead of the database")
        parser.add_argument("--target", help="label column of --csv (yes/no, true/false or 1/0)")
        parser.add_argument("--id", dest="id_col", help="id column of --csv (kept out of the features)")
        parser.add_argument("--test-csv", type=Path, help="evaluate on this table (default: 25%% holdout)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--no-activate", action="store_true", help="register without activating")
        parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (1 on shared hosts)")
        parser.add_argument(
            "--partner-budget",
            type=int,
            default=PARTNER_BUDGET,
            help="train and evaluate on a random sample of at most this many partners (0: all); "
            f"default {PARTNER_BUDGET:,}",
        )

    def handle(self, *args, **opts):
        t0 = time.perf_counter()
        with model_threads(opts["threads"]):
            if opts["csv"]:
                model, report, source = self._csv(opts)
            else:
                model, report, source = self._database(opts)
        report["seconds"] = round(time.perf_counter() - t0, 2)
        report["source"] = source
        version = model_version_register(
            model=model,
            report=report,
            source=source,
            activate=source == "database" and not opts["no_activate"],
        )
        report["model_version"] = version.pk
        version.metrics = report
        version.save(update_fields=["metrics", "updated_at"])
        if opts["report"]:
            opts["report"].parent.mkdir(parents=True, exist_ok=True)
            opts["report"].write_text(json.dumps(report, indent=2, default=str))
        summary = {k: report.get(k) for k in SUMMARY_KEYS if k in report}
        self.stdout.write(
            f"Model v{version.pk} ({source}): ROC AUC {report.get('roc_auc')}, Brier {report.get('brier')}, "
            f"ECE {report.get('ece')}, n_train {report.get('n_train')}, n_test {report.get('n_test')}"
            + (
                f", oracle AUC {report['oracle_auc']} (ratio {report['auc_ratio']})"
                if "oracle_auc" in report
                else ""
            )
        )
        self.stdout.write(json.dumps(summary, default=str))

    def _csv(self, opts):
        if not opts["target"]:
            raise CommandError("--csv needs --target COLUMN")
        try:
            df = pd.read_csv(opts["csv"])
            test_df = pd.read_csv(opts["test_csv"]) if opts["test_csv"] else None
            model, report = train_on_table(
                df, target=opts["target"], id_col=opts["id_col"], test_df=test_df, seed=opts["seed"]
            )
        except (TableError, FileNotFoundError, pd.errors.ParserError) as exc:
            raise CommandError(str(exc)) from exc
        return model, report, "csv"

    def _database(self, opts):
        sample = partner_sample(budget=opts["partner_budget"], seed=opts["seed"])
        partners, activity, invoices = history_frames(key="external_id", partner_ids=sample)
        if partners.empty or activity.empty:
            raise CommandError("No partner history in the database (run seed_demo or import_data).")
        # Labels need to know who churned up to 90 days after a cutoff: "today" is the end
        # of the recorded history (the simulated today for the demo world).
        today = (
            simulated_today()
            or settings.DESK_TODAY
            or history_end()
            or data_end(partners, activity, invoices)
        )
        oracle = self._oracle()
        try:
            model, report = train_and_evaluate(
                partners,
                activity,
                invoices,
                today=today,
                seed=opts["seed"],
                oracle=oracle,
                at_risk=settings.AT_RISK_LEVEL,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        report["partner_sample"] = {"budget": opts["partner_budget"], "sampled": sample is not None,
                                    "partners": len(partners)}  # fmt: skip
        return model, report, "database"

    def _oracle(self):
        """The simulator's true probabilities, when the data is a simulated world."""
        try:
            _, world = store.world_load()
        except (LookupError, OSError, ValueError, KeyError) as exc:
            self.stderr.write(f"No simulated world to compare with ({exc}); oracle figures omitted.")
            return None

        def oracle(cutoff, horizon):
            # The 7- and 30-day probabilities only feed the oracle's bucket F1: 16 Monte Carlo
            # paths (standard error ~0.006) instead of 64 keep this affordable at 100k partners.
            paths = None if horizon >= 90 else 16
            return simulator.true_churn_probability(world, cutoff, horizon, paths=paths)

        return oracle
