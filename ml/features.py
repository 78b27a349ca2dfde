"""Point-in-time features for churn models (pure pandas/numpy, no Django).

Every feature is computed *as of the end of a cutoff day* from a partner's history, and
only from what was known by then (the simulator's oracle uses the same convention):

- monthly activity counts only for complete months (the month ended on or before the cutoff);
- an invoice is known once issued (``issued_on <= cutoff``), and counts as paid only if
  ``paid_on <= cutoff``; a payment made after the cutoff is still "unpaid" here;
- a partner is scored at a cutoff when it had joined and had not yet churned
  (``joined_on <= cutoff`` and ``churned_on`` missing or ``> cutoff``).

Windows are bounded (12 months of activity, 365 days of invoices), so feeding more (older
or later) history never changes a feature, and scoring reads only those windows from the
database; the one exception is an invoice still unpaid at the cutoff, which stays overdue
however old it is (``days_overdue`` and ``overdue_invoices`` look past the window, and the
database read includes such invoices). Dropping it at 365 days hid the strongest churn signal
from the model while the hazard kept counting it (AUC ratio 0.960 -> 0.998 at 20k). The label at a cutoff is "churned within 90 days": ``churned_on - cutoff`` in
1..90 days; the urgency bucket splits it into 1-7, 8-30 and 31-90 days (or "later").
Training cutoffs are month ends, when a month's activity has just become final.

Frames use the simulator's / the database's column names:
partners(key, tier, region, segment, monthly_revenue, joined_on, churned_on), activity(key, month,
transactions, revenue, active_users, support_tickets[, transactions_last_14d,
transactions_last_7d]), invoices(key, issued_on, due_on,
paid_on, amount), where ``key`` is ``external_id`` (or ``partner_id`` when scoring from
the database).
"""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pandas as pd

from ml.steps import transaction_step

HORIZON_DAYS = 90
ACTIVITY_MONTHS = 12  # the partner's own revenue level is estimated over a year
INVOICE_DAYS = 365
BUCKETS = ("7d", "30d", "90d", "later")
BUCKET_LIMITS = (7, 30, 90)  # upper bounds (inclusive) of days-to-churn for 7d, 30d, 90d

TIERS = ("bronze", "silver", "gold", "platinum")
SEGMENTS = ("reseller", "merchant", "referral")
REGIONS = ("na", "emea", "apac", "latam")

# The model's inputs, in order. Categoricals are encoded here (tier as its rank, segment and
# region one-hot) because shap's TreeExplainer mis-explains HistGradientBoosting's native
# categorical splits.
FEATURES = [
    "tenure_days",
    "tier_rank",
    *[f"segment_{s}" for s in SEGMENTS],
    *[f"region_{r}" for r in REGIONS],
    "monthly_revenue",
    "revenue_3m",
    "revenue_vs_plan_1m",
    "revenue_vs_plan_3m",
    "revenue_vs_plan_12m",
    "revenue_vs_plan_ewm",
    "revenue_vs_plan_change_1m",
    "transactions_1m",
    "transactions_3m",
    "transactions_log_trend_1v3",
    "transactions_log_trend_3v3",
    "active_users_1m",
    "support_tickets_1m",
    "months_of_history",
    "active_users_vs_peak",
    "active_users_3m",
    "transactions_trend_3m",
    "revenue_trend_3m",
    "active_users_trend_3m",
    "trend_velocity",
    "support_tickets_3m",
    "tickets_per_user_3m",
    "days_since_last_payment",
    "days_overdue",
    "overdue_invoices",
    "late_days_90d",
    "late_max_90d",
    "days_to_pay_last",
    "last_invoice_open",
    "days_to_pay_3m",
    "late_share_12m",
    "avg_days_late_12m",
    "historical_churn_rate",
    "historical_churn_speed",
    # Timing: how sharply the last month broke from the partner's own normal (a partner
    # winding down to leave shows it there first).
    "transactions_vs_year_1m",
    "transactions_vs_year_2m",
    "active_users_vs_3m_1m",
    "support_tickets_vs_year_1m",
    # Within the last month (optional columns of the activity file): a decision to leave in
    # its last fortnight shows as a drop against the month's own first half, which a monthly
    # total hides inside normal month-to-month noise.
    "transactions_last_2w",
    "transactions_last_1w",
    "transactions_2w_vs_rest_1m",
    "transactions_1w_vs_rest_1m",
    "transactions_2w_vs_year",
    # When the daily rate stepped down, if it did (ml.steps): days before the end of the last
    # complete month, the level after the step, and how clear the step is.
    "transactions_step_days",
    "transactions_step_level",
    "transactions_step_strength",
    # The desk scores every day, but the rows are monthly: how old the last complete month is at
    # the cutoff (0 at a month end), and the step's age counted to the cutoff rather than to
    # that month's end. A step 20 days before a month end is 35 days old on the 15th: for a
    # 45-day notice, days from leaving, not weeks. Training sees every age (ml.training).
    "transactions_step_age_days",
    "data_age_days",
]
# Optional activity columns: of the month's transactions, those of its last 14 and 7 days.
TAIL_COLUMNS = ("transactions_last_14d", "transactions_last_7d")


