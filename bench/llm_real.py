"""One agent pass against a real OpenAI-compatible server (e.g. llama.cpp with SmolLM2-135M).

    LLM_BENCH_BASE_URL=http://127.0.0.1:8091/v1 [LLM_BENCH_MODEL=SmolLM2-135M-Instruct] \
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/churnsite_x .venv/bin/python bench/llm_real.py \
        [--partners 30] [--timeout 150] [--deadline 400] [--show-emails]

Not part of `make test`: ../shared/llm-local.md builds the server and the model. Runs in a
throwaway database (created from the migrations, dropped afterwards), emails go to the in-memory
backend. The model is new here, so it has earned no trust: every LLM draft must be held. Prints
drafts by LLM vs template, the reasons for every fallback, request latency p50/p95, the pass
time against drafts x single-request latency (the ratio, with its definition), the machine's
load average, and (with --show-emails) every accepted email.
"""

import argparse
import collections
import datetime as dt
import json
import os
import re
import statistics
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

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from agent import services, workflow  # noqa: E402
from agent.email_brief import brief_for, email_sender  # noqa: E402
from agent.email_checks import check_email  # noqa: E402
from agent.models import AgentConfig, AgentRun, AuditEvent  # noqa: E402
from ml.models import ModelVersion, PartnerScore  # noqa: E402
from retention.models import Intervention, Partner  # noqa: E402

NAMES = [
    "Acme Logistics",
    "Brightside Dental",
    "Cobalt Print Works",
    "Delta Garden Supply",
    "Evergreen Tutors",
    "Fjord Outdoor Gear",
    "Granite Legal",
    "Harbor Coffee Roasters",
    "Indigo Travel",
    "Juniper Florists",
    "Keystone Plumbing",
    "Lumen Photo Studio",
    "Maple Street Bakery",
    "Northwind Traders",
    "Orchard Vets",
    "Pioneer Bikes",
    "Quarry Fitness",
    "Redwood Realty",
    "Summit Accounting",
    "Tidewater Marine",
    "Union Square Books",
    "Vantage Signs",
    "Willow Yoga",
    "Xavier Catering",
    "Yellowstone Tours",
    "Zephyr Cleaning",
    "Atlas Movers",
    "Beacon Pharmacy",
    "Cedar Home Care",
    "Dune Surf Shop",
    "Ember Grill",
    "Falcon Couriers",
    "Grove Pet Supplies",
    "Horizon Opticians",
    "Iris Salon",
    "Jasper Furniture",
    "Kite Marketing",
    "Lotus Spa",
    "Meridian Clinics",
    "Nimbus IT Services",
]
DRIVER_SETS = [
    [{"feature": "days_overdue", "text": "Payment 45 days overdue", "value": 45, "points": 18.0}],
    [
        {
            "feature": "transactions_trend_3m",
            "text": "Transactions down 38% in 3 months",
            "value": -0.38,
            "points": 12,
        }
    ],
    [
        {
            "feature": "tickets_per_user_3m",
            "text": "4.2 support tickets per active user",
            "value": 4.2,
            "points": 9,
        }
    ],
    [
        {
            "feature": "active_users_trend_3m",
            "text": "Active users down 40% in 3 months",
            "value": -0.4,
            "points": 10,
        }
    ],
    [
        {
            "feature": "late_share_12m",
            "text": "60% of invoices paid late (12 months)",
            "value": 0.6,
            "points": 8,
        }
    ],
    [{"feature": "tenure_days", "text": "Partner for 3 months", "value": 91, "points": 7}],
]


