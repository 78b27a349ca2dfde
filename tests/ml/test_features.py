"""Point-in-time features, tested on hand-made frames and a small simulated world (no database)."""

import datetime as dt

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from ml import features as F

CUTOFF = dt.date(2026, 3, 31)


def frames():
    partners = pd.DataFrame(
        {
            "external_id": ["P1", "P2", "P3", "P4"],
            "tier": ["gold", "bronze", "silver", "silver"],
            "region": ["na", "emea", "apac", "na"],
            "segment": ["reseller", "merchant", "referral", "merchant"],
            "monthly_revenue": [10_000.0, 1_000.0, 2_000.0, 2_000.0],
            "joined_on": pd.to_datetime(["2024-01-10", "2025-06-01", "2026-04-02", "2024-02-01"]),
            "churned_on": pd.to_datetime([None, "2026-04-20", None, "2026-03-15"]),
        }
    )
    months = pd.date_range("2025-10-01", "2026-04-01", freq="MS")
    activity = pd.DataFrame(
        [
            {"external_id": "P1", "month": m, "transactions": 100 - 10 * i, "revenue": 10_000.0 - 1000 * i,
             "active_users": 8, "support_tickets": i}
            for i, m in enumerate(months)
        ]
        + [
            {"external_id": "P2", "month": m, "transactions": 20, "revenue": 1_000.0, "active_users": 3,
             "support_tickets": 0}
            for m in months
        ]
    )  # fmt: skip
    invoices = pd.DataFrame(
        {
            "external_id": ["P1", "P1", "P2", "P2"],
            "issued_on": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-02-01", "2026-03-01"]),
            "due_on": pd.to_datetime(["2026-01-31", "2026-03-03", "2026-03-03", "2026-03-31"]),
            # P1's February invoice is paid after the cutoff: unpaid as of the cutoff.
            "paid_on": pd.to_datetime(["2026-01-20", "2026-04-10", "2026-02-20", "2026-03-25"]),
            "amount": [9_000.0, 8_000.0, 1_000.0, 1_000.0],
        }
    )
    return partners, activity, invoices


def test_it_scores_only_partners_active_at_the_end_of_the_cutoff():
    p, a, i = frames()
    f = F.build_features(p, a, i, CUTOFF)
    # P3 joins after the cutoff and P4 churned before it.
    assert list(f.index) == ["P1", "P2"]
    assert list(f.columns) == F.FEATURES
    assert np.isfinite(f.to_numpy()).all()


def test_a_payment_after_the_cutoff_still_counts_as_overdue():
    p, a, i = frames()
    f = F.build_features(p, a, i, CUTOFF)
    assert f.loc["P1", "days_overdue"] == (CUTOFF - dt.date(2026, 3, 3)).days
    assert f.loc["P1", "overdue_invoices"] == 1
    assert f.loc["P1", "days_since_last_payment"] == (CUTOFF - dt.date(2026, 1, 20)).days
    assert f.loc["P2", "days_overdue"] == 0
    assert f.loc["P2", "days_since_last_payment"] == (CUTOFF - dt.date(2026, 3, 25)).days


def test_an_invoice_unpaid_for_longer_than_the_invoice_window_still_counts_as_overdue():
    p, a, i = frames()
    old = pd.DataFrame(
        {
            "external_id": ["P2", "P2"],
            "issued_on": pd.to_datetime(["2024-12-01", "2025-01-01"]),
            "due_on": pd.to_datetime(["2024-12-31", "2025-01-31"]),
            # The December invoice is never paid; January's was paid long ago.
            "paid_on": pd.to_datetime([None, "2025-02-10"]),
            "amount": [1_000.0, 1_000.0],
        }
    )
    f = F.build_features(p, a, pd.concat([i, old], ignore_index=True), CUTOFF)
    assert (CUTOFF - dt.date(2024, 12, 31)).days > F.INVOICE_DAYS
    assert f.loc["P2", "days_overdue"] == (CUTOFF - dt.date(2024, 12, 31)).days
    assert f.loc["P2", "overdue_invoices"] == 1
    # The windowed features ignore both old invoices.
    assert f.loc["P2", "days_since_last_payment"] == (CUTOFF - dt.date(2026, 3, 25)).days
    assert f.loc["P1", "days_overdue"] == (CUTOFF - dt.date(2026, 3, 3)).days


