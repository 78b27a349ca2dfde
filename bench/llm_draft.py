"""Latency per retention email draft: template writer vs the LLM writer against a local server.

    .venv/bin/python bench/llm_draft.py [--llm-latency 1.0] [--drafts 5]

The LLM server is tests/openai_server.py (real HTTP through the real openai client) answering
after --llm-latency seconds; no database is needed (an unsaved Partner). Prints JSON.
"""

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "churnsite.settings")
os.environ.setdefault("SECRET_KEY", "django-insecure-bench-only")  # DEBUG is off here

import django  # noqa: E402

django.setup()

from django.test import override_settings  # noqa: E402

from agent.emails import draft_retention_email  # noqa: E402
from retention.models import Partner  # noqa: E402
from tests.openai_server import TEST_API_KEY, OpenAIServer  # noqa: E402

DRIVERS = [
    {"feature": "days_overdue", "text": "Payment 45 days overdue", "value": 45, "points": 18.0},
    {
        "feature": "transactions_trend_3m",
        "text": "Transactions down 38% in 3 months",
        "value": -0.38,
        "points": 11.5,
    },
    {"feature": "support_tickets_3m", "text": "9 support tickets in 3 months", "value": 9, "points": 4.2},
]


def partner() -> Partner:
    return Partner(
        external_id="P18477",
        name="Acme Logistics",
        tier="gold",
        region="emea",
        segment="reseller",
        monthly_revenue=Decimal("4200.00"),
        contact_email="ops@acme.example",
        joined_on=dt.date(2023, 3, 1),
    )


def timed(n: int, **kwargs) -> tuple[list[float], list]:
    times, drafts = [], []
    for _ in range(n):
        started = time.perf_counter()
        drafts.append(draft_retention_email(partner=partner(), drivers=DRIVERS, **kwargs))
        times.append((time.perf_counter() - started) * 1000)
    return times, drafts


def summary(times: list[float]) -> dict:
    times = sorted(times)
    return {
        "n": len(times),
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[min(len(times) - 1, math.ceil(len(times) * 0.95) - 1)], 2),
        "max_ms": round(times[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llm-latency", type=float, default=1.0)
    parser.add_argument("--drafts", type=int, default=5)
    parser.add_argument("--template-drafts", type=int, default=500)
    args = parser.parse_args()
    out = {}

    with override_settings(OPENAI_API_KEY=""):
        times, drafts = timed(args.template_drafts)
        out["template"] = {**summary(times), "writer": drafts[0].writer}

    with OpenAIServer() as server:
        server.latency = args.llm_latency
        llm = {
            "OPENAI_API_KEY": TEST_API_KEY,
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_TIMEOUT": args.llm_latency + 5,
            "OPENAI_MAX_RETRIES": 1,
        }
        with override_settings(**llm):
            times, drafts = timed(args.drafts)
            out["llm_sequential"] = {
                **summary(times),
                "server_latency_s": args.llm_latency,
                "writers": sorted({d.writer for d in drafts}),
            }
            # 4 drafts at once, as 4 Celery workers would.
            started = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                drafts = list(
                    pool.map(lambda _: draft_retention_email(partner=partner(), drivers=DRIVERS), range(8))
                )
            wall = time.perf_counter() - started
            out["llm_4_concurrent"] = {
                "drafts": 8,
                "wall_s": round(wall, 2),
                "drafts_per_s": round(8 / wall, 2),
                "writers": sorted({d.writer for d in drafts}),
            }
        # A server that never answers in time: the cost of the fallback.
        server.latency = 0
        server.set_default(server.hang(30)[0])
        with override_settings(**{**llm, "OPENAI_TIMEOUT": 1.0, "OPENAI_MAX_RETRIES": 1}):
            times, drafts = timed(2)
            out["llm_timeout_fallback"] = {
                **summary(times),
                "timeout_s": 1.0,
                "max_retries": 1,
                "fallback_reason": drafts[0].fallback_reason,
                "attempts": drafts[0].attempts,
            }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
