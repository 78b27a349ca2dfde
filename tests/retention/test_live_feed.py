import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ml.models import PartnerScore
from retention.models import Intervention, Partner
from retention.selectors import feed_dense_memos_forget, partner_live_feed
from tests.conftest import htmx, scored_partner
from tests.factories import InterventionFactory, PartnerScoreFactory, ScoringRunFactory, UserFactory

pytestmark = pytest.mark.django_db


def feed_ids(html: str) -> list[str]:
    return re.findall(r'data-partner="(P\d+)"', html)


def headlines(html: str) -> list[str]:
    """Each row's headline as a person reads (and copies) it: the link's text."""
    cells = re.findall(r'<td class="headline"><a [^>]*>(.*?)</a>', html, flags=re.S)
    return [re.sub(r"<[^>]+>", "", c).strip() for c in cells]


def test_the_feed_puts_the_most_urgent_partners_first_then_the_riskiest(retention_client):
    scored_partner(external_id="P1", risk=0.95, bucket="30d")
    scored_partner(external_id="P2", risk=0.70, bucket="7d")
    scored_partner(external_id="P3", risk=0.90, bucket="7d")
    scored_partner(external_id="P4", risk=0.20, bucket="later")

    html = retention_client.get("/").content.decode()

    assert feed_ids(html) == ["P3", "P2", "P1", "P4"]


def test_a_feed_row_reads_like_the_desk_talks(retention_client):
    scored_partner(external_id="P18477", risk=0.94, bucket="7d", tier="gold", monthly_revenue=Decimal("4200"))

    html = retention_client.get("/").content.decode()

    assert headlines(html) == ["🔴 P18477 • Risk: 94% • Churn in: ~7 days"]
    # The colour on screen is a CSS dot (the emoji is kept in the text, visually hidden),
    # and the window's probability given churn is on hover.
    assert '<span class="dot dot-7d" aria-hidden="true"></span><span class="emoji">🔴</span>' in html
    assert 'title="If it churns: ~7 d 50%, ~30 d 30%, ~90 d 20%"' in html
    assert "Payment 45 days overdue" in html  # the top driver
    assert "$4,200" in html and "Gold" in html
    assert 'class="urgency-7d"' in html


def test_a_partner_below_the_at_risk_level_reads_low_risk_in_grey_not_a_late_churn_date(retention_client):
    scored_partner(external_id="P2", risk=0.12, bucket="later")

    html = retention_client.get("/").content.decode()

    assert headlines(html) == ["⚪ P2 • Risk: 12% • Low risk"]
    assert "> 90 days" not in html and "&gt; 90 days" not in html.split("<tbody>")[1]
    assert '<span class="dot dot-later"' in html and "title=" not in html.split("<tbody>")[1].split("</a>")[0]


def test_the_feed_sorts_by_risk_and_by_revenue_at_risk(retention_client):
    scored_partner(external_id="P1", risk=0.95, bucket="30d", monthly_revenue=Decimal("100"))
    scored_partner(external_id="P2", risk=0.60, bucket="7d", monthly_revenue=Decimal("90000"))
    scored_partner(external_id="P3", risk=0.80, bucket="7d", monthly_revenue=Decimal("1000"))

    assert feed_ids(retention_client.get("/", {"sort": "risk"}).content.decode()) == ["P1", "P3", "P2"]
    assert feed_ids(retention_client.get("/", {"sort": "revenue"}).content.decode()) == ["P2", "P3", "P1"]


def test_the_feed_filters_by_tier_bucket_owner_and_not_yet_contacted(retention_client):
    owner = UserFactory(username="olga", groups=["Retention"])
    scored_partner(external_id="P1", risk=0.9, bucket="7d", tier="gold", account_owner=owner)
    contacted = scored_partner(external_id="P2", risk=0.8, bucket="30d", tier="gold")
    scored_partner(external_id="P3", risk=0.7, bucket="7d", tier="bronze")
    InterventionFactory(partner=contacted, action="call_scheduled")

    get = lambda **q: feed_ids(retention_client.get("/", q).content.decode())  # noqa: E731
    assert get(tier="gold") == ["P1", "P2"]
    assert get(bucket="7d") == ["P1", "P3"]
    assert get(owner=owner.pk) == ["P1"]
    assert get(not_contacted="on") == ["P1", "P3"]
    assert get(tier="gold", not_contacted="on") == ["P1"]


