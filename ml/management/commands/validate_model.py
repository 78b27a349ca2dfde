"""Judge the scores made 90+ days before the data's today by what happened (the realized
reliability curve) and measure each feature's drift since training (PSI); JSON summary last.
The nightly beat task runs the same service; the Model page shows the latest result."""

import json
import time

from django.core.management.base import BaseCommand

from ml.backtest import PSI_WARNING
from ml.management.argtypes import iso_date
from ml.services import model_validate


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument(
            "--as-of", type=iso_date, default=None, help="the data's today (default: the desk's)"
        )
        parser.add_argument("--horizon-days", type=int, default=90)

    def handle(self, *args, **opts):
        started = time.perf_counter()
        run = model_validate(as_of=opts["as_of"], horizon_days=opts["horizon_days"])
        drifted = sorted((f for f, v in run.psi.items() if v > PSI_WARNING), key=lambda f: -run.psi[f])
        summary = {
            "validation": run.pk,
            "as_of": run.as_of.isoformat(),
            "scored_until": run.scored_until.isoformat(),
            "scores": run.n_scores,
            "churned": run.n_churned,
            "reliability": run.reliability,
            "max_psi": run.max_psi,
            "drift_warning": bool(drifted),
            "drifted_features": drifted,
            "model_version": run.model_version_id,
            "seconds": round(time.perf_counter() - started, 2),
        }
        self.stdout.write(
            f"Judged {run.n_scores} scores made on or before {run.scored_until} ({run.n_churned} churned within "
            f"{run.horizon_days} days); largest feature drift PSI {run.max_psi}."
        )
        self.stdout.write(json.dumps(summary))
