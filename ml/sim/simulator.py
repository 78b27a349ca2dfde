"""A seeded simulator of business partners: demo data and ground truth for the models.

Pure numpy/pandas (and one scipy quantile) on purpose (no Django): the demo seeding, the model report's oracle
and the benchmarks all import it, and its tests run without a database.

The full generating process is described in docs/simulator.md; every knob lives in
`SimulatorParams`. In short, month by month:

1. every partner has a latent health `h` that mean-reverts to its own level, with noise,
   rare shocks and occasional decline episodes (a negative velocity that fades);
2. health drives the month's observable activity (transactions, revenue, active users,
   support tickets) and the invoice issued on the 1st of the next month, whose payment
   comes later (or never) as health falls;
3. on the 1st of every month, each partner's daily hazard for that month is set from
   what is observable by then (payment lateness, overdue invoices, transaction decline,
   support load, tier, segment, tenure) plus the latent health; a partner *decides to leave*
   on the first day its cumulative hazard passes its own Exp(1) threshold;
4. the pre-churn phase: most partners that decide then wind down for 45 days (a notice
   period) before they are gone: transactions and revenue fall at once to a fraction of
   normal, logins (active users) thin, invoices go unpaid, and support tickets either spike
   or stop; the others leave the day they decide. So imminent churn shows in the data;
5. dunning: an invoice still unpaid `dunning_days` (90) after its due date closes the
   account that day, so no partner stays "active" with payments long overdue.

A contact cuts the hazard by `intervention_effect` for `effect_days`; a contact reaching a
partner already winding down talks it out of leaving with the same probability (see
docs/simulator.md, "Interventions").

Random draws are keyed by (seed, month), so a world advanced 30 days twice equals one
advanced 60 days once, and two runs that differ only by interventions share every draw:
the difference in their churn is the intervention's effect and nothing else.

Dates: "known at cutoff c" means dated on or before c (end of day c). An activity row for
month M is only known once the month is over, i.e. when M's last day <= c.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binom, poisson

TIERS = ("bronze", "silver", "gold", "platinum")
REGIONS = ("na", "emea", "apac", "latam")
SEGMENTS = ("reseller", "merchant", "referral")

NONE = -1  # no invoice issued / no activity row in that month
NEVER = np.iinfo(np.int32).max  # never paid / never churned (day sentinel)
_EPOCH = np.datetime64("1970-01-01", "D")


@dataclass(frozen=True)
class SimulatorParams:
    """Every knob of the simulated world. Rates are per month unless named daily.

    The defaults are tuned so that, at cutoffs in the second half of a 24-month history,
    about 5-6% of active partners churn within 90 days, the oracle ROC AUC is ~0.89-0.90, and
    the product's model reaches 0.99 of the oracle's AUC and 0.91 of its churn-window F1 at
    20k partners (docs/simulator.md, "Measured figures").
    """

    # --- Population -------------------------------------------------------------------
    tier_shares: tuple[float, ...] = (0.45, 0.30, 0.18, 0.07)  # bronze..platinum
    region_shares: tuple[float, ...] = (0.40, 0.30, 0.20, 0.10)  # na, emea, apac, latam
    segment_shares: tuple[float, ...] = (0.45, 0.35, 0.20)  # reseller, merchant, referral
    # monthly_revenue ~ lognormal(log(median[tier]), revenue_sigma), rounded to cents
    revenue_median_by_tier: tuple[float, ...] = (1_500.0, 5_000.0, 15_000.0, 50_000.0)
    revenue_sigma: float = 0.5
    # revenue per transaction by segment; a partner's expected transactions per month at
    # its own health level are monthly_revenue / ticket, at least min_base_transactions
    ticket_size_by_segment: tuple[float, ...] = (120.0, 45.0, 200.0)
    min_base_transactions: float = 25.0
    # seats (potential active users) by tier, times a lognormal(0, 0.3) factor
    seats_by_tier: tuple[int, ...] = (3, 8, 20, 45)
    joined_during_window_share: float = 0.25  # the rest joined before the history window
    max_prior_tenure_years: float = 6.0  # pre-window joiners: 1 month to this many years
    notes_share: float = 0.15  # share of partners with a (static, harmless) note

    # --- Latent health (AR(1) around the partner's own level, plus decline episodes) ---
    health_mean: float = 0.3  # population mean of the partners' own levels mu
    health_mean_sd: float = 0.5  # spread of mu across partners
    health_persistence: float = 0.85  # phi: h' = mu + phi (h - mu) + v + noise - shock
    health_noise_sd: float = 0.10
    shock_prob: float = 0.01  # monthly probability of a one-off drop ...
    shock_size: float = 1.0  # ... of exponential size with this mean
    decline_start_prob: float = 0.05  # monthly probability a decline episode starts ...
    decline_speed: tuple[float, float] = (0.15, 0.40)  # ... adding -U(lo, hi) to v
    decline_persistence: float = 0.85  # rho: v' = rho v (+ new episode)
    new_partner_health_sd: float = 0.5  # h at joining ~ N(mu, this)
    burn_in_months: int = 24  # health-only months run before the window starts
    health_bounds: tuple[float, float] = (-4.0, 3.0)

    # --- Observable monthly activity --------------------------------------------------
    tx_health_elasticity: float = 0.7  # transactions ~ Poisson(base * exp(e * h))
    revenue_noise_sd: float = 0.08  # revenue = transactions * ticket * lognormal
    users_logit_offset: float = 1.0  # active_users ~ Binomial(seats, sigmoid(o + s h))
    users_logit_slope: float = 1.0
    tickets_base_by_tier: tuple[float, ...] = (0.5, 0.8, 1.2, 2.0)
    tickets_health_elasticity: float = 0.8  # tickets ~ Poisson(base * exp(-e * h))

    # --- Invoices and payments ---------------------------------------------------------
    invoice_due_days: int = 30  # issued on the 1st for last month's revenue, due +30 days
    pay_min_days: int = 20  # paid on issue + pay_min_days + G, G ~ Geometric(mean d(h))
    pay_delay_log_mean: float = 1.5  # d(h) = exp(pay_delay_log_mean - pay_delay_health h)
    pay_delay_health: float = 1.0
    pay_max_extra_days: int = 150  # G beyond this means the invoice is never paid
    never_pay_logit: float = -6.5  # P(never pays) = sigmoid(never_pay_logit - k h)
    never_pay_health: float = 2.0

    # --- Churn hazard (daily, constant within a calendar month) -------------------------
    # log hazard = log(hazard_base) + tier + segment + late * lateness/30
    #   + overdue * overdue/30 + decline * max(0, -trend) + tickets * log1p(tickets_3m)
    #   + new_partner * exp(-tenure_months / new_partner_months)
    #   + latent * (health_mean - h) + collapse * max(0, collapse_threshold - h)
    hazard_base: float = 2.0e-4
    hazard_tier: tuple[float, ...] = (0.0, -0.4, -0.8, -1.2)
    hazard_segment: tuple[float, ...] = (0.0, -0.25, 0.5)
    hazard_late: float = 1.2  # per 30 days of mean lateness (invoices due in last 90 days)
    hazard_overdue: float = 0.5  # per 30 days of the oldest unpaid invoice's overdue
    hazard_decline: float = 2.0  # per unit of log decline, last 3 vs previous 3 months
    hazard_tickets: float = 0.35  # per unit of log1p(tickets in the last 3 months)
    hazard_new_partner: float = 1.4
    new_partner_months: float = 6.0
    hazard_latent: float = 0.15  # the unobserved part: current health, not yet visible
    hazard_collapse: float = 0.2  # extra hazard once health collapses ...
    collapse_threshold: float = -1.0  # ... below this level
    max_daily_hazard: float = 0.25

    # --- Pre-churn phase: the wind-down ------------------------------------------------
    # The hazard decides *when a partner decides to leave*; most then serve the contract's
    # notice before they are gone: volumes move elsewhere at once (activity collapses to a
    # tenth of normal, and the trickle left fades out by the last day), logins fade, invoices
    # are left unpaid, support either spikes or goes silent; the rest leave at once.
    winddown_share: float = 0.8  # share of partners that wind down (the rest leave abruptly)
    winddown_days: tuple[int, int] = (45, 45)  # the notice: wind-down length, uniform (days, inclusive)
    winddown_level: float = 0.1  # activity falls at once to this share of normal ...
    winddown_power: float = 2.0  # ... then fades as level * ((days left) / length) ** power
    winddown_users_power: float = 0.5  # active users fall as (activity share) ** this
    winddown_spike_share: float = 0.5  # of those winding down: a support spike (else silence)
    winddown_tickets_per_month: float = 4.0  # extra tickets per 30 days of a spike

    # --- Dunning ---------------------------------------------------------------------------
    dunning_days: int = 90  # an invoice unpaid this many days past due: the account is closed

    # --- Interventions -------------------------------------------------------------------
    intervention_effect: float = 0.35  # true relative hazard reduction when contacted ...
    effect_days: int = 90  # ... from the contact date for this many days
    # A contact reaching a partner that is already winding down (decided before the contact
    # day) talks it out of leaving with probability intervention_effect; it then stays at
    # least until the contact's effect ends and settles its open invoices this many days on.
    rescue_pay_days: int = 7

    # --- Oracle ----------------------------------------------------------------------------
    oracle_paths: int = 64  # Monte Carlo paths per partner (Rao-Blackwellised)
    lookahead_days: int = 365  # horizon of true_churn_dates beyond today


@dataclass
class WorldState:
    """The hidden truth. Monthly matrices are (n_partners, months started); column k is
    calendar month k of the world (0 = first month of the history window)."""

    seed: int
    params: SimulatorParams
    start_day: int  # first day of month 0, in days since 1970-01-01
    today_day: int  # last simulated day (end of day)
    n_started: int  # month columns started (the current month included)
    n_complete: int  # months whose activity is final
    external_id: np.ndarray
    name: np.ndarray
    contact_email: np.ndarray
    notes: np.ndarray
    tier: np.ndarray
    region: np.ndarray
    segment: np.ndarray
    monthly_revenue: np.ndarray
    base_tx: np.ndarray
    ticket_size: np.ndarray
    seats: np.ndarray
    health_level: np.ndarray  # mu, the partner's own long-run health
    join_day: np.ndarray
    churn_day: np.ndarray  # NEVER while active and undecided; set when it decides to leave
    threshold: np.ndarray  # remaining Exp(1) cumulative hazard before deciding to leave
    month_seed: np.ndarray  # seed that drew each month's randomness
    health: np.ndarray  # float32 (n, months)
    velocity: np.ndarray  # float32 (n, months)
    hazard: np.ndarray  # daily hazard of each month, float64 (n, months)
    transactions: np.ndarray  # int32, NONE = no row; current month: pending full draw
    revenue: np.ndarray
    active_users: np.ndarray
    support_tickets: np.ndarray
    paid_day: np.ndarray  # invoice issued on the 1st of month k: NONE, day or NEVER
    # Of each month's transactions, those in its last 14 and last 7 days (NONE = no row; empty
    # in states saved before they existed: filled with NONE on load, read as unknown).
    tx_last14: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))
    tx_last7: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))
    contact_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    contact_day: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # The pre-churn phase (empty in states saved before it existed: filled on load).
    decided_day: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # NEVER = not
    winddown: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))  # length, 0 = abrupt
    spike: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # support spike (else silence)
    immune_until: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # after a rescue
    # Wind-downs a contact reversed: partner row, decided day, the churn day it had, rescue day.
    rescued: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))

    @property
    def n(self) -> int:
        return len(self.external_id)

    def month_starts(self, count: int | None = None) -> np.ndarray:
        count = self.n_started + 1 if count is None else count
        return _month_starts(self.start_day, count)


@dataclass
class World:
    partners: pd.DataFrame
    activity: pd.DataFrame
    invoices: pd.DataFrame
    state: WorldState
    today: date


@dataclass
class WorldDelta:
    """What `advance_world` added: rows to append or update in the product's tables."""

    start: date  # first simulated day
    end: date  # new today
    activity: pd.DataFrame  # months completed during the advance
    invoices: pd.DataFrame  # invoices issued during the advance (paid_on if paid by end)
    payments: pd.DataFrame  # external_id, issued_on, paid_on of previously unpaid invoices
    churn_events: pd.DataFrame  # external_id, churned_on


