import datetime as dt

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from churnsite.access import AuthedHttpRequest, permission_required
from churnsite.http import partial_template
from crm_sim import selectors
from crm_sim.client import CrmError, TaskQuery, crm_backend_is_simulated, get_crm_client
from crm_sim.forms import CompleteTaskForm, TaskViewForm
from crm_sim.models import CrmTask
from crm_sim.services import crm_task_complete

TEMPLATE = "crm_sim/task_list.html"
REMOTE_TEMPLATE = "crm_sim/remote_task_list.html"


@permission_required("crm_sim.view_crmtask")
@require_GET
def task_list(request: AuthedHttpRequest) -> HttpResponse:
    form = TaskViewForm(request.GET or None)
    view = form.cleaned_data["view"] if form.is_valid() else ""
    today = timezone.localdate()
    if not crm_backend_is_simulated():
        return _remote_task_list(request, view=view, today=today)
    page = Paginator(selectors.crm_open_tasks(view=view, user=request.user, today=today), 50).get_page(
        request.GET.get("page")
    )
    template = partial_template(request, TEMPLATE, {"crm-views": "views_nav", "results": "results"})
    if template.endswith("#views_nav"):
        return render(request, template, {"view": view, "views": _views(request, today)})
    context = _counters(request, view=view, today=today) | {
        "page": page,
        "open_total": page.paginator.count,
        "complete_form": CompleteTaskForm(),
    }
    return render(request, template, context)


def _remote_query(view: str, *, user, today) -> TaskQuery:
    """The page's filters as a contract query (the CRM holds the tasks, not our table)."""
    if view == "mine":
        return TaskQuery(status="open", assigned_to_username=user.get_username())
    if view == "overdue":
        return TaskQuery(status="open", due_before=today)
    if view == "week":
        monday, sunday = selectors.week_bounds(today)
        return TaskQuery(status="open", due_on_or_after=monday, due_before=sunday + dt.timedelta(days=1))
    return TaskQuery(status="open")


def _remote_task_list(request: AuthedHttpRequest, *, view: str, today) -> HttpResponse:
    """A real CRM's open tasks, read through the CRM client (no Simulation Mode banner)."""
    error, tasks = "", []
    try:
        tasks = get_crm_client().list_tasks(_remote_query(view, user=request.user, today=today))
    except CrmError as exc:
        error = f"The CRM did not answer ({exc.code}): {exc}"
    context = {
        "tasks": tasks,
        "error": error,
        "view": view,
        "views": list(selectors.VIEWS.items()),
        "today": today,
        "complete_form": CompleteTaskForm(),
    }
    return render(request, REMOTE_TEMPLATE, context, status=502 if error else 200)


def _views(request: AuthedHttpRequest, today) -> list[tuple[str, str, int]]:
    counts = selectors.crm_view_counts(user=request.user, today=today)
    return [(key, label, counts[key or "all"]) for key, label in selectors.VIEWS.items()]


def _counters(request: AuthedHttpRequest, *, view: str, today) -> dict:
    """What changes on the page when a task closes: the filter counts and the closed list."""
    return {
        "view": view,
        "views": _views(request, today),
        "closed": selectors.crm_recently_closed(view=view, user=request.user),
        "today": today,
    }


@permission_required("crm_sim.change_crmtask")
@require_POST
def task_complete(request: AuthedHttpRequest, external_id: str) -> HttpResponse:
    if not crm_backend_is_simulated():
        return _remote_task_complete(request, external_id)
    task = get_object_or_404(CrmTask.objects.select_related("partner"), external_id=external_id)
    form = CompleteTaskForm(request.POST)
    error = ""
    if form.is_valid():
        try:
            task = crm_task_complete(task=task, outcome=form.cleaned_data["outcome"], actor=request.user)
        except (ValidationError, PermissionDenied) as exc:
            error = "; ".join(getattr(exc, "messages", None) or [str(exc)])
    else:
        error = "Choose an outcome."
    if request.htmx:
        today = timezone.localdate()
        view_form = TaskViewForm(request.POST)
        view = view_form.cleaned_data["view"] if view_form.is_valid() else ""
        if error:
            task = CrmTask.objects.select_related("partner", "assigned_to", "completed_by").get(pk=task.pk)
            context = {"task": task, "error": error, "today": today, "complete_form": form, "view": view}
            return render(request, TEMPLATE + "#task_row", context)
        # The row moves to "Recently closed"; the counters come with it (hx-swap-oob), in this
        # response, instead of a second request that could show them stale.
        context = _counters(request, view=view, today=today) | {
            "open_total": selectors.crm_open_tasks(view=view, user=request.user, today=today).count(),
        }
        return render(request, TEMPLATE + "#completed", context)
    if error:
        messages.error(request, f"{task.external_id}: {error}")
    else:
        messages.success(request, f"{task.external_id} completed: {task.get_outcome_display()}")
    return redirect("crm_sim:task_list")


def _remote_task_complete(request: AuthedHttpRequest, external_id: str) -> HttpResponse:
    """Complete a real CRM's task through the CRM client (which resolves its intervention)."""
    form = CompleteTaskForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose an outcome.")
    else:
        try:
            record = get_crm_client().complete_task(
                external_id, outcome=form.cleaned_data["outcome"], actor=request.user
            )
        except CrmError as exc:
            messages.error(request, f"{external_id}: {exc}")
        else:
            messages.success(request, f"{record.external_id} completed: {record.outcome}")
    view_form = TaskViewForm(request.POST)
    view = view_form.cleaned_data["view"] if view_form.is_valid() else ""
    url = reverse("crm_sim:task_list")
    return redirect(f"{url}?view={view}" if view else url)
