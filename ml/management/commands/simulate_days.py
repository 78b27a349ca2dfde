"""Advance the simulated partner world (the demo's clock)."""

import json

from django.core.management.base import BaseCommand, CommandError

from ml import simworld


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
            summary = simworld.world_advance(days=opts["days"], horizon_days=opts["horizon"])
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Simulated world is now at {summary['simulated_today']}: {summary['churned']} partners churned, "
            f"{summary['resolved_saved']} interventions resolved saved, {summary['resolved_churned']} churned."
        )
        self.stdout.write(json.dumps(summary))
