"""Reads for partners and interventions."""

import datetime as dt
import hashlib
from collections.abc import Callable
from functools import cached_property, lru_cache
from typing import Any, cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import (
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import JSONObject
from django.shortcuts import get_object_or_404

from churnsite.access import MANAGERS, RETENTION
from churnsite.compiled import CompiledQuery
from ml.levels import WORSE_BY
from ml.models import BUCKET_URGENCY_RANK, RiskScore, ScoringRun
from ml.sim.today import scoring_as_of
from retention.models import Intervention, Invoice, MonthlyActivity, Partner

Outcome = Intervention.Outcome
HOLDOUT = Intervention.Action.HOLDOUT


def partner_search_filter(search: str) -> Q:
    """An id (P18477, any case) exactly, anything else as part of the name. Never both with an
    OR: that made PostgreSQL walk all 100k rows (550 ms for a miss) instead of the trigram
    index (0004) or the id's unique index."""
    if partner_search_is_id(search):
        return Q(external_id=search.upper())
    return Q(name__icontains=search)


def partner_search_is_id(search: str) -> bool:
    return search[:1] in "pP" and search[1:].isdigit()


def partner_list(*, search: str = "", tier: str = "", status: str = "") -> QuerySet[Partner]:
    qs = Partner.objects.select_related("account_owner")
    if search:
        qs = qs.filter(partner_search_filter(search))
    if tier:
        qs = qs.filter(tier=tier)
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("external_id")


# Live Feed ------------------------------------------------------------------------

# Each sort walks one PartnerScore index (see ml.models.PartnerScore.Meta.indexes) so the
# first page of 100k partners is read from the top of an index, not sorted in full.
FEED_SORTS = {
    "urgency": ("current_score__urgency_rank", "-current_score__risk", "pk"),
    "risk": ("-current_score__risk", "pk"),
    "revenue": ("-current_score__revenue_at_risk", "pk"),
    # Biggest rise since the previous run first; partners with nothing to compare come last.
    "change": (F("current_score__risk_change").desc(nulls_last=True), "pk"),
}


# The same orders in Python, for a page read by id (CappedPaginator): the values they need,
# read as (pk, *values) tuples.
FEED_SORT_VALUES = {
    "urgency": ("current_score__urgency_rank", "current_score__risk"),
    "risk": ("current_score__risk",),
    "revenue": ("current_score__revenue_at_risk",),
    "change": ("current_score__risk_change",),
}
FEED_SORT_KEYS: dict[str, Callable[[tuple], tuple]] = {
    "urgency": lambda row: (row[1], -row[2], row[0]),
    "risk": lambda row: (-row[1], row[0]),
    "revenue": lambda row: (-row[1], row[0]),
    "change": lambda row: (row[1] is None, -(row[1] or 0), row[0]),
}


def feed_sort_in_memory(sort: str) -> tuple[tuple[str, ...], Callable[[tuple], tuple]]:
    sort = sort if sort in FEED_SORTS else "urgency"
    return FEED_SORT_VALUES[sort], FEED_SORT_KEYS[sort]


# What changed since the previous run: "new" crossed into at risk, "worse" rose at least a point.
def feed_change_filter(change: str) -> Q:
    level = settings.AT_RISK_LEVEL
    if change == "new":
        return Q(current_score__risk__gte=level, current_score__previous_risk__lt=level)
    return Q(current_score__risk_change__gte=WORSE_BY)


FEED_CHANGES = ("new", "worse")
FEED_PAGE_SIZE = 50
# Counting every match of a loose filter over 100k rows costs more than the page itself
# (25-40 ms at a 10,000 cap, measured by bench/feed_bench.py); past this many the feed
# says "1,000+" (20 pages: a triage list is narrowed with filters, not paged through).
FEED_COUNT_CAP = 1_000
# A name search counts (and reads by id) up to this many matches (see CappedPaginator).
FEED_READ_BY_ID_CAP = 2_000
# How long a dense name search is remembered (within its scoring run; see CappedPaginator): a
# partner renamed or churned meanwhile can make "2,001+" one or two too many, never a wrong row.
FEED_DENSE_MEMO_SECONDS = 3600
FEED_DENSE_MEMO_PREFIX = "retention:feed-dense:"
# From this many rows in, a page reads its ids first and then its rows by id: PostgreSQL runs
# the SELECT list's last-intervention subquery also for every row OFFSET skips (page 20: 1,000
# runs, 6,400 buffers and 24 ms for 50 rows, bench/feed_bench.py).
FEED_DEEP_OFFSET = 200


def partner_live_feed(
    *,
    sort: str = "urgency",
    tier: str = "",
    bucket: str = "",
    owner: int | None = None,
    not_contacted: bool = False,
    search: str = "",
    change: str = "",
    dense_search: bool = False,
) -> QuerySet[Partner]:
    """Active, scored partners for the Live Feed, with their last intervention; one query per page.

    `dense_search`: a name search that matches thousands also tests the copy of the name on
    the current score, which the sort's index walk reads anyway (see LiveFeedQuery)."""
    last = Intervention.objects.filter(partner=OuterRef("pk")).order_by("-created_at", "-pk")
    qs = (
        Partner.objects.filter(status=Partner.Status.ACTIVE, current_score__isnull=False)
        .select_related("current_score", "account_owner")
        .annotate(
            # One subquery for the four fields (a JSON object, read by last_intervention()):
            # four made PostgreSQL walk the partner's interventions four times a row, also
            # for every row an OFFSET skips (page 20: 4,000 walks), and cost the ORM 4 ms to
            # compile on every page view (bench/feed_bench.py).
            last_intervention=Subquery(
                last.values(
                    json=JSONObject(
                        action="action",
                        review_status="review_status",
                        outbox_status="email_outbox__status",
                        at="created_at",
                    )
                )[:1]
            ),
        )
    )
    if tier:
        qs = qs.filter(tier=tier)
    if bucket:
        # urgency_rank is the leading column of the urgency index; bucket has none.
        qs = qs.filter(current_score__urgency_rank=BUCKET_URGENCY_RANK[bucket])
    if owner:
        qs = qs.filter(account_owner_id=owner)
    if not_contacted:
        qs = qs.filter(~Exists(Intervention.objects.filter(partner=OuterRef("pk"))))
    if change in FEED_CHANGES:
        qs = qs.filter(feed_change_filter(change))
    search = search.strip()
    if search:
        qs = qs.filter(partner_search_filter(search))
        if dense_search and not partner_search_is_id(search):
            qs = qs.filter(current_score__partner_name__icontains=search)
    return qs.order_by(*FEED_SORTS.get(sort, FEED_SORTS["urgency"]))


# What a feed row shows, read as plain values: building 150 model instances and decoding
# every driver list cost more than the query itself (bench/feed_bench.py).
FEED_ROW_FIELDS = (
    "external_id",
    "name",
    "tier",
    "monthly_revenue",
    "last_intervention",
)
FEED_ROW_RELATED = {
    "bucket": F("current_score__bucket"),
    "risk": F("current_score__risk"),
    "p_7d": F("current_score__p_7d"),
    "p_30d": F("current_score__p_30d"),
    "p_90d": F("current_score__p_90d"),
    "revenue_at_risk": F("current_score__revenue_at_risk"),
    "previous_risk": F("current_score__previous_risk"),
    "previous_as_of": F("current_score__previous_as_of"),
    "top_driver": KeyTextTransform("text", KeyTransform("0", "current_score__drivers")),
    "owner_first": F("account_owner__first_name"),
    "owner_last": F("account_owner__last_name"),
    "owner_username": F("account_owner__username"),
    # The do-not-contact badge (a left join on the one-to-one list).
    "do_not_contact_id": F("do_not_contact__id"),
}


def last_intervention(row: dict) -> tuple[str, str, str | None, dt.datetime | None]:
    """(action, review status, outbox status, created at) of a feed row's last intervention,
    ("", "", None, None) for a partner never contacted."""
    last = row["last_intervention"]
    if not last:
        return "", "", None, None
    return last["action"], last["review_status"], last["outbox_status"], dt.datetime.fromisoformat(last["at"])


def partner_live_feed_rows(feed: QuerySet[Partner]) -> QuerySet:
    """The feed's rows as dicts: FEED_ROW_FIELDS plus FEED_ROW_RELATED."""
    return feed.values(*FEED_ROW_FIELDS, **FEED_ROW_RELATED)


# Placeholders the feed's SQL is compiled with, once per filter combination (see LiveFeedQuery):
# an owner id and searches no real request sends.
_OWNER = -7_000_001
_SEARCH_NAME = "zqxjfeedsearchzqxj"
_SEARCH_ID = "P9007199254740993"


def _search_kind(search: str) -> str:
    if not search:
        return ""
    return "id" if partner_search_is_id(search) else "name"


# The walk of a dense name search: the sort's index, one row after the other, on one process.
WALK_PLANNER = {"enable_seqscan": "off", "enable_bitmapscan": "off", "max_parallel_workers_per_gather": "0"}


@lru_cache(maxsize=512)
def _feed_queries(shape: tuple) -> dict[str, CompiledQuery]:
    """The compiled reads of one filter combination: its rows, its count, its sort keys (a
    name search's ids-first read) and a page of rows by id."""
    sort, tier, bucket, by_owner, not_contacted, search_kind, change, _level, page_size = shape
    placeholders: dict[str, Any] = {}
    if by_owner:
        placeholders["owner"] = _OWNER
    if search_kind:
        placeholders["search"] = _SEARCH_ID if search_kind == "id" else _SEARCH_NAME

    def feed(dense_search: bool = False, **args: Any) -> QuerySet[Partner]:
        return partner_live_feed(
            dense_search=dense_search,
            sort=sort,
            tier=tier,
            bucket=bucket,
            owner=args.get("owner"),
            not_contacted=not_contacted,
            search=args.get("search", ""),
            change=change,
        )

    fields, _key = feed_sort_in_memory(sort)
    slots = tuple(range(-1, -page_size - 1, -1))
    return {
        "rows": CompiledQuery(lambda **a: partner_live_feed_rows(feed(**a)), **placeholders),
        "count": CompiledQuery(lambda **a: feed(**a).order_by().values("pk"), **placeholders),
        "keys": CompiledQuery(lambda **a: feed(**a).order_by().values("pk", *fields), **placeholders),
        "ids": CompiledQuery(lambda **a: feed(**a).values("pk"), **placeholders),
        "by_id": CompiledQuery(
            lambda ids, **a: partner_live_feed_rows(feed(**a).filter(pk__in=ids)), ids=slots, **placeholders
        ),
        # A dense name search's page: the sort's index walked in order, testing the score row's
        # copy of the name, the partner joined for the rows that pass. PostgreSQL prices that
        # filter at 0.5% of the rows whatever the word and chose a parallel scan of all 1M
        # scores and a sort instead (157 ms for "Ember" against 5.7 ms walking).
        "walk_rows": CompiledQuery(
            lambda **a: partner_live_feed_rows(feed(dense_search=True, **a)),
            planner=WALK_PLANNER,
            **placeholders,
        ),
        "walk_ids": CompiledQuery(
            lambda **a: feed(dense_search=True, **a).values("pk"), planner=WALK_PLANNER, **placeholders
        ),
    }


class LiveFeedQuery:
    """The Live Feed's reads for one set of filters (partner_live_feed's), sliced like a
    queryset by the paginator. Building and compiling the feed's queryset (a JSON subquery,
    four joins, the filters) cost the ORM 2-3 ms of CPU on every page view and as much again
    for its COUNT (bench/feed_bench.py): each filter combination's SQL is compiled once per
    process and run with the owner and search as parameters."""

    def __init__(self, **filters: Any) -> None:
        self.sort = filters["sort"] if filters.get("sort") in FEED_SORTS else "urgency"
        search = (filters.get("search") or "").strip()
        kind = _search_kind(search)
        self.search_kind = kind
        # Set by the paginator when a name search has more matches than it reads by id.
        self.dense = False
        self.args: dict[str, Any] = {}
        if filters.get("owner"):
            self.args["owner"] = filters["owner"]
        if kind:
            self.args["search"] = search.upper() if kind == "id" else search
        change = filters.get("change") or ""
        self.shape = (
            self.sort,
            filters.get("tier") or "",
            filters.get("bucket") or "",
            bool(filters.get("owner")),
            bool(filters.get("not_contacted")),
            kind,
            change if change in FEED_CHANGES else "",
            settings.AT_RISK_LEVEL,  # compiled into the "new at risk" filter
            FEED_PAGE_SIZE,
        )

    def _query(self, part: str) -> CompiledQuery:
        return _feed_queries(self.shape)[part]

    def count(self, *, limit: int) -> int:
        return self._query("count").count(limit=limit, **self.args)

    def sort_keys(self, *, limit: int) -> list[tuple]:
        """(pk, *the sort's values) of at most `limit` rows, in no order."""
        rows, _names = self._query("keys").tuples(limit=limit, **self.args)
        return [tuple(row) for row in rows]

    def by_id(self, ids: list[int]) -> list[dict]:
        """The rows of these partners (at most a page), in the feed's order."""
        return self._query("by_id").rows(ids=ids, **self.args) if ids else []

    def __getitem__(self, page: slice) -> list[dict]:
        start = page.start or 0
        if page.stop <= start:  # an empty first page: nothing to read
            return []
        # PostgreSQL only: the walk is there to steer its planner, and SQLite (the demo) loses the
        # copy's rename trigger whenever a migration remakes retention_partner.
        walk = "walk_" if self.dense and connection.vendor == "postgresql" else ""
        if start >= FEED_DEEP_OFFSET:
            ids = self._query(f"{walk}ids").rows(limit=page.stop - start, offset=start, **self.args)
            return self.by_id([row["pk"] for row in ids])
        return self._query(f"{walk}rows").rows(limit=page.stop - start, offset=start, **self.args)


class CappedPaginator(Paginator):
    """A paginator that counts at most `cap` rows past the requested page (then `capped` is
    True and `floor` is the lower bound it knows), so counting stays cheap at 100k rows while
    every page keeps a Next link until the rows really end."""

    def __init__(
        self,
        object_list: LiveFeedQuery,
        per_page: int,
        cap: int | None = None,
        *,
        page: Any = None,
        known_count: int | None = None,
        read_by_id: tuple[tuple[str, ...], Callable[[tuple], Any]] | None = None,
        run_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.cap = cap if cap is not None else FEED_COUNT_CAP
        self.run_id = run_id  # the scoring run the feed shows: what a dense search is remembered by
        # The unfiltered feed's size is the scoring run's own count: exact, and free.
        self.known_count = known_count
        self.read_by_id = read_by_id
        try:
            # Bounded: a huge page number made LIMIT overflow (beyond the rows it is the last page).
            requested = min(max(1, int(page)), 10**6)
        except (TypeError, ValueError):
            requested = 1
        # Sliced like a queryset, counted by count() below: all Paginator asks of it.
        super().__init__(cast(Any, object_list), per_page, **kwargs)
        self.feed = object_list
        self.floor = (requested - 1) * self.per_page + self.per_page + self.cap
        if read_by_id:
            self.floor = max(self.floor, FEED_READ_BY_ID_CAP)

    @cached_property
    def count(self) -> int:
        if self.known_count is not None:
            return self.known_count
        if not self.read_by_id:
            return self.feed.count(limit=self.floor + 1)
        # A filter no index walks in the feed's order (a name search): the counting query
        # returns the ids and sort keys instead, and when they are all there the page is read
        # by its 50 ids. Otherwise PostgreSQL walks the sort's index testing every
        # partner's name: "globex acme" read 19k buffers for 50 of its 1,203 rows
        # (bench/feed_bench.py).
        _fields, key = self.read_by_id
        memo = self._dense_memo_key()
        if memo and self.floor == FEED_READ_BY_ID_CAP and cache.get(memo):
            # Known from an earlier page view of this run: more matches than are read by id, so
            # the count is capped at this floor and the page walks, without the keys query
            # ("Ember" at 1M: 11 ms for 2,001 keys thrown away).
            self.feed.dense = True
            return self.floor + 1
        matches = self.feed.sort_keys(limit=self.floor + 1)
        if len(matches) <= self.floor:
            # In the feed's order here (an ORDER BY in SQL walks the sort's index again).
            self.ids = [row[0] for row in sorted(matches, key=key)]
        elif self.feed.search_kind == "name":
            # So many that the walk meets one every few dozen rows (LiveFeedQuery).
            self.feed.dense = True
            if memo and len(matches) > FEED_READ_BY_ID_CAP:
                cache.set(memo, True, timeout=FEED_DENSE_MEMO_SECONDS)
        return len(matches)

    def _dense_memo_key(self) -> str | None:
        """The cache key that remembers this name search (with its other filters) as dense in
        the feed's scoring run; None for other searches or without a run."""
        if self.run_id is None or self.feed.search_kind != "name":
            return None
        what = (self.feed.shape, sorted(self.feed.args.items()), FEED_READ_BY_ID_CAP)
        digest = hashlib.sha256(repr(what).encode()).hexdigest()
        return f"{FEED_DENSE_MEMO_PREFIX}{self.run_id}:{digest[:32]}"

    ids: list[int] | None = None

    def page(self, number: Any) -> Any:
        number = self.validate_number(number)
        if self.ids is None:
            return super().page(number)
        bottom = (number - 1) * self.per_page
        return Page(self.feed.by_id(self.ids[bottom : bottom + self.per_page]), number, self)

    @property
    def capped(self) -> bool:
        return self.known_count is None and self.count > self.floor


def feed_dense_memos_forget() -> None:
    """Forget every remembered dense search (a bench's first views, a test's clean start)."""
    cast(Any, cache).delete_pattern(f"*{FEED_DENSE_MEMO_PREFIX}*")  # django-redis only


def latest_scoring_run_id() -> int | None:
    """The newest finished scoring run: the Live Feed re-renders when it changes."""
    return (
        ScoringRun.objects.filter(status=ScoringRun.Status.SUCCEEDED, backfill=False)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )


def team_members() -> QuerySet:
    """People an intervention can be assigned to, and Live Feed owners."""
    return (
        get_user_model()
        .objects.filter(is_active=True, groups__name__in=[RETENTION, MANAGERS])
        .distinct()
        .order_by("first_name", "username")
    )


TEAM_CHOICES_CACHE_KEY = "retention:team-member-choices"


def team_member_choices() -> list[tuple[int, str]]:
    """(pk, name) of the team, for the Live Feed's owner filter on every page view: cached,
    and dropped whenever a user or a group membership changes (retention.signals), so the list
    is never stale; without Redis it is read from the database each time. Forms that
    validate a choice (assigning an intervention) still read `team_members()`."""
    choices = cache.get(TEAM_CHOICES_CACHE_KEY)
    if choices is None:
        choices = [(u.pk, u.get_full_name() or u.username) for u in team_members()]
        cache.set(TEAM_CHOICES_CACHE_KEY, choices, timeout=3600)
    return choices


# Partner page ----------------------------------------------------------------------


def partner_for_page(*, external_id: str) -> Partner:
    return get_object_or_404(
        Partner.objects.select_related(
            "account_owner", "current_score__run", "current_score__model_version", "do_not_contact"
        ),
        external_id=external_id,
    )


def partner_risk_history(*, partner: Partner, limit: int = 60) -> list[RiskScore]:
    """The partner's scores by the date they describe (a run's as-of date: in a simulated
    world, or for a backfilled month, that is not when the run happened), oldest first,
    one per date (the latest run's)."""
    rows = (
        RiskScore.objects.filter(partner=partner)
        .select_related("run")
        .order_by("-run__as_of", "-scored_at")
        .only("risk", "bucket", "scored_at", "run__as_of")
    )
    by_date: dict = {}
    for row in rows[: limit * 2]:
        row.as_of = row.run.as_of or row.scored_at.date()  # type: ignore[attr-defined]  # for the chart
        by_date.setdefault(row.as_of, row)  # type: ignore[attr-defined]
    return list(by_date.values())[:limit][::-1]


def partner_activity(*, partner: Partner, months: int = 24) -> list[MonthlyActivity]:
    rows = list(MonthlyActivity.objects.filter(partner=partner).order_by("-month")[:months])
    return rows[::-1]


def partner_payments(*, partner: Partner, limit: int = 24, today: dt.date | None = None) -> list[dict]:
    """Recent invoices with how late each was paid (or is, if still open), as of the desk's
    today: the simulated world's when it has one, so the page agrees with the drivers."""
    if today is None:
        today = scoring_as_of()
    rows = list(Invoice.objects.filter(partner=partner).order_by("-issued_on")[:limit])[::-1]
    out = []
    for inv in rows:
        end = inv.paid_on or today
        out.append(
            {
                "invoice": inv,
                "days_late": max(0, (end - inv.due_on).days),
                "open": inv.paid_on is None,
                "not_yet_due": inv.paid_on is None and today <= inv.due_on,
            }
        )
    return out


def partner_timeline(*, partner: Partner) -> QuerySet[Intervention]:
    return (
        Intervention.objects.filter(partner=partner)
        .select_related("created_by", "assigned_to", "outcome_set_by", "email_outbox")
        .order_by("-created_at", "-pk")
    )
