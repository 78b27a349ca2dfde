"""What the audit trail's hash chain costs: one append (its own transaction) with the chain
(lock the head row, hash, insert, move the head) against the same insert without it, from one
thread and from several at once, and how fast audit_verify walks the chain.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/churnsite .venv/bin/python bench/audit_chain.py \
        [--events 1000] [--threads 4]

Runs in a throwaway database (created from the migrations, dropped afterwards). Prints JSON.
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "churnsite.settings")

import django  # noqa: E402

django.setup()

from django.db import connection, connections, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from agent.audit import audit_chain_verify, audit_record  # noqa: E402

PAYLOAD = {"to": "ops@p12345.example", "subject": "Checking in on your account", "writer": "template"}
# The same row without the chain: seq far above the chained ones, placeholder hashes.
PLAIN_INSERT = """
INSERT INTO agent_auditevent (created_at, seq, prev_hash, hash, actor_type, event_type, payload)
VALUES (%s, %s, '', '', 'system', 'bench_plain', %s)
"""
plain_seq = iter(range(10**12, 10**13))
plain_lock = threading.Lock()


def chained() -> None:
    with transaction.atomic():
        audit_record(event_type="bench_chained", actor_type="system", payload=PAYLOAD)


def plain() -> None:
    with plain_lock:
        seq = next(plain_seq)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(PLAIN_INSERT, [timezone.now(), seq, json.dumps(PAYLOAD)])


def single(append, n: int) -> dict:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        append()
        times.append(time.perf_counter() - t)
    times.sort()
    return {
        "median_ms": round(statistics.median(times) * 1000, 3),
        "p95_ms": round(times[int(len(times) * 0.95)] * 1000, 3),
        "per_second": round(n / sum(times)),
    }


def concurrent(append, threads: int, per_thread: int) -> dict:
    barrier = threading.Barrier(threads + 1)

    def work():
        try:
            barrier.wait()
            for _ in range(per_thread):
                append()
        finally:
            connections.close_all()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    t = time.perf_counter()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - t
    return {
        "events": threads * per_thread,
        "wall_s": round(wall, 2),
        "per_second": round(threads * per_thread / wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    assert connection.vendor == "postgresql", "run the bench on PostgreSQL (DATABASE_URL)"
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        result = {"load_before": os.getloadavg()}
        for append in (chained, plain):  # warm up both paths
            single(append, 50)
        result["single_chained"] = single(chained, args.events)
        result["single_plain"] = single(plain, args.events)
        per_thread = args.events // args.threads
        result["concurrent_chained"] = concurrent(chained, args.threads, per_thread)
        result["concurrent_plain"] = concurrent(plain, args.threads, per_thread)
        result["overhead_single_median_ms"] = round(
            result["single_chained"]["median_ms"] - result["single_plain"]["median_ms"], 3
        )
        verification = audit_chain_verify()
        result["verify"] = {
            # The chain ends where the first plain (unchained) row sits: everything before it checks.
            "events_checked": verification.events,
            "seconds": verification.seconds,
            "per_second": round(verification.events / verification.seconds) if verification.seconds else None,
        }
        result["load_after"] = os.getloadavg()
    finally:
        connections.close_all()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
