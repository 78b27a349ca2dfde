"""Glue between the pure simulator (ml/sim/simulator.py) and the database.

`seed_demo` writes a simulated world's observable tables (partners, monthly activity,
invoices) and keeps its hidden state in a gzip file under MEDIA_ROOT, recorded in a
`SimulatedWorld` row; `simulate_days` (ml/sim/clock.py) loads that state, advances it and
applies what happened to the tables. Bulk writes use PostgreSQL's COPY (seconds for millions of rows)
and fall back to bulk_create on SQLite.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection
from django.utils import timezone

from ml.models import SimulatedWorld
from ml.sim import simulator
from retention.models import Invoice, MonthlyActivity, Partner

# The activity rows' optional counts (docs/data.md): a world saved before them has none.
TAIL_COLUMNS = ("transactions_last_14d", "transactions_last_7d")

Progress = Callable[[int], None]
CHUNK_ROWS = 50_000


def _noop(_: int) -> None:
    return None


# -- hidden state -----------------------------------------------------------------------


def world_state_save(*, state: simulator.WorldState) -> str:
    """Write the hidden state; returns its path relative to MEDIA_ROOT."""
    return state_write(simulator.world_state_to_json(state), seed=state.seed)


def state_write(payload: dict, *, seed: int) -> str:
    # A new file per save: the row still points at the old one until the transaction commits.
    rel = Path("simulator") / f"world-{seed}-{timezone.now():%Y%m%dT%H%M%S%f}.json.gz"
    target = Path(settings.MEDIA_ROOT) / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    # Level 1: the state is mostly base64 arrays; speed matters more than a few MB.
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as fh:
        json.dump(payload, fh)
    tmp.replace(target)
    return str(rel)


def world_current() -> SimulatedWorld | None:
    return SimulatedWorld.objects.order_by("-created_at").first()


def world_load(record: SimulatedWorld | None = None) -> tuple[SimulatedWorld, simulator.World]:
    """The current simulated world with its hidden state (raises LookupError if none)."""
    record = record or world_current()
    if record is None:
        raise LookupError("No simulated world in this database: run seed_demo first")
    return record, simulator.world_from_state(simulator.world_state_from_json(state_read(record)))


def state_read(record: SimulatedWorld) -> dict:
    with gzip.open(Path(settings.MEDIA_ROOT) / record.state_path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


# -- bulk writing -----------------------------------------------------------------------


def _dates(values: pd.Series) -> pd.Series:
    out = pd.to_datetime(values).dt.strftime("%Y-%m-%d")
    return out.astype(object).where(out.notna(), None)


def _money(values) -> pd.Series:
    return pd.Series(np.round(np.asarray(values, dtype=float), 2))


def _write_frame(
    model, frame: pd.DataFrame, *, nullable: tuple[str, ...] = (), progress: Progress = _noop
) -> int:
    """Insert a frame whose columns are the model's column names.

    PostgreSQL: COPY in CSV format, written by pandas in chunks (about 10x faster than
    row-by-row writes); quoted empty strings stay empty, `nullable` columns turn "" into NULL.
    SQLite: bulk_create.
    """
    if frame.empty:
        return 0
    if connection.vendor != "postgresql":
        fields = list(frame.columns)
        for lo in range(0, len(frame), 5_000):
            chunk = frame.iloc[lo : lo + 5_000]
            model.objects.bulk_create(
                [model(**dict(zip(fields, row, strict=True))) for row in chunk.itertuples(index=False)]
            )
            progress(len(chunk))
        return len(frame)
    table = model._meta.db_table
    options = "FORMAT csv" + (f", FORCE_NULL ({', '.join(nullable)})" if nullable else "")
    sql = f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN WITH ({options})"
    with connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg 3 cursor underneath Django's wrapper
        for lo in range(0, len(frame), CHUNK_ROWS):
            chunk = frame.iloc[lo : lo + CHUNK_ROWS]
            text = chunk.to_csv(header=False, index=False, quoting=csv.QUOTE_NONNUMERIC, na_rep="")
            with raw.copy(sql) as copy:
                copy.write(text)
            progress(len(chunk))
    return len(frame)


@contextmanager
def bulk_load() -> Iterator[None]:
    """Load the empty partner tables without their secondary indexes and foreign keys, and
    build those once at the end (PostgreSQL's "Populating a Database" advice).

    Row by row, every COPYed activity row and invoice queued a deferred foreign-key check
    that ran at commit (3.5M single-row lookups at 100k partners), and every row updated each
    index (a GIN trigram index on names among them); one validating scan per foreign key and
    one sorted build per index do the same work in bulk. The definitions are read back from
    the catalog, so whatever indexes the migrations define come back unchanged. Must run in
    the loading transaction: a failure rolls the drops back with the rows. The partners' own
    foreign key (the account owner) goes too: its deferred checks would be pending trigger
    events on the partner table, and PostgreSQL refuses to build an index on such a table."""
    if connection.vendor != "postgresql":
        yield
        return
    tables = [m._meta.db_table for m in (Partner, MonthlyActivity, Invoice)]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = ANY(%s::regclass[]) AND contype IN ('u', 'f') ORDER BY contype DESC, conname",
            [tables],
        )
        constraints = cursor.fetchall()
        cursor.execute(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index i "
            "WHERE indrelid = ANY(%s::regclass[]) AND NOT indisprimary AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY 1",
            [tables],
        )
        indexes = cursor.fetchall()
        for table, name, _, _ in constraints:
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX {name}")
    yield
    with connection.cursor() as cursor:
        for _, definition in indexes:
            cursor.execute(definition)
        # Unique constraints first ('u' sorts before 'f' descending), then the foreign keys,
        # each validated by one scan of its table.
        for table, name, _, definition in constraints:
            cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')


def _owner_ids(n: int, owner_ids: list[int], seed: int) -> pd.Series:
    if not owner_ids:
        return pd.Series([None] * n, dtype=object)
    rng = np.random.default_rng([seed, 7])
    return pd.Series(np.asarray(owner_ids, dtype=np.int64)[rng.integers(0, len(owner_ids), size=n)])


def write_partners(
    partners: pd.DataFrame, *, owner_ids: list[int], seed: int, progress: Progress = _noop
) -> dict[str, int]:
    """Insert partners; returns external_id -> primary key."""
    now = timezone.now()
    p = partners.reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "external_id": p["external_id"].astype(str),
            "name": p["name"].astype(str),
            "tier": p["tier"].astype(str),
            "region": p["region"].astype(str),
            "segment": p["segment"].astype(str),
            "monthly_revenue": _money(p["monthly_revenue"]),
            "contact_email": p["contact_email"].astype(str),
            "account_owner_id": _owner_ids(len(p), owner_ids, seed),
            "joined_on": _dates(p["joined_on"]),
            "status": p["status"].astype(str),
            "churned_on": _dates(p["churned_on"]),
            "notes": p["notes"].fillna("").astype(str),
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
        }
    )
    if connection.vendor != "postgresql":
        frame["created_at"] = frame["updated_at"] = now
    _write_frame(Partner, frame, nullable=("account_owner_id", "churned_on"), progress=progress)
    return dict(Partner.objects.values_list("external_id", "id"))


def write_activity(activity: pd.DataFrame, *, ids: dict[str, int], progress: Progress = _noop) -> int:
    a = activity.reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "partner_id": a["external_id"].map(ids).astype(np.int64),
            "month": _dates(a["month"]),
            "transactions": a["transactions"].astype(np.int64),
            "revenue": _money(a["revenue"]),
            "active_users": a["active_users"].astype(np.int64),
            "support_tickets": a["support_tickets"].astype(np.int64),
            **{c: _optional_counts(a, c) for c in TAIL_COLUMNS},
        }
    )
    return _write_frame(MonthlyActivity, frame, nullable=TAIL_COLUMNS, progress=progress)


def _optional_counts(frame: pd.DataFrame, column: str) -> pd.Series:
    """A nullable count column as Python ints and None (a world saved before it existed has none)."""
    if column not in frame:
        return pd.Series([None] * len(frame), dtype=object)
    s = frame[column].astype("Int64")
    return s.astype(object).where(s.notna().to_numpy(), None)


def write_invoices(invoices: pd.DataFrame, *, ids: dict[str, int], progress: Progress = _noop) -> int:
    i = invoices.reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "partner_id": i["external_id"].map(ids).astype(np.int64),
            "issued_on": _dates(i["issued_on"]),
            "due_on": _dates(i["due_on"]),
            "paid_on": _dates(i["paid_on"]),
            "amount": _money(i["amount"]),
        }
    )
    return _write_frame(Invoice, frame, nullable=("paid_on",), progress=progress)


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
    # Set-based, not a query per row: an advance of 30 days at 100k partners pays ~23k invoices.
    paid_on = {
        (ids[ext], issued): paid
        for ext, issued, paid in zip(
            delta.payments["external_id"],
            _dates(delta.payments["issued_on"]),
            _dates(delta.payments["paid_on"]),
            strict=True,
        )
    }
    if paid_on:
        open_invoices = Invoice.objects.filter(
            paid_on__isnull=True,
            partner_id__in={pid for pid, _ in paid_on},
            issued_on__in={issued for _, issued in paid_on},
        ).only("id", "partner_id", "issued_on")
        paid = []
        for invoice in open_invoices:
            invoice.paid_on = paid_on.get((invoice.partner_id, invoice.issued_on.isoformat()))
            if invoice.paid_on is not None:
                paid.append(invoice)
        Invoice.objects.bulk_update(paid, ["paid_on"], batch_size=2_000)
        written["payments"] = len(paid)
    churned_by_day: dict[str, list[int]] = {}
    for ext, churned_on in zip(
        delta.churn_events["external_id"], _dates(delta.churn_events["churned_on"]), strict=True
    ):
        churned_by_day.setdefault(churned_on, []).append(ids[ext])
    for churned_on, partner_ids in churned_by_day.items():
        written["churned"] += Partner.objects.filter(id__in=partner_ids, status=Partner.Status.ACTIVE).update(
            status=Partner.Status.CHURNED, churned_on=churned_on, updated_at=timezone.now()
        )
    return written


def _params_json(world: simulator.World) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(world.state.params), default=list))