# ------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------


def generate_world(
    n_partners: int,
    months: int = 24,
    seed: int = 42,
    params: SimulatorParams | None = None,
    today: date | None = None,
) -> World:
    """Simulate `months` complete calendar months before today's month, plus today's month
    up to `today` (default: the real today; pass it for a world that is the same every
    day)."""
    params = params or SimulatorParams()
    today = today or date.today()
    today_day = _day(today)
    first_month = np.datetime64(today, "M") - months
    start_day = int((first_month.astype("datetime64[D]") - _EPOCH).astype(np.int64))
    state = _init_state(n_partners, seed, params, start_day, today_day)
    _run_until(state, today_day)
    return world_from_state(state)


def world_from_state(state: WorldState) -> World:
    """Build the observable tables from the hidden state (e.g. after loading it from JSON)."""
    return World(
        partners=_partners_table(state),
        activity=_activity_table(state, 0, state.n_complete),
        invoices=_invoices_table(state, -(10**9), state.today_day),
        state=state,
        today=_date(state.today_day),
    )


def true_churn_probability(
    world: World, cutoff: date, horizon_days: int = 90, *, paths: int | None = None
) -> pd.Series:
    """P(churn in (cutoff, cutoff + horizon] | everything up to cutoff, the latent included),
    for the partners active at the end of `cutoff`, indexed by external_id.

    Computed from the state at the cutoff only, never from what happened after it. The
    rest of the cutoff's month has a known hazard (exact); later months are integrated by
    Monte Carlo over `paths` futures per partner (default params.oracle_paths = 64), each
    contributing its exact survival exp(-cumulative hazard) (Rao-Blackwellised). With 64
    paths the error is ~0.003 RMS (within 0.015 for 99% of partners)."""
    state = world.state
    params = state.params
    paths = paths or params.oracle_paths
    c = _day(cutoff)
    if not state.start_day <= c <= state.today_day:
        raise ValueError("cutoff must lie within the simulated history")
    active = np.flatnonzero((state.join_day <= c) & (state.churn_day > c))
    starts = state.month_starts()
    k = int(np.searchsorted(starts, c, side="right") - 1)
    end = c + horizon_days
    decided, gone, immune = _decisions_at(state, active, c)
    prob = np.zeros(len(active))
    # A partner that has decided to leave by the cutoff is winding down: its day is known.
    sure = decided <= c
    prob[sure] = gone[sure] <= end
    open_rows = np.flatnonzero(~sure)
    contact_start = _latest_contact(state, active[open_rows], c)
    chunk = max(1, 400_000 // paths)
    for i in range(0, len(open_rows), chunk):
        part = open_rows[i : i + chunk]
        rng = np.random.default_rng([state.seed, c, horizon_days, i, 2])
        surv = _oracle_future(
            state, active[part], contact_start[i : i + chunk], immune[part], c, k, end, paths, rng
        )
        prob[part] = 1.0 - surv
    return pd.Series(prob, index=pd.Index(state.external_id[active], name="external_id"))


def _decisions_at(state: WorldState, rows: np.ndarray, c: int):
    """(decided day, churn day, safe-until day) of each row as they stood at the end of day c:
    a wind-down a later contact reversed was still on at c."""
    decided = state.decided_day[rows].copy()
    gone = state.churn_day[rows].copy()
    immune = np.full(len(rows), -(10**9), np.int64)
    pos = np.full(state.n, -1)
    pos[rows] = np.arange(len(rows))
    later = decided > c  # decided after c: not decided at c
    decided[later], gone[later] = NEVER, NEVER
    for row, was_decided, was_gone, rescue_day in state.rescued:
        r = pos[row]
        if r < 0:
            continue
        if was_decided <= c < rescue_day:
            decided[r], gone[r] = was_decided, was_gone
        elif rescue_day <= c:
            immune[r] = max(immune[r], rescue_day + state.params.effect_days)
    return decided, gone, immune


def true_churn_dates(world: World) -> pd.Series:
    """external_id -> true churn date: churned_on for those already gone, and for active
    partners the date they will churn within params.lookahead_days after today if nobody
    intervenes (exactly what `advance_world` with no contacts and seed=None produces).
    NaT = no churn up to today + lookahead_days."""
    state = world.state
    future = copy.deepcopy(state)
    _run_until(future, state.today_day + state.params.lookahead_days)
    return pd.Series(_to_datetime(future.churn_day), index=pd.Index(state.external_id, name="external_id"))


def advance_world(
    world: World,
    days: int,
    contacted: dict[str, date] | None = None,
    seed: int | None = None,
) -> WorldDelta:
    """Move `today` forward by `days`; mutates world (state, tables, today) in place.

    Partners in `contacted` (external_id -> contact date) get a hazard multiplied by
    (1 - intervention_effect) from that date for effect_days; nobody else is touched. With
    seed=None new months draw from the world's own seed (the future true_churn_dates
    announced); another seed draws a different future."""
    state = world.state
    if days < 0:
        raise ValueError("days must be >= 0")
    if contacted:
        index = pd.Index(state.external_id)
        idx = index.get_indexer(list(contacted))
        if (idx < 0).any():
            unknown = [e for e, i in zip(contacted, idx, strict=True) if i < 0]
            raise KeyError(f"unknown partners: {unknown[:5]}")
        state.contact_idx = np.concatenate([state.contact_idx, idx.astype(np.int32)])
        state.contact_day = np.concatenate(
            [state.contact_day, np.array([_day(d) for d in contacted.values()], np.int64)]
        )
    old_today, old_complete = state.today_day, state.n_complete
    old_paid = state.paid_day[:, : state.n_started].copy()
    _run_until(state, old_today + days, seed=seed)

    # Payments of invoices that were open at old_today and are paid by the new today.
    cols = old_paid.shape[1]
    new_paid = state.paid_day[:, :cols]
    i, j = np.nonzero(
        (old_paid != NONE) & (old_paid > old_today) & (new_paid != NONE) & (new_paid <= state.today_day)
    )
    starts = state.month_starts()
    payments = pd.DataFrame(
        {
            "external_id": state.external_id[i],
            "issued_on": _to_datetime(starts[j]),
            "paid_on": _to_datetime(new_paid[i, j]),
        }
    )
    churned = np.flatnonzero((state.churn_day > old_today) & (state.churn_day <= state.today_day))
    delta = WorldDelta(
        start=_date(old_today + 1),
        end=_date(state.today_day),
        activity=_activity_table(state, old_complete, state.n_complete),
        invoices=_invoices_table(state, old_today + 1, state.today_day),
        payments=payments,
        churn_events=pd.DataFrame(
            {
                "external_id": state.external_id[churned],
                "churned_on": _to_datetime(state.churn_day[churned]),
            }
        ),
    )
    fresh = world_from_state(state)
    world.partners, world.activity, world.invoices = (
        fresh.partners,
        fresh.activity,
        fresh.invoices,
    )
    world.today = fresh.today
    return delta


_STRINGS = ("external_id", "name", "contact_email", "notes")
_MONTHLY = (
    "health",
    "velocity",
    "hazard",
    "transactions",
    "revenue",
    "active_users",
    "support_tickets",
    "paid_day",
    "tx_last14",
    "tx_last7",
)
_SCALARS = ("seed", "start_day", "today_day", "n_started", "n_complete")


def world_state_to_json(state: WorldState) -> dict:
    """A JSON-serialisable dict (arrays as base64 little-endian bytes); exact round trip."""
    arrays = {}
    for f in dataclasses.fields(WorldState):
        value = getattr(state, f.name)
        if f.name in _STRINGS or not isinstance(value, np.ndarray):
            continue
        if value.ndim == 2 and f.name in _MONTHLY:
            value = value[:, : state.n_started]
        value = np.ascontiguousarray(value)
        arrays[f.name] = {
            "dtype": value.dtype.newbyteorder("<").str,
            "shape": list(value.shape),
            "data": base64.b64encode(value.astype(value.dtype.newbyteorder("<")).tobytes()).decode("ascii"),
        }
    return {
        "format": "churnsite-simulator-state/1",
        **{name: int(getattr(state, name)) for name in _SCALARS},
        "params": {k: _jsonable(v) for k, v in dataclasses.asdict(state.params).items()},
        "strings": {name: getattr(state, name).tolist() for name in _STRINGS},
        "arrays": arrays,
    }


def world_state_from_json(d: dict) -> WorldState:
    raw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d["params"].items()}
    params = SimulatorParams(**raw)
    kwargs = {name: d[name] for name in _SCALARS}
    for name in _STRINGS:
        kwargs[name] = np.array(d["strings"][name], dtype=object)
    for name, a in d["arrays"].items():
        data = base64.b64decode(a["data"])
        value = np.frombuffer(data, dtype=np.dtype(a["dtype"])).reshape(a["shape"])
        kwargs[name] = value.astype(np.dtype(a["dtype"]).newbyteorder("="))
    state = WorldState(params=params, **kwargs)
    if len(state.decided_day) != state.n:  # saved before the pre-churn phase existed
        _init_winddown(state)
    if state.tx_last14.shape[0] != state.n:  # saved before the trailing windows existed
        state.tx_last14 = np.full(state.transactions.shape, NONE, np.int32)
        state.tx_last7 = np.full(state.transactions.shape, NONE, np.int32)
    return state


