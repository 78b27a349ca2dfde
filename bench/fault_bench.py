"""The whole fault matrix at 3,000 partners: kill -9 while drafting, between the commit and the
send, while sending, after the SMTP server accepted an email (before it was recorded), and FLUSHDB
with queued runs (tests/agent/faults.py does the work).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/churnsite_x .venv/bin/python bench/fault_bench.py \
        [--partners 3000] [--time-limit 60] [--faults drafting,between,sending,sent,flush]

Each fault gets a fresh copy of one seeded database (CREATE DATABASE ... TEMPLATE, dropped
afterwards), a redis-server of its own on a free port, real Celery workers (file email backend)
and the sweep ticked every 2 s. Prints one line per fault and a JSON summary: contacts (emails
written), held drafts, duplicates, unaudited actions, stuck runs and claims, lost emails (all 0
but contacts and held), emails in doubt (1 after "sent": delivered, not re-sent), the seconds the
recovery took.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "churnsite.settings")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

from agent.models import AgentConfig  # noqa: E402
from retention.models import Partner  # noqa: E402
from tests.agent.faults import FAULTS, FaultRig, run_fault  # noqa: E402
from tests.agent.workers import make_partners  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def _admin_conn():
    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        password=db.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )


def _use(name: str) -> None:
    connection.close()
    settings.DATABASES["default"]["NAME"] = name
    connection.settings_dict["NAME"] = name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=3000)
    parser.add_argument("--time-limit", type=int, default=60, help="agent task time limit in the workers (s)")
    parser.add_argument("--faults", default=",".join(FAULTS))
    args = parser.parse_args()
    faults = [f for f in args.faults.split(",") if f]

    old_name = settings.DATABASES["default"]["NAME"]
    base = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    config, _ = AgentConfig.objects.get_or_create(pk=1)
    config.enabled, config.control_fraction, config.max_per_hour = True, 0.1, 50
    config.save()
    started = time.monotonic()
    partners = make_partners(args.partners, platinum_every=10)
    seed_seconds = time.monotonic() - started
    ids = [p.pk for p in partners]
    connection.close()
    results = {}
    redis_server = RedisServer().start()
    try:
        for fault in faults:
            copy = f"{base}_{fault}"
            with _admin_conn() as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{copy}"')
                admin.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{base}"')
            _use(copy)
            redis_server.flushdb()
            with tempfile.TemporaryDirectory() as folder:
                rig = FaultRig(redis_server=redis_server, folder=Path(folder), time_limit=args.time_limit)
                try:
                    result = run_fault(fault, rig, partners=list(Partner.objects.filter(pk__in=ids[:3])))
                finally:
                    rig.stop()
            _use(base)
            with _admin_conn() as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{copy}"')
            results[fault] = result
            print(
                f"{fault:>9}: contacts {result['contacts']:3d}  held {result['held']:2d}  "
                f"duplicates {result['duplicates']}  unaudited {result['unaudited']}  "
                f"stuck runs {result['stuck_runs']}  stuck claims {result['stuck_claims']}  "
                f"lost emails {result['lost_emails']}  in doubt {result['in_doubt']}  "
                f"(recovered in {result['recovered_in_s']} s)",
                flush=True,
            )
    finally:
        redis_server.stop()
        _use(base)
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print(json.dumps({"partners": args.partners, "seed_seconds": round(seed_seconds, 1), "faults": results}))


if __name__ == "__main__":
    main()
