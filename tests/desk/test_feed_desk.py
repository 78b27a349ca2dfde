"""The Live Feed as a morning desk: my partners, what changed since the last run, the strip."""

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.utils import timezone

from crm_sim.models import CrmTask
from ml.models import PartnerScore, ScoringSummary
from ml.score_store import scores_persist
from retention.models import Intervention
from tests.desk.conftest import run_scoring
from tests.factories import InterventionFactory, PartnerFactory, UserFactory

pytestmark = pytest.mark.django_db
DEC1, DEC2 = dt.date(2026, 12, 1), dt.date(2026, 12, 2)


def feed_ids(response) -> list[str]:
    return re.findall(r'data-partner="(P\d+)"', response.content.decode())


def stat(response, name: str) -> str:
    return re.search(rf'data-stat="{name}">([^<]+)<', response.content.decode()).group(1)


@pytest.fixture
def world(retention_user):
    other = UserFactory(username="olga", groups=["Retention"])
    mine = [PartnerFactory(external_id=f"P{100 + i}", account_owner=retention_user) for i in range(3)]
    theirs = [PartnerFactory(external_id=f"P{200 + i}", account_owner=other) for i in range(2)]
    nobodys = PartnerFactory(external_id="P300")
    return {"me": retention_user, "other": other, "mine": mine, "theirs": theirs, "nobodys": nobodys}


def test_an_owner_sees_only_their_partners_by_default_and_all_once_they_switch(retention_client, world):
    run_scoring({p: 0.3 for p in [*world["mine"], *world["theirs"], world["nobodys"]]}, as_of=DEC1)

    assert sorted(feed_ids(retention_client.get("/"))) == ["P100", "P101", "P102"]

    retention_client.post("/desk/scope/", {"scope": "all"})
    assert len(feed_ids(retention_client.get("/"))) == 6
    # Remembered for the person, not the browser session.
    retention_client.logout()
    retention_client.force_login(world["me"])
    assert len(feed_ids(retention_client.get("/"))) == 6


def test_the_owner_filter_still_shows_a_colleagues_partners(retention_client, world):
    run_scoring({p: 0.3 for p in [*world["mine"], *world["theirs"]]}, as_of=DEC1)

    assert sorted(feed_ids(retention_client.get("/", {"owner": world["other"].pk}))) == ["P200", "P201"]


def test_someone_who_owns_no_partners_sees_every_partner(client, world):
    run_scoring({p: 0.3 for p in [*world["mine"], *world["theirs"]]}, as_of=DEC1)
    client.force_login(UserFactory(username="newbie", groups=["Retention"]))

    assert len(feed_ids(client.get("/"))) == 5


def test_each_run_is_compared_with_the_previous_one_for_the_same_partner(world):
    a, b, c = world["mine"]
    run_scoring({a: 0.20, b: 0.70, c: 0.40}, as_of=DEC1)
    run = run_scoring({a: 0.43, b: 0.60, c: 0.55}, as_of=DEC2)

    score = PartnerScore.objects.get(partner=a)
    assert score.previous_risk == pytest.approx(0.20) and score.previous_as_of == DEC1
    assert score.risk_change == pytest.approx(0.23)
    assert PartnerScore.objects.get(partner=b).risk_change == pytest.approx(-0.10)
    mine = ScoringSummary.objects.get(run=run, owner=world["me"])
    assert (mine.partners, mine.at_risk, mine.new_at_risk, mine.worse) == (3, 2, 1, 2)


def test_a_chunk_scored_twice_keeps_its_comparison_with_the_previous_run(world):
    a = world["mine"][0]
    run_scoring({a: 0.20}, as_of=DEC1)
    run = run_scoring({a: 0.43}, as_of=DEC2)
    import pandas as pd

    again = pd.DataFrame([{"pid": a.pk, "risk": 0.43, "p_7d": 0.2, "p_30d": 0.1, "p_90d": 0.13,
                           "p_later": 0.57, "bucket": "later"}]).set_index("pid")  # fmt: skip
    scores_persist(run=run, pred=again, drivers={}, current=True, now=timezone.now())  # a redelivered chunk

    assert PartnerScore.objects.get(partner=a).previous_risk == pytest.approx(0.20)