def _days(values) -> np.ndarray:
    """Dates (any pandas/py form) to int64 days since the epoch; missing -> INT64 min."""
    arr = pd.to_datetime(pd.Series(values), errors="coerce").to_numpy(dtype="datetime64[ns]")
    out = arr.astype("datetime64[D]").astype(np.int64)
    out[np.isnat(arr)] = np.iinfo(np.int64).min
    return out


def _day(value) -> int:
    return int(np.datetime64(pd.Timestamp(value).date(), "D").astype(np.int64))


def _month_ordinal(values) -> np.ndarray:
    ts = pd.to_datetime(pd.Series(values))
    return (ts.dt.year * 12 + ts.dt.month - 1).to_numpy(dtype=np.int64)


def last_complete_month(cutoff) -> int:
    """Ordinal (year*12 + month-1) of the last month that ended on or before ``cutoff``."""
    c = pd.Timestamp(cutoff) + pd.Timedelta(days=1)
    return c.year * 12 + c.month - 1 - 1


def month_end_day(ordinal: int) -> int:
    """The last day of month ``ordinal`` (year*12 + month-1), in days since the epoch."""
    first_of_next = np.datetime64(ordinal + 1 - 1970 * 12, "M").astype("datetime64[D]")
    return int(first_of_next.astype(np.int64)) - 1


def active_at(partners: pd.DataFrame, cutoff, key: str = "external_id") -> pd.DataFrame:
    c = _day(cutoff)
    joined = _days(partners["joined_on"])
    churned = _days(partners["churned_on"])
    missing = churned == np.iinfo(np.int64).min
    mask = (joined <= c) & (missing | (churned > c))
    return partners.loc[mask]


def labels_at(partners: pd.DataFrame, cutoff, key: str = "external_id") -> pd.DataFrame:
    """Label and bucket for partners active at ``cutoff`` (uses the future: training only)."""
    active = active_at(partners, cutoff, key)
    churned = _days(active["churned_on"])
    missing = churned == np.iinfo(np.int64).min
    days = np.where(missing, 10**6, churned - _day(cutoff))
    bucket = np.select(
        [days <= BUCKET_LIMITS[0], days <= BUCKET_LIMITS[1], days <= BUCKET_LIMITS[2]],
        list(BUCKETS[:3]),
        default=BUCKETS[3],
    )
    return pd.DataFrame(
        {"label": (days <= HORIZON_DAYS).astype(np.int8), "bucket": bucket, "days_to_churn": days},
        index=pd.Index(active[key].to_numpy(), name=key),
    )


