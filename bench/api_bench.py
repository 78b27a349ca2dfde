"""GET /api/v1/partners at 100k partners: latency under 10 token clients, queries per page.

    SECRET_KEY=x .venv/bin/python bench/api_bench.py [--partners 100000] [--workers 3]
                                                     [--clients 10] [--requests 40]
                                                     [--db churnsite_bench_api]

1. Creates (once) its own database and bulk-loads N partners with scores, with
   bench/feed_bench.py's loader (COPY), and makes an API token for a Retention user.
2. In-process: counts the SQL queries of every variant (the first page and a cursor page deep
   in must cost the same) and the CPU time of each (time.process_time(), which other processes'
   load does not inflate, unlike the wall clock), and prints EXPLAIN (ANALYZE, BUFFERS) of each
   variant's page query (its execution ms and buffers are in the summary).
3. Serves the site with gunicorn on 127.0.0.1 and drives the variants with `clients` threads,
   each with its own keep-alive connection and the token; prints p50/p95 per variant and
   overall. The last line is a JSON summary.
"""

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.feed_bench import drive, load, log, pct, serving, use_database, vacuum  # noqa: E402

P95_TARGET_MS = 100
# The token's rate limit stays on (its Redis counter is part of every request's cost), set high
# enough that 10 clients in a loop never meet it.
RATE_LIMIT = "1000000"


def variants(deep_cursor: str) -> dict[str, str]:
    return {
        "first_page": "/api/v1/partners",
        "deep_cursor": f"/api/v1/partners?cursor={deep_cursor}",
        "filter_tier": "/api/v1/partners?tier=gold",
        "filter_bucket": "/api/v1/partners?bucket=7d&status=active",
        # A filter's cost must not depend on the cursor, nor on how many partners it matches.
        "filter_bucket_deep": f"/api/v1/partners?bucket=7d&status=active&cursor={deep_cursor}",
        "filter_bucket_tier": "/api/v1/partners?bucket=30d&tier=platinum",
        "filter_bucket_later": "/api/v1/partners?bucket=later",
        "search_name": "/api/v1/partners?search=globex",
        "search_id": "/api/v1/partners?search=P150123",
        "search_none": "/api/v1/partners?search=nomatch",
    }


def make_token() -> str:
    """A fresh token for owner0 (a Retention user, as a partner system would have)."""
    from django.contrib.auth.models import User

    from api.models import ApiToken
    from api.tokens import api_token_create

    user = User.objects.get(username="owner0")
    ApiToken.objects.filter(user=user, name="bench").delete()
    _, token = api_token_create(user=user, name="bench", actor=user)
    return token


def in_process(
    urls: dict[str, str], token: str, repeat: int
) -> tuple[dict[str, int], dict[str, float], dict[str, dict]]:
    """Queries per variant, its median CPU milliseconds over `repeat` requests, and EXPLAIN
    (ANALYZE, BUFFERS) of its partners query (printed; execution ms and buffers returned)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    queries, cpu, plans = {}, {}, {}
    # The token's first use notes its last-used time (one UPDATE, then once a minute at most):
    # made here first, so it is not counted against one variant.
    client.get(next(iter(urls.values())))
    for name, url in urls.items():
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.content[:300])
        assert response.json()["items"] or name == "search_none", (name, "no rows")
        # Copied now: the next request's request_started signal empties connection.queries.
        captured = list(ctx.captured_queries)
        queries[name] = len(captured)
        times = []
        for _ in range(repeat):
            t0 = time.process_time()
            client.get(url)
            times.append((time.process_time() - t0) * 1000)
        cpu[name] = round(statistics.median(times), 1)
        # The page's query (the other one is the token's, the same on every variant).
        sql = next(q["sql"] for q in captured if q["sql"].startswith('SELECT "retention_partner".'))
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = [row[0] for row in cursor.fetchall()]
        log(f"--- EXPLAIN {name} {url}\n" + "\n".join(plan))
        buffers = next((line for line in plan if "Buffers: shared" in line), "")
        plans[name] = {
            "exec_ms": float(next(line for line in plan if line.startswith("Execution Time")).split()[2]),
            "buffers": sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", buffers)),
        }
    return queries, cpu, plans


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=40, help="per client")
    parser.add_argument("--db", default="churnsite_bench_api")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/5", help="the rate limit's counters")
    args = parser.parse_args()

    os.environ["API_RATE_LIMIT"] = RATE_LIMIT
    use_database(args.db, redis_url=args.redis)
    load(args.partners)
    vacuum()

    from api.reads import encode_cursor
    from retention.models import Partner

    # A cursor 90% of the way through the id order: keyset pagination costs the same there.
    deep = Partner.objects.order_by("external_id").values_list("external_id", flat=True)[
        args.partners * 9 // 10
    ]
    urls = variants(encode_cursor(deep))
    token = make_token()
    queries, cpu, plans = in_process(urls, token, repeat=10)
    log(f"queries per request: {queries}")
    log(f"in-process CPU ms per request (median of 10): {cpu}")
    log(f"the page query's EXPLAIN ANALYZE execution ms and buffers: {plans}")

    headers = {"Authorization": f"Bearer {token}"}
    with serving(args.workers) as port:
        drive(port, "", list(urls.values()), args.clients, 2 * len(urls), headers=headers)  # warm-up
        t0 = time.monotonic()
        lat = drive(port, "", list(urls.values()), args.clients, args.requests, headers=headers)
        elapsed = time.monotonic() - t0
        overall = {
            "requests": len(lat),
            "p50_ms": round(pct(lat, 50), 1),
            "p95_ms": round(pct(lat, 95), 1),
            "max_ms": round(max(lat), 1),
            "rps": round(len(lat) / elapsed, 1),
        }
        log(f"all variants, {args.clients} clients: {overall}")
        per_variant = {}
        for name, url in urls.items():
            lat = drive(port, "", [url], args.clients, max(5, args.requests // 4), headers=headers)
            per_variant[name] = {"p50_ms": round(pct(lat, 50), 1), "p95_ms": round(pct(lat, 95), 1)}
            log(f"{name}: {per_variant[name]}  {url}")

    summary = {
        "partners": args.partners,
        "gunicorn_workers": args.workers,
        "clients": args.clients,
        "cpus": os.cpu_count(),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "overall": overall,
        "per_variant": per_variant,
        "queries_per_page": queries,
        "queries_first_equals_deep": queries["first_page"] == queries["deep_cursor"],
        "queries_constant": len(set(queries.values())) == 1,
        "cpu_ms_per_request": cpu,
        "sql_explain_per_variant": plans,
        "p95_target_ms": P95_TARGET_MS,
        "p95_ok": overall["p95_ms"] <= P95_TARGET_MS,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
