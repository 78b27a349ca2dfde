"""Reads for the morning desk: whose partners a person sees, the header strip, today's tasks."""

import datetime as dt
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db.models import DecimalField, Exists, F, Func, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.db.models.lookups import GreaterThan

from churnsite.compiled import CompiledQuery
from crm_sim.models import CrmTask
from desk.models import ChatAlert, DeskPreference, SavedView
from ml.levels import WORSE_BY
from ml.models import PartnerScore, ScoringRun, ScoringSummary
from retention.models import Intervention, Partner


def owns_partners(user_ref) -> Exists:
    """Whether a user owned scored partners at some scoring run, read from the small per-owner
    summary table: EXISTS on retention_partner.account_owner_id is planned as a sequential
    scan (the planner expects thousands of rows per owner and stops at the first), which
    reads all 100k partners for someone who owns none (120 ms, bench/feed_bench.py)."""
    return Exists(ScoringSummary.objects.filter(owner=user_ref))


def feed_scope_default(*, user: User) -> str:
    """The person's remembered choice, else "mine" for anyone who owns partners (one query)."""
    row = (
        get_user_model()
        .objects.filter(pk=user.pk)
        .annotate(owns=owns_partners(OuterRef("pk")))
        .values_list("desk__feed_scope", "owns")
        .first()
    )
    if row is None:
        return DeskPreference.Scope.ALL
    chosen, owns = row
    if chosen:
        return chosen
    return DeskPreference.Scope.MINE if owns else DeskPreference.Scope.ALL


def feed_scope(request) -> str:
    """The scope for this request. DeskModelBackend loads the preference and `owns_partners`
    with the user; any other user object costs one query."""
    user = request.user
    if not hasattr(user, "owns_partners"):
        return feed_scope_default(user=user)
    try:
        chosen = user.desk.feed_scope
    except DeskPreference.DoesNotExist:
        chosen = ""
    if chosen:
        return chosen
    return DeskPreference.Scope.MINE if user.owns_partners else DeskPreference.Scope.ALL


def _count(qs: QuerySet) -> Subquery:
    # A scalar COUNT subquery: COUNT as a plain Func adds no GROUP BY, so it is one row.
    # COUNT(*), not COUNT(id): a count that names no column is an index-only scan of the
    # filter's index (the strip's tasks due: 1,727 -> 6 buffers at 100k, bench/feed_bench.py).
    counted = qs.order_by().annotate(n=Func(template="COUNT(*)", output_field=IntegerField())).values("n")
    return Subquery(counted, output_field=IntegerField())


def tasks_due(*, owner_id: int | None, today: dt.date) -> QuerySet[CrmTask]:
    """Open CRM tasks due today or overdue, for the partners of `owner_id` (None = everyone's)."""
    qs = CrmTask.objects.filter(status=CrmTask.Status.OPEN, due_on__lte=today)
    if owner_id:
        qs = qs.filter(partner__account_owner_id=owner_id)
    return qs


def drafts_waiting(*, owner_id: int | None) -> QuerySet[Intervention]:
    qs = Intervention.objects.filter(review_status=Intervention.Review.AWAITING)
    if owner_id:
        qs = qs.filter(partner__account_owner_id=owner_id)
    return qs


STRIP_KEYS = ("partners", "at_risk", "new_at_risk", "worse", "revenue_at_risk")


def _desk_strip_query(*, owner_id: int | None, today: dt.date) -> QuerySet:
    summaries = ScoringSummary.objects.filter(run=OuterRef("pk"))
    if owner_id:
        summaries = summaries.filter(owner_id=owner_id)

    def total(field: str, output):
        grouped = summaries.order_by().values("run").annotate(v=Sum(field)).values("v")[:1]
        return Coalesce(Subquery(grouped, output_field=output), 0, output_field=output)

    annotations = {
        key: total(
            key, DecimalField(max_digits=16, decimal_places=2) if key == "revenue_at_risk" else IntegerField()
        )
        for key in STRIP_KEYS
    }
    live = {
        "tasks_due": _count(tasks_due(owner_id=owner_id, today=today)),
        "drafts_waiting": _count(drafts_waiting(owner_id=owner_id)),
        # Churned, reassigned or imported since the run: its counts no longer size the feed.
        # The newest updated_at (one step down partner_updated_at_idx) against the run's end:
        # EXISTS(updated_at > finished_at) was planned as a sequential scan that reads all
        # 100k partners when none changed (36 ms a page view, bench/feed_bench.py).
        "partners_changed": GreaterThan(
            Subquery(Partner.objects.order_by("-updated_at").values("updated_at")[:1]),
            F("finished_at"),
        ),
    }
    return (
        ScoringRun.objects.filter(status=ScoringRun.Status.SUCCEEDED, backfill=False)
        .order_by("-pk")
        .annotate(**annotations, **live)
        .values("pk", "as_of", *annotations, *live)[:1]
    )


