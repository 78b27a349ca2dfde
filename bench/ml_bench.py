"""Training and scoring at scale on PostgreSQL (run against a separate database).

    createdb -h 127.0.0.1 -U postgres churnsite_bench_ml
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/churnsite_bench_ml MEDIA_ROOT=/tmp/ml_bench_media \\
        .venv/bin/python bench/ml_bench.py --partners 100000

Seeds the world with the lead's `seed_demo` when the database is empty, then measures, each
in its own process as a user would run it:
- `train_churn_model` end to end (wall time, and peak memory from /usr/bin/time -v);
- `score_partners` end to end (features, risk, buckets, drivers from the at-risk level (30%),
  persistence) with each stage's share;
- drivers on demand for single partners whose drivers were not precomputed (cold: first
  call in a process, loading the model; warm: later calls).
Prints the figures and the machine's load average; JSON summary last.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "churnsite.settings")
os.environ.setdefault("SECRET_KEY", "django-insecure-bench-only")  # DEBUG is off here
PY = sys.executable


def run_timed(args: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout) of a manage.py command."""
    t = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", PY, "manage.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DEBUG": "true"},  # seed_demo --reset is a demo maintenance step
    )
    seconds = time.perf_counter() - t
    if proc.returncode:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{args[0]} failed")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return seconds, (int(rss.group(1)) / 1024 if rss else float("nan")), proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partners", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--on-demand", type=int, default=30, help="partners to time drivers on demand for")
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    assert connection.vendor == "postgresql", "run the bench on PostgreSQL (DATABASE_URL)"
    print(f"database {connection.settings_dict['NAME']}, load average {os.getloadavg()}", flush=True)
    call_command("migrate", verbosity=0)
    from retention.models import Partner

    summary: dict = {"partners": args.partners, "load_before": os.getloadavg()}
    if Partner.objects.count() != args.partners:
        seconds, rss, _ = run_timed(
            [
                "seed_demo",
                "--partners",
                str(args.partners),
                "--seed",
                str(args.seed),
                "--reset",
                "--no-progress",
            ]
        )
        print(f"seed_demo: {seconds:.1f}s", flush=True)
        summary["seed_seconds"] = round(seconds, 1)

    if not args.skip_train:
        report = ROOT / "bench" / "out" / f"ml_train_{args.partners}.json"
        seconds, rss, out = run_timed(["train_churn_model", "--report", str(report)])
        train = json.loads(out.strip().splitlines()[-1])
        print(
            f"train_churn_model: {seconds:.1f}s wall, peak memory {rss:.0f} MB; n_train {train['n_train']}, "
            f"n_test {train['n_test']}, ROC AUC {train['roc_auc']} (oracle {train.get('oracle_auc')}, "
            f"ratio {train.get('auc_ratio')}), ECE {train['ece']}",
            flush=True,
        )
        full = json.loads(report.read_text())
        print(f"  stages: {full.get('timings')}", flush=True)
        summary["train"] = {
            "seconds": round(seconds, 1), "peak_mb": round(rss), **{k: train.get(k) for k in (
                "roc_auc", "oracle_auc", "auc_ratio", "ece", "brier", "bucket_macro_f1",
                "oracle_bucket_macro_f1", "n_train", "n_test")},
            "timings": full.get("timings"),
        }  # fmt: skip

    seconds, rss, out = run_timed(["score_partners"])
    score = json.loads(out.strip().splitlines()[-1])
    total = sum(score["stages"].values()) or 1
    shares = ", ".join(f"{k} {v:.1f}s ({v / total:.0%})" for k, v in score["stages"].items())
    print(
        f"score_partners: {score['seconds']}s in-command ({seconds:.1f}s with process start), "
        f"{score['scored']} scored, {score['drivers_computed']} with drivers; peak memory {rss:.0f} MB",
        flush=True,
    )
    print(f"  stages: {shares}", flush=True)
    summary["score"] = {**score, "process_seconds": round(seconds, 1), "peak_mb": round(rss)}

    # Drivers on demand, in a fresh process: the first call loads the model.
    code = f"""
import json, time, django
django.setup()
from ml.models import PartnerScore
from ml.selectors import partner_drivers
scores = list(PartnerScore.objects.filter(drivers__isnull=True).select_related('partner')[:{args.on_demand}])
times = []
for s in scores:
    t = time.perf_counter(); d = partner_drivers(partner=s.partner); times.append(time.perf_counter() - t)
    assert d
print(json.dumps(times))
"""
    proc = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    times = json.loads(proc.stdout.strip().splitlines()[-1])
    warm = sorted(times[1:])
    on_demand = {
        "cold_ms": round(times[0] * 1000, 1),
        "warm_median_ms": round(statistics.median(warm) * 1000, 1),
        "warm_p95_ms": round(warm[int(0.95 * (len(warm) - 1))] * 1000, 1),
        "n": len(times),
    }
    print(
        f"drivers on demand: first call {on_demand['cold_ms']} ms (loads the model), then median "
        f"{on_demand['warm_median_ms']} ms, p95 {on_demand['warm_p95_ms']} ms",
        flush=True,
    )
    summary["drivers_on_demand"] = on_demand
    summary["load_after"] = os.getloadavg()
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
