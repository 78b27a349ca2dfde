"""Score every active partner with the active model, in chunks; JSON summary last."""

import json

from django.core.management.base import BaseCommand, CommandError
from threadpoolctl import threadpool_limits

from ml.services import DEFAULT_CHUNK, ModelActivationError, score_all_partners


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
        parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (1 on shared hosts)")

    def handle(self, *args, **opts):
        try:
            with threadpool_limits(limits=opts["threads"]):
                summary = score_all_partners(chunk_size=opts["chunk_size"])
        except ModelActivationError as exc:
            raise CommandError(str(exc)) from exc
        total = sum(summary["stages"].values()) or 1.0
        shares = ", ".join(f"{k} {v:.1f}s ({v / total:.0%})" for k, v in summary["stages"].items())
        self.stdout.write(f"Scored {summary['scored']} partners in {summary['seconds']}s: {shares}")
        self.stdout.write(json.dumps(summary))
