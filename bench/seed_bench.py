"""Time `seed_demo` at scale on PostgreSQL.

    .venv/bin/python bench/seed_bench.py [--partners 100000] [--months 24]

Uses its own database (churnsite_bench_seed, recreated), prints the command's own JSON
summary and the wall time, peak memory, and rows per second.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB = "churnsite_bench_seed"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partners", type=int, default=100_000)
    ap.add_argument("--months", type=int, default=24)
    args = ap.parse_args()
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}", "REDIS_URL": ""}
    env["MEDIA_ROOT"] = str(ROOT / "bench" / "out" / "media")
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", DB], check=True)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", DB], check=True)
    py = sys.executable
    subprocess.run([py, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    started = time.perf_counter()
    out = subprocess.run(
        [
            py,
            "manage.py",
            "seed_demo",
            "--partners",
            str(args.partners),
            "--months",
            str(args.months),
            "--no-progress",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall = time.perf_counter() - started
    summary = json.loads(out.strip().splitlines()[-1])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"partners            {summary['partners']:>12,}")
    print(f"months              {summary['months']:>12}")
    print(f"rows written        {summary['rows_written']:>12,}")
    print(f"simulate (s)        {summary['simulate_seconds']:>12.1f}")
    print(f"seed_demo (s)       {summary['seconds']:>12.1f}   (target <= 120 s)")
    print(f"wall incl. start (s){wall:>12.1f}")
    print(f"rows / s            {summary['rows_written'] / summary['seconds']:>12,.0f}")
    print(f"peak RSS (MB)       {peak_mb:>12,.0f}")
    print(f"cores               {os.cpu_count():>12}   load avg {os.getloadavg()[0]:.1f}")
    print(f"stages (s)          {summary.get('stages')}")
    print(
        json.dumps(
            {"seed_seconds": summary["seconds"], "rows": summary["rows_written"], "peak_mb": round(peak_mb)}
        )
    )


if __name__ == "__main__":
    main()
