import datetime as dt

from crm_sim.selectors import crm_open_tasks, crm_view_counts, week_bounds

TODAY = dt.date(2026, 2, 11)  # a Wednesday


def test_the_week_runs_monday_to_sunday():
    assert week_bounds(TODAY) == (dt.date(2026, 2, 9), dt.date(2026, 2, 15))


def test_the_page_filters_select_mine_overdue_and_this_weeks_open_tasks(
    db, retention_user, manager, make_task
):
    last_week = make_task(due_on=dt.date(2026, 2, 3), assigned_to=retention_user)
    monday = make_task(due_on=dt.date(2026, 2, 9))
    sunday = make_task(due_on=dt.date(2026, 2, 15), assigned_to=manager)
    next_week = make_task(due_on=dt.date(2026, 2, 16), assigned_to=retention_user)
    make_task(due_on=dt.date(2026, 2, 10))  # completed below: never listed as open
    from crm_sim.client import get_crm_client
    from crm_sim.models import CrmTask

    get_crm_client().complete_task(
        CrmTask.objects.get(due_on=dt.date(2026, 2, 10)).external_id, outcome="none"
    )

    def ids(view):
        return [t.external_id for t in crm_open_tasks(view=view, user=retention_user, today=TODAY)]

    assert ids("") == [t.external_id for t in (last_week, monday, sunday, next_week)]
    assert ids("mine") == [last_week.external_id, next_week.external_id]
    assert ids("overdue") == [last_week.external_id, monday.external_id]
    assert ids("week") == [monday.external_id, sunday.external_id]
    assert crm_view_counts(user=retention_user, today=TODAY) == {"all": 4, "mine": 2, "overdue": 2, "week": 2}
