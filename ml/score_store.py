"""Writing a chunk's scores: the history rows and the current scores.

On PostgreSQL a chunk is one `COPY` into a temporary staging table and two set-based
statements: an `INSERT ... SELECT ... ON CONFLICT DO NOTHING` into the history, and an
`INSERT ... SELECT ... ON CONFLICT DO UPDATE` into the current scores that computes the
revenue at risk and the change since the previous run in SQL. That keeps persistence near the
cost of the `COPY` itself (issue 15; `bench/scale_bench.py` prints both). Elsewhere (the
SQLite demo) the same rows go through the ORM's bulk_create.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection, transaction
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


_HISTORY_INSERT = f"""
INSERT INTO ml_riskscore (partner_id, model_version_id, run_id, {", ".join(PROBABILITIES)},
                          bucket, drivers, scored_at)
SELECT s.partner_id, %(version)s, %(run)s, {", ".join("s." + c for c in PROBABILITIES)},
       s.bucket, s.drivers, %(now)s
FROM {STAGE} s
ON CONFLICT (run_id, partner_id) DO NOTHING
"""

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
                             bucket, drivers, scored_at, urgency_rank, revenue_at_risk)
SELECT s.partner_id, %(version)s, %(run)s, {", ".join("s." + c for c in PROBABILITIES)},
       s.bucket, s.drivers, %(now)s, s.urgency_rank,
       ROUND(COALESCE(p.monthly_revenue, 0) * s.risk::numeric, 2)
FROM {STAGE} s JOIN retention_partner p ON p.id = s.partner_id
ON CONFLICT (partner_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in PROBABILITIES)},
    bucket = EXCLUDED.bucket, drivers = EXCLUDED.drivers, scored_at = EXCLUDED.scored_at,
    model_version_id = EXCLUDED.model_version_id, urgency_rank = EXCLUDED.urgency_rank,
    revenue_at_risk = EXCLUDED.revenue_at_risk,
    previous_risk = {_PREV_RISK},
    previous_as_of = {_PREV_AS_OF},
    risk_change = EXCLUDED.risk - ({_PREV_RISK}),
    run_id = EXCLUDED.run_id
"""


def _persist_copy(run: ScoringRun, rows: list[tuple], *, current: bool, now: dt.datetime) -> None:
    params: dict[str, Any] = {
        "version": run.model_version_id,
        "run": run.pk,
        "now": now,
        "tz": settings.TIME_ZONE,
    }
    with transaction.atomic(), connection.cursor() as cur:
        # Unindexed and unlogged by nature. Dropped at the end: ON COMMIT DROP alone would
        # keep it until the outermost commit when scoring runs inside a transaction (tests).
        cur.execute(f"DROP TABLE IF EXISTS {STAGE}")
        cur.execute(
            f"CREATE TEMP TABLE {STAGE} (partner_id integer, "
            + ", ".join(f"{c} double precision" for c in PROBABILITIES)
            + ", bucket varchar(5), urgency_rank smallint, drivers jsonb) ON COMMIT DROP"
        )
        copy_rows(STAGE, STAGE_COLUMNS, rows)
        cur.execute(_HISTORY_INSERT, params)
        if current:
            # SET clauses read the row before the update, so previous_risk and risk_change
            # see the same old values: the order of assignments does not matter.
            cur.execute(_CURRENT_UPSERT, params)
        cur.execute(f"DROP TABLE {STAGE}")


def _persist_orm(run: ScoringRun, rows: list[tuple], *, current: bool, now: dt.datetime) -> None:
    ids = [r[0] for r in rows]
    revenue = dict(Partner.objects.filter(pk__in=ids).values_list("pk", "monthly_revenue"))
    previous = _previous_scores(run, ids) if current else {}
    history, now_scores = [], []
    for pid, *probs, bucket, rank, text in rows:
        fields = dict(zip(PROBABILITIES, probs, strict=True))
        d = None if text is None else json.loads(text)
        common = {"partner_id": pid, "model_version_id": run.model_version_id, "run_id": run.pk}
        history.append(RiskScore(**common, bucket=bucket, drivers=d, scored_at=now, **fields))
        if not current:
            continue
        rar = (revenue.get(pid) or Decimal(0)) * Decimal(repr(fields["risk"]))
        prev_risk, prev_as_of = previous.get(pid, (None, None))
        now_scores.append(
            PartnerScore(
                **common, bucket=bucket, drivers=d, scored_at=now, urgency_rank=rank,
                revenue_at_risk=rar.quantize(Decimal("0.01")), previous_risk=prev_risk,
                previous_as_of=prev_as_of,
                risk_change=None if prev_risk is None else fields["risk"] - prev_risk, **fields,
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
                "previous_as_of", "risk_change",
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
