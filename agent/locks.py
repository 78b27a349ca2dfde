"""The agent's locks: one run at a time (the sweep lock), one worker per partner (the claim
row), and the hourly budget (a transaction lock every contact is counted under)."""

from __future__ import annotations

import datetime as dt

from django.db import connection
from django.utils import timezone

from agent.models import PartnerClaim

# Advisory lock keys (any constants unique to this app).
BUDGET_LOCK_KEY = 7_301_001
SWEEP_LOCK_KEY = 7_301_002
# A claim older than this belongs to a worker that died mid-partner (tasks time out long before).
CLAIM_TTL = dt.timedelta(minutes=15)


def _is_postgres() -> bool:
    return connection.vendor == "postgresql"


def sweep_lock() -> bool:
    """The session-level lock a batch run holds: a second run finds it taken and exits."""
    if not _is_postgres():
        return True  # the embedded demo runs one process; claims still prevent doubles
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [SWEEP_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def sweep_unlock() -> None:
    if _is_postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [SWEEP_LOCK_KEY])


def partner_claim(*, partner_id: int, run_id: int, token: str) -> bool:
    """Insert the claim row; the primary key makes it exclusive. A claim older than CLAIM_TTL
    (its worker died) is taken over; the conditional upsert lets exactly one taker win."""
    now = timezone.now()
    table = PartnerClaim._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (partner_id, run_id, token, claimed_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (partner_id) DO UPDATE SET run_id = EXCLUDED.run_id, token = EXCLUDED.token, "
            f"claimed_at = EXCLUDED.claimed_at WHERE {table}.claimed_at < %s RETURNING token",
            [partner_id, run_id, token, now, now - CLAIM_TTL],
        )
        row = cursor.fetchone()
    return row is not None and row[0] == token


def partner_claim_release(*, partner_id: int, token: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {PartnerClaim._meta.db_table} WHERE partner_id = %s AND token = %s",
            [partner_id, token],
        )


def budget_lock() -> dt.datetime:
    """Serialize budget checks across every process (call it inside the transaction that
    creates the contact); returns the database's clock."""
    with connection.cursor() as cursor:
        if _is_postgres():
            # One round trip: the lock (a materialized CTE runs first), then the clock read after
            # the wait. clock_timestamp(), not now(): now() is when the transaction began.
            cursor.execute(
                "WITH locked AS MATERIALIZED (SELECT pg_advisory_xact_lock(%s)) "
                "SELECT clock_timestamp() FROM locked",
                [BUDGET_LOCK_KEY],
            )
            return cursor.fetchone()[0]
        # SQLite: a write first takes the database lock, so concurrent counts serialize too.
        cursor.execute("UPDATE agent_agentconfig SET id = id WHERE id = 1")
        return timezone.now()
