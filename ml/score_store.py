"""Writing a chunk's scores: the history rows and the current scores.

On PostgreSQL a chunk is one `COPY` into a temporary staging table and two set-based
statements: an `INSERT ... SELECT ... ON CONFLICT DO NOTHING` into the history, and the
current scores, with the revenue at risk and the change since the previous run computed in SQL.

A dispatched run (the chord) writes its current scores into a table of its own, unindexed
(`current_stage_open`), and its close swaps that table in for ml_partnerscore with the same
indexes and constraints, built once by sort (`current_stage_swap`). Updating ml_partnerscore
in place rewrote every row and every one of its ten indexes (2 KB of WAL per partner, 5x a
bare COPY); building them once costs a fraction of that, and the feed reads the old scores
until the new run's are complete. A write outside a dispatched run (a single chunk, the tests'
fixtures) upserts in place. Elsewhere (the SQLite demo) the rows go through the ORM.
The history has no database key on the partner (ml.models): a chunk holds the history guard, an
advisory lock shared by every chunk, and counts its partners (the rows its current scores'
join wrote, or `_PARTNERS_FOUND`), rather than PostgreSQL checking each row twice; deleting
a partner takes the guard exclusively (the trigger of migrations 0014 and 0016).
`bench/scale_bench.py` prints persistence beside a bare COPY of the same rows (issue 15).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from ml.models import BUCKET_URGENCY_RANK, PartnerScore, RiskScore, ScoringRun
from retention.models import Partner

PROBABILITIES = ("risk", "p_7d", "p_30d", "p_90d", "p_later")
STAGE = "ml_score_stage"
# The staging table's columns, in COPY order: what varies per partner (the run, the model
# version and the time are one value per chunk and are bound as parameters instead).
STAGE_COLUMNS = ("partner_id", *PROBABILITIES, "bucket", "urgency_rank", "drivers")


def stage_rows(pred: pd.DataFrame, drivers: dict[int, list]) -> list[tuple]:
    """The chunk's rows in STAGE_COLUMNS order, probabilities clipped so the check
    constraints always hold (float noise), drivers as JSON text (None: not computed)."""
    cols = [np.clip(pred[c].to_numpy(dtype=float), 0.0, 1.0).tolist() for c in PROBABILITIES]
    buckets = [str(b) for b in pred["bucket"].to_numpy()]
    ids = [int(i) for i in pred.index]
    ranks = [BUCKET_URGENCY_RANK[b] for b in buckets]
    texts = [None if (d := drivers.get(pid)) is None else json.dumps(d) for pid in ids]
    return list(zip(ids, *cols, buckets, ranks, texts, strict=True))


def scores_persist(
    *, run: ScoringRun, pred: pd.DataFrame, drivers: dict[int, list], current: bool, now: dt.datetime
) -> None:
    """One history row per partner of the chunk (kept if the chunk was already written), and,
    unless the run is a backfill, the partner's current score (replaced)."""
    if not len(pred):
        return
    rows = stage_rows(pred, drivers)
    if connection.vendor == "postgresql":
        _persist_copy(run, rows, current=current, now=now)
    else:
        _persist_orm(run, rows, current=current, now=now)


