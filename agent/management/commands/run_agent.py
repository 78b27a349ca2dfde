import json

from django.core.management.base import BaseCommand

from agent import services, workflow
from agent.models import AgentRun


class Command(BaseCommand):
    help = "Run the intervention agent once, in this process (the same code as the Celery task)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Scan and count; contact nobody")
        parser.add_argument("--limit", type=int, default=None, help="Act on at most this many partners")

    def handle(self, *args, dry_run: bool, limit: int | None, **options):
        run = services.agent_run_create(trigger=AgentRun.Trigger.COMMAND, dry_run=dry_run)
        result = workflow.agent_run_execute(run_id=run.pk, limit=limit)
        run.refresh_from_db()
        keys = (
            "scanned",
            "eligible",
            "executed",
            "held_for_review",
            "holdouts",
            "rate_limited",
            "failed",
            "skipped",
            "not_reached",
        )
        summary = {"run_id": run.pk, "status": run.status, "dry_run": dry_run}
        summary.update({key: result.get(key, 0) for key in keys})
        if run.status == AgentRun.Status.SKIPPED:
            self.stderr.write("The agent is stopped (start it on the Agent page) or another run is active.")
        self.stdout.write(json.dumps(summary))
