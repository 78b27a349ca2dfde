from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from churnsite.access import AuthedHttpRequest, permission_required
from churnsite.http import partial_template
from crm_sim import selectors
from crm_sim.forms import CompleteTaskForm, TaskViewForm
from crm_sim.models import CrmTask
from crm_sim.services import crm_task_complete

TEMPLATE = "crm_sim/task_list.html"


@permission_required("crm_sim.view_crmtask")
@require_GET
def task_list(request: AuthedHttpRequest) -> HttpResponse:
    form = TaskViewForm(request.GET or None)
    view = form.cleaned_data["view"] if form.is_valid() else ""
    today = timezone.localdate()
    page = Paginator(selectors.crm_open_tasks(view=view, user=request.user, today=today), 50).get_page(
        request.GET.get("page")
    )
    counts = selectors.crm_view_counts(user=request.user, today=today)
    views = [(key, label, counts[key or "all"]) for key, label in selectors.VIEWS.items()]
    template = partial_template(request, TEMPLATE, {"crm-views": "views_nav", "results": "results"})
    if template.endswith("#views_nav"):
        return render(request, template, {"view": view, "views": views})
    context = {
        "view": view,
        "views": views,
        "page": page,
        "closed": selectors.crm_recently_closed(view=view, user=request.user),
        "today": today,
        "complete_form": CompleteTaskForm(),
    }
    return render(request, template, context)


@permission_required("crm_sim.change_crmtask")
@require_POST
def task_complete(request: AuthedHttpRequest, external_id: str) -> HttpResponse:
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
        task = CrmTask.objects.select_related("partner", "assigned_to", "completed_by").get(pk=task.pk)
        context = {"task": task, "error": error, "today": timezone.localdate(), "complete_form": form}
        response = render(request, TEMPLATE + "#task_row", context)
        if not error:
            # The filter counts above the list listen for this and refresh themselves.
            trigger_client_event(response, "crm-task-completed")
        return response
    if error:
        messages.error(request, f"{task.external_id}: {error}")
    else:
        messages.success(request, f"{task.external_id} completed: {task.get_outcome_display()}")
    return redirect("crm_sim:task_list")
