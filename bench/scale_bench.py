"""Issue 15's figures at N partners on PostgreSQL, in a database of its own.

    SECRET_KEY=x REDIS_URL=redis://127.0.0.1:6379/7 nice -n 10 \\
        .venv/bin/python bench/scale_bench.py --partners 100000

(database churnsite_bench_scale unless DATABASE_URL says otherwise; created when missing.)
Each step runs as a user would run it, in its own process, and prints its figure with the
load average (`uptime`) beside it:
- seed: `seed_demo --partners N --months 24` (skipped when the database already holds N);
- train: `train_churn_model`, wall time and peak memory (/usr/bin/time -v);
- score: `score_partners`, each stage's share, and persistence beside its floor: a bare COPY
  of the same rows (the run's history rows and current scores, in the same chunks) into
  unindexed temporary tables, measured here right after the run;
- workers: the nightly chord (`scoring_chord`, the same tasks as the beat's) on 1 and then 2
  real Celery worker processes (one BLAS thread each), wall time from dispatch to the run's
  close, split into the chunks (to the chord's callback) and the close, and both speedups;
- agent scan: `run_agent --dry-run` (scans and counts, contacts nobody).
JSON summary last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
DB = "churnsite_bench_scale"
os.environ.setdefault("DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{DB}")
os.environ.setdefault("MEDIA_ROOT", str(ROOT / "bench" / "out" / "scale_media"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "churnsite.settings")
os.environ.setdefault("SECRET_KEY", "django-insecure-bench-only")  # DEBUG is off here
# The chord's tasks go to the bench's own queue, served only by the bench's workers.
os.environ["CELERY_QUEUE"] = f"scale-bench-{uuid.uuid4().hex[:8]}"

from ml_bench import run_timed  # noqa: E402  (bench/ml_bench.py: a command's seconds and peak RSS)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def say(line: str) -> None:
    print(f"{line}   [{uptime().partition('load average: ')[2]}]", flush=True)


def ensure_database() -> None:
    name = os.environ["DATABASE_URL"].rsplit("/", 1)[1]
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], capture_output=True, check=False)


# The floor ------------------------------------------------------------------------------

_HISTORY = (
    "partner_id, model_version_id, run_id, risk, p_7d, p_30d, p_90d, p_later, bucket, drivers, scored_at"
)
_CURRENT = _HISTORY + ", urgency_rank, revenue_at_risk, previous_risk, previous_as_of, risk_change"


def copy_floor(*, run_id: int, chunk_size: int) -> dict:
    """Seconds to COPY the rows run `run_id` persisted (history + current) into unindexed
    temporary tables, chunk by chunk as scoring writes them; the rows are read first, untimed."""
    from django.db import connection, transaction

    from ml.score_store import copy_rows

    def read(table: str, columns: str) -> list[tuple]:
        cols = columns.replace("drivers", "drivers::text")  # COPY's text form of the jsonb
        with connection.cursor() as cur:
            cur.execute(f"SELECT {cols} FROM {table} WHERE run_id = %s ORDER BY partner_id", [run_id])
            return cur.fetchall()

    history, current = read("ml_riskscore", _HISTORY), read("ml_partnerscore", _CURRENT)
    seconds = 0.0
    with transaction.atomic(), connection.cursor() as cur:
        for name, source, columns in (("floor_history", "ml_riskscore", _HISTORY),
                                      ("floor_current", "ml_partnerscore", _CURRENT)):  # fmt: skip
            cur.execute(f"CREATE TEMP TABLE {name} AS SELECT {columns} FROM {source} WITH NO DATA")
        for i in range(0, max(len(history), len(current)), chunk_size):
            t = time.perf_counter()
            copy_rows("floor_history", tuple(_HISTORY.split(", ")), history[i : i + chunk_size])
            copy_rows("floor_current", tuple(_CURRENT.split(", ")), current[i : i + chunk_size])
            seconds += time.perf_counter() - t
        transaction.set_rollback(True)
    return {"seconds": round(seconds, 3), "history_rows": len(history), "current_rows": len(current)}


# Workers --------------------------------------------------------------------------------


def chord_on_workers(*, count: int, chunk_size: int) -> dict:
    """Score every active partner through the chord on `count` worker processes."""
    from ml.models import ScoringRun
    from ml.score_store import current_stage_open
    from ml.services import chunked, scoring_partner_ids, scoring_run_start
    from ml.tasks import scoring_chord
    from tests.agent.workers import WorkerPool

    one_thread = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    pool = WorkerPool(
        count=count,
        outbox=Path(tempfile.mkdtemp(prefix="scale-bench-")),
        queue=os.environ["CELERY_QUEUE"],
        extra_env={"MEDIA_ROOT": os.environ["MEDIA_ROOT"], **one_thread},
    )
    pool.start()
    try:
        run = scoring_run_start()
        chunks = chunked(scoring_partner_ids(), chunk_size)
        started, dispatched = time.perf_counter(), time.time()
        current_stage_open(run=run)  # as scoring_run_dispatch does before the chord
        scoring_chord(run_id=run.pk, chunks=chunks).apply_async()
        while (run := ScoringRun.objects.get(pk=run.pk)).status == ScoringRun.Status.RUNNING:
            time.sleep(0.2)
        wall = time.perf_counter() - started
    finally:
        pool.stop()
    if run.status != ScoringRun.Status.SUCCEEDED:
        raise SystemExit(f"the chord on {count} worker(s) ended {run.status}: {run.stats.get('error')}")
    stages = run.stats["stages"]
    cpu = sum(stages[s] for s in ("features", "predict", "drivers"))
    # The chunks (features, predict, drivers and their writes) spread over the workers; the
    # close (the swap of the current scores, the header strip's summary) runs once after them.
    chunks_wall = run.stats["chunks_done_at"] - dispatched
    return {"workers": count, "chunks": len(chunks), "wall": round(wall, 2), "scored": run.scored,
            "chunks_wall": round(chunks_wall, 2), "close": round(wall - chunks_wall, 2),
            "cpu_stages_sum": round(cpu, 2), "stages": stages}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partners", type=int, default=100_000)
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--chunk-size", type=int, default=10_000, help="score_partners' chunk (its default)")
    ap.add_argument("--worker-chunk", type=int, default=4_000, help="chunk of the 1-vs-2-worker chord")
    ap.add_argument("--skip-train", action="store_true", help="keep the active model")
    ap.add_argument("--skip-workers", action="store_true")
    args = ap.parse_args()
    ensure_database()

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    assert connection.vendor == "postgresql", "run the bench on PostgreSQL (DATABASE_URL)"
    call_command("migrate", verbosity=0)
    from agent.models import AgentConfig
    from retention.models import Partner

    say(f"database {connection.settings_dict['NAME']}, {args.partners:,} partners x {args.months} months")
    summary: dict = {"partners": args.partners, "uptime_before": uptime()}

    if Partner.objects.count() != args.partners:
        seconds, rss, _ = run_timed(["seed_demo", "--partners", str(args.partners), "--months",
                                     str(args.months), "--seed", str(args.seed), "--reset", "--no-progress"])  # fmt: skip
        say(f"seed_demo: {seconds:.1f} s wall, peak memory {rss:.0f} MB")
        summary["seed"] = {"seconds": round(seconds, 1), "peak_mb": round(rss)}

    if not args.skip_train:
        report = ROOT / "bench" / "out" / f"scale_train_{args.partners}.json"
        report.parent.mkdir(exist_ok=True)
        seconds, rss, out = run_timed(["train_churn_model", "--report", str(report)])
        train = json.loads(out.strip().splitlines()[-1])
        say(f"train_churn_model: {seconds:.1f} s wall, peak memory {rss:.0f} MB; n_train {train['n_train']}, "
            f"ROC AUC {train['roc_auc']}")  # fmt: skip
        summary["train"] = {"seconds": round(seconds, 1), "peak_mb": round(rss), "n_train": train["n_train"],
                            "roc_auc": train["roc_auc"]}  # fmt: skip

    seconds, rss, out = run_timed(["score_partners", "--chunk-size", str(args.chunk_size)])
    score = json.loads(out.strip().splitlines()[-1])
    total = sum(score["stages"].values()) or 1.0
    shares = ", ".join(f"{k} {v:.1f}s ({v / total:.0%})" for k, v in score["stages"].items())
    say(f"score_partners: {score['seconds']} s in-command ({seconds:.1f} s with process start), "
        f"{score['scored']:,} scored, peak memory {rss:.0f} MB")  # fmt: skip
    print(f"  stages: {shares}", flush=True)
    floor = copy_floor(run_id=score["run"], chunk_size=args.chunk_size)
    persist = score["stages"]["persist"]
    ratio = persist / floor["seconds"] if floor["seconds"] else float("nan")
    say(f"  persistence {persist:.2f} s vs bare COPY of the same rows {floor['seconds']:.2f} s "
        f"({floor['history_rows']:,} history + {floor['current_rows']:,} current rows): "
        f"{ratio:.2f}x (target <= 2x)")  # fmt: skip
    summary["score"] = {**score, "process_seconds": round(seconds, 1), "peak_mb": round(rss),
                        "copy_floor": floor, "persist_over_floor": round(ratio, 2)}  # fmt: skip

    if not args.skip_workers:
        one = chord_on_workers(count=1, chunk_size=args.worker_chunk)
        say(f"chord on 1 worker: {one['wall']} s wall ({one['chunks_wall']} s chunks, {one['close']} s close), "
            f"{one['chunks']} chunks, CPU stages {one['cpu_stages_sum']} s")  # fmt: skip
        two = chord_on_workers(count=2, chunk_size=args.worker_chunk)
        say(f"chord on 2 workers: {two['wall']} s wall ({two['chunks_wall']} s chunks, {two['close']} s close), "
            f"CPU stages summed over chunks {two['cpu_stages_sum']} s")  # fmt: skip
        speedup = one["wall"] / two["wall"]
        chunks_speedup = one["chunks_wall"] / two["chunks_wall"]
        say(f"  2-worker speedup {speedup:.2f}x wall, {chunks_speedup:.2f}x for the chunks (target >= 1.6x on "
            f"2 free cores; wall times under load are upper bounds, and a second worker only helps as far as "
            f"a second core is free)")  # fmt: skip
        summary["workers"] = {"one": one, "two": two, "speedup": round(speedup, 2),
                              "chunks_speedup": round(chunks_speedup, 2)}  # fmt: skip

    AgentConfig.objects.update_or_create(pk=1, defaults={"enabled": True})  # a dry run checks Start/Stop too
    seconds, rss, out = run_timed(["run_agent", "--dry-run"])
    scan = json.loads(out.strip().splitlines()[-1])
    say(f"agent scan (run_agent --dry-run): {seconds:.1f} s wall, {scan['scanned']:,} scanned, "
        f"{scan['eligible']:,} eligible, peak memory {rss:.0f} MB")  # fmt: skip
    summary["agent_scan"] = {"seconds": round(seconds, 1), "peak_mb": round(rss), **scan}
    summary["uptime_after"] = uptime()
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