# ------------------------------------------------------------------------------------------
# Dates
# ------------------------------------------------------------------------------------------


def _day(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def _date(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=int(day))


def _month_starts(start_day: int, count: int) -> np.ndarray:
    first = (_EPOCH + start_day).astype("datetime64[M]")
    return (first + np.arange(count)).astype("datetime64[D]").astype(np.int64)


def _to_datetime(days: np.ndarray) -> np.ndarray:
    days = np.asarray(days, dtype=np.int64)
    out = (_EPOCH + days).astype("datetime64[ns]")
    out[(days == NEVER) | (days == NONE)] = np.datetime64("NaT")
    return out


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


# ------------------------------------------------------------------------------------------
# Initial population
# ------------------------------------------------------------------------------------------

_NAME_FIRST = (
    "Acme Alder Apex Arbor Atlas Aurora Azure Beacon Birch Blue Bright Brook Cardinal Cedar "
    "Clear Cobalt Copper Coral Crest Crown Delta Eagle Echo Ember Evergreen Falcon Fern "
    "Frontier Garnet Golden Granite Harbor Hawk Highland Horizon Indigo Iron Juniper Keystone "
    "Lakeside Lantern Liberty Linden Maple Meadow Meridian Midland Monarch Nimbus North Oak "
    "Onyx Orchid Pacific Peak Pine Pioneer Polar Prairie Quartz Radiant Raven Redwood Ridge "
    "River Sable Sage Silver Sierra Spruce Star Sterling Stone Summit Sun Terra Tidal Timber "
    "Union Valley Vantage Vista Willow Zenith"
).split()
_NAME_SECOND = (
    "Analytics Apparel Builders Cloud Commerce Consulting Data Digital Direct Distribution "
    "Electronics Energy Engineering Foods Freight Goods Health Home Imports Industries "
    "Labs Logistics Marketing Media Medical Mobile Networks Office Outfitters Partners "
    "Payments Retail Security Services Software Solutions Sports Supply Systems Tech "
    "Telecom Trading Travel Ventures Wholesale Works"
).split()
_NAME_SUFFIX = ("Inc", "LLC", "Ltd", "GmbH", "Group", "Co", "SA", "Pty Ltd", "BV", "Corp")
_CONTACT_FIRST = (
    "alex ana ben carla chen david elena fatima george hana ivan james julia kofi lars "
    "laura li maria mateo mei nina omar priya rahul sara sofia tom yuki zoe"
).split()
_CONTACT_LAST = (
    "adams baker chen costa diaz evans garcia gupta haddad ito jones kim lopez martin "
    "meyer moreau nguyen novak okafor patel rossi santos schmidt silva smith tanaka wang"
).split()
_NOTES = (
    "Prefers email over phone.",
    "Annual contract review in Q3.",
    "Asked about volume discounts.",
    "Primary contact changed last year.",
    "Uses the API integration.",
    "Multiple locations; billing centralised.",
    "Referred by an existing partner.",
    "Interested in the co-marketing programme.",
)


def _init_state(n: int, seed: int, params: SimulatorParams, start_day: int, today_day: int) -> WorldState:
    p = params
    rng = np.random.default_rng([seed, 0, 99])
    tier = rng.choice(4, size=n, p=_norm(p.tier_shares)).astype(np.int8)
    region = rng.choice(4, size=n, p=_norm(p.region_shares)).astype(np.int8)
    segment = rng.choice(3, size=n, p=_norm(p.segment_shares)).astype(np.int8)
    median = np.asarray(p.revenue_median_by_tier)[tier]
    monthly_revenue = np.round(median * np.exp(p.revenue_sigma * rng.standard_normal(n)), 2)
    ticket = np.asarray(p.ticket_size_by_segment)[segment]
    base_tx = np.maximum(p.min_base_transactions, monthly_revenue / ticket)
    ticket_size = monthly_revenue / base_tx
    seats = np.maximum(
        1, np.round(np.asarray(p.seats_by_tier)[tier] * np.exp(0.3 * rng.standard_normal(n)))
    ).astype(np.int32)
    mu = p.health_mean + p.health_mean_sd * rng.standard_normal(n)

    during = rng.random(n) < p.joined_during_window_share
    prior_days = rng.uniform(30, 365.25 * p.max_prior_tenure_years, n)
    join_day = np.where(
        during,
        start_day + np.floor(rng.random(n) * (today_day - start_day + 1)),
        start_day - np.floor(prior_days),
    ).astype(np.int64)

    # Health-only burn-in so that partners start the window mid-story (some declining).
    h = mu + rng.standard_normal(n) * p.health_noise_sd / np.sqrt(1 - p.health_persistence**2)
    v = np.zeros(n)
    for _ in range(p.burn_in_months):
        h, v = _health_step(h, v, mu, _health_draws(rng, n, p), p)

    names, emails, notes = _identities(rng, n, p)
    months = int(np.searchsorted(_month_starts(start_day, 400), today_day, side="right"))
    state = WorldState(
        seed=seed,
        params=p,
        start_day=start_day,
        today_day=start_day - 1,
        n_started=0,
        n_complete=0,
        external_id=np.array([f"P{10000 + i:05d}" for i in range(n)], dtype=object),
        name=names,
        contact_email=emails,
        notes=notes,
        tier=tier,
        region=region,
        segment=segment,
        monthly_revenue=monthly_revenue,
        base_tx=base_tx,
        ticket_size=ticket_size,
        seats=seats,
        health_level=mu,
        join_day=join_day,
        churn_day=np.full(n, NEVER, np.int64),
        threshold=rng.exponential(1.0, n),
        month_seed=np.zeros(0, np.int64),
        health=np.zeros((n, 0), np.float32),
        velocity=np.zeros((n, 0), np.float32),
        hazard=np.zeros((n, 0)),
        transactions=np.zeros((n, 0), np.int32),
        revenue=np.zeros((n, 0)),
        active_users=np.zeros((n, 0), np.int32),
        support_tickets=np.zeros((n, 0), np.int32),
        paid_day=np.zeros((n, 0), np.int32),
        tx_last14=np.zeros((n, 0), np.int32),
        tx_last7=np.zeros((n, 0), np.int32),
    )
    _ensure_capacity(state, months)
    state.health[:, 0] = h
    state.velocity[:, 0] = v
    _init_winddown(state)
    return state


def _init_winddown(state: WorldState) -> None:
    """Each partner's way of leaving, drawn once from its own stream (so adding the phase left
    every other draw of the world as it was): how long it winds down (0 = at once) and whether
    its support tickets spike or go silent meanwhile."""
    p, n = state.params, state.n
    rng = np.random.default_rng([state.seed, 0, 97])
    slow = rng.random(n) < p.winddown_share
    length = rng.integers(p.winddown_days[0], p.winddown_days[1] + 1, n)
    state.winddown = np.where(slow, length, 0).astype(np.int16)
    state.spike = rng.random(n) < p.winddown_spike_share
    state.decided_day = state.churn_day.copy()  # a state saved before the phase: decided = gone
    state.immune_until = np.full(n, -(10**9), np.int64)


def _identities(rng, n: int, p: SimulatorParams):
    first = rng.integers(len(_NAME_FIRST), size=n)
    second = rng.integers(len(_NAME_SECOND), size=n)
    suffix = rng.integers(len(_NAME_SUFFIX), size=n)
    cf = rng.integers(len(_CONTACT_FIRST), size=n)
    cl = rng.integers(len(_CONTACT_LAST), size=n)
    has_note = rng.random(n) < p.notes_share
    note = rng.integers(len(_NOTES), size=n)
    names = [
        f"{_NAME_FIRST[a]} {_NAME_SECOND[b]} {_NAME_SUFFIX[s]}"
        for a, b, s in zip(first, second, suffix, strict=True)
    ]
    slugs = pd.Series(
        [f"{_NAME_FIRST[a]}-{_NAME_SECOND[b]}".lower() for a, b in zip(first, second, strict=True)]
    )
    # Same-named companies get distinct domains, so every contact email is unique.
    dup = slugs.groupby(slugs).cumcount().to_numpy()
    emails = [
        f"{_CONTACT_FIRST[a]}.{_CONTACT_LAST[b]}@{s}{'' if d == 0 else f'-{d + 1}'}.example"
        for a, b, s, d in zip(cf, cl, slugs, dup, strict=True)
    ]
    notes = np.where(has_note, np.asarray(_NOTES, dtype=object)[note], "")
    return np.array(names, dtype=object), np.array(emails, dtype=object), notes.astype(object)


def _norm(shares) -> np.ndarray:
    a = np.asarray(shares, dtype=float)
    return a / a.sum()


# ------------------------------------------------------------------------------------------
# The generating process (shared by the engine and the oracle's Monte Carlo)
# ------------------------------------------------------------------------------------------


def _health_draws(rng, n: int, p: SimulatorParams) -> dict:
    return {
        "noise": rng.standard_normal(n),
        "shock": (rng.random(n) < p.shock_prob) * rng.exponential(p.shock_size, n),
        "decline": (rng.random(n) < p.decline_start_prob) * rng.uniform(*p.decline_speed, n),
        "new": rng.standard_normal(n),
    }


def _health_step(h, v, mu, draws, p: SimulatorParams):
    h_next = mu + p.health_persistence * (h - mu) + v + p.health_noise_sd * draws["noise"] - draws["shock"]
    v_next = p.decline_persistence * v - draws["decline"]
    return np.clip(h_next, *p.health_bounds), v_next


def _activity_draws(rng, h, base_tx, ticket_size, seats, tier, p: SimulatorParams):
    """A full month of activity at health h (thinned later if not present all month)."""
    tx = rng.poisson(base_tx * np.exp(p.tx_health_elasticity * h))
    noise = np.exp(p.revenue_noise_sd * rng.standard_normal(len(h)) - p.revenue_noise_sd**2 / 2)
    revenue = tx * ticket_size * noise
    users = rng.binomial(seats, _sigmoid(p.users_logit_offset + p.users_logit_slope * h))
    tickets = rng.poisson(np.asarray(p.tickets_base_by_tier)[tier] * np.exp(-p.tickets_health_elasticity * h))
    return tx, revenue, users, tickets


def _payment_params(h, p: SimulatorParams):
    never = _sigmoid(p.never_pay_logit - p.never_pay_health * h)
    mean_delay = np.exp(p.pay_delay_log_mean - p.pay_delay_health * h)
    return never, 1.0 / (1.0 + mean_delay)  # geometric success probability on {0, 1, ...}


def _payment_day(h, issue_day, u_never, u_delay, p: SimulatorParams, after=None):
    """Day an invoice issued on issue_day gets paid (NEVER if never), at health h.

    With `after` (a day), draws from the distribution conditional on not being paid by
    then: the geometric delay is memoryless, so this is exact (the oracle needs it for
    invoices that are open at its cutoff)."""
    q, pp = _payment_params(h, p)
    log_fail = np.log1p(-pp)
    g0 = np.zeros(len(h)) if after is None else np.maximum(0, after - issue_day - p.pay_min_days + 1)
    gmax = p.pay_max_extra_days
    s0 = np.exp(g0 * log_fail)  # P(G >= g0)
    tail = np.exp((gmax + 1) * log_fail)  # P(G > gmax)
    pays = (1 - q) * np.maximum(s0 - tail, 0.0) / (q + (1 - q) * s0)
    span = 1 - np.exp(np.maximum(gmax - g0 + 1, 0) * log_fail)
    extra = np.floor(np.log1p(-u_delay * span) / log_fail)
    days = issue_day + p.pay_min_days + g0 + np.minimum(extra, np.maximum(gmax - g0, 0))
    return np.where(u_never < pays, days, NEVER).astype(np.int64)


def _payment_signals(issue_days, paid, ref_day: int, p: SimulatorParams, old_oldest_due=None):
    """Mean lateness of invoices due in the 90 days up to ref_day (open ones count as late
    so far) and days overdue of the oldest invoice still open at ref_day (cap 180).

    issue_days: (W,) issue day of each invoice column; paid: (rows, W) paid day, NONE for
    no invoice, NEVER for never paid."""
    due = np.asarray(issue_days, np.int64) + p.invoice_due_days
    exists = paid != NONE
    paid_f = np.where(paid == NEVER, np.inf, paid.astype(np.float64))
    late = np.maximum(0.0, np.minimum(paid_f, ref_day) - due)
    recent = exists & (due > ref_day - 90) & (due <= ref_day)
    n_recent = recent.sum(axis=1)
    late_mean = np.where(n_recent > 0, (late * recent).sum(axis=1) / np.maximum(n_recent, 1), 0.0)
    open_due = np.where(exists & (due <= ref_day) & (paid_f > ref_day), due, np.inf)
    oldest = open_due.min(axis=1) if open_due.shape[1] else np.full(len(paid), np.inf)
    if old_oldest_due is not None:
        oldest = np.minimum(oldest, old_oldest_due)
    overdue = np.where(np.isfinite(oldest), np.minimum(180.0, ref_day - oldest), 0.0)
    return late_mean, overdue


def _trend(tx6):
    """log((mean tx of the last 3 months + 1) / (mean of the 3 before + 1)); NaN = no row.
    0 when either window has no month."""
    prev, last = _nanmean(tx6[:, :3]), _nanmean(tx6[:, 3:])
    t = np.log((last + 1) / (prev + 1))
    return np.where(np.isfinite(t), t, 0.0)


def _nanmean(a):
    ok = np.isfinite(a)
    count = ok.sum(axis=1)
    return np.where(count > 0, np.where(ok, a, 0).sum(axis=1) / np.maximum(count, 1), np.nan)


def _hazard(state_rows: dict, tx6, tk3, late_mean, overdue, ref_day: int, h, p: SimulatorParams):
    tenure_months = np.maximum(0, ref_day - state_rows["join_day"]) / 30.44
    tickets = np.nansum(tk3, axis=1)
    log_h = (
        np.log(p.hazard_base)
        + np.asarray(p.hazard_tier)[state_rows["tier"]]
        + np.asarray(p.hazard_segment)[state_rows["segment"]]
        + p.hazard_late * late_mean / 30
        + p.hazard_overdue * overdue / 30
        + p.hazard_decline * np.clip(-_trend(tx6), 0, 3)
        + p.hazard_tickets * np.log1p(tickets)
        + p.hazard_new_partner * np.exp(-tenure_months / p.new_partner_months)
        + p.hazard_latent * (p.health_mean - h)
        + p.hazard_collapse * np.maximum(0, p.collapse_threshold - h)
    )
    return np.minimum(np.exp(log_h), p.max_daily_hazard)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ------------------------------------------------------------------------------------------
# The engine: advance the state day by day, month by month
# ------------------------------------------------------------------------------------------


def _ensure_capacity(state: WorldState, months: int) -> None:
    have = state.health.shape[1]
    if months <= have:
        return
    extra = months - have
    n = state.n
    state.month_seed = np.concatenate([state.month_seed, np.zeros(extra, np.int64)])
    for name, fill in (
        ("health", 0),
        ("velocity", 0),
        ("hazard", 0),
        ("transactions", NONE),
        ("revenue", 0),
        ("active_users", NONE),
        ("support_tickets", NONE),
        ("paid_day", NONE),
        ("tx_last14", NONE),
        ("tx_last7", NONE),
    ):
        old = getattr(state, name)
        new = np.full((n, months), fill, dtype=old.dtype)
        new[:, :have] = old
        setattr(state, name, new)


def _run_until(state: WorldState, target_day: int, seed: int | None = None) -> None:
    starts_all = _month_starts(state.start_day, 1000)
    months = int(np.searchsorted(starts_all, target_day, side="right"))
    _ensure_capacity(state, months)
    starts = starts_all[: months + 1]
    while state.today_day < target_day:
        day = state.today_day + 1
        k = int(np.searchsorted(starts, day, side="right") - 1)
        if day == starts[k]:
            state.month_seed[k] = state.seed if seed is None else seed
            _start_month(state, k, starts)
        last = min(target_day, int(starts[k + 1]) - 1)
        # A contact day starts a stretch of its own: its rescues happen at the start of it.
        later = state.contact_day[state.contact_day > day]
        if len(later):
            last = min(last, int(later.min()) - 1)
        _rescue(state, day)
        _consume_hazard(state, k, day, last)
        state.today_day = last
        if last == starts[k + 1] - 1:
            _finish_month(state, k, starts)


def _start_month(state: WorldState, k: int, starts: np.ndarray) -> None:
    p, n = state.params, state.n
    m = int(starts[k])
    rng = np.random.default_rng([int(state.month_seed[k]), k, 1])
    draws = _health_draws(rng, n, p)
    mu = state.health_level
    if k > 0:
        h, v = _health_step(
            state.health[:, k - 1].astype(np.float64),
            state.velocity[:, k - 1].astype(np.float64),
            mu,
            draws,
            p,
        )
    else:
        h, v = state.health[:, 0].astype(np.float64), state.velocity[:, 0].astype(np.float64)
    # Partners not yet there start fresh at their own level when they join.
    joining = state.join_day >= m
    h = np.where(joining, mu + p.new_partner_health_sd * draws["new"], h)
    v = np.where(joining, 0.0, v)
    state.health[:, k] = h
    state.velocity[:, k] = v
    h = state.health[:, k].astype(np.float64)

    tx, rev, users, tickets = _activity_draws(
        rng, h, state.base_tx, state.ticket_size, state.seats, state.tier, p
    )
    state.transactions[:, k] = tx
    state.revenue[:, k] = rev
    state.active_users[:, k] = users
    state.support_tickets[:, k] = tickets

    # Invoice issued today for last month's revenue (a partner gone already gets none).
    u_never, u_delay = rng.random(n), rng.random(n)
    if k > 0:
        issue = (state.revenue[:, k - 1] > 0) & (state.churn_day > m)
        paid = _payment_day(h, m, u_never, u_delay, p)
        paid = np.where(state.decided_day < m, NEVER, paid)  # winding down: pays nothing more
        state.paid_day[:, k] = np.where(issue, paid, NONE)

    # The month's hazard, from what is known at the end of the previous day.
    ref = m - 1
    rows = {"join_day": state.join_day, "tier": state.tier, "segment": state.segment}
    tx6 = _window(state.transactions, k - 6, k).astype(np.float64)
    tk3 = _window(state.support_tickets, k - 3, k).astype(np.float64)
    tx6[tx6 < 0] = np.nan
    tk3[tk3 < 0] = np.nan
    # paid days after ref are not known yet, but their only use is "not paid by ref".
    late, overdue = _payment_signals(starts[:k], state.paid_day[:, :k], ref, p)
    state.hazard[:, k] = _hazard(rows, tx6, tk3, late, overdue, ref, h, p)
    state.n_started = max(state.n_started, k + 1)


def _window(matrix: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Columns lo..hi-1, NONE-padded on the left when lo < 0."""
    out = np.full((matrix.shape[0], hi - lo), NONE, dtype=matrix.dtype)
    start = max(lo, 0)
    out[:, start - lo :] = matrix[:, start:hi]
    return out


def _consume_hazard(state: WorldState, k: int, first: int, last: int) -> None:
    """Spend the month's hazard over days first..last: who decides to leave on which day (the
    hazard's threshold crossed, or dunning), and so when each of them will be gone."""
    p = state.params
    alive = np.flatnonzero((state.decided_day == NEVER) & (state.join_day <= last))
    if not len(alive):
        return
    days = np.arange(first, last + 1)
    present = (days[None, :] >= state.join_day[alive, None]) & (
        days[None, :] >= state.immune_until[alive, None]
    )
    mult = present * _contact_multiplier(state, alive, first, last)
    cum = np.cumsum(state.hazard[alive, k][:, None] * mult, axis=1)
    crossed = cum >= state.threshold[alive, None]
    when = np.where(crossed[:, -1], first + crossed.argmax(axis=1), NEVER)
    issued = state.month_starts(k + 1)
    dun = _dunning_day(issued, state.paid_day[alive, : k + 1], state.immune_until[alive], p)
    dun = np.where(dun <= last, np.maximum(dun, first), NEVER)
    decides = (when != NEVER) | (dun != NEVER)
    stay = ~decides
    state.threshold[alive[stay]] -= cum[stay, -1]
    who = alive[decides]
    if not len(who):
        return
    when, dun = when[decides], dun[decides]
    decided = np.minimum(when, dun)
    # Dunning closes the account at once; a partner that decides itself winds down (or not).
    length = np.where(dun <= when, 0, state.winddown[who]).astype(np.int64)
    paid = state.paid_day[who, : k + 1].astype(np.int64)
    # It stops paying: whatever is open now stays open, and dunning may end it sooner.
    open_ = (paid != NONE) & (paid > decided[:, None])
    due = issued[None, :] + p.invoice_due_days
    cut = np.where(open_, np.maximum(due + p.dunning_days, decided[:, None]), NEVER).min(axis=1)
    gone = np.minimum(decided + length, cut)
    state.decided_day[who] = decided
    state.churn_day[who] = gone
    state.threshold[who] = 0.0
    paid[open_] = NEVER
    # A partner gone is not invoiced on (or after) its last day.
    paid[(paid != NONE) & (issued[None, :] >= gone[:, None])] = NONE
    state.paid_day[who, : k + 1] = paid


def _dunning_day(issue_days, paid, immune_until, p: SimulatorParams) -> np.ndarray:
    """The first day an invoice is dunning_days past due and still unpaid (NEVER if none):
    the day the account is closed. Not while a rescue's grace lasts (it settled the open ones).

    issue_days: (W,) issue day per column; paid: (rows, W) paid day, NONE = no invoice."""
    due = np.asarray(issue_days, np.int64)[None, :] + p.invoice_due_days + p.dunning_days
    day = np.maximum(due, np.asarray(immune_until, np.int64)[:, None])
    paid = np.asarray(paid).astype(np.int64)
    hit = (paid != NONE) & (paid > day)
    if not hit.shape[1]:
        return np.full(len(paid), NEVER, np.int64)
    return np.where(hit, day, NEVER).min(axis=1)


def _rescue(state: WorldState, day: int) -> None:
    """Contacts dated `day` work with probability intervention_effect (a draw of its own,
    keyed by partner and day). One reaching a partner already winding down talks it out of
    leaving: it settles its open invoices rescue_pay_days later, is safe until the contact's
    effect ends, then faces its hazard again with a fresh Exp(1) threshold. One reaching a
    partner that has not decided but is behind on payments averts the dunning that would
    fall within the effect (the invoice is paid the day before)."""
    p = state.params
    if not len(state.contact_idx) or p.intervention_effect == 0:
        return
    contacted = np.unique(state.contact_idx[state.contact_day == day])
    works = contacted[_hash_uniform(state.seed, contacted, day, 1) < p.intervention_effect]
    # Behind on payments and not yet decided: the call agrees a payment before dunning would
    # close the account within the contact's effect (the hazard is cut as for everyone).
    behind = works[state.decided_day[works] == NEVER]
    if len(behind):
        cols = state.n_started
        due = state.month_starts(cols)[None, :] + p.invoice_due_days + p.dunning_days
        paid = state.paid_day[behind, :cols].astype(np.int64)
        fix = (paid != NONE) & (paid >= due) & (due > day) & (due < day + p.effect_days)
        paid[fix] = np.broadcast_to(due - 1, paid.shape)[fix]
        state.paid_day[behind, :cols] = paid
    rows = works[(state.decided_day[works] < day) & (state.churn_day[works] > day)]
    if not len(rows):
        return
    state.rescued = np.concatenate(
        [
            state.rescued,
            np.column_stack([rows, state.decided_day[rows], state.churn_day[rows], np.full(len(rows), day)]),
        ]
    ).astype(np.int64)
    state.decided_day[rows] = NEVER
    state.churn_day[rows] = NEVER
    state.immune_until[rows] = day + p.effect_days
    state.threshold[rows] = -np.log(_hash_uniform(state.seed, rows, day, 2))
    paid = state.paid_day[rows, : state.n_started]
    paid[(paid != NONE) & (paid > day)] = day + p.rescue_pay_days
    state.paid_day[rows, : state.n_started] = paid


def _hash_uniform(seed: int, rows: np.ndarray, day: int, salt: int) -> np.ndarray:
    """A uniform in (0, 1) per row from (seed, row, day, salt): splitmix64, so a draw depends on
    nothing else (not on which other partners were contacted)."""
    with np.errstate(over="ignore"):
        x = (np.asarray(rows, np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(
            (seed * 1_000_003 + day * 7919 + salt * 104_729) & 0xFFFFFFFFFFFFFFFF
        )
        for shift, mul in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x = (x ^ (x >> np.uint64(shift))) * np.uint64(mul)
        x = x ^ (x >> np.uint64(31))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def _contact_multiplier(state: WorldState, rows: np.ndarray, first: int, last: int):
    p = state.params
    width = last - first + 1
    mult = np.ones((len(rows), width))
    if not len(state.contact_idx) or p.intervention_effect == 0:
        return mult
    pos = np.full(state.n, -1)
    pos[rows] = np.arange(len(rows))
    r = pos[state.contact_idx]
    s = np.maximum(state.contact_day, first) - first
    e = np.minimum(state.contact_day + p.effect_days - 1, last) - first + 1
    ok = (r >= 0) & (s < e)
    diff = np.zeros((len(rows), width + 1), np.int32)
    np.add.at(diff, (r[ok], s[ok]), 1)
    np.add.at(diff, (r[ok], e[ok]), -1)
    covered = np.cumsum(diff, axis=1)[:, :width] > 0
    mult[covered] = 1 - p.intervention_effect
    return mult


def _finish_month(state: WorldState, k: int, starts: np.ndarray) -> None:
    """The month is over: thin its activity to the days each partner was present, and to how
    far it had wound down on each of them."""
    p = state.params
    m, m_next = int(starts[k]), int(starts[k + 1])
    lo = np.maximum(m, state.join_day)
    hi = np.minimum(m_next, state.churn_day)
    present = np.clip(hi - lo, 0, None)
    here = present > 0
    # Days of the month spent winding down, and the activity they still carried.
    w_lo = np.maximum(lo, state.decided_day)
    wind = np.where(state.decided_day != NEVER, np.clip(hi - w_lo, 0, None), 0)
    kept = np.zeros(state.n)
    # The same activity, day by day, over the month's last 14 and last 7 days.
    tail14, tail7 = _tail_weights(lo, hi, m_next, 14), _tail_weights(lo, hi, m_next, 7)
    rows = np.flatnonzero(wind > 0)
    if len(rows):
        day = w_lo[rows, None] + np.arange(m_next - m)[None, :]
        # The fade runs over the notice the partner serves, so dunning that ends it sooner
        # cuts it off mid-fade (the activity does not foresee the closing).
        length = np.maximum(state.winddown[rows], state.churn_day[rows] - state.decided_day[rows])
        length = length.astype(np.float64)
        left = np.clip(state.churn_day[rows, None] - day, 0, None)
        share = p.winddown_level * (left / length[:, None]) ** p.winddown_power
        carried = np.where(day < hi[rows, None], share, 0.0)
        kept[rows] = carried.sum(axis=1)
        # A winding-down day carries `share` of a normal day's activity, not a whole one.
        for tail, width in ((tail14, 14), (tail7, 7)):
            lost = np.where((day < hi[rows, None]) & (day >= m_next - width), 1.0 - share, 0.0)
            tail[rows] -= lost.sum(axis=1)
    normal = present - wind
    frac = (normal + kept) / (m_next - m)
    state.transactions[:, k] = np.where(here, np.round(state.transactions[:, k] * frac), NONE)
    _split_tail(state, k, here, normal + kept, tail14, tail7)
    state.revenue[:, k] = np.where(here, np.round(state.revenue[:, k] * frac, 2), 0.0)
    state.revenue[state.transactions[:, k] <= 0, k] = 0.0
    with np.errstate(all="ignore"):
        logins = np.where(wind > 0, ((normal + kept) / np.maximum(present, 1)) ** p.winddown_users_power, 1.0)
    users = np.round(state.active_users[:, k] * logins)
    state.active_users[:, k] = np.where(here, users, NONE)
    # Support while winding down: a spike of extra tickets, or silence.
    # (Poisson by inversion of one uniform each: numpy's sampler would consume a varying
    # number of draws per partner, so one partner's wind-down would shift another's tickets.)
    u = np.random.default_rng([int(state.month_seed[k]), k, 3]).random(state.n)
    extra = poisson.ppf(u, p.winddown_tickets_per_month * wind / 30.0)
    extra = np.nan_to_num(extra, nan=0.0)
    tickets = np.round(state.support_tickets[:, k] * normal / (m_next - m)) + np.where(state.spike, extra, 0)
    state.support_tickets[:, k] = np.where(here, tickets, NONE)
    state.n_complete = k + 1


def _tail_weights(lo, hi, m_next: int, width: int) -> np.ndarray:
    """Days present in the month's last `width` days (winding-down days are discounted by
    the caller)."""
    return np.clip(hi - np.maximum(lo, m_next - width), 0, None).astype(np.float64)


def _split_tail(state: WorldState, k: int, here, weight, tail14, tail7) -> None:
    """Spread the month's final transactions over its days, in proportion to each day's
    activity (1 normal, the wind-down share while winding down, 0 absent), and count those of
    the last 14 and last 7 days: a binomial split of the month's count, so a decision in the
    month's last fortnight shows there within the month's own level.

    Binomials by inversion of one uniform each, from a stream of their own (numpy's sampler
    would consume a varying number of draws per partner, and adding the split would have
    shifted every other draw of the world)."""
    u = np.random.default_rng([int(state.month_seed[k]), k, 4]).random((2, state.n))
    total = np.where(here, state.transactions[:, k], 0).astype(np.float64)
    with np.errstate(all="ignore"):
        p14 = np.clip(np.where(weight > 0, tail14 / weight, 0.0), 0.0, 1.0)
        p7 = np.clip(np.where(tail14 > 0, tail7 / tail14, 0.0), 0.0, 1.0)
    last14 = np.nan_to_num(binom.ppf(u[0], total, p14), nan=0.0)
    last7 = np.nan_to_num(binom.ppf(u[1], last14, p7), nan=0.0)
    state.tx_last14[:, k] = np.where(here, np.minimum(last14, total), NONE)
    state.tx_last7[:, k] = np.where(here, np.minimum(last7, last14), NONE)


# ------------------------------------------------------------------------------------------
# The oracle's Monte Carlo
# ------------------------------------------------------------------------------------------


def _latest_contact(state: WorldState, rows: np.ndarray, cutoff: int) -> np.ndarray:
    """Latest contact day <= cutoff for each row (-10**9 if none): only it can still be in
    effect after the cutoff, as every effect lasts the same number of days."""
    latest = np.full(state.n, -(10**9), np.int64)
    known = state.contact_day <= cutoff
    np.maximum.at(latest, state.contact_idx[known], state.contact_day[known])
    return latest[rows]


def _effective_days(first, last, contact_start, p: SimulatorParams, safe_until=None):
    """Number of days in first..last, counting days under an intervention at (1 - effect)
    and days before `safe_until` (a rescue's grace) not at all."""
    if safe_until is not None:
        first = np.maximum(first, safe_until)
    total = np.maximum(0, last - first + 1)
    lo = np.maximum(contact_start, first)
    hi = np.minimum(contact_start + p.effect_days - 1, last)
    covered = np.maximum(0, hi - lo + 1)
    return total - p.intervention_effect * covered


def _winddown_quantiles(paths: int, p: SimulatorParams) -> np.ndarray:
    """Wind-down lengths at the paths' stratified quantiles: a partner that has not decided
    yet has not settled how it will leave either, so the oracle averages over it."""
    u = (np.arange(paths) + 0.5) / paths
    lo, hi = p.winddown_days
    slow = u >= 1 - p.winddown_share
    frac = np.clip((u - (1 - p.winddown_share)) / max(p.winddown_share, 1e-12), 0, 1 - 1e-12)
    return np.where(slow, lo + np.floor(frac * (hi - lo + 1)), 0).astype(np.int64)


def _oracle_future(state, rows, contact_start, immune, c: int, k: int, end: int, paths: int, rng):
    """Mean over `paths` futures of P(no churn by `end`) for partners undecided at day c:
    exp(-hazard spent from c + 1 to end - D) for a wind-down of D days, times "no dunning by
    end"."""
    p = state.params
    n_rows = len(rows)
    starts = _month_starts(state.start_day, k + 12)
    length = np.tile(_winddown_quantiles(paths, p), n_rows)
    decide_by = end - length  # a decision after this day is not gone by `end`
    k_end = int(np.searchsorted(starts, end, side="right") - 1)
    rep = np.repeat(rows, paths)
    size = len(rep)
    static = {
        "join_day": state.join_day[rep],
        "tier": state.tier[rep],
        "segment": state.segment[rep],
    }
    mu = state.health_level[rep]
    base_tx, ticket, seats = state.base_tx[rep], state.ticket_size[rep], state.seats[rep]
    contact = np.repeat(contact_start, paths)
    safe = np.repeat(immune, paths)

    # Activity months k-6 .. k_end-1: the known past, then what the paths draw.
    n_tx = max(k_end, k + 1) - (k - 6)
    tx = np.full((size, n_tx), np.nan)
    tk = np.full((size, n_tx), np.nan)
    past_tx = _window(state.transactions, k - 6, k)[rep].astype(np.float64)
    past_tk = _window(state.support_tickets, k - 6, k)[rep].astype(np.float64)
    past_tx[past_tx < 0] = np.nan
    past_tk[past_tk < 0] = np.nan
    tx[:, :6], tk[:, :6] = past_tx, past_tk

    # Invoices issued k-5 .. k_end (older open ones can no longer be paid: see
    # pay_max_extra_days), their paid days redrawn when still open at the cutoff.
    lo = k - 5
    inv_cols = k_end - lo + 1
    paid = np.full((size, inv_cols), NONE, np.int64)
    known = _window(state.paid_day, lo, k + 1)[rep].astype(np.int64)
    issue_days = np.array([starts[j] if j >= 0 else -(10**6) for j in range(lo, k_end + 1)])
    open_ = (known != NONE) & (known > c)
    h_issue = _window(state.health, lo, k + 1)[rep].astype(np.float64)
    for col in range(known.shape[1]):
        o = open_[:, col]
        if o.any():
            known[o, col] = _payment_day(
                h_issue[o, col],
                issue_days[col],
                rng.random(o.sum()),
                rng.random(o.sum()),
                p,
                after=c,
            )
    paid[:, : known.shape[1]] = known
    old = state.paid_day[rows, : max(lo, 0)]
    old_due = np.where((old != NONE) & (old > c), starts[: max(lo, 0)] + p.invoice_due_days, np.inf)
    old_oldest = (old_due.min(axis=1) if old_due.shape[1] else np.full(n_rows, np.inf))[
        np.repeat(np.arange(n_rows), paths)
    ]

    h = state.health[rep, k].astype(np.float64)
    v = state.velocity[rep, k].astype(np.float64)
    cum = np.zeros(size)
    for f in range(k, k_end + 1):
        m = int(starts[f])
        last = np.minimum(decide_by, int(starts[f + 1]) - 1)
        if f == k:
            # The rest of the cutoff's month: its hazard was set on the 1st and is known.
            lam = state.hazard[rep, k]
            cum += lam * _effective_days(c + 1, last, contact, p, safe)
        else:
            h, v = _health_step(h, v, mu, _health_draws(rng, size, p), p)
            h = h.astype(np.float32).astype(np.float64)  # as stored by the engine
            col = f - lo
            issue = tx[:, f - 1 - (k - 6)] > 0
            paid[:, col] = np.where(issue, _payment_day(h, m, rng.random(size), rng.random(size), p), NONE)
            ref = m - 1
            late, overdue = _payment_signals(issue_days[:col], paid[:, :col], ref, p, old_oldest)
            t = f - (k - 6)
            lam = _hazard(static, tx[:, t - 6 : t], tk[:, t - 3 : t], late, overdue, ref, h, p)
            lam = np.minimum(lam, p.max_daily_hazard)
            cum += lam * _effective_days(m, last, contact, p, safe)
        if f < k_end:
            # This month's activity (unknown at the cutoff), full months for the paths that
            # survive it; only a partner that joined during month k has a partial one.
            a_tx, a_rev, _, a_tk = _activity_draws(rng, h, base_tx, ticket, seats, static["tier"], p)
            frac = 1.0
            if f == k:
                m0, m1 = int(starts[k]), int(starts[k + 1])
                frac = np.clip(m1 - np.maximum(m0, static["join_day"]), 0, None) / (m1 - m0)
            t = f - (k - 6)
            tx[:, t] = np.round(a_tx * frac)
            tk[:, t] = np.round(a_tk * frac)
    # Dunning: an invoice still unpaid dunning_days past due closes the account.
    dun = _dunning_day(issue_days, paid, safe, p)
    dun = np.minimum(dun, np.maximum(old_oldest + p.dunning_days, safe))
    surv = np.exp(-cum) * (dun > end)
    return surv.reshape(n_rows, paths).mean(axis=1)


# ------------------------------------------------------------------------------------------
# Observable tables
# ------------------------------------------------------------------------------------------


def _partners_table(state: WorldState) -> pd.DataFrame:
    churned = state.churn_day <= state.today_day
    return pd.DataFrame(
        {
            "external_id": state.external_id,
            "name": state.name,
            "tier": np.asarray(TIERS, dtype=object)[state.tier],
            "region": np.asarray(REGIONS, dtype=object)[state.region],
            "segment": np.asarray(SEGMENTS, dtype=object)[state.segment],
            "monthly_revenue": state.monthly_revenue,
            "contact_email": state.contact_email,
            "joined_on": _to_datetime(state.join_day),
            "status": np.where(churned, "churned", "active").astype(object),
            "churned_on": _to_datetime(np.where(churned, state.churn_day, NEVER)),
            "notes": state.notes,
        }
    )


def _activity_table(state: WorldState, lo: int, hi: int) -> pd.DataFrame:
    tx = state.transactions[:, lo:hi]
    i, j = np.nonzero(tx != NONE)
    j = j + lo
    starts = state.month_starts(max(hi, 1) + 1)
    return pd.DataFrame(
        {
            "external_id": state.external_id[i],
            "month": _to_datetime(starts[j]),
            "transactions": state.transactions[i, j].astype(np.int64),
            "revenue": state.revenue[i, j],
            "active_users": state.active_users[i, j].astype(np.int64),
            "support_tickets": state.support_tickets[i, j].astype(np.int64),
            # Nullable: a state saved before the trailing windows existed has none.
            "transactions_last_14d": _known(state.tx_last14[i, j]),
            "transactions_last_7d": _known(state.tx_last7[i, j]),
        }
    )


def _known(counts: np.ndarray) -> pd.array:
    return pd.array(np.where(counts == NONE, pd.NA, counts), dtype="Int64")


def _invoices_table(state: WorldState, first: int, last: int) -> pd.DataFrame:
    """Invoices issued between days first and last, as visible at the end of `today`."""
    starts = state.month_starts()
    cols = np.flatnonzero((starts[: state.n_started] >= first) & (starts[: state.n_started] <= last))
    sub = state.paid_day[:, cols]
    i, jj = np.nonzero(sub != NONE)
    j = cols[jj]
    paid = state.paid_day[i, j].astype(np.int64)
    paid = np.where(paid <= state.today_day, paid, NEVER)
    issued = starts[j]
    return pd.DataFrame(
        {
            "external_id": state.external_id[i],
            "issued_on": _to_datetime(issued),
            "due_on": _to_datetime(issued + state.params.invoice_due_days),
            "paid_on": _to_datetime(paid),
            "amount": state.revenue[i, j - 1],
        }
    )