def test_the_feed_searches_by_id_or_name(retention_client):
    scored_partner(external_id="P18477", name="Northwind Traders", risk=0.9)
    scored_partner(external_id="P10342", name="Contoso Retail", risk=0.8)

    assert feed_ids(retention_client.get("/", {"q": "p18477"}).content.decode()) == ["P18477"]
    assert feed_ids(retention_client.get("/", {"q": "contoso"}).content.decode()) == ["P10342"]


def test_a_name_search_takes_percent_and_underscore_literally(retention_client):
    scored_partner(external_id="P1", name="Acme_North 50%", risk=0.9)
    scored_partner(external_id="P2", name="AcmeXNorth 500", risk=0.8)

    get = lambda q: feed_ids(retention_client.get("/", {"q": q}).content.decode())  # noqa: E731
    assert get("acme_north") == ["P1"]
    assert get("50%") == ["P1"]
    assert get("acme") == ["P1", "P2"]


def test_each_request_gets_its_own_owner_and_search_not_the_previous_ones(retention_client):
    """The feed's SQL is compiled once per filter combination and reused with each request's
    owner and search."""
    olga = UserFactory(username="olga", groups=["Retention"])
    piet = UserFactory(username="piet", groups=["Retention"])
    scored_partner(external_id="P1", name="Northwind", risk=0.9, account_owner=olga)
    scored_partner(external_id="P2", name="Contoso", risk=0.8, account_owner=piet)
    scored_partner(external_id="P3", name="Northwind East", risk=0.7, account_owner=piet)

    get = lambda **q: feed_ids(retention_client.get("/", q).content.decode())  # noqa: E731
    assert get(owner=olga.pk) == ["P1"]
    assert get(owner=piet.pk) == ["P2", "P3"]
    assert get(owner=piet.pk, q="northwind") == ["P3"]
    assert get(owner=olga.pk, q="northwind") == ["P1"]
    assert get(q="contoso") == ["P2"]
    assert get(q="p3") == ["P3"] and get(q="P1") == ["P1"]
    assert get(owner=olga.pk, q="P3") == []


def test_the_feed_leaves_out_churned_and_unscored_partners(retention_client):
    from tests.factories import PartnerFactory

    scored_partner(external_id="P1", risk=0.9)
    scored_partner(external_id="P2", risk=0.9, status="churned", churned_on="2026-01-01")
    PartnerFactory(external_id="P3")

    assert feed_ids(retention_client.get("/").content.decode()) == ["P1"]


def test_the_feed_shows_each_partners_last_intervention(retention_client):
    partner = scored_partner(external_id="P1", risk=0.9)
    first = InterventionFactory(partner=partner, action="email_sent")
    InterventionFactory(partner=partner, action="meeting")
    Intervention.objects.filter(pk=first.pk).update(created_at="2020-01-01T00:00Z")

    html = retention_client.get("/").content.decode()
    row = html.split('data-partner="P1"')[1].split("</tr>")[0]
    assert "Meeting" in row and "Email sent" not in row


def test_the_feed_does_not_call_an_email_held_for_approval_sent(retention_client):
    partner = scored_partner(external_id="P1", risk=0.9)
    InterventionFactory(partner=partner, source="agent", action="email_sent", review_status="awaiting")

    html = retention_client.get("/").content.decode()
    row = html.split('data-partner="P1"')[1].split("</tr>")[0]
    assert "Email drafted (not sent)" in row


def test_the_feed_paginates_fifty_rows_a_page_keeping_the_filters(retention_client):
    for n in range(55):
        scored_partner(external_id=f"P{n:03d}", risk=0.5 + n / 200, tier="gold")

    first = retention_client.get("/", {"tier": "gold"}).content.decode()
    second = retention_client.get("/", {"tier": "gold", "page": 2}).content.decode()

    assert len(feed_ids(first)) == 50 and len(feed_ids(second)) == 5
    assert "?tier=gold&amp;page=2" in first
    assert "55 scored partners" in first


