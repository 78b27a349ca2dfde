"""Today's tasks as the feed's panel shows them, rendered like the feed's rows."""

import datetime as dt
import html

from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from crm_sim.models import CrmTask

_SLOT = "TASK-ID"

# One task row (an <li>), for the feed's panel and for the htmx answer to complete/snooze.
# Rendered here, every value escaped, rather than through a template: ten rows of ~20
# variables, two {% csrf_token %} each, cost 1-2 ms of CPU on every feed view
# (bench/feed_bench.py).
_OPEN = (
    '<li class="task-row" id="task-{ext}" data-task="{ext}">\n'
    '  <a href="{partner_url}">{partner_id}</a>\n'
    '  {title} · <span class="{due_class}">due {due}</span>\n'
    "  {overdue}\n"
    '  <form class="inline" method="post" action="{complete_url}"\n'
    '        hx-post="{complete_url}" hx-target="#task-{ext}" hx-swap="outerHTML">\n'
    "    {csrf}\n"
    '    <label class="crm-sr" for="outcome-{ext}">Outcome for {partner_id}</label>\n'
    '    <select name="outcome" id="outcome-{ext}">\n'
    '      <option value="none">No outcome</option><option value="saved">Saved</option>'
    '<option value="churned">Churned</option>\n'
    "    </select>\n"
    '    <button type="submit">Complete</button>\n'
    "  </form>\n"
    '  <form class="inline" method="post" action="{snooze_url}"\n'
    '        hx-post="{snooze_url}" hx-target="#task-{ext}" hx-swap="outerHTML">\n'
    "    {csrf}\n"
    '    <button type="submit" name="days" value="1">Snooze 1 day</button>\n'
    '    <button type="submit" name="days" value="7">Snooze 1 week</button>\n'
    "  </form>\n"
    "  {notes}\n"
    "</li>\n"
)
_CLOSED = (
    '<li class="task-row" id="task-{ext}" data-task="{ext}">\n'
    '  <span class="muted">✓ {partner_id} {title}: {status}</span>\n'
    "  {notes}\n"
    "</li>\n"
)
_OVERDUE = '<span class="badge crm-badge-overdue">Overdue</span>'


def task_values(task: CrmTask) -> dict:
    """A task as desk.selectors.tasks_today reads it (TASK_ROW_FIELDS)."""
    return {
        "external_id": task.external_id,
        "status": task.status,
        "title": task.title,
        "due_on": task.due_on,
        "partner__external_id": task.partner.external_id,
    }


def task_rows(
    tasks: list[dict], *, today: dt.date, csrf_token: str, notice: str = "", error: str = ""
) -> list[dict]:
    """One dict per task (TASK_ROW_FIELDS), its `html` the row. Each URL is reversed once per
    call, not per row. `notice` and `error` are said in every row (the htmx answer has one)."""
    e = html.escape
    complete = reverse("desk:task_complete", args=[_SLOT])
    snooze = reverse("desk:task_snooze", args=[_SLOT])
    partner = reverse("retention:partner_detail", args=[_SLOT])
    csrf = f'<input type="hidden" name="csrfmiddlewaretoken" value="{e(csrf_token)}">' if csrf_token else ""
    notes = "".join(
        (
            f'<span class="muted" role="status">{e(notice)}</span>' if notice else "",
            f'<span class="error" role="alert">{e(error)}</span>' if error else "",
        )
    )
    rows = []
    for task in tasks:
        # A task not yet synced has no CRM id: its URLs say so, as {% url %} did.
        ext, partner_id, due_on = str(task["external_id"]), task["partner__external_id"], task["due_on"]
        is_open = task["status"] == CrmTask.Status.OPEN
        values = {
            "ext": e(ext),
            "partner_id": e(partner_id),
            "title": e(task["title"]),
            "notes": notes,
        }
        if is_open:
            overdue = due_on < today
            row = _OPEN.format(
                **values,
                partner_url=e(partner.replace(_SLOT, partner_id)),
                complete_url=e(complete.replace(_SLOT, ext)),
                snooze_url=e(snooze.replace(_SLOT, ext)),
                due_class="crm-overdue" if overdue else "",
                due=f"{due_on.day} {due_on:%b}",
                overdue=_OVERDUE if overdue else "",
                csrf=csrf,
            )
        else:
            row = _CLOSED.format(**values, status=e(str(CrmTask.Status(task["status"]).label).lower()))
        rows.append({"external_id": task["external_id"], "is_open": is_open, "html": _safe(row)})
    return rows


def _safe(row: str) -> SafeString:
    return mark_safe(row)  # noqa: S308 - every value in the row is escaped
