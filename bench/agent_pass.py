"""One agent pass over 50 eligible partners: template writer, then an LLM answering in 1 s a call.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/churnsite .venv/bin/python bench/agent_pass.py \
        [--partners 50] [--llm-latency 1.0] [--concurrency 8] [--down-hang 30]

Runs in a throwaway database (created from the migrations, dropped afterwards), emails go to
the in-memory backend, the LLM is tests/openai_server.py over real HTTP. Then the same pass with
the server down (503) and, with --down-hang S, hanging S seconds a request: the circuit breaker.
Prints JSON: wall seconds per pass, the CPU seconds it used (here and in the database: about what
it takes on an idle machine), SQL queries per intervention (the agent's own thread; drafts run no
SQL), and the load average.
"""

import argparse
import collections
import datetime as dt
import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "churnsite.settings")
os.environ.setdefault("SECRET_KEY", "django-insecure-bench-only")  # DEBUG is off here

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext, override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from agent import services, workflow  # noqa: E402
from agent.models import AgentConfig, AgentRun, AuditEvent  # noqa: E402
from ml.models import ModelVersion, PartnerScore  # noqa: E402
from retention.models import Intervention, Partner  # noqa: E402
from tests.openai_server import TEST_API_KEY, OpenAIServer  # noqa: E402

DRIVERS = [
    {"feature": "days_overdue", "text": "Payment 45 days overdue", "value": 45, "points": 18.0},
    {
        "feature": "transactions_trend_3m",
        "text": "Transactions down 38% in 3 months",
        "value": -0.38,
        "points": 11.5,
    },
]


def make_partners(prefix: str, n: int) -> None:
    version = ModelVersion.objects.first() or ModelVersion.objects.create(
        trained_at=timezone.now(),
        window_start=dt.date(2024, 1, 1),
        window_end=dt.date(2025, 1, 1),
        artifact_path="bench",
        artifact_sha256="0" * 64,
    )
    partners = Partner.objects.bulk_create(
        Partner(
            external_id=f"{prefix}{i:04d}",
            name=f"Bench Partner {prefix}{i}",
            tier="gold",
            region="na",
            segment="reseller",
            monthly_revenue=Decimal("3000"),
            contact_email=f"ops@{prefix.lower()}{i}.example",
            joined_on=dt.date(2023, 1, 1),
        )
        for i in range(n)
    )
    PartnerScore.objects.bulk_create(
        PartnerScore(
            partner=p,
            partner_name=p.name,
            model_version=version,
            risk=0.9,
            p_7d=0.5,
            p_30d=0.3,
            p_90d=0.1,
            p_later=0.1,
            bucket="7d",
            urgency_rank=0,
            drivers=DRIVERS,
            scored_at=timezone.now(),
        )
        for p in partners
    )


def backend_cpu_s() -> float:
    """CPU seconds the database server process serving this connection has used (PostgreSQL on
    this machine), or 0.0 when it cannot be read."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except Exception:  # noqa: BLE001 - SQLite, another host, no /proc: the wall clock only
        return 0.0


def one_pass(label: str, concurrency: int) -> dict:
    run = services.agent_run_create(trigger=AgentRun.Trigger.COMMAND)
    workflow._run_claim(run.pk)
    agent = workflow.InterventionAgent(run=AgentRun.objects.get(pk=run.pk), concurrency=concurrency)
    cpu, db_cpu = time.process_time(), backend_cpu_s()
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        summary = agent.batch_process()
    seconds = time.perf_counter() - started
    cpu, db_cpu = time.process_time() - cpu, backend_cpu_s() - db_cpu
    acted = summary["executed"] + summary["held_for_review"]
    writers = sorted(set(Intervention.objects.filter(agent_run=run).values_list("writer", flat=True)))
    return {
        "run_id": run.pk,
        "pass": label,
        "seconds": round(seconds, 2),
        # What the pass would take on an idle machine, near enough: the CPU it used here and in
        # the database (the wall clock on 2 shared cores is mostly the wait for a core).
        "cpu_s": round(cpu, 2),
        "db_cpu_s": round(db_cpu, 2),
        "executed": summary["executed"],
        "failed": summary["failed"],
        "writers": writers,
        "queries": len(queries),
        "queries_per_intervention": round(len(queries) / max(acted, 1), 1),
    }


def fallback_reasons(run_id: int) -> dict:
    reasons = AuditEvent.objects.filter(run_id=run_id, event_type="email_drafted").values_list(
        "payload__fallback_reason", flat=True
    )
    return dict(collections.Counter(reasons).most_common())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=50)
    parser.add_argument("--llm-latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=workflow.DRAFT_CONCURRENCY)
    parser.add_argument(
        "--down-hang", type=float, default=0.0, help="also a pass with the server hanging this long (s)"
    )
    args = parser.parse_args()

    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"bench_agent_{os.getpid()}"
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    results = []
    try:
        config, _ = AgentConfig.objects.get_or_create(pk=1)
        config.enabled, config.control_fraction, config.max_per_hour, config.approval_tiers = (
            True,
            0.0,
            10_000,
            [],
        )
        config.save()
        with override_settings(
            EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend", OPENAI_API_KEY=""
        ):
            make_partners("T", args.partners)
            result = one_pass("template writer", args.concurrency)
            result.pop("run_id")
            results.append(result)
        with OpenAIServer() as server:
            server.latency = args.llm_latency
            llm = {
                "OPENAI_API_KEY": TEST_API_KEY,
                "OPENAI_BASE_URL": server.base_url,
                "OPENAI_MODEL": "bench-model",
                "OPENAI_TIMEOUT": args.llm_latency + 10,
                "OPENAI_MAX_RETRIES": 0,
                "OPENAI_CONCURRENCY": args.concurrency or 8,  # the fake server answers in parallel
                "LLM_TRUSTED_AFTER": 0,  # a trusted model: drafts are sent, as in production
            }
            with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend", **llm):
                make_partners("L", args.partners)
                result = one_pass(f"LLM at {args.llm_latency:g} s per call", args.concurrency)
                result.pop("run_id")
                result["llm_requests"] = len(server.chat_requests)
                results.append(result)
            # The server down (503 at once, the acceptance's "down"), then hanging past the
            # timeout: the circuit breaker turns the rest of the pass to the template writer.
            # Production's timeout and retries, and the default concurrency (1 for a local server).
            down = llm | {"OPENAI_TIMEOUT": 20.0, "OPENAI_MAX_RETRIES": 2, "OPENAI_CONCURRENCY": 0}
            if args.down_hang:
                down["OPENAI_TIMEOUT"] = min(20.0, args.down_hang / 2)
            for label, hang in (("LLM server down (503)", 0.0), ("LLM server hanging", args.down_hang)):
                if label.endswith("hanging") and not hang:
                    continue
                server.down, server.down_hang = True, hang
                before = len(server.chat_requests)
                with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend", **down):
                    make_partners("D" if not hang else "H", args.partners)
                    result = one_pass(label, 0)
                result["llm_requests"] = len(server.chat_requests) - before
                result["fallback_reasons"] = fallback_reasons(result.pop("run_id"))
                results.append(result)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    report = {"partners": args.partners, "concurrency": args.concurrency, "passes": results}
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
