"""Drivers in words: what the retention team reads on the feed, the partner page and the Model page."""

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
