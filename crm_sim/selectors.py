"""Reads for the CRM page and the simulated backend."""

import datetime as dt

from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from crm_sim.models import CrmTask

# The CRM page's filters: "" is every open task.
VIEWS = {
    "": "All open",
    "mine": "Mine",
    "overdue": "Overdue",
    "week": "Due this week",
}


def week_bounds(today: dt.date) -> tuple[dt.date, dt.date]:
    """Monday and Sunday of the calendar week containing `today`."""
    monday = today - dt.timedelta(days=today.weekday())
    return monday, monday + dt.timedelta(days=6)


def _view_filter(view: str, *, user: User, today: dt.date) -> Q:
    if view == "mine":
        return Q(assigned_to=user.pk)
    if view == "overdue":
        return Q(due_on__lt=today)
    if view == "week":
        # Calendar week, so a task due Monday that slipped still counts as this week's work.
        monday, sunday = week_bounds(today)
        return Q(due_on__gte=monday, due_on__lte=sunday)
    return Q()


def crm_open_tasks(*, view: str = "", user: User, today: dt.date | None = None) -> QuerySet[CrmTask]:
    """Open tasks for one of the page's filters (mine = assigned to `user`; overdue =
    due before today; week = due this calendar week), soonest due first."""
    today = today or timezone.localdate()
    return (
        CrmTask.objects.filter(status=CrmTask.Status.OPEN)
        .filter(_view_filter(view, user=user, today=today))
        .select_related("partner", "assigned_to")
        .order_by("due_on", "id")
    )


def crm_recently_closed(*, view: str = "", user: User, limit: int = 10) -> list[CrmTask]:
    """The latest completed or cancelled tasks (only the user's own under "mine")."""
    qs = CrmTask.objects.exclude(status=CrmTask.Status.OPEN)
    if view == "mine":
        qs = qs.filter(assigned_to=user.pk)
    return list(
        qs.select_related("partner", "completed_by").order_by("-completed_at", "-updated_at", "-id")[:limit]
    )


def crm_view_counts(*, user: User, today: dt.date | None = None) -> dict[str, int]:
    """Open-task counts for every filter, in one query."""
    today = today or timezone.localdate()
    aggregates = {
        key or "all": Count("id", filter=_view_filter(key, user=user, today=today)) for key in VIEWS
    }
    return CrmTask.objects.filter(status=CrmTask.Status.OPEN).aggregate(**aggregates)


def crm_task_list(
    *,
    status: str | None = None,
    partner_external_id: str | None = None,
    assigned_to_username: str | None = None,
    intervention_id: int | None = None,
    due_before: dt.date | None = None,
    due_on_or_after: dt.date | None = None,
    limit: int = 100,
) -> QuerySet[CrmTask]:
    """The backend's list_tasks query."""
    qs = CrmTask.objects.select_related("partner", "assigned_to")
    if status:
        qs = qs.filter(status=status)
    if partner_external_id:
        qs = qs.filter(partner__external_id=partner_external_id)
    if assigned_to_username:
        qs = qs.filter(assigned_to__username=assigned_to_username)
    if intervention_id is not None:
        qs = qs.filter(intervention_id=intervention_id)
    if due_before is not None:
        qs = qs.filter(due_on__lt=due_before)
    if due_on_or_after is not None:
        qs = qs.filter(due_on__gte=due_on_or_after)
    return qs.order_by("due_on", "id")[:limit]
