"""Score every active partner with the active model, in chunks; JSON summary last.

With --as-of a past date, score the partners active then, from their history up to then,
into the risk history only (the Live Feed and the agent keep reading the current scores):
that is how a new install fills the partner pages' risk-over-time charts."""

import json
import time

from django.core.management.base import BaseCommand, CommandError

from ml.management.argtypes import iso_date
from ml.services import DEFAULT_CHUNK, ModelActivationError, scoring_run_start
from ml.tasks import scoring_run_dispatch
from ml.threads import model_threads


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
        parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (1 on shared hosts)")
        parser.add_argument(
            "--as-of",
            type=iso_date,
            default=None,
            help="score at this past date (YYYY-MM-DD) into the history only; default: today",
        )

    def handle(self, *args, **opts):
        started = time.perf_counter()
        try:
            with model_threads(opts["threads"]):
                run = scoring_run_start(as_of=opts["as_of"])
                # The nightly task's chord, run here: a failing chunk marks the run failed.
                scoring_run_dispatch(run_id=run.pk, chunk_size=opts["chunk_size"], in_process=True)
        except (ModelActivationError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        run.refresh_from_db()
        summary = {
            "scored": run.scored,
            "seconds": round(time.perf_counter() - started, 2),
            "model_version": run.model_version_id,
            "run": run.pk,
            "as_of": run.as_of.isoformat() if run.as_of else None,
            "backfill": run.backfill,
            "drivers_computed": run.stats["drivers_computed"],
            "stages": run.stats["stages"],
        }
        total = sum(summary["stages"].values()) or 1.0
        shares = ", ".join(f"{k} {v:.1f}s ({v / total:.0%})" for k, v in summary["stages"].items())
        self.stdout.write(f"Scored {summary['scored']} partners in {summary['seconds']}s: {shares}")
        self.stdout.write(json.dumps(summary))