def test_the_feed_shows_the_rise_in_points_and_filters_new_at_risk_and_worse(retention_client, world):
    a, b, c = world["mine"]
    run_scoring({a: 0.20, b: 0.70, c: 0.52}, as_of=DEC1)
    run_scoring({a: 0.43, b: 0.60, c: 0.58}, as_of=DEC2)

    html = retention_client.get("/").content.decode()
    assert "▲ +23 pts since 1 Dec" in html
    assert "▼ −10 pts since 1 Dec" in html
    assert feed_ids(retention_client.get("/", {"change": "worse"})) == ["P102", "P100"]
    assert feed_ids(retention_client.get("/", {"change": "new"})) == []
    assert feed_ids(retention_client.get("/", {"sort": "change"})) == ["P100", "P102", "P101"]

    run_scoring({a: 0.66, b: 0.60, c: 0.58}, as_of=dt.date(2026, 12, 3))
    response = retention_client.get("/", {"change": "new"})
    assert feed_ids(response) == ["P100"] and "New at risk" in response.content.decode()


def test_the_header_strip_adds_up_my_partners(retention_client, world):
    a, b, c = world["mine"]
    a.monthly_revenue, b.monthly_revenue, c.monthly_revenue = Decimal(1000), Decimal(2000), Decimal(400)
    for p in (a, b, c):
        p.save()
    run_scoring({a: 0.30, b: 0.40, c: 0.9, **{p: 0.95 for p in world["theirs"]}}, as_of=DEC1)
    run_scoring({a: 0.60, b: 0.40, c: 0.9, **{p: 0.95 for p in world["theirs"]}}, as_of=DEC2)
    today = timezone.localdate()
    for n, (partner, due) in enumerate([(a, today), (b, today - dt.timedelta(days=3)), (c, today + dt.timedelta(days=1)), (world["theirs"][0], today)]):  # fmt: skip
        CrmTask.objects.create(
            partner=partner, kind="retention_call", title="Call", due_on=due, idempotency_key=f"k{n}"
        )
    InterventionFactory(partner=c, review_status=Intervention.Review.AWAITING, source="agent")
    InterventionFactory(
        partner=world["theirs"][1], review_status=Intervention.Review.AWAITING, source="agent"
    )

    response = retention_client.get("/")

    # 1000 x 0.6 + 2000 x 0.4 + 400 x 0.9 = 1,760 a month
    assert stat(response, "at_risk") == "2"
    assert stat(response, "revenue_at_risk") == "$1,760"
    assert stat(response, "revenue_at_risk_12m") == "$21,120"
    assert stat(response, "new_at_risk") == "1"
    assert stat(response, "tasks_due") == "2"
    assert stat(response, "drafts_waiting") == "1"
    retention_client.post("/desk/scope/", {"scope": "all"})
    everyone = retention_client.get("/")
    assert stat(everyone, "at_risk") == "4" and stat(everyone, "tasks_due") == "3"
    assert stat(everyone, "drafts_waiting") == "2"


def test_the_desk_feed_page_runs_a_constant_number_of_queries(
    retention_client, world, django_assert_max_num_queries
):
    run_scoring({p: 0.6 for p in [*world["mine"], *world["theirs"]]}, as_of=DEC1)
    run_scoring({p: 0.7 for p in [*world["mine"], *world["theirs"]]}, as_of=DEC2)
    CrmTask.objects.create(partner=world["mine"][0], kind="retention_call", title="Call",
                           due_on=timezone.localdate(), idempotency_key="k")  # fmt: skip

    # Session, user with its role, permissions, the strip, COUNT, rows, tasks, saved views; the
    # team list for the owner filter comes from the cache after the first view.
    retention_client.get("/")
    for query in ({}, {"change": "worse", "sort": "change"}, {"owner": world["other"].pk}):
        with django_assert_max_num_queries(8):
            assert retention_client.get("/", query).status_code == 200


def test_the_default_level_is_the_desks_line(retention_client, world, settings):
    """Out of the box the strip, "New at risk" and the feed's Churn-in all use one line: 30%."""
    from ml.levels import AT_RISK_LEVEL

    settings.AT_RISK_LEVEL = AT_RISK_LEVEL
    assert AT_RISK_LEVEL == 0.30
    a, b, c = world["mine"]
    run_scoring({a: 0.25, b: 0.45, c: 0.10}, as_of=DEC1)
    run_scoring({a: 0.35, b: 0.45, c: 0.12}, as_of=DEC2)

    response = retention_client.get("/")
    assert stat(response, "at_risk") == "2"  # 0.35 and 0.45; a 50% line would count none
    assert stat(response, "new_at_risk") == "1"  # a crossed 30% (25% -> 35%)
    assert feed_ids(retention_client.get("/", {"change": "new"})) == [a.external_id]