def test_the_feed_count_is_capped_but_next_pages_reach_every_partner(retention_client, monkeypatch):
    monkeypatch.setattr("retention.selectors.FEED_COUNT_CAP", 3)
    monkeypatch.setattr("retention.selectors.FEED_PAGE_SIZE", 2)
    for n in range(12):
        scored_partner(external_id=f"P{n}", risk=0.9 - n / 100)

    first = retention_client.get("/", {"sort": "risk"}).content.decode()
    assert "5+ scored partners" in first  # counted a page and the cap past it, no further
    assert feed_ids(first) == ["P0", "P1"]

    # Following Next page after page reaches every partner (a hard cap used to end the pages).
    seen, page, html = [], 1, first
    while True:
        seen += feed_ids(html)
        if "page=" + str(page + 1) not in html:
            break
        page += 1
        html = retention_client.get("/", {"sort": "risk", "page": page}).content.decode()
    assert seen == [f"P{n}" for n in range(12)]
    assert "12 scored partners" in html and "Page 6 of 6<" in html  # the last page knows the total


@pytest.mark.parametrize("sort", ["urgency", "risk", "revenue", "change"])
def test_deep_pages_read_by_id_show_the_same_rows_in_the_same_order(retention_client, monkeypatch, sort):
    """Past FEED_DEEP_OFFSET a page reads its ids, then its rows: page after page the feed
    is the one the SQL ORDER BY gives, ties broken by id, last interventions shown."""
    monkeypatch.setattr("retention.selectors.FEED_PAGE_SIZE", 3)
    monkeypatch.setattr("retention.selectors.FEED_DEEP_OFFSET", 3)
    for n in range(8):
        partner = scored_partner(external_id=f"P{n}", risk=0.9 - (n // 2) / 10, tier="gold")
        PartnerScore.objects.filter(partner=partner).update(risk_change=None if n == 5 else n / 100)
    InterventionFactory(partner=partner, action="meeting")
    scored_partner(external_id="P99", risk=0.99, tier="bronze")

    pages = [
        retention_client.get("/", {"tier": "gold", "sort": sort, "page": page}).content.decode()
        for page in (1, 2, 3)
    ]

    expected = list(partner_live_feed(tier="gold", sort=sort).values_list("external_id", flat=True))
    assert [i for html in pages for i in feed_ids(html)] == expected and len(expected) == 8
    last_row = next(html for html in pages if 'data-partner="P7"' in html).split('data-partner="P7"')[1]
    assert "Meeting" in last_row.split("</tr>")[0]


@pytest.mark.parametrize("sort", ["urgency", "risk", "revenue", "change"])
def test_a_name_search_read_by_id_pages_in_the_feeds_own_order(retention_client, monkeypatch, sort):
    """A name search reads its page by id, sorted in Python: the same rows, in the same order,
    as the feed's SQL ORDER BY gives them (ties broken by id), page after page."""
    monkeypatch.setattr("retention.selectors.FEED_PAGE_SIZE", 3)
    for n in range(8):
        # Two of each risk, so the id decides ties; revenue and change follow the risk.
        partner = scored_partner(external_id=f"P{n}", name=f"Globex Acme {n}", risk=0.9 - (n // 2) / 10)
        PartnerScore.objects.filter(partner=partner).update(risk_change=None if n == 5 else n / 100)
    scored_partner(external_id="P99", name="Initech", risk=0.99)

    def pages(query: dict) -> list[str]:
        return [
            i
            for page in (1, 2, 3)
            for i in feed_ids(retention_client.get("/", query | {"page": page}).content.decode())
        ]

    expected = list(partner_live_feed(search="globex acme", sort=sort).values_list("external_id", flat=True))
    html = retention_client.get("/", {"q": "globex acme", "sort": sort}).content.decode()

    assert pages({"q": "globex acme", "sort": sort}) == expected and sorted(expected) == [
        f"P{n}" for n in range(8)
    ]
    assert "8 scored partners" in html


@pytest.mark.parametrize("sort", ["urgency", "risk", "revenue", "change"])
def test_a_name_search_with_more_matches_than_it_reads_by_id_walks_the_feed_in_order(
    retention_client, monkeypatch, sort
):
    """Past FEED_READ_BY_ID_CAP matches a name search walks the sort's index testing the
    score's copy of the name (on PostgreSQL): page after page the rows are the feed's, in its
    order, a renamed partner included, and a stale copy never lets in a partner whose own name
    does not match."""
    monkeypatch.setattr("retention.selectors.FEED_PAGE_SIZE", 3)
    monkeypatch.setattr("retention.selectors.FEED_COUNT_CAP", 1)
    monkeypatch.setattr("retention.selectors.FEED_READ_BY_ID_CAP", 2)
    monkeypatch.setattr("retention.selectors.FEED_DEEP_OFFSET", 6)  # page 3 reads its ids first
    for n in range(11):
        partner = scored_partner(external_id=f"P{n}", name=f"Globex Acme {n}", risk=0.9 - (n // 2) / 10)
        PartnerScore.objects.filter(partner=partner).update(risk_change=None if n == 5 else n / 100)
    renamed = scored_partner(external_id="P11", name="Initech", risk=0.55)
    Partner.objects.filter(pk=renamed.pk).update(name="Globex Acme Renamed")  # the trigger's copy
    stale = scored_partner(external_id="P12", name="Initech West", risk=0.95)
    PartnerScore.objects.filter(partner=stale).update(partner_name="Globex Acme Stale")
    scored_partner(external_id="P99", name="Umbrella", risk=0.99)

    expected = list(partner_live_feed(search="globex acme", sort=sort).values_list("external_id", flat=True))
    with CaptureQueriesContext(connection) as first_page:
        html = retention_client.get("/", {"q": "globex acme", "sort": sort}).content.decode()
    # Read now: the next request starts a fresh query log.
    walked = [q["sql"] for q in first_page.captured_queries if "partner_name" in q["sql"]]
    planned = [q["sql"] for q in first_page.captured_queries if "set_config" in q["sql"]]
    seen = feed_ids(html)
    for page in (2, 3, 4):  # pages 1-3 walk (their count is capped), page 4 reads by id
        seen += feed_ids(
            retention_client.get("/", {"q": "globex acme", "sort": sort, "page": page}).content.decode()
        )

    assert seen == expected and sorted(expected) == sorted([f"P{n}" for n in range(12)])
    if connection.vendor == "postgresql":
        # One round trip: the walk between the statements that set and restore its settings.
        assert len(walked) == 1 and "LIMIT 3" in walked[0] and planned == walked
    # The walk's planner settings ended with it: the request's other statements planned as usual.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW enable_seqscan")
            assert cursor.fetchone()[0] == "on"


def test_a_dense_name_search_is_remembered_for_its_scoring_run_and_pages_the_same(
    retention_client, monkeypatch
):
    """The first view of a dense search counts its keys and remembers it as dense for the
    feed's scoring run; later views of that run walk without the keys query and show the same
    rows and count; after a new run it is counted again."""
    monkeypatch.setattr("retention.selectors.FEED_PAGE_SIZE", 3)
    monkeypatch.setattr("retention.selectors.FEED_COUNT_CAP", 1)
    monkeypatch.setattr("retention.selectors.FEED_READ_BY_ID_CAP", 4)
    feed_dense_memos_forget()  # memos of an earlier session's runs
    ScoringRunFactory()
    for n in range(9):
        scored_partner(external_id=f"P{n}", name=f"Globex Acme {n}", risk=0.9 - n / 20)
    scored_partner(external_id="P99", name="Umbrella", risk=0.99)

    def view() -> tuple[list[str], str, int]:
        with CaptureQueriesContext(connection) as queries:
            html = retention_client.get("/", {"q": "globex acme"}).content.decode()
        keys = [q for q in queries.captured_queries if 'AS "current_score__urgency_rank"' in q["sql"]]
        return feed_ids(html), re.search(r"Page 1 of [^<]*", html)[0], len(keys)

    first, second = view(), view()
    ScoringRunFactory()  # a new run: counted again
    third = view()
    feed_dense_memos_forget()

    assert first[:2] == second[:2] == third[:2] == (["P0", "P1", "P2"], "Page 1 of 2+")
    assert (first[2], second[2], third[2]) == (1, 0, 1)


def test_the_htmx_request_gets_only_the_feed_rows(retention_client):
    scored_partner(external_id="P1", risk=0.9)

    html = retention_client.get("/", {"sort": "risk"}, headers=htmx("results")).content.decode()

    assert html.lstrip().startswith('<div id="results">')
    assert 'href="/partners/P1/"' in html and '<nav class="mainnav"' not in html


def test_the_full_page_has_the_layout_filters_and_poller(retention_client):
    html = retention_client.get("/").content.decode()

    assert 'class="mainnav"' in html and 'id="feed-filters"' in html
    assert 'hx-trigger="every 30s"' in html and 'hx-include="#feed-filters"' in html


def test_the_poll_answers_204_until_a_new_scoring_run_lands(retention_client):
    scored_partner(external_id="P1", risk=0.9)
    run = ScoringRunFactory()

    unchanged = retention_client.get("/feed/poll/", {"run": run.pk}, headers=htmx())
    assert unchanged.status_code == 204

    newer = ScoringRunFactory(model_version=run.model_version)
    fresh = retention_client.get("/feed/poll/", {"run": run.pk, "tier": "silver"}, headers=htmx())
    html = fresh.content.decode()
    assert fresh.status_code == 200
    assert html.lstrip().startswith('<div id="results">') and 'href="/partners/P1/"' in html
    assert f'"run": "{newer.pk}"' in html  # the next poll compares with the new run
    assert "scoring-run-landed" in fresh["HX-Trigger"]


def test_the_poll_keeps_the_filters_it_is_sent(retention_client):
    scored_partner(external_id="P1", risk=0.9, tier="gold")
    scored_partner(external_id="P2", risk=0.9, tier="bronze")
    ScoringRunFactory()

    html = retention_client.get("/feed/poll/", {"run": "", "tier": "gold"}).content.decode()

    assert feed_ids(html) == ["P1"]


def test_a_failed_scoring_run_does_not_refresh_the_feed(retention_client):
    run = ScoringRunFactory()
    ScoringRunFactory(model_version=run.model_version, status="failed")

    assert retention_client.get("/feed/poll/", {"run": run.pk}).status_code == 204


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"sort": "risk"},
        {"sort": "revenue", "tier": "gold"},
        {"bucket": "7d", "not_contacted": "on"},
        {"q": "acme", "owner": "OWNER"},
        {"q": "P10001", "page": "2"},
    ],
)
def test_the_feed_runs_a_constant_number_of_queries(retention_client, django_assert_max_num_queries, query):
    owner = UserFactory(username="olga", groups=["Retention"])
    for n in range(60):
        partner = scored_partner(
            external_id=f"P{10000 + n}",
            name=f"Acme {n}",
            risk=0.3 + n / 100,
            tier="gold",
            account_owner=owner,
        )
        if n % 3 == 0:
            InterventionFactory(partner=partner, assigned_to=owner)
    ScoringRunFactory()
    query = {k: (owner.pk if v == "OWNER" else v) for k, v in query.items()}

    retention_client.get("/")  # the first view of the day reads the team list into the cache
    # 8 at most: session, user with its role, permissions (one UNION), the strip, the COUNT
    # (none when the strip's run counted the rows), rows, tasks, saved views.
    with django_assert_max_num_queries(8):
        response = retention_client.get("/", query)
    assert response.status_code == 200
    assert PartnerScore.objects.count() == 60
    PartnerScoreFactory  # noqa: B018 - imported for the fixtures above


def test_before_any_scoring_the_feed_lists_the_unscored_partners(retention_client):
    from tests.factories import PartnerFactory

    PartnerFactory(external_id="P18477", name="Northwind Traders")

    html = retention_client.get("/").content.decode()

    assert "Not scored yet" in html and "P18477" in html and "Northwind Traders" in html


def test_the_unfiltered_feed_gives_the_scoring_runs_exact_count_not_a_capped_one(
    retention_client, monkeypatch
):
    monkeypatch.setattr("retention.selectors.FEED_COUNT_CAP", 2)
    for i in range(5):
        scored_partner(external_id=f"P{i}", risk=0.9 - i / 10)
    ScoringRunFactory(scored=5)

    html = retention_client.get("/").content.decode()
    assert "5 scored partners" in html and "5+" not in html
    # Filtered, the feed counts its own rows (capped as before).
    assert "scored partners" in retention_client.get("/", {"tier": "gold"}).content.decode()