def make_world(n: int) -> None:
    owner = get_user_model().objects.create_user(
        username="olivia", first_name="Olivia", last_name="Owner", email="olivia@churnsite.example"
    )
    version = ModelVersion.objects.create(
        trained_at=timezone.now(),
        window_start=dt.date(2024, 1, 1),
        window_end=dt.date(2025, 1, 1),
        artifact_path="bench",
        artifact_sha256="0" * 64,
    )
    partners = Partner.objects.bulk_create(
        Partner(
            external_id=f"P{20000 + i}",
            name=NAMES[i % len(NAMES)],
            tier="silver",
            region="na",
            segment="reseller",
            monthly_revenue=Decimal("3000"),
            contact_email=f"ops@p{20000 + i}.example",
            joined_on=dt.date(2023, 1, 1),
            account_owner=owner,
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
            drivers=DRIVER_SETS[i % len(DRIVER_SETS)],
            scored_at=timezone.now(),
        )
        for i, p in enumerate(partners)
    )


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=30)
    # Generous: a timeout abandons a completion the one-at-a-time server still finishes, so the
    # next draft waits for it. On 2 shared cores one completion can take a minute.
    parser.add_argument("--timeout", type=float, default=150.0, help="OPENAI_TIMEOUT per request")
    parser.add_argument("--deadline", type=float, default=400.0, help="OPENAI_DRAFT_DEADLINE per draft")
    parser.add_argument("--show-emails", action="store_true")
    args = parser.parse_args()
    base_url = os.environ.get("LLM_BENCH_BASE_URL")
    if not base_url:
        sys.exit("Set LLM_BENCH_BASE_URL (see ../shared/llm-local.md)")
    model = os.environ.get("LLM_BENCH_MODEL", "SmolLM2-135M-Instruct")

    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"bench_llm_{os.getpid()}"
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    llm = {
        "OPENAI_API_KEY": os.environ.get("LLM_BENCH_API_KEY", "sk-local"),
        "OPENAI_BASE_URL": base_url,
        "OPENAI_MODEL": model,
        "OPENAI_TIMEOUT": args.timeout,
        "OPENAI_DRAFT_DEADLINE": args.deadline,
        "OPENAI_MAX_RETRIES": 2,
        "OPENAI_CONCURRENCY": 0,  # the default: 1 for a local server
        "RETENTION_BOOKING_URL": "",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "CACHES": {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
    }
    try:
        with override_settings(**llm):
            config, _ = AgentConfig.objects.get_or_create(pk=1)
            config.enabled, config.control_fraction, config.max_per_hour = True, 0.0, 10_000
            config.approval_tiers = ["platinum"]
            config.save()
            make_world(args.partners)
            run = services.agent_run_create(trigger=AgentRun.Trigger.COMMAND)
            load_before = [round(x, 2) for x in os.getloadavg()]
            started = time.perf_counter()
            summary = workflow.agent_run_execute(run_id=run.pk)
            pass_s = time.perf_counter() - started
            report = analyse(run, summary, pass_s, show=args.show_emails)
            report["load_average_before_after"] = [load_before, [round(x, 2) for x in os.getloadavg()]]
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print(json.dumps(report, indent=2, ensure_ascii=False))


# Rounds the server answered with a completion: its work, whatever we then made of it (accepted,
# rejected by the parser or the gate, cut off at the token limit, refused). Not: a response_format
# it refused before generating (a 4xx/5xx in milliseconds), or a transport failure.
SERVED_KINDS = {None, "invalid_reply", "refused"}
RATIO_DEFINITION = (
    "pass wall time / (drafts x single-request latency), where single-request latency is the "
    "median server time of one completion over every request of this pass the server answered "
    "(accepted or not; the wait for a client-side slot excluded). 1.0 = one request per draft, "
    "back to back, and nothing else; retries, queueing, timeouts and the agent's own work add to it."
)


def analyse(run: AgentRun, summary: dict, pass_s: float, *, show: bool) -> dict:
    drafted = list(
        AuditEvent.objects.filter(run=run, event_type="email_drafted").select_related("intervention")
    )
    reasons: collections.Counter = collections.Counter()
    no_retry: collections.Counter = collections.Counter()
    served, requests, timeouts, probes = [], 0, 0, 0
    for event in drafted:
        payload = event.payload
        for r in payload.get("rounds", []):
            requests += 1
            kind = r.get("kind") if r.get("error") else None
            if kind == "timeout":
                timeouts += 1
            if kind in SERVED_KINDS:
                served.append((r["latency_ms"] - r.get("queued_ms", 0)) / 1000)
            elif kind in ("bad_request", "server_error") and "response_format" in r.get("raw", ""):
                probes += 1
        for failure in payload.get("failures", []):
            if failure.startswith("no retry: "):
                no_retry[failure.removeprefix("no retry: ").split(" (")[0]] += 1
        if payload["writer"] != "llm":
            # The reason without its evidence (quoted with ' or ", as repr() chose).
            reasons[re.split(r" ['\"]", payload["fallback_reason"])[0]] += 1
    interventions = list(
        Intervention.objects.filter(agent_run=run).select_related("partner", "partner__account_owner")
    )
    by_llm = [i for i in interventions if i.writer == "llm"]
    # Re-check everything that was sent or held, with the product's own checks.
    failing = []
    for i in interventions:
        brief = brief_for(
            partner=i.partner, drivers=i.drivers_at_action, sender=email_sender(i.partner), examples=False
        )
        failures = check_email(subject=i.email_subject, body=i.email_body, brief=brief)
        if failures:
            failing.append(
                {"partner": i.partner.external_id, "writer": i.writer, "failures": [str(f) for f in failures]}
            )
    drafts = len(interventions)
    single = statistics.median(served) if served else 0.0
    report = {
        "partners": summary.get("eligible"),
        "summary": {k: summary.get(k) for k in ("executed", "held_for_review", "failed", "skipped")},
        "drafts": drafts,
        "drafts_by_llm": len(by_llm),
        "drafts_by_template": drafts - len(by_llm),
        "gate_pass_share": round(len(by_llm) / max(1, drafts), 3),
        "fallback_reasons": dict(reasons.most_common()),
        "retries_not_tried": dict(no_retry.most_common()),
        "llm_drafts_held_for_approval": f"{sum(1 for i in by_llm if i.review_status == 'awaiting')} of {len(by_llm)}",
        "sent_or_held_failing_checks": failing,
        "requests": requests,
        "requests_served": len(served),
        "requests_per_draft": round(requests / max(1, drafts), 2),
        "response_format_probes": probes,
        # A client timeout is the one way work is abandoned on the server (it finishes the
        # completion nobody reads); timeouts against a local server are never retried.
        "request_timeouts": timeouts,
        "latency_s": {
            "p50": round(pct(served, 0.5), 2),
            "p95": round(pct(served, 0.95), 2),
            "mean": round(statistics.fmean(served), 2) if served else 0.0,
        },
        "server_time_s": round(sum(served), 1),
        "pass_s": round(pass_s, 1),
        "single_request_latency_s": round(single, 2),
        "pass_time_ratio": round(pass_s / max(0.001, drafts * single), 2),
        "pass_time_ratio_definition": RATIO_DEFINITION,
        "circuit_open": AuditEvent.objects.filter(run=run, event_type="llm_circuit_open").exists(),
    }
    if show:
        report["accepted_emails"] = [
            {"partner": i.partner.name, "subject": i.email_subject, "body": i.email_body} for i in by_llm
        ]
        report["rejected_samples"] = [
            {
                "partner": e.intervention.partner.name if e.intervention else "",
                "rounds": e.payload.get("rounds"),
            }
            for e in drafted
            if e.payload["writer"] != "llm"
        ][:6]
    return report


if __name__ == "__main__":
    main()