def _window(activity: pd.DataFrame, keys: pd.Index, anchor: int, column: str, key: str) -> np.ndarray:
    """(n_partners, ACTIVITY_MONTHS) array of a metric over the months ending at ``anchor``;
    NaN where a partner has no row (not yet joined, or gone)."""
    out = np.full((len(keys), ACTIVITY_MONTHS), np.nan)
    if column not in activity:  # an optional column the team does not send
        return out
    ords = activity["_ord"].to_numpy()
    sel = (ords > anchor - ACTIVITY_MONTHS) & (ords <= anchor)
    rows = keys.get_indexer(activity[key].to_numpy()[sel])
    ok = rows >= 0
    cols = ords[sel][ok] - (anchor - ACTIVITY_MONTHS + 1)
    out[rows[ok], cols] = activity[column].to_numpy(dtype=float)[sel][ok]
    return out


def _trend(window: np.ndarray) -> np.ndarray:
    """Relative change of the last 3 months' mean over the 3 months before (0 if unknown)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows -> 0 below
        recent = np.nanmean(window[:, 3:], axis=1)
        prior = np.nanmean(window[:, :3], axis=1)
        trend = np.where(prior > 0, recent / prior - 1.0, 0.0)
    return np.nan_to_num(trend, nan=0.0)


def _slope(window: np.ndarray) -> np.ndarray:
    """Least-squares slope per month of the series divided by its mean (fraction per month)."""
    t = np.arange(window.shape[1], dtype=float)[None, :]
    valid = ~np.isnan(window)
    n = valid.sum(axis=1)
    with np.errstate(all="ignore"):
        y = np.where(valid, window, 0.0)
        tt = np.where(valid, t, 0.0)
        tbar = tt.sum(axis=1) / n
        ybar = y.sum(axis=1) / n
        cov = (np.where(valid, (t - tbar[:, None]) * (window - ybar[:, None]), 0.0)).sum(axis=1)
        var = (np.where(valid, (t - tbar[:, None]) ** 2, 0.0)).sum(axis=1)
        slope = np.where((n >= 2) & (var > 0) & (ybar > 0), cov / var / ybar, 0.0)
    return np.nan_to_num(slope, nan=0.0)


def prepare(activity: pd.DataFrame, invoices: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add integer day/month columns once, so many cutoffs can reuse them cheaply."""
    activity = activity.copy()
    activity["_ord"] = _month_ordinal(activity["month"])
    invoices = invoices.copy()
    for col in ("issued_on", "due_on", "paid_on"):
        invoices[f"_{col}"] = _days(invoices[col])
    return activity, invoices