def test_declining_activity_shows_as_positive_trend_velocity_and_a_negative_trend():
    p, a, i = frames()
    f = F.build_features(p, a, i, CUTOFF)
    # Only complete months count: October..March (April is after the cutoff).
    assert f.loc["P1", "transactions_trend_3m"] < -0.3
    assert f.loc["P1", "trend_velocity"] > 0.05
    assert f.loc["P2", "trend_velocity"] == 0
    assert f.loc["P1", "support_tickets_3m"] == 3 + 4 + 5
    assert f.loc["P1", "tier_rank"] == 2 and f.loc["P1", "segment_reseller"] == 1


def test_labels_and_buckets_follow_days_to_churn_after_the_cutoff():
    p, _, _ = frames()
    labels = F.labels_at(p, CUTOFF)
    assert labels.loc["P2", "label"] == 1
    assert labels.loc["P2", "bucket"] == "30d"  # 20 days after the cutoff
    assert labels.loc["P1", "label"] == 0 and labels.loc["P1", "bucket"] == "later"


def truncate(world, cutoff: dt.date):
    """The history exactly as it was known at the end of ``cutoff``."""
    c = pd.Timestamp(cutoff)
    p = world.partners[world.partners["joined_on"] <= c].copy()
    later = p["churned_on"] > c
    p.loc[later, "churned_on"] = pd.NaT
    p.loc[later, "status"] = "active"
    a = world.activity[world.activity["month"] + pd.offsets.MonthBegin(1) <= c + pd.Timedelta(days=1)]
    i = world.invoices[world.invoices["issued_on"] <= c].copy()
    i.loc[i["paid_on"] > c, "paid_on"] = pd.NaT
    return p, a, i


def test_features_at_a_cutoff_do_not_change_when_later_history_is_added(small_world):
    cutoff = dt.date(2025, 12, 31)
    full = F.build_features(small_world.partners, small_world.activity, small_world.invoices, cutoff)
    known = F.build_features(*truncate(small_world, cutoff), cutoff)
    assert len(full) > 500
    pdt.assert_frame_equal(full.sort_index(), known.sort_index())
    # And the comparison has teeth: a later cutoff does see the added history.
    later = F.build_features(
        small_world.partners, small_world.activity, small_world.invoices, dt.date(2026, 3, 31)
    )
    common = full.index.intersection(later.index)
    assert not np.allclose(full.loc[common, "revenue_3m"], later.loc[common, "revenue_3m"])


def test_historical_churn_speed_comes_from_the_training_rows_only():
    table = pd.DataFrame(
        {
            "tier": ["gold"] * 4 + ["bronze"] * 4,
            "segment": ["reseller"] * 8,
            "label": [1, 1, 0, 0, 0, 0, 0, 0],
            "days_to_churn": [10, 30, 10**6, 10**6, 10**6, 10**6, 10**6, 10**6],
        }
    )
    t = F.fit_churn_table(table, prior_weight=0.0)
    assert t["groups"]["gold|reseller"][0] == 0.5
    assert t["groups"]["bronze|reseller"][0] == 0.0
    rate, speed = F.apply_churn_table(t, ["gold", "platinum"], ["reseller", "referral"])
    assert rate[0] == 0.5 and rate[1] == t["overall"][0]  # unseen group -> overall
    assert speed[0] < F.HORIZON_DAYS


