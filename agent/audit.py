"""The one way to write to the audit trail (import it from any app), and its hash chain.

Every event is appended to one chain: event n carries `prev_hash` (event n-1's hash) and
`hash` = SHA-256 over its own content and prev_hash. Appends are serialised by locking the
chain head row (AuditChainHead, pk=1) FOR UPDATE until the recording transaction commits, so
the chain order is the commit order whatever the number of workers; a transaction that rolls
back takes its event and its head update with it, leaving no gap.
"""

import datetime as dt
import hashlib
import json
import time
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db import connection, transaction
from django.db.models import F

from agent.models import AuditChainHead, AuditEvent, AuditVerification

GENESIS = "0" * 64  # prev_hash of the first event
# The fields an event's hash covers: everything it says, its position and its predecessor.
HASHED_FIELDS = (
    "seq",
    "created_at",
    "actor_type",
    "actor_user_id",
    "run_id",
    "partner_id",
    "intervention_id",
    "event_type",
    "payload",
    "prev_hash",
)


def _canonical(value: Any) -> Any:
    """The payload as the database gives it back, numbers by value: jsonb prints 1e20 as
    100000000000000000000 (read back as an int), so integral floats hash as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def event_hash(fields: dict[str, Any]) -> str:
    """SHA-256 (hex) of an event's HASHED_FIELDS, as canonical JSON."""
    content = {name: fields[name] for name in HASHED_FIELDS}
    created_at = content["created_at"]
    content["created_at"] = created_at.astimezone(dt.UTC).isoformat()
    content["payload"] = _canonical(json.loads(json.dumps(content["payload"])))
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _lock_head() -> AuditChainHead:
    """The chain head, locked until the current transaction ends. Rebuilt from the last event
    when missing (a freshly flushed test or demo database)."""
    if connection.vendor == "sqlite":
        # SQLite ignores FOR UPDATE: write first, so the database lock is held before the read
        # (PostgreSQL's head trigger refuses this no-op, and needs it not).
        AuditChainHead.objects.filter(pk=1).update(seq=F("seq"))
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        last = AuditEvent.objects.order_by("-seq").values("seq", "hash").first() or {
            "seq": 0,
            "hash": GENESIS,
        }
        # Two first appenders at once: one insert wins, both then lock the same row.
        AuditChainHead.objects.bulk_create(
            [AuditChainHead(pk=1, seq=last["seq"], hash=last["hash"])], ignore_conflicts=True
        )
        head = AuditChainHead.objects.select_for_update().get(pk=1)
    return head


def audit_record(
    *,
    event_type: str,
    actor: User | AnonymousUser | None = None,
    actor_type: str | None = None,
    run=None,
    partner=None,
    intervention=None,
    payload: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event. Call it inside the transaction of the change it records (it holds the
    chain's lock from here to that transaction's commit, so call it late rather than early)."""
    if actor_type is None:
        actor_type = AuditEvent.Actor.USER if actor is not None else AuditEvent.Actor.SYSTEM
    if partner is None and intervention is not None:
        partner = intervention.partner
    # savepoint=False: no extra round trips inside the caller's transaction; outside one this
    # is the transaction that holds the head lock until the event is in.
    with transaction.atomic(savepoint=False):
        head = _lock_head()
        event = AuditEvent(
            seq=head.seq + 1,
            prev_hash=head.hash,
            event_type=event_type,
            actor_type=actor_type,
            actor_user=actor if isinstance(actor, User) else None,
            run=run,
            partner=partner,
            intervention=intervention,
            payload=payload or {},
        )
        event.hash = event_hash({name: getattr(event, name) for name in HASHED_FIELDS})
        event.save(force_insert=True)
        head.seq, head.hash = event.seq, event.hash
        head.save(update_fields=["seq", "hash"])
    return event


def audit_chain_verify(*, chunk_size: int = 5000) -> AuditVerification:
    """Walk the chain from the first event and record the result; names the first broken link:
    a gap or duplicate in the positions, an event whose content no longer matches its hash, an
    event that does not point at its predecessor, or an end that is not where the head says."""
    started = time.perf_counter()
    expected_seq, prev_hash, checked = 1, GENESIS, 0
    broken: tuple[int | None, int | None, str] | None = None
    rows = AuditEvent.objects.order_by("seq").values("id", "hash", *HASHED_FIELDS)
    for row in rows.iterator(chunk_size=chunk_size):
        if row["seq"] != expected_seq:
            what = "missing" if row["seq"] > expected_seq else "duplicated"
            broken = (expected_seq, row["id"], f"event {expected_seq} is {what} (found {row['seq']} next)")
            break
        if row["prev_hash"] != prev_hash:
            broken = (row["seq"], row["id"], "does not point at the previous event's hash")
            break
        if event_hash(row) != row["hash"]:
            broken = (row["seq"], row["id"], "its content does not match its hash (the row was changed)")
            break
        checked += 1
        expected_seq, prev_hash = row["seq"] + 1, row["hash"]
    head = AuditChainHead.objects.filter(pk=1).values("seq", "hash").first()
    last_seq = expected_seq - 1
    if broken is None and head is not None and (head["seq"], head["hash"]) != (last_seq, prev_hash):
        if head["seq"] > last_seq:
            reason = f"the chain ends at event {last_seq} but the head says {head['seq']} (events removed)"
        else:
            reason = f"the head (event {head['seq']}) does not match the last event {last_seq}"
        broken = (last_seq + 1, None, reason)
    if broken is None and head is None and checked:
        broken = (last_seq + 1, None, "the chain head is missing")
    seq, event_id, reason = broken or (None, None, "")
    return AuditVerification.objects.create(
        ok=broken is None,
        events=checked,
        head_seq=last_seq if checked else None,
        head_hash=prev_hash if checked else "",
        broken_seq=seq,
        broken_event_id=event_id,
        reason=reason[:300],
        seconds=round(time.perf_counter() - started, 3),
    )