def build_features(
    partners: pd.DataFrame,
    activity: pd.DataFrame,
    invoices: pd.DataFrame,
    cutoff,
    *,
    churn_table: dict | None = None,
    key: str = "external_id",
    prepared: bool = False,
) -> pd.DataFrame:
    """Features of the partners active at ``cutoff``, indexed by ``key``, columns FEATURES.

    ``churn_table`` (from :func:`fit_churn_table`, training data only) supplies
    historical_churn_rate / historical_churn_speed; without it they are NaN-free defaults.
    """
    if not prepared:
        activity, invoices = prepare(activity, invoices)
    c = _day(cutoff)
    active = active_at(partners, cutoff, key)
    keys = pd.Index(active[key].to_numpy(), name=key)
    f = pd.DataFrame(index=keys)

    tenure = c - _days(active["joined_on"])
    f["tenure_days"] = tenure.astype(float)
    tiers = active["tier"].astype(str).str.lower().to_numpy()
    f["tier_rank"] = pd.Series(tiers).map({t: i for i, t in enumerate(TIERS)}).fillna(0).to_numpy()
    segments = active["segment"].astype(str).str.lower().to_numpy()
    for s in SEGMENTS:
        f[f"segment_{s}"] = (segments == s).astype(float)
    regions = active["region"].astype(str).str.lower().to_numpy()
    for r in REGIONS:
        f[f"region_{r}"] = (regions == r).astype(float)

    anchor = last_complete_month(cutoff)
    age = float(c - month_end_day(anchor))
    f["data_age_days"] = age
    rev12 = _window(activity, keys, anchor, "revenue", key)
    tx12 = _window(activity, keys, anchor, "transactions", key)
    # Most features look at the last 6 months (columns 0..5, 5 = the last complete month).
    tx, rev = tx12[:, -6:], rev12[:, -6:]
    users12 = _window(activity, keys, anchor, "active_users", key)
    users = users12[:, -6:]
    tickets = _window(activity, keys, anchor, "support_tickets", key)[:, -6:]
    plan = pd.to_numeric(active["monthly_revenue"], errors="coerce").to_numpy(dtype=float)
    f["monthly_revenue"] = np.nan_to_num(plan, nan=0.0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # partners without recent months
        f["revenue_3m"] = np.nan_to_num(np.nanmean(rev[:, 3:], axis=1), nan=0.0)
        # Recent revenue against the partner's stated monthly revenue: the clearest view of
        # its current health (1.0 = on plan); 1.0 when unknown.
        f["revenue_vs_plan_1m"] = np.nan_to_num(np.where(plan > 0, rev[:, 5] / plan, 1.0), nan=1.0)
        f["revenue_vs_plan_3m"] = np.where(plan > 0, f["revenue_3m"].to_numpy() / plan, 1.0)
        # The partner's own level over 6 months, and last month against the month before:
        # latent health mean-reverts to its level, so both say where it is heading.
        f["revenue_vs_plan_12m"] = np.nan_to_num(
            np.where(plan > 0, np.nanmean(rev12, axis=1) / plan, 1.0), nan=1.0
        )
        # Exponentially weighted log revenue/plan (weight 0.85 per month of age): a filtered
        # estimate of current health that forgets at the rate health mean-reverts.
        logr = np.log(np.where(plan[:, None] > 0, (rev12 + 1.0) / (plan[:, None] + 1.0), np.nan))
        w = np.where(np.isnan(logr), 0.0, 0.85 ** np.arange(ACTIVITY_MONTHS)[::-1][None, :])
        f["revenue_vs_plan_ewm"] = np.nan_to_num(np.nansum(logr * w, axis=1) / w.sum(axis=1), nan=0.0)
        f["transactions_1m"] = np.nan_to_num(tx[:, 5], nan=0.0)
        prev3 = np.nanmean(tx[:, :3], axis=1)
        f["transactions_log_trend_1v3"] = np.nan_to_num(np.log((tx[:, 5] + 1) / (prev3 + 1)), nan=0.0)
        f["transactions_log_trend_3v3"] = np.nan_to_num(
            np.log((np.nanmean(tx[:, 3:], axis=1) + 1) / (prev3 + 1)), nan=0.0
        )
        f["active_users_1m"] = np.nan_to_num(users[:, 5], nan=0.0)
        f["support_tickets_1m"] = np.nan_to_num(tickets[:, 5], nan=0.0)
        f["months_of_history"] = np.isfinite(rev12).sum(axis=1).astype(float)
        # Seats are not recorded; the year's peak of active users stands in for them.
        peak = np.nanmax(np.where(np.isnan(users12), -np.inf, users12), axis=1)
        f["active_users_vs_peak"] = np.nan_to_num(np.where(peak > 0, users[:, 5] / peak, 1.0), nan=1.0)
        f["revenue_vs_plan_change_1m"] = np.nan_to_num(
            np.where(plan > 0, (rev[:, 5] - rev[:, 4]) / plan, 0.0), nan=0.0
        )
        f["transactions_3m"] = np.nan_to_num(np.nanmean(tx[:, 3:], axis=1), nan=0.0)
        f["active_users_3m"] = np.nan_to_num(np.nanmean(users[:, 3:], axis=1), nan=0.0)
        # Last month against the partner's own months before it (NaN-safe: 1.0 = as usual).
        tx_before = np.nanmean(tx12[:, :-1], axis=1)
        f["transactions_vs_year_1m"] = np.nan_to_num(
            np.where(tx_before > 0, tx[:, 5] / tx_before, 1.0), nan=1.0
        )
        tx_year = np.nanmean(tx12[:, :-2], axis=1)
        f["transactions_vs_year_2m"] = np.nan_to_num(np.where(tx_year > 0, tx[:, 4] / tx_year, 1.0), nan=1.0)
        users_before = np.nanmean(users[:, 2:5], axis=1)
        f["active_users_vs_3m_1m"] = np.nan_to_num(
            np.where(users_before > 0, users[:, 5] / users_before, 1.0), nan=1.0
        )
        tickets12 = _window(activity, keys, anchor, "support_tickets", key)
        f["support_tickets_vs_year_1m"] = np.nan_to_num(
            tickets[:, 5] - np.nanmean(tickets12[:, :-1], axis=1), nan=0.0
        )
    f = f.join(_tail_features(activity, keys, anchor, tx12, key))
    step = f["transactions_step_days"].to_numpy()
    f["transactions_step_age_days"] = np.where(step > 0, step + age, 0.0)
    f["transactions_trend_3m"] = _trend(tx)
    f["revenue_trend_3m"] = _trend(rev)
    f["active_users_trend_3m"] = _trend(users)
    # Positive = declining: the average monthly rate of decline of transactions and revenue.
    f["trend_velocity"] = -(_slope(tx) + _slope(rev)) / 2.0
    f["support_tickets_3m"] = np.nansum(tickets[:, 3:], axis=1)
    f["tickets_per_user_3m"] = f["support_tickets_3m"] / np.maximum(f["active_users_3m"], 1.0)

    f = f.join(_invoice_features(invoices, keys, c, key))
    f["days_since_last_payment"] = f["days_since_last_payment"].fillna(
        pd.Series(np.minimum(tenure, INVOICE_DAYS).astype(float), index=keys)
    )
    f = f.fillna(
        {
            "days_overdue": 0.0,
            "overdue_invoices": 0.0,
            "late_share_12m": 0.0,
            "late_days_90d": 0.0,
            "late_max_90d": 0.0,
            "last_invoice_open": 0.0,
        }
    )
    f["avg_days_late_12m"] = f["avg_days_late_12m"].fillna(0.0)
    # No invoice yet (new partners): as if paid promptly.
    f["days_to_pay_last"] = f["days_to_pay_last"].fillna(20.0)
    f["days_to_pay_3m"] = f["days_to_pay_3m"].fillna(f["days_to_pay_last"])

    rate, speed = apply_churn_table(churn_table, tiers, segments)
    f["historical_churn_rate"] = rate
    f["historical_churn_speed"] = speed
    return f[FEATURES].astype(float)


def _tail_features(activity: pd.DataFrame, keys: pd.Index, anchor: int, tx12: np.ndarray, key: str):
    """The last complete month's final fortnight and week against its own start and against the
    year before. Without the optional columns (or that month's row) they read "as usual": the
    counts in proportion to the month's total, the ratios 1.0."""
    month_days = np.array(
        [
            pd.Period(ordinal=a - 1970 * 12, freq="M").days_in_month
            for a in range(anchor - ACTIVITY_MONTHS + 1, anchor + 1)
        ],
        dtype=float,
    )
    days = month_days[-1]
    rest_days = days - 14
    total = tx12[:, -1]
    tail14 = _window(activity, keys, anchor, "transactions_last_14d", key)
    tail7 = _window(activity, keys, anchor, "transactions_last_7d", key)
    step_days, step_level, step_strength = transaction_step(tx12, tail14, tail7, month_days)
    last14, last7 = tail14[:, -1], tail7[:, -1]
    known = np.isfinite(last14) & np.isfinite(last7) & np.isfinite(total)
    last14 = np.where(known, last14, np.nan_to_num(total, nan=0.0) * 14 / days)
    last7 = np.where(known, last7, np.nan_to_num(total, nan=0.0) * 7 / days)
    # Daily rates, half a transaction added to each count so that 0 vs 0 reads 1.0.
    rest_rate = (np.nan_to_num(total, nan=0.0) - last14 + 0.5) / rest_days
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        year_rate = np.nanmean(tx12[:, :-1], axis=1) * 12 / 365.25
    year_rate = np.where(np.isfinite(year_rate), year_rate, (last14 + 0.5) / 14)
    out = pd.DataFrame(
        {
            "transactions_last_2w": last14,
            "transactions_last_1w": last7,
            "transactions_2w_vs_rest_1m": np.where(known, ((last14 + 0.5) / 14) / rest_rate, 1.0),
            "transactions_1w_vs_rest_1m": np.where(known, ((last7 + 0.5) / 7) / rest_rate, 1.0),
            "transactions_2w_vs_year": np.where(known, ((last14 + 0.5) / 14) / (year_rate + 0.5 / 14), 1.0),
            "transactions_step_days": step_days,
            "transactions_step_level": step_level,
            "transactions_step_strength": step_strength,
        },
        index=keys,
    )
    return out


def _invoice_features(invoices: pd.DataFrame, keys: pd.Index, c: int, key: str) -> pd.DataFrame:
    issued = invoices["_issued_on"].to_numpy()
    sel = (issued <= c) & (issued > c - INVOICE_DAYS)
    inv = invoices.loc[sel, [key, "_issued_on", "_due_on", "_paid_on"]]
    inv = inv[inv[key].isin(keys)]
    # An invoice still unpaid stays overdue however old it is: the oldest open one and the
    # count of open ones look past the window (a never-paid invoice from 14 months ago is
    # the strongest churn signal there is, and dropping it at 12 months hid it).
    old_paid = invoices["_paid_on"].to_numpy()
    old_open = (issued <= c - INVOICE_DAYS) & ((old_paid > c) | (old_paid == np.iinfo(np.int64).min))
    old = invoices.loc[old_open, [key, "_due_on"]]
    old = old[old[key].isin(keys)]
    old_g = pd.DataFrame({key: old[key].to_numpy(), "days": c - old["_due_on"].to_numpy()}).groupby(key)
    old_oldest, old_count = old_g["days"].max(), old_g["days"].size()
    due = inv["_due_on"].to_numpy()
    paid = inv["_paid_on"].to_numpy()
    paid_known = paid <= c  # NaT is INT64 min, so mask it separately
    paid_known &= paid != np.iinfo(np.int64).min
    is_due = due <= c
    unpaid_overdue = is_due & ~paid_known
    settled = np.where(paid_known, paid, c)
    days_late = np.where(is_due, np.maximum(settled - due, 0), np.nan)
    issued_at = inv["_issued_on"].to_numpy()
    # How long invoices take to get paid (open ones: so far) also tracks health closely.
    to_pay = (settled - issued_at).astype(float)
    late = np.where(is_due, (days_late > 0).astype(float), np.nan)
    frame = pd.DataFrame(
        {
            key: inv[key].to_numpy(),
            "last_paid": np.where(paid_known, paid, np.nan),
            "overdue_days": np.where(unpaid_overdue, c - due, np.nan),
            "overdue": unpaid_overdue.astype(float),
            "late": late,
            "days_late": days_late,
            # Mean lateness of invoices due in the last 90 days (open ones: late so far).
            "late_90d": np.where(is_due & (due > c - 90), days_late, np.nan),
            "to_pay_3m": np.where(issued_at > c - 95, to_pay, np.nan),
            "_issued": issued_at,
            "_to_pay": to_pay,
            "_open": (~paid_known).astype(float),
        }
    )
    latest = frame.sort_values("_issued").groupby(key, sort=False).tail(1).set_index(key)
    g = frame.groupby(key, sort=False)
    out = pd.DataFrame(
        {
            "days_since_last_payment": c - g["last_paid"].max(),
            "days_overdue": g["overdue_days"].max(),
            "overdue_invoices": g["overdue"].sum(),
            "late_share_12m": g["late"].mean(),
            "avg_days_late_12m": g["days_late"].mean(),
            "late_days_90d": g["late_90d"].mean(),
            "late_max_90d": g["late_90d"].max(),
            "days_to_pay_3m": g["to_pay_3m"].mean(),
            "days_to_pay_last": latest["_to_pay"],
            "last_invoice_open": latest["_open"],
        }
    )
    out = out.reindex(keys)
    if len(old_oldest):
        o = old_oldest.reindex(keys).to_numpy(dtype=float)
        out["days_overdue"] = np.fmax(out["days_overdue"].to_numpy(), o)
        n_old = old_count.reindex(keys).to_numpy(dtype=float)
        has = ~np.isnan(n_old)
        out.loc[has, "overdue_invoices"] = out["overdue_invoices"].fillna(0.0).to_numpy()[has] + n_old[has]
    return out


def fit_churn_table(table: pd.DataFrame, *, prior_weight: float = 50.0) -> dict:
    """How fast similar partners (same tier and segment) churned in the training rows.

    ``table`` has columns tier, segment, label, days_to_churn (training rows only). Rates are
    shrunk toward the overall figure so thin groups don't produce extreme values.
    """
    overall_rate = float(table["label"].mean()) if len(table) else 0.0
    churners = table[table["label"] == 1]
    overall_speed = float(churners["days_to_churn"].mean()) if len(churners) else float(HORIZON_DAYS)
    groups = {}
    for (tier, segment), g in table.groupby(["tier", "segment"]):
        n = len(g)
        k = int(g["label"].sum())
        rate = (k + prior_weight * overall_rate) / (n + prior_weight)
        days = g.loc[g["label"] == 1, "days_to_churn"]
        speed = (days.sum() + 10 * overall_speed) / (len(days) + 10)
        groups[f"{tier}|{segment}"] = [float(rate), float(speed)]
    return {"overall": [overall_rate, overall_speed], "groups": groups}


def apply_churn_table(table: dict | None, tiers, segments) -> tuple[np.ndarray, np.ndarray]:
    n = len(tiers)
    if not table:
        return np.zeros(n), np.full(n, float(HORIZON_DAYS))
    default = table["overall"]
    pairs = [table["groups"].get(f"{t}|{s}", default) for t, s in zip(tiers, segments, strict=True)]
    arr = np.asarray(pairs, dtype=float).reshape(n, 2)
    return arr[:, 0], arr[:, 1]


def monthly_cutoffs(first: dt.date, last: dt.date) -> list[dt.date]:
    """Month ends from ``first`` to ``last`` inclusive."""
    return [d.date() for d in pd.date_range(pd.Timestamp(first), pd.Timestamp(last), freq="ME")]


def build_training_table(
    partners: pd.DataFrame,
    activity: pd.DataFrame,
    invoices: pd.DataFrame,
    cutoffs: list[dt.date],
    *,
    key: str = "external_id",
) -> pd.DataFrame:
    """One row per (partner active at cutoff, cutoff): FEATURES (without the churn table),
    plus key, cutoff, tier, segment, label, bucket, days_to_churn."""
    activity, invoices = prepare(activity, invoices)
    meta = partners.set_index(key)[["tier", "segment"]]
    parts = []
    for cutoff in cutoffs:
        feats = build_features(partners, activity, invoices, cutoff, key=key, prepared=True)
        labels = labels_at(partners, cutoff, key)
        part = feats.join(labels).join(meta)
        part["cutoff"] = pd.Timestamp(cutoff)
        parts.append(part.reset_index())
    return pd.concat(parts, ignore_index=True)
