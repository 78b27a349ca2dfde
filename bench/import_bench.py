"""Time `import_data` at scale on PostgreSQL.

    .venv/bin/python bench/import_bench.py [--partners 100000] [--months 24] [--partners-only 200000]

Writes the contract's files (docs/data.md) for N partners x M months of activity and one
invoice a month, into bench/out/import/, then on its own database (churnsite_bench_import,
recreated) measures: the whole history imported into an empty database (wall time with the
command's start-up and the import's own seconds, peak memory of the import process; the load
average beside each figure); a partners-only file of --partners-only rows; and an
activity file whose last row is bad (nothing may be written, the line must be named).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DB = "churnsite_bench_import"
OUT = ROOT / "bench" / "out" / "import"


def write_files(folder: Path, partners: int, months: int, seed: int = 1) -> int:
    rows = partners * (1 + 2 * months)
    marker = folder / f".{partners}x{months}"
    if marker.exists():  # the same files as last time: writing them takes minutes
        return rows
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = np.char.add("P", np.char.zfill(np.arange(1, partners + 1).astype(str), 7))
    plan = rng.gamma(2.0, 1500, partners).round(2)
    start = pd.Timestamp("2024-11-01")
    joined = start - pd.to_timedelta(rng.integers(0, 900, partners), unit="D")
    pd.DataFrame(
        {
            "external_id": ids,
            "name": np.char.add("Partner ", ids),
            "tier": rng.choice(["bronze", "silver", "gold", "platinum"], partners),
            "region": rng.choice(["na", "emea", "apac", "latam"], partners),
            "segment": rng.choice(["reseller", "merchant", "referral"], partners),
            "monthly_revenue": plan,
            "contact_email": np.char.add(np.char.lower(ids), "@partners.example"),
            "joined_on": joined.strftime("%Y-%m-%d"),
        }
    ).to_csv(folder / "partners.csv", index=False)
    month_starts = pd.date_range(start, periods=months, freq="MS")
    pid = np.repeat(ids, months)
    month = pd.DatetimeIndex(np.tile(month_starts.to_numpy(), partners))
    n = len(pid)
    revenue = (np.repeat(plan, months) * rng.lognormal(0, 0.2, n)).round(2)
    pd.DataFrame(
        {
            "external_id": pid,
            "month": month.strftime("%Y-%m"),
            "transactions": rng.poisson(40, n),
            "revenue": revenue,
            "active_users": rng.poisson(8, n),
            "support_tickets": rng.poisson(1, n),
        }
    ).to_csv(folder / "activity.csv", index=False)
    issued = month
    paid = issued + pd.to_timedelta(rng.integers(5, 60, n), unit="D")
    paid_text = np.where(paid > pd.Timestamp("2026-11-15"), "", paid.strftime("%Y-%m-%d"))
    pd.DataFrame(
        {
            "external_id": pid,
            "invoice_id": np.char.add(np.char.add(pid, "-"), issued.strftime("%Y%m").to_numpy().astype(str)),
            "issued_on": issued.strftime("%Y-%m-%d"),
            "due_on": (issued + pd.Timedelta(days=30)).strftime("%Y-%m-%d"),
            "paid_on": paid_text,
            "amount": revenue,
        }
    ).to_csv(folder / "invoices.csv", index=False)
    marker.touch()
    return rows


def run_import(env: dict, *paths: Path) -> tuple[float, dict, str, int]:
    """(seconds, JSON summary, stderr, peak RSS MB of the import process)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "manage.py", "import_data", *map(str, paths)],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    summary = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    return seconds, summary, proc.stderr, peak


def fresh_db(env: dict) -> None:
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", DB], check=True)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", DB], check=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)


def count(env: dict, table: str) -> int:
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", DB, "-tAc", f"SELECT count(*) FROM {table}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(out.stdout.strip())


def _load() -> str:
    """The 1/5/15-minute load averages: on a shared host every figure needs its load beside it."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partners", type=int, default=100_000)
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--partners-only", type=int, default=200_000)
    args = ap.parse_args()
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}", "REDIS_URL": ""}
    results: dict = {"load_average_start": os.getloadavg()}

    t = time.perf_counter()
    rows = write_files(OUT / "history", args.partners, args.months)
    write_files(OUT / "partners_only", args.partners_only, 1)
    results["files_written_s"] = round(time.perf_counter() - t, 1)

    fresh_db(env)
    seconds, summary, err, peak = run_import(env, OUT / "history")
    results["history"] = {"rows": rows, "seconds": round(seconds, 1), "peak_mb": peak, "summary": summary}
    print(
        f"history: {rows:,} rows in {seconds:.1f} s (import itself {summary.get('seconds')} s; peak {peak} MB); "
        f"written={summary.get('written')}; load {_load()}"
    )
    if err.strip():
        print(err[-2000:])

    # The bad file: the same activity with one bad row at the end, into the loaded database.
    bad = OUT / "bad" / "activity.csv"
    bad.parent.mkdir(parents=True, exist_ok=True)
    text = (OUT / "history" / "activity.csv").read_text()
    bad.write_text(text + "P0000001,2025-01,12,-5.00,3,0\n")
    bad_line = text.count("\n") + 1
    before = count(env, "retention_monthlyactivity")
    seconds, summary, err, _ = run_import(env, bad)
    after = count(env, "retention_monthlyactivity")
    named = f"activity.csv line {bad_line}: revenue" in err
    results["bad_row"] = {
        "seconds": round(seconds, 1),
        "line": bad_line,
        "named": named,
        "unchanged": before == after,
    }
    print(
        f"bad last row: {seconds:.1f} s, line {bad_line} named: {named}, nothing written: {before == after}; load {_load()}"
    )

    fresh_db(env)
    seconds, summary, err, _ = run_import(env, OUT / "partners_only" / "partners.csv")
    results["partners_only"] = {"rows": args.partners_only, "seconds": round(seconds, 1), "summary": summary}
    print(
        f"partners only: {args.partners_only:,} rows in {seconds:.1f} s (import itself {summary.get('seconds')} s); "
        f"written={summary.get('written')}; load {_load()}"
    )
    results["load_average_end"] = os.getloadavg()
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
