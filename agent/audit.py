"""The one way to write to the audit trail (import it from any app), and its hash chain.

Every event is appended to one chain: event n carries `prev_hash` (event n-1's hash) and
`hash` = SHA-256 over its own content and prev_hash. Appends are serialised by locking the
chain head row (AuditChainHead, pk=1) FOR UPDATE until the recording transaction commits, so
the chain order is the commit order whatever the number of workers; a transaction that rolls
back takes its event and its head update with it, leaving no gap.

On PostgreSQL an append is usually one statement: the connection remembers the head it last
wrote, and one statement locks the head only if it is still there, inserts the event and
advances the head; when the guess is stale (another writer, a rollback) nothing is written and
the append reads the locked head first (3 statements, as before for every event).
"""

import datetime as dt
import functools
import hashlib
import json
import time
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db import connection, connections, router, transaction
from django.db.models import F
from django.db.models.signals import post_save

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


def _head_cache(alias: str) -> dict:
    """The chain head this connection last wrote or read, {} when unknown. Only a guess: an
    append checks it against the locked head row in the same statement (agent.audit._append_sql),
    so a stale guess (another writer appended, or our own transaction rolled back) costs one
    more round trip, never a wrong link."""
    wrapper = connections[alias]
    cache = getattr(wrapper, "_churnsite_audit_head", None)
    if cache is None:
        cache = {}
        wrapper._churnsite_audit_head = cache  # type: ignore[attr-defined]
    return cache


@functools.cache
def _append_sql() -> tuple[str, tuple[str, ...]]:
    """One statement that appends an event if, and only if, the head is still where the caller
    thinks it is: lock the head row only when it holds (seq, hash) (FOR UPDATE waits for another
    appender, then re-checks the row it committed), insert the event, advance the head (its
    trigger sees the event inserted by the same statement). No row back: the guess was stale."""
    table, head = AuditEvent._meta.db_table, AuditChainHead._meta.db_table
    fields = tuple(f.attname for f in AuditEvent._meta.concrete_fields if not f.primary_key)
    concrete = {f.attname: f for f in AuditEvent._meta.concrete_fields}
    columns = ", ".join(connection.ops.quote_name(concrete[name].column) for name in fields)
    # Typed placeholders: INSERT ... SELECT does not infer a NULL's type from the column.
    values = ", ".join(f"%s::{concrete[name].db_type(connection)}" for name in fields)
    sql = (
        f"WITH locked AS (SELECT id FROM {head} WHERE id = 1 AND seq = %s AND hash = %s FOR UPDATE), "
        f"ins AS (INSERT INTO {table} ({columns}) SELECT {values} FROM locked RETURNING id, seq, hash) "
        f"UPDATE {head} SET seq = ins.seq, hash = ins.hash FROM ins WHERE {head}.id = 1 RETURNING ins.id"
    )
    return sql, fields


def _append_postgres(event: AuditEvent, alias: str) -> bool:
    """Append `event` (seq and prev_hash already set from the cached head) in one statement;
    False when the head had moved (nothing written)."""
    sql, fields = _append_sql()
    concrete = {f.attname: f for f in AuditEvent._meta.concrete_fields}
    conn = connections[alias]
    params: list[Any] = [event.seq - 1, event.prev_hash] + [
        concrete[name].get_db_prep_save(getattr(event, name), conn) for name in fields
    ]
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    event.pk = row[0]
    event._state.adding, event._state.db = False, alias
    return True


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
    event = AuditEvent(
        event_type=event_type,
        actor_type=actor_type,
        actor_user=actor if isinstance(actor, User) else None,
        run=run,
        partner=partner,
        intervention=intervention,
        payload=payload or {},
    )
    alias = router.db_for_write(AuditEvent)
    cache = _head_cache(alias)

    def link(seq: int, prev_hash: str) -> None:
        event.seq, event.prev_hash = seq + 1, prev_hash
        event.hash = event_hash({name: getattr(event, name) for name in HASHED_FIELDS})

    # savepoint=False: no extra round trips inside the caller's transaction; outside one this
    # is the transaction that holds the head lock until the event is in.
    with transaction.atomic(using=alias, savepoint=False):
        if connections[alias].vendor == "postgresql":
            # Most appends are one statement: this connection wrote the head last (one agent
            # run appends ~7 events a partner). Otherwise: lock and read the head, then append.
            if "seq" in cache:
                link(cache["seq"], cache["hash"])
                written = _append_postgres(event, alias)
            else:
                written = False
            if not written:
                head = _lock_head()
                link(head.seq, head.hash)
                written = _append_postgres(event, alias)
                if not written:  # cannot happen: we hold the head's lock
                    raise RuntimeError("The audit chain head moved under its lock")
            post_save.send(
                sender=AuditEvent, instance=event, created=True, update_fields=None, raw=False, using=alias
            )
        else:
            head = _lock_head()
            link(head.seq, head.hash)
            event.save(force_insert=True)
            head.seq, head.hash = event.seq, event.hash
            head.save(update_fields=["seq", "hash"])
        cache["seq"], cache["hash"] = event.seq, event.hash
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
