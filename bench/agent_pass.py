"""One agent pass over 50 eligible partners: template writer, then an LLM answering in 1 s a call.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/churnsite .venv/bin/python bench/agent_pass.py \
        [--partners 50] [--llm-latency 1.0] [--concurrency 8]

Runs in a throwaway database (created from the migrations, dropped afterwards), emails go to
the in-memory backend, the LLM is tests/openai_server.py over real HTTP. Prints JSON: wall
seconds per pass and SQL queries per intervention (the agent's own thread; drafts run no SQL).
"""

import argparse
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
from agent.models import AgentConfig, AgentRun  # noqa: E402
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


def one_pass(label: str, concurrency: int) -> dict:
    run = services.agent_run_create(trigger=AgentRun.Trigger.COMMAND)
    workflow._run_claim(run.pk)
    agent = workflow.InterventionAgent(run=AgentRun.objects.get(pk=run.pk), concurrency=concurrency)
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        summary = agent.batch_process()
    seconds = time.perf_counter() - started
    acted = summary["executed"] + summary["held_for_review"]
    writers = sorted(set(Intervention.objects.filter(agent_run=run).values_list("writer", flat=True)))
    return {
        "pass": label,
        "seconds": round(seconds, 2),
        "executed": summary["executed"],
        "failed": summary["failed"],
        "writers": writers,
        "queries": len(queries),
        "queries_per_intervention": round(len(queries) / max(acted, 1), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=50)
    parser.add_argument("--llm-latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=workflow.DRAFT_CONCURRENCY)
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
            results.append(one_pass("template writer", args.concurrency))
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
                result["llm_requests"] = len(server.chat_requests)
                results.append(result)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print(
        json.dumps({"partners": args.partners, "concurrency": args.concurrency, "passes": results}, indent=2)
    )


if __name__ == "__main__":
    main()