def _steady_then_step(step_days_before_end: int | None, *, rate: float = 4.0, level: float = 0.3):
    """One partner's monthly rows, a year of them to 2026-03, at `rate` transactions a day, its
    daily rate falling to `level` of it `step_days_before_end` days before the end of March;
    the counts of each month's last 14 and 7 days exactly as those days carried."""
    months = pd.date_range("2025-04-01", "2026-03-01", freq="MS")
    end = pd.Timestamp("2026-04-01")
    rows = []
    for m in months:
        days = pd.date_range(m, m + pd.offsets.MonthEnd(0), freq="D")
        daily = np.full(len(days), rate)
        if step_days_before_end is not None:
            daily[days >= end - pd.Timedelta(days=step_days_before_end)] *= level
        rows.append(
            {"external_id": "P1", "month": m, "transactions": round(daily.sum()), "revenue": daily.sum() * 50,
             "active_users": 5, "support_tickets": 1, "transactions_last_14d": round(daily[-14:].sum()),
             "transactions_last_7d": round(daily[-7:].sum())}
        )  # fmt: skip
    partners = pd.DataFrame(
        {"external_id": ["P1"], "tier": ["gold"], "region": ["na"], "segment": ["reseller"],
         "monthly_revenue": [6_000.0], "joined_on": pd.to_datetime(["2024-01-10"]), "churned_on": pd.to_datetime([None])}
    )  # fmt: skip
    invoices = pd.DataFrame(columns=["external_id", "issued_on", "due_on", "paid_on", "amount"])
    return partners, pd.DataFrame(rows), invoices


def test_a_step_down_late_in_the_month_is_dated_from_the_last_14_and_7_days():
    f = F.build_features(*_steady_then_step(10), CUTOFF).loc["P1"]
    # March's total barely says it (-23%); its last fortnight says when.
    assert 0.7 < f["transactions_vs_year_1m"] < 0.8
    assert f["transactions_2w_vs_rest_1m"] < 0.6 and f["transactions_1w_vs_rest_1m"] < 0.4
    assert abs(f["transactions_step_days"] - 10) <= 2 and f["transactions_step_level"] == 0.3
    assert f["transactions_step_strength"] > 3
    steady = F.build_features(*_steady_then_step(None), CUTOFF).loc["P1"]
    assert steady["transactions_step_days"] == 0 and steady["transactions_step_strength"] == 0
    assert abs(steady["transactions_2w_vs_rest_1m"] - 1) < 0.05


def test_without_the_optional_columns_the_weeks_read_as_usual_and_the_step_as_coarse_as_the_months():
    partners, activity, invoices = _steady_then_step(40)
    f = F.build_features(partners, activity.drop(columns=list(F.TAIL_COLUMNS)), invoices, CUTOFF).loc["P1"]
    assert f["transactions_2w_vs_rest_1m"] == 1.0 and f["transactions_2w_vs_year"] == 1.0
    assert f["transactions_last_2w"] == pytest.approx(f["transactions_1m"] * 14 / 31)
    # Two monthly stretches only (February and March): the step is still seen, in February.
    assert 31 < f["transactions_step_days"] <= 59 and f["transactions_step_strength"] > 3


def test_scored_mid_month_the_step_is_dated_to_the_scoring_day_and_the_rows_age_is_known():
    """The desk scores every day on monthly rows: on April 15 March's rows are 15 days old, and a
    step 10 days before March's end happened 25 days before the score."""
    frames = _steady_then_step(10)
    at_end = F.build_features(*frames, CUTOFF).loc["P1"]
    later = F.build_features(*frames, CUTOFF + dt.timedelta(days=15)).loc["P1"]
    assert at_end["data_age_days"] == 0 and later["data_age_days"] == 15
    assert at_end["transactions_step_age_days"] == at_end["transactions_step_days"]
    assert later["transactions_step_days"] == at_end["transactions_step_days"]  # the same March rows
    assert later["transactions_step_age_days"] == at_end["transactions_step_days"] + 15
    steady = F.build_features(*_steady_then_step(None), CUTOFF + dt.timedelta(days=15)).loc["P1"]
    assert steady["transactions_step_age_days"] == 0  # no step: no age either
