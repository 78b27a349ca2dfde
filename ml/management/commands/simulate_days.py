"""Advance the simulated partner world (the demo's clock)."""

import json

from django.core.management.base import BaseCommand, CommandError

from ml.selectors import latest_run
from ml.sim import clock


class Command(BaseCommand):
    help = (
        "Advance the simulated world N days: new activity, payments and churn; contacted partners "
        "get the simulator's true intervention effect; pending interventions resolve from what happened."
    )

    def add_arguments(self, parser):
        parser.add_argument("days", type=int)
        parser.add_argument(
            "--horizon",
            type=int,
            default=90,
            help="days after contact when a still-active partner counts as saved",
        )

    def handle(self, *args, **opts):
        if opts["days"] < 1 or opts["days"] > 3650:
            raise CommandError("days must be between 1 and 3650")
        try:
            summary = clock.world_advance(days=opts["days"], horizon_days=opts["horizon"])
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Simulated world is now at {summary['simulated_today']}: {summary['churned']} partners churned, "
            f"{summary['resolved_saved']} interventions resolved saved, {summary['resolved_churned']} churned."
        )
        run = latest_run()
        if run is not None and run.as_of and run.as_of.isoformat() < summary["simulated_today"]:
            self.stdout.write(
                f"The Live Feed still shows scores as of {run.as_of}: run score_partners (or wait for the "
                "nightly run) to score the partners at the new date."
            )
        self.stdout.write(json.dumps(summary))