# Compiled once per process (one for everyone's strip, one for an owner's): building these
# seven subqueries cost 9 ms of CPU on every feed view.
_STRIP_ALL = CompiledQuery(partial(_desk_strip_query, owner_id=None), today=dt.date(1901, 1, 1))
_STRIP_OWNER = CompiledQuery(_desk_strip_query, owner_id=-1, today=dt.date(1901, 1, 1))


def desk_strip(*, owner_id: int | None, today: dt.date) -> dict:
    """The header strip in one SQL query: the latest scoring run's summary rows (written by
    scoring, per owner) plus live counts of tasks due and drafts waiting. The same row says
    whether any partner changed since the run (`partners_changed`): if none did, the run's
    `partners` is also the exact size of the feed for this owner, and the feed needs no COUNT."""
    if owner_id:
        row = _STRIP_OWNER.first(owner_id=owner_id, today=today)
    else:
        row = _STRIP_ALL.first(today=today)
    if row is None:  # nothing scored yet: only the live counts mean anything
        row = {key: 0 for key in STRIP_KEYS} | {"pk": None, "as_of": None, "partners_changed": True}
        row["tasks_due"] = tasks_due(owner_id=owner_id, today=today).count()
        row["drafts_waiting"] = drafts_waiting(owner_id=owner_id).count()
    row["run_id"] = row.pop("pk")
    row["revenue_at_risk"] = Decimal(str(row["revenue_at_risk"] or 0))
    row["revenue_at_risk_12m"] = row["revenue_at_risk"] * 12
    row["at_risk_line"] = settings.AT_RISK_LEVEL
    return row


# What a task row shows (desk.rows.task_rows).
TASK_ROW_FIELDS = ("external_id", "status", "title", "due_on", "partner__external_id")


def _tasks_today_query(*, owner_id: int | None, today: dt.date) -> QuerySet:
    return tasks_due(owner_id=owner_id, today=today).order_by("due_on", "pk").values(*TASK_ROW_FIELDS)


# Compiled once per process, like the strip: building the query and ten model instances with
# their partners cost 3 ms of CPU on every feed view (bench/feed_bench.py).
_TASKS_ALL = CompiledQuery(partial(_tasks_today_query, owner_id=None), today=dt.date(1901, 1, 1))
_TASKS_OWNER = CompiledQuery(_tasks_today_query, owner_id=-1, today=dt.date(1901, 1, 1))


def tasks_today(*, owner_id: int | None, today: dt.date, limit: int = 10) -> list[dict]:
    """The feed's "Today" list: due today or overdue for my partners, oldest due first, as
    TASK_ROW_FIELDS."""
    if owner_id:
        return _TASKS_OWNER.rows(owner_id=owner_id, today=today, limit=limit)
    return _TASKS_ALL.rows(today=today, limit=limit)


def _saved_views_query(*, user_id: int) -> QuerySet:
    return (
        SavedView.objects.filter(Q(owner_id=user_id) | Q(shared=True))
        .order_by("name", "pk")
        .values(
            "pk", "name", "shared", "owner_id", "owner__first_name", "owner__last_name", "owner__username"
        )
    )


# Compiled once per process: the navigation lists them on every page.
_SAVED_VIEWS = CompiledQuery(_saved_views_query, user_id=-1)


