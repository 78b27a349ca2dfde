import json

from django.core.management.base import BaseCommand, CommandError

from agent.audit import audit_chain_verify


class Command(BaseCommand):
    help = (
        "Walk the audit trail's hash chain from its first event, record the result (the Agent page "
        "shows it) and name the first broken link. Exits 1 when the chain is broken."
    )

    def handle(self, *args, **options):
        result = audit_chain_verify()
        if not result.ok:
            where = f"event {result.broken_seq}" + (
                f" (id {result.broken_event_id})" if result.broken_event_id else ""
            )
            self.stderr.write(f"Audit chain broken at {where}: {result.reason}")
        summary = {
            "ok": result.ok,
            "events": result.events,
            "head_seq": result.head_seq,
            "head_hash": result.head_hash,
            "first_broken": None
            if result.ok
            else {"seq": result.broken_seq, "event_id": result.broken_event_id, "reason": result.reason},
            "seconds": result.seconds,
        }
        self.stdout.write(json.dumps(summary))
        if not result.ok:
            raise CommandError("the audit chain is broken", returncode=1)
