"""Drivers in words: what the retention team reads on the feed, the partner page and the Model page."""

import math

import pytest

from ml.explain import describe, feature_label
from ml.features import FEATURES


@pytest.mark.parametrize(
    ("feature", "value", "text"),
    [
        ("days_overdue", 45.0, "Payment 45 days overdue"),
        ("tickets_per_user_3m", 13.0, "13 support tickets per active user in 3 months"),
        ("tickets_per_user_3m", 5.5, "5.5 support tickets per active user in 3 months"),
        ("transactions_log_trend_1v3", -0.6931, "Transactions down 50% last month"),
        ("tier_rank", 3.0, "Platinum tier"),
    ],
)
def test_a_driver_reads_as_a_sentence(feature, value, text):
    assert describe({"feature": feature, "value": value, "points": 1.234})["text"] == text


def test_every_model_feature_has_a_name_for_people():
    labels = {f: feature_label(f) for f in FEATURES}
    assert all(label != feature for feature, label in labels.items()), labels
    assert labels["region_latam"] == "Region: LATAM" and labels["segment_reseller"] == "Segment: Reseller"


def test_a_ratio_says_its_zero_denominator_instead_of_hiding_it():
    context = {"support_tickets_3m": 11.0, "active_users_3m": 0.0}
    driver = describe({"feature": "tickets_per_user_3m", "value": 11.0, "points": 3.0, "context": context})
    assert driver["text"] == "11 support tickets in 3 months, with no active users"
    context["active_users_3m"] = 2.0
    driver = describe({"feature": "tickets_per_user_3m", "value": 5.5, "points": 3.0, "context": context})
    assert driver["text"] == "11 support tickets in 3 months from 2 active users a month"


def test_a_comparison_says_against_what():
    # 2 last month against 16 a month before: log((2 + 1) / (16 + 1)).
    context = {"transactions_1m": 2.0}
    v = math.log(3 / 17)
    driver = describe(
        {"feature": "transactions_log_trend_1v3", "value": v, "points": 9.0, "context": context}
    )
    assert driver["text"] == "Transactions 2 last month, vs 16 a month over the 3 months before"
    plan = {"monthly_revenue": 5000.0}
    driver = describe({"feature": "revenue_vs_plan_1m", "value": 0.4, "points": 4.0, "context": plan})
    assert driver["text"] == "Revenue $2,000 last month, 40% of the $5,000 plan"


def test_the_last_fortnight_and_a_step_down_say_against_what():
    context = {
        "transactions_1m": 96.0,
        "transactions_last_2w": 26.0,
        "transactions_last_1w": 8.0,
        "transactions_step_days": 10.0,
        "transactions_step_level": 0.3,
        "transactions_step_strength": 40.0,
    }
    driver = describe(
        {"feature": "transactions_2w_vs_rest_1m", "value": 0.45, "points": 5.0, "context": context}
    )
    assert driver["text"] == (
        "Transactions 26 in the last 2 weeks of last month, at 45% of the daily rate earlier that month "
        "(70 before its last 2 weeks)"
    )
    driver = describe({"feature": "transactions_step_days", "value": 10.0, "points": 5.0, "context": context})
    assert driver["text"] == (
        "Daily transactions clearly stepped down to about 30% of their usual rate 10 days before the end of last month"
    )
    # Scored after the month's end (the desk scores every day), it also says how long ago.
    context["transactions_step_age_days"] = 25.0
    driver = describe(
        {"feature": "transactions_step_age_days", "value": 25.0, "points": 5.0, "context": context}
    )
    assert driver["text"] == (
        "Daily transactions clearly stepped down to about 30% of their usual rate 25 days ago "
        "(10 days before the end of last month)"
    )
    context["transactions_step_days"] = 0.0
    driver = describe(
        {"feature": "transactions_step_strength", "value": 0.0, "points": -1.0, "context": context}
    )
    assert driver["text"] == "No step down in daily transactions over the last 2 months"