def saved_views_for(*, user: User) -> list[dict]:
    """A person's own views and the ones the team shares: pk, name, shared, owner_id and the
    owner's name."""
    views = _SAVED_VIEWS.rows(user_id=user.pk)
    for view in views:
        full_name = f"{view.pop('owner__first_name')} {view.pop('owner__last_name')}".strip()
        view["owner_name"] = full_name or view.pop("owner__username")
        view.pop("owner__username", None)
    return views


# Morning digest ----------------------------------------------------------------------


def digest_recipients() -> QuerySet:
    """Active people with an email address who own at least one active partner."""
    owns = Partner.objects.filter(account_owner=OuterRef("pk"), status=Partner.Status.ACTIVE)
    return (
        get_user_model()
        .objects.filter(is_active=True)
        .exclude(email="")
        .filter(Exists(owns))
        .select_related("desk")
        .order_by("pk")
    )


def digest_settings(*, user: User) -> dict:
    """The person's digest switch, local time and time zone (defaults from settings)."""
    import zoneinfo

    try:
        pref = user.desk
    except DeskPreference.DoesNotExist:
        pref = None
    at = pref.digest_time if pref and pref.digest_time else dt.time.fromisoformat(settings.DIGEST_TIME)
    tz = (pref.digest_timezone if pref and pref.digest_timezone else "") or settings.DIGEST_TIMEZONE
    return {
        "enabled": pref.digest_enabled if pref else True,
        "time": at,
        "timezone": zoneinfo.ZoneInfo(tz),
        "timezone_name": tz,
        "last_on": pref.last_digest_on if pref else None,
    }


def _digest_row(score) -> dict:
    return {
        "id": score["partner__external_id"],
        "name": score["partner__name"],
        "risk": score["risk"],
        "previous_risk": score["previous_risk"],
        "points": round((score["risk"] - score["previous_risk"]) * 100)
        if score["previous_risk"] is not None
        else None,
        "driver": ((score["drivers"] or [{}])[0] or {}).get("text", "") if score["drivers"] else "",
    }


def digest_for(*, user: User, today: dt.date, limit: int = 10) -> dict:
    """What the morning digest tells one owner: the strip, who is new at risk, the biggest
    rises since the last run, tasks due, drafts waiting."""

    mine = PartnerScore.objects.filter(partner__account_owner=user, partner__status=Partner.Status.ACTIVE)
    fields = ("partner__external_id", "partner__name", "risk", "previous_risk", "drivers")
    level = settings.AT_RISK_LEVEL
    new = mine.filter(risk__gte=level, previous_risk__lt=level).order_by("-risk").values(*fields)
    rises = mine.filter(risk_change__gte=WORSE_BY).order_by("-risk_change").values(*fields)
    tasks = list(
        tasks_due(owner_id=user.pk, today=today).select_related("partner").order_by("due_on", "pk")[:limit]
    )
    drafts = list(drafts_waiting(owner_id=user.pk).select_related("partner").order_by("created_at")[:limit])
    digest = {
        "user": user,
        "today": today,
        "strip": desk_strip(owner_id=user.pk, today=today),
        "new_at_risk": [_digest_row(s) for s in new[:limit]],
        "rises": [_digest_row(s) for s in rises[:limit]],
        "tasks": tasks,
        "drafts": drafts,
    }
    digest["empty"] = not (digest["new_at_risk"] or digest["rises"] or tasks or drafts)
    return digest


def chat_alert_status(*, limit: int = 5) -> dict:
    """For the Agent page: is the webhook set, what is queued, and what failed lately."""
    from django.conf import settings
    from django.db.models import Count

    counts = ChatAlert.objects.aggregate(
        pending=Count("pk", filter=Q(status=ChatAlert.Status.PENDING)),
        failed=Count("pk", filter=Q(status=ChatAlert.Status.FAILED)),
        sent=Count("pk", filter=Q(status=ChatAlert.Status.SENT)),
    )
    troubled = (
        ChatAlert.objects.exclude(last_error="")
        .select_related("partner")
        .order_by("-updated_at", "-pk")[:limit]
    )
    return {"configured": bool(settings.CHAT_WEBHOOK_URL), **counts, "troubled": list(troubled)}