def copy_rows(table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """COPY `rows` into `table` through psycopg's copy (its C row writer)."""
    with (
        connection.connection.cursor() as cur,
        cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


# pg_advisory_xact_lock key of the history guard: chunks share it, a partner's delete takes it
# alone (its trigger, migration 0016, which has this number written in), and so does a rename (0017).
HISTORY_GUARD = 0x1A7E_0016
_PARTNERS_FOUND = f"""
SELECT count(*) FROM {STAGE} s JOIN retention_partner p ON p.id = s.partner_id AND p.id BETWEEN %(lo)s AND %(hi)s
"""

_HISTORY_INSERT = f"""
INSERT INTO ml_riskscore (partner_id, model_version_id, run_id, {", ".join(PROBABILITIES)},
                          bucket, drivers, scored_at)
SELECT s.partner_id, %(version)s, %(run)s, {", ".join("s." + c for c in PROBABILITIES)},
       s.bucket, s.drivers, %(now)s
FROM {STAGE} s
"""
# A chunk delivered again keeps the rows its first delivery wrote. Only then: ON CONFLICT
# checks the unique index before each row's insert, a third of the insert's time at 1M
# partners (55 against 37 ms a 10,000-row chunk).
_HISTORY_INSERT_AGAIN = _HISTORY_INSERT + "ON CONFLICT (run_id, partner_id) DO NOTHING"

# The previous score to compare with: the partner's current score of an earlier run (its
# risk, at that run's date), or, when this run already wrote it (a chunk delivered twice),
# the comparison that write made. The same rules as the ORM path below.
_SAME_RUN = "ml_partnerscore.run_id IS NOT DISTINCT FROM EXCLUDED.run_id"
_PREV_RISK = f"CASE WHEN {_SAME_RUN} THEN ml_partnerscore.previous_risk ELSE ml_partnerscore.risk END"
_PREV_AS_OF = f"""CASE WHEN {_SAME_RUN} THEN ml_partnerscore.previous_as_of ELSE COALESCE(
    (SELECT r.as_of FROM ml_scoringrun r WHERE r.id = ml_partnerscore.run_id),
    (ml_partnerscore.scored_at AT TIME ZONE %(tz)s)::date) END"""
_CURRENT_UPSERT = f"""
INSERT INTO ml_partnerscore (partner_id, model_version_id, run_id, {", ".join(PROBABILITIES)},
                             bucket, drivers, scored_at, urgency_rank, revenue_at_risk, partner_name)
SELECT s.partner_id, %(version)s, %(run)s, {", ".join("s." + c for c in PROBABILITIES)},
       s.bucket, s.drivers, %(now)s, s.urgency_rank,
       ROUND(COALESCE(p.monthly_revenue, 0) * s.risk::numeric, 2), p.name
FROM {STAGE} s JOIN retention_partner p ON p.id = s.partner_id
ON CONFLICT (partner_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in PROBABILITIES)},
    bucket = EXCLUDED.bucket, drivers = EXCLUDED.drivers, scored_at = EXCLUDED.scored_at,
    model_version_id = EXCLUDED.model_version_id, urgency_rank = EXCLUDED.urgency_rank,
    revenue_at_risk = EXCLUDED.revenue_at_risk, partner_name = EXCLUDED.partner_name,
    previous_risk = {_PREV_RISK},
    previous_as_of = {_PREV_AS_OF},
    risk_change = EXCLUDED.risk - ({_PREV_RISK}),
    run_id = EXCLUDED.run_id
"""


LIVE = "ml_partnerscore"
CURRENT_COLUMNS = ("partner_id", "model_version_id", "run_id", *PROBABILITIES, "bucket", "drivers", "scored_at",
                   "urgency_rank", "revenue_at_risk", "previous_risk", "previous_as_of", "risk_change",
                   "partner_name")  # fmt: skip
# The run's current scores beside the partner's live one, by the upsert's rules above (the
# live row is of an earlier run until the swap; of this run only if it wrote in place before).
_O_SAME = "o.run_id = %(run)s"
_O_PREV = f"CASE WHEN {_O_SAME} THEN o.previous_risk ELSE o.risk END"
_CURRENT_STAGED = f"""
INSERT INTO {{table}} ({", ".join(CURRENT_COLUMNS)})
SELECT s.partner_id, %(version)s, %(run)s, {", ".join("s." + c for c in PROBABILITIES)},
       s.bucket, s.drivers, %(now)s, s.urgency_rank,
       ROUND(COALESCE(p.monthly_revenue, 0) * s.risk::numeric, 2),
       {_O_PREV},
       CASE WHEN o.partner_id IS NULL THEN NULL WHEN {_O_SAME} THEN o.previous_as_of
            ELSE COALESCE(r.as_of, (o.scored_at AT TIME ZONE %(tz)s)::date) END,
       s.risk - ({_O_PREV}), p.name
FROM {STAGE} s
JOIN retention_partner p ON p.id = s.partner_id AND p.id BETWEEN %(lo)s AND %(hi)s
LEFT JOIN {LIVE} o ON o.partner_id = s.partner_id AND o.partner_id BETWEEN %(lo)s AND %(hi)s
LEFT JOIN ml_scoringrun r ON r.id = o.run_id
"""
# The chunk's id range (chunks are runs of sorted ids) bounds both joins to the chunk's own
# rows: without it each chunk hashed all partners and all live scores (quadratic at 1M).


PLANNED_COLUMNS = ("partner_id", "run_id", "risk", "bucket", "urgency_rank", "revenue_at_risk", "previous_risk",
                   "risk_change")  # fmt: skip


def current_stage_name(run_id: int) -> str:
    return f"{LIVE}_run_{int(run_id)}"


def current_stage_open(*, run: ScoringRun) -> bool:
    """A fresh, unindexed table for this run's current scores (every attempt rescores all
    partners, so a retry starts empty). PostgreSQL, and not for a backfill (history only)."""
    if connection.vendor != "postgresql" or run.backfill:
        return False
    name = current_stage_name(run.pk)
    with connection.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        # LIKE copies the columns, NOT NULLs and CHECKs; indexes and keys come at the swap.
        cur.execute(f"CREATE TABLE {name} (LIKE {LIVE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    return True


def _staged(run_id: int) -> str | None:
    name = current_stage_name(run_id)
    with connection.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        return name if cur.fetchone()[0] else None


def current_stage_vacuum(*, run_id: int) -> float | None:
    """VACUUM (ANALYZE) the run's staged current scores before the close swaps them in;
    returns the seconds, or None when there is nothing to vacuum or it cannot run here.

    A fresh table has no visibility map, so until autovacuum reaches it every index-only
    scan of the feed reads the heap too (and this machine runs with autovacuum off). VACUUM
    cannot run inside a transaction, so it comes before the close's, on the rows the chunks
    wrote (the close's carry-over of unscored partners, usually none, comes after); inside an
    outer transaction (a test's) it is left to autovacuum."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return None
    if (name := _staged(run_id)) is None:
        return None
    started = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute(f"VACUUM (ANALYZE) {name}")
    return time.perf_counter() - started


def current_stage_swap(*, run: ScoringRun) -> float | None:
    """Make the run's staged current scores ml_partnerscore, inside the caller's transaction:
    carry over the live scores of active partners the run did not score, build the live
    table's indexes and keys (same definitions, same names), ANALYZE, then swap under a short
    exclusive lock (scoring_run_finish then drops the scores of partners no longer active).
    Returns the seconds it took, or None when the run staged nothing (it wrote in place)."""
    if connection.vendor != "postgresql" or (name := _staged(run.pk)) is None:
        return None
    started = time.perf_counter()
    active = "SELECT 1 FROM retention_partner p WHERE p.id = {0}.partner_id AND p.status = 'active'"
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {name} SELECT l.* FROM {LIVE} l WHERE EXISTS ({active.format('l')}) "
            f"AND NOT EXISTS (SELECT 1 FROM {name} n WHERE n.partner_id = l.partner_id)"
        )
        cur.execute(
            "SELECT c.conname, c.contype, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "WHERE c.conrelid = %s::regclass AND c.contype IN ('p', 'f') ORDER BY c.contype DESC",
            [LIVE],
        )
        constraints = cur.fetchall()
        cur.execute(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE x.indrelid = %s::regclass AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid AND c.conrelid = x.indrelid)",
            [LIVE],
        )
        indexes = cur.fetchall()
        renames: list[tuple[str, str, str]] = []  # (kind, temporary name, live name)

        def add_constraint(i: int, conname: str, definition: str) -> None:
            temp = f"swap{run.pk}_c{i}"
            cur.execute(f"ALTER TABLE {name} ADD CONSTRAINT {temp} {definition}")
            renames.append(("CONSTRAINT", temp, conname))

        on_live = re.compile(rf" ON (?:\S+\.)?{LIVE} ")
        for i, (conname, kind, definition) in enumerate(constraints):
            if kind == "p":  # unique: a partner staged twice fails the swap, not the feed
                add_constraint(i, conname, definition)
        for i, (index, definition) in enumerate(indexes):
            temp = f"swap{run.pk}_i{i}"
            ddl = on_live.sub(
                f" ON {name} ", definition.replace(f"INDEX {index} ON", f"INDEX {temp} ON", 1), 1
            )
            cur.execute(ddl)
            renames.append(("INDEX", temp, index))
        # A new table has no statistics, and the feed's and API's plans need them: the columns
        # they filter and sort on (autovacuum analyzes the rest later).
        cur.execute(f"ANALYZE {name} ({', '.join(PLANNED_COLUMNS)})")
        # Foreign keys last: adding one checks every row in one pass (a partner deleted during
        # the run fails the swap instead of leaving a dangling score) and holds off writes to
        # the parent tables (partners, runs, versions) until this transaction commits.
        for i, (conname, kind, definition) in enumerate(constraints):
            if kind == "f":
                add_constraint(i, conname, definition)
        # Readers wait here only for the drop and the renames, not for the builds above.
        cur.execute(f"LOCK TABLE {LIVE} IN ACCESS EXCLUSIVE MODE")
        # A partner renamed after its chunk was written: the rename's trigger (migration 0017)
        # updated the live row, not this one. Under the lock, so a rename from now on waits
        # and then updates the swapped-in table. A rename stamps updated_at after waiting for
        # the chunks in flight, so it is one of the partners updated since the run started (a
        # range of partner_updated_at_idx): comparing every name took 1.1 s at 1M partners.
        cur.execute(
            f"UPDATE {name} n SET partner_name = p.name FROM retention_partner p "
            "WHERE p.updated_at >= %s AND p.id = n.partner_id AND n.partner_name IS DISTINCT FROM p.name",
            [run.started_at],
        )
        cur.execute(f"DROP TABLE {LIVE}")
        cur.execute(f"ALTER TABLE {name} RENAME TO {LIVE}")
        for kind, temp, final in renames:
            if kind == "CONSTRAINT":
                cur.execute(f'ALTER TABLE {LIVE} RENAME CONSTRAINT {temp} TO "{final}"')
            else:
                cur.execute(f'ALTER INDEX {temp} RENAME TO "{final}"')
        _drop_stale_stages(cur, keep=run.pk)
    return time.perf_counter() - started


def _drop_stale_stages(cur: Any, *, keep: int) -> None:
    """Staged tables of runs that failed and were never retried."""
    cur.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE %s "
        "AND c.relnamespace = current_schema()::regnamespace",
        [f"{LIVE}_run_%"],
    )
    for (table,) in cur.fetchall():
        if not (match := re.fullmatch(rf"{LIVE}_run_(\d+)", table)):
            continue
        run_id = int(match[1])
        if (
            run_id != keep
            and not ScoringRun.objects.filter(pk=run_id, status=ScoringRun.Status.RUNNING).exists()
        ):
            cur.execute(f"DROP TABLE IF EXISTS {table}")


def _persist_copy(run: ScoringRun, rows: list[tuple], *, current: bool, now: dt.datetime) -> None:
    params: dict[str, Any] = {
        "version": run.model_version_id,
        "run": run.pk,
        "now": now,
        "tz": settings.TIME_ZONE,
        "lo": min(r[0] for r in rows),
        "hi": max(r[0] for r in rows),
    }
    with transaction.atomic(), connection.cursor() as cur:
        # What the history's foreign keys on run and version would do per row, once: both
        # exist and stay until this chunk commits (ml.models.RiskScore). The history guard,
        # shared, makes a partner's delete wait for this chunk's commit (and this chunk for a
        # delete's): taken here, before the statement below that counts the partners, so that
        # statement's snapshot sees any delete that committed first.
        cur.execute(
            "SELECT r.id, pg_advisory_xact_lock_shared(%(guard)s) "
            "FROM ml_scoringrun r JOIN ml_modelversion v ON v.id = r.model_version_id "
            "WHERE r.id = %(run)s AND v.id = %(version)s FOR KEY SHARE",
            {**params, "guard": HISTORY_GUARD},
        )
        if cur.fetchone() is None:
            raise ScoringRun.DoesNotExist(
                f"Scoring run {run.pk} (model version {run.model_version_id}) is gone"
            )
        # Unindexed and unlogged by nature. Dropped at the end: ON COMMIT DROP alone would
        # keep it until the outermost commit when scoring runs inside a transaction (tests).
        cur.execute(f"DROP TABLE IF EXISTS {STAGE}")
        cur.execute(
            f"CREATE TEMP TABLE {STAGE} (partner_id integer, "
            + ", ".join(f"{c} double precision" for c in PROBABILITIES)
            + ", bucket varchar(5), urgency_rank smallint, drivers jsonb) ON COMMIT DROP"
        )
        copy_rows(STAGE, STAGE_COLUMNS, rows)
        written = _history_insert(cur, params)
        staged = _staged(run.pk) if current else None
        # The current scores join the partners, so the rows they write are the partners found;
        # a backfill counts them (_PARTNERS_FOUND).
        if staged:
            if written < len(rows):  # delivered before (the history kept its rows): replace
                cur.execute(f"DELETE FROM {staged} WHERE partner_id IN (SELECT partner_id FROM {STAGE})")
            cur.execute(_CURRENT_STAGED.format(table=staged), params)
            found = cur.rowcount
        elif current:
            # SET clauses read the row before the update, so previous_risk and risk_change
            # see the same old values: the order of assignments does not matter.
            cur.execute(_CURRENT_UPSERT, params)
            found = cur.rowcount
        else:
            cur.execute(_PARTNERS_FOUND, params)
            found = cur.fetchone()[0]
        # What the history's foreign key on the partner would do per row: every partner
        # exists, and stays until this chunk commits (a delete waits for the guard, then fails
        # on the history this chunk wrote: migrations 0014 and 0016). Else nothing is kept.
        if found < len(rows):
            raise IntegrityError(
                f"Scoring run {run.pk}: {len(rows) - found} of the chunk's partners are gone"
            )
        cur.execute(f"DROP TABLE {STAGE}")


def _history_insert(cur: Any, params: dict[str, Any]) -> int:
    """The chunk's history rows, a plain insert unless the run already holds some of them (a
    chunk delivered again, or twice at once: the unique index refuses the plain insert, after
    the other delivery's commit when it is concurrent). The rows written."""
    try:
        with transaction.atomic():
            cur.execute(_HISTORY_INSERT, params)
    except IntegrityError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != "23505":  # unique_violation
            raise
        cur.execute(_HISTORY_INSERT_AGAIN, params)
    return cur.rowcount


def _persist_orm(run: ScoringRun, rows: list[tuple], *, current: bool, now: dt.datetime) -> None:
    ids = [r[0] for r in rows]
    partners = {pk: (rev, name) for pk, rev, name in
                Partner.objects.filter(pk__in=ids).values_list("pk", "monthly_revenue", "name")}  # fmt: skip
    if len(partners) < len(set(ids)):  # the history has no foreign key to say so (ml.models)
        raise IntegrityError(
            f"Scoring run {run.pk}: {len(set(ids)) - len(partners)} of the chunk's partners are gone"
        )
    previous = _previous_scores(run, ids) if current else {}
    history, now_scores = [], []
    for pid, *probs, bucket, rank, text in rows:
        fields = dict(zip(PROBABILITIES, probs, strict=True))
        d = None if text is None else json.loads(text)
        common = {"partner_id": pid, "model_version_id": run.model_version_id, "run_id": run.pk}
        history.append(RiskScore(**common, bucket=bucket, drivers=d, scored_at=now, **fields))
        if not current:
            continue
        revenue, name = partners[pid]
        rar = (revenue or Decimal(0)) * Decimal(repr(fields["risk"]))
        prev_risk, prev_as_of = previous.get(pid, (None, None))
        now_scores.append(
            PartnerScore(
                **common, bucket=bucket, drivers=d, scored_at=now, urgency_rank=rank,
                revenue_at_risk=rar.quantize(Decimal("0.01")), previous_risk=prev_risk,
                previous_as_of=prev_as_of,
                risk_change=None if prev_risk is None else fields["risk"] - prev_risk, partner_name=name,
                **fields,
            )
        )  # fmt: skip
    with transaction.atomic():
        RiskScore.objects.bulk_create(history, batch_size=5000, ignore_conflicts=True)
        PartnerScore.objects.bulk_create(
            now_scores,
            batch_size=5000,
            update_conflicts=True,
            unique_fields=["partner"],
            update_fields=[
                "risk", "p_7d", "p_30d", "p_90d", "p_later", "bucket", "drivers", "scored_at",
                "model_version", "run", "urgency_rank", "revenue_at_risk", "previous_risk",
                "previous_as_of", "risk_change", "partner_name",
            ],
        )  # fmt: skip


def _previous_scores(run: ScoringRun, partner_ids: list[int]) -> dict[int, tuple]:
    """Each partner's score before this run, to compare with: the current score of an earlier
    run, or (a chunk delivered twice) the comparison this run already made."""
    out = {}
    rows = PartnerScore.objects.filter(partner_id__in=partner_ids).values_list(
        "partner_id", "run_id", "risk", "run__as_of", "scored_at", "previous_risk", "previous_as_of"
    )
    for pid, run_id, risk, as_of, scored_at, prev_risk, prev_as_of in rows:
        if run_id == run.pk:
            out[pid] = (prev_risk, prev_as_of)
        else:
            out[pid] = (risk, as_of or timezone.localdate(scored_at))
    return out
