"""Glue between the pure simulator (ml/simulator.py) and the database.

`seed_demo` writes a simulated world's observable tables (partners, monthly activity,
invoices) and keeps its hidden state in a gzip file under MEDIA_ROOT, recorded in a
`SimulatedWorld` row; `simulate_days` loads that state, advances it and applies what
happened to the tables. Bulk writes use PostgreSQL's COPY (seconds for millions of rows)
and fall back to bulk_create on SQLite.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import Callable, Iterable
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection
from django.utils import timezone

from ml import simulator
from ml.models import SimulatedWorld
from retention.models import Invoice, MonthlyActivity, Partner

Progress = Callable[[int], None]
CHUNK_ROWS = 50_000


def _noop(_: int) -> None:
    return None


# -- hidden state -----------------------------------------------------------------------


def world_state_save(*, state: simulator.WorldState, path: Path | None = None) -> str:
    """Write the hidden state; returns its path relative to MEDIA_ROOT."""
    rel = Path("simulator") / f"world-{state.seed}-{timezone.now():%Y%m%dT%H%M%S%f}.json.gz"
    target = Path(settings.MEDIA_ROOT) / (path or rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    # Level 1: the state is mostly base64 arrays; speed matters more than a few MB.
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as fh:
        json.dump(simulator.world_state_to_json(state), fh)
    tmp.replace(target)
    return str(path or rel)


def world_current() -> SimulatedWorld | None:
    return SimulatedWorld.objects.order_by("-created_at").first()


def world_load(record: SimulatedWorld | None = None) -> tuple[SimulatedWorld, simulator.World]:
    """The current simulated world with its hidden state (raises LookupError if none)."""
    record = record or world_current()
    if record is None:
        raise LookupError("No simulated world in this database: run seed_demo first")
    with gzip.open(Path(settings.MEDIA_ROOT) / record.state_path, "rt", encoding="utf-8") as fh:
        state = simulator.world_state_from_json(json.load(fh))
    return record, simulator.world_from_state(state)


# -- bulk writing -----------------------------------------------------------------------


def _fmt_date(values: pd.Series) -> list[str | None]:
    out = pd.to_datetime(values).dt.strftime("%Y-%m-%d")
    return [None if isinstance(v, float) or v is None else v for v in out.where(out.notna(), None)]


def _copy_rows(table: str, columns: list[str], rows: Iterable[tuple], progress: Progress) -> None:
    """COPY rows into table on PostgreSQL, in chunks so the progress bar moves."""
    cols = ", ".join(columns)
    with connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg 3 cursor underneath Django's wrapper
        batch: list[tuple] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= CHUNK_ROWS:
                with raw.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                    for r in batch:
                        copy.write_row(r)
                progress(len(batch))
                batch = []
        if batch:
            with raw.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for r in batch:
                    copy.write_row(r)
            progress(len(batch))


def _bulk_create(model, objs: Iterable, progress: Progress) -> None:
    batch = []
    for obj in objs:
        batch.append(obj)
        if len(batch) >= 5_000:
            model.objects.bulk_create(batch)
            progress(len(batch))
            batch = []
    if batch:
        model.objects.bulk_create(batch)
        progress(len(batch))


def _owner_ids(n: int, owner_ids: list[int], seed: int) -> np.ndarray:
    if not owner_ids:
        return np.full(n, None, dtype=object)
    rng = np.random.default_rng([seed, 7])
    return np.asarray(owner_ids, dtype=object)[rng.integers(0, len(owner_ids), size=n)]


def write_partners(
    partners: pd.DataFrame, *, owner_ids: list[int], seed: int, progress: Progress = _noop
) -> dict[str, int]:
    """Insert partners; returns external_id -> primary key."""
    now = timezone.now()
    owners = _owner_ids(len(partners), owner_ids, seed)
    joined = _fmt_date(partners["joined_on"])
    churned = _fmt_date(partners["churned_on"])
    revenue = np.round(partners["monthly_revenue"].to_numpy(dtype=float), 2)
    columns = [
        "external_id",
        "name",
        "tier",
        "region",
        "segment",
        "monthly_revenue",
        "contact_email",
        "account_owner_id",
        "joined_on",
        "status",
        "churned_on",
        "notes",
        "created_at",
        "updated_at",
    ]
    rows = (
        (
            ext,
            name,
            tier,
            region,
            segment,
            f"{rev:.2f}",
            email,
            owner,
            j,
            status,
            c,
            notes or "",
            now,
            now,
        )
        for ext, name, tier, region, segment, rev, email, owner, j, status, c, notes in zip(
            partners["external_id"],
            partners["name"],
            partners["tier"],
            partners["region"],
            partners["segment"],
            revenue,
            partners["contact_email"],
            owners,
            joined,
            partners["status"],
            churned,
            partners["notes"],
            strict=True,
        )
    )
    if connection.vendor == "postgresql":
        _copy_rows(Partner._meta.db_table, columns, rows, progress)
    else:
        _bulk_create(Partner, (Partner(**dict(zip(columns, r, strict=True))) for r in rows), progress)
    return dict(Partner.objects.values_list("external_id", "id"))


def write_activity(activity: pd.DataFrame, *, ids: dict[str, int], progress: Progress = _noop) -> int:
    partner_ids = activity["external_id"].map(ids).to_numpy()
    months = _fmt_date(activity["month"])
    columns = ["partner_id", "month", "transactions", "revenue", "active_users", "support_tickets"]
    rows = zip(
        partner_ids.tolist(),
        months,
        activity["transactions"].astype(int).tolist(),
        [f"{v:.2f}" for v in activity["revenue"].to_numpy(dtype=float)],
        activity["active_users"].astype(int).tolist(),
        activity["support_tickets"].astype(int).tolist(),
        strict=True,
    )
    if connection.vendor == "postgresql":
        _copy_rows(MonthlyActivity._meta.db_table, columns, rows, progress)
    else:
        _bulk_create(
            MonthlyActivity, (MonthlyActivity(**dict(zip(columns, r, strict=True))) for r in rows), progress
        )
    return len(activity)


def write_invoices(invoices: pd.DataFrame, *, ids: dict[str, int], progress: Progress = _noop) -> int:
    columns = ["partner_id", "issued_on", "due_on", "paid_on", "amount"]
    rows = zip(
        invoices["external_id"].map(ids).tolist(),
        _fmt_date(invoices["issued_on"]),
        _fmt_date(invoices["due_on"]),
        _fmt_date(invoices["paid_on"]),
        [f"{v:.2f}" for v in invoices["amount"].to_numpy(dtype=float)],
        strict=True,
    )
    if connection.vendor == "postgresql":
        _copy_rows(Invoice._meta.db_table, columns, rows, progress)
    else:
        _bulk_create(Invoice, (Invoice(**dict(zip(columns, r, strict=True))) for r in rows), progress)
    return len(invoices)


def world_record(*, world: simulator.World, seed: int, months: int, state_path: str) -> SimulatedWorld:
    return SimulatedWorld.objects.create(
        seed=seed,
        n_partners=len(world.partners),
        months=months,
        params=_params_json(world),
        started_on=world.today,
        today=world.today,
        state_path=state_path,
    )


# -- advancing ----------------------------------------------------------------------------


def apply_delta(delta: simulator.WorldDelta) -> dict[str, int]:
    """Write what happened during an advance: new months, invoices, payments, churn."""
    ids = dict(Partner.objects.values_list("external_id", "id"))
    written = {
        "activity": write_activity(delta.activity, ids=ids) if len(delta.activity) else 0,
        "invoices": write_invoices(delta.invoices, ids=ids) if len(delta.invoices) else 0,
        "payments": 0,
        "churned": 0,
    }
    for ext, issued, paid in zip(
        delta.payments["external_id"],
        _fmt_date(delta.payments["issued_on"]),
        _fmt_date(delta.payments["paid_on"]),
        strict=True,
    ):
        written["payments"] += Invoice.objects.filter(
            partner_id=ids[ext], issued_on=issued, paid_on__isnull=True
        ).update(paid_on=paid)
    for ext, churned_on in zip(
        delta.churn_events["external_id"], _fmt_date(delta.churn_events["churned_on"]), strict=True
    ):
        written["churned"] += Partner.objects.filter(id=ids[ext], status=Partner.Status.ACTIVE).update(
            status=Partner.Status.CHURNED, churned_on=churned_on, updated_at=timezone.now()
        )
    return written


def _params_json(world: simulator.World) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(world.state.params), default=list))


def as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value
