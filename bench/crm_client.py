"""The simulated CRM client and page: latency per call, idempotency under a retry storm, page cost.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/churnsite .venv/bin/python bench/crm_client.py \
        [--tasks 2000] [--threads 8]

Runs in a throwaway database (bench_churnsite_crm, created and dropped here), through the
real client (crm_sim.client.get_crm_client) and the real view. Prints JSON.
"""

import argparse
import datetime as dt
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
os.environ.setdefault("SECRET_KEY", "django-insecure-bench-only")  # DEBUG is off here
os.environ.setdefault("TEST_DATABASE_NAME", "bench_churnsite_crm")

import django  # noqa: E402

django.setup()

from django.db import connection, connections  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from crm_sim.client import CreateTask, TaskQuery, get_crm_client  # noqa: E402


def ms(samples: list[float]) -> dict:
    samples = sorted(samples)
    return {
        "n": len(samples),
        "median_ms": round(statistics.median(samples) * 1000, 2),
        "p95_ms": round(samples[int(0.95 * (len(samples) - 1))] * 1000, 2),
    }


def timed(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000, help="open tasks behind the page")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    from tests.factories import InterventionFactory, PartnerFactory, UserFactory

    client = get_crm_client()
    user = UserFactory(username="rita", groups=["Retention"])
    partners = [PartnerFactory() for _ in range(50)]
    due = dt.date.today()

    def spec(i: int, key: str) -> CreateTask:
        p = partners[i % len(partners)]
        return CreateTask(
            p.external_id, "retention_call", "Retention Call", due + dt.timedelta(days=i % 14), key
        )

    create = timed(lambda i: client.create_task(spec(i, f"bench-{i}")), 200)
    retry = timed(lambda i: client.create_task(spec(i, f"bench-{i}")), 200)
    interventions = [InterventionFactory(partner=partners[i % len(partners)]) for i in range(100)]
    linked = [
        client.create_task(
            CreateTask(
                iv.partner.external_id, "meeting", "Meet", due, f"linked-{iv.pk}", intervention_id=iv.pk
            )
        )
        for iv in interventions
    ]
    complete = timed(lambda i: client.complete_task(linked[i].external_id, outcome="saved", actor=user), 100)
    listing = timed(lambda i: client.list_tasks(TaskQuery(status="open", limit=100)), 50)

    # Retry storm: every thread creates the same 25 keys, all at once.
    before = client.list_tasks(TaskQuery(limit=1000))
    barrier, errors, calls, lock = threading.Barrier(args.threads), [], [0], threading.Lock()

    def storm():
        try:
            barrier.wait()
            for k in range(25):
                client.create_task(spec(k, f"storm-{k}"))
                with lock:
                    calls[0] += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(repr(exc))
        finally:
            connections.close_all()

    start = time.perf_counter()
    threads = [threading.Thread(target=storm) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    storm_seconds = time.perf_counter() - start
    made = len(client.list_tasks(TaskQuery(limit=1000))) - len(before)

    # The page with many open tasks behind it (paginated at 50).
    for i in range(args.tasks - 200):
        client.create_task(spec(i, f"page-{i}"))
    from crm_sim.models import CrmTask

    open_tasks = CrmTask.objects.filter(status="open").count()
    web = Client()
    web.force_login(user)
    page_times, queries = [], 0
    for view in ("", "mine", "overdue", "week"):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            assert web.get(f"/crm/?view={view}").status_code == 200
            page_times.append(time.perf_counter() - start)
        queries = max(queries, len(ctx.captured_queries))

    print(
        json.dumps(
            {
                "database": connection.vendor,
                "create_task": ms(create),
                "create_task_retry_same_key": ms(retry),
                "complete_task_resolving_intervention": ms(complete),
                "list_tasks_open_100": ms(listing),
                "retry_storm": {
                    "threads": args.threads,
                    "calls": calls[0],
                    "distinct_keys": 25,
                    "tasks_created": made,
                    "errors": errors[:3],
                    "seconds": round(storm_seconds, 2),
                },
                "crm_page": {"open_tasks": open_tasks, **ms(page_times), "max_queries": queries},
            }
        )
    )


if __name__ == "__main__":
    creation = connection.creation
    old_name = connection.settings_dict["NAME"]
    creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        main()
    finally:
        creation.destroy_test_db(old_name, verbosity=0)
