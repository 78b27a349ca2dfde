from urllib.parse import parse_qsl, urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from churnsite.access import AuthedHttpRequest, permission_required
from crm_sim.models import CrmTask
from crm_sim.services import crm_task_complete, crm_task_snooze
from desk import services
from desk.forms import DigestSettingsForm, SavedViewForm, ScopeForm, SnoozeForm
from desk.models import SavedView
from desk.rows import task_rows, task_values
from desk.selectors import digest_for, digest_settings

# The feed's own parameters: a saved view keeps these and nothing else (no page, no run).
FEED_PARAMS = ("q", "sort", "tier", "bucket", "owner", "not_contacted", "change")


def _errors(exc: Exception) -> str:
    return "; ".join(getattr(exc, "messages", None) or [str(exc)])


@require_POST
@permission_required("retention.view_partner")
def scope_set(request: AuthedHttpRequest) -> HttpResponse:
    """The "My partners / All partners" toggle, remembered per person."""
    form = ScopeForm(request.POST)
    if form.is_valid():
        services.desk_preference_set_scope(user=request.user, scope=form.cleaned_data["scope"])
    return redirect("retention:home")


def _task(external_id: str) -> CrmTask:
    return get_object_or_404(CrmTask.objects.select_related("partner"), external_id=external_id)


def _task_row(
    request: AuthedHttpRequest, task: CrmTask, *, notice: str = "", error: str = ""
) -> HttpResponse:
    if not request.htmx:
        if error:
            messages.error(request, f"{task.external_id}: {error}")
        else:
            messages.success(request, f"{task.external_id}: {notice}")
        return redirect("retention:home")
    row = task_rows(
        [task_values(task)],
        today=timezone.localdate(),
        csrf_token=get_token(request),
        notice=notice,
        error=error,
    )[0]
    return HttpResponse(row["html"])


@require_POST
@permission_required("crm_sim.change_crmtask")
def task_complete(request: AuthedHttpRequest, external_id: str) -> HttpResponse:
    task = _task(external_id)
    outcome = request.POST.get("outcome") or CrmTask.Outcome.NONE
    try:
        task = crm_task_complete(task=task, outcome=outcome, actor=request.user)
    except (ValidationError, PermissionDenied) as exc:
        return _task_row(request, task, error=_errors(exc))
    return _task_row(request, task, notice="Completed")


@require_POST
@permission_required("crm_sim.change_crmtask")
def task_snooze(request: AuthedHttpRequest, external_id: str) -> HttpResponse:
    task = _task(external_id)
    form = SnoozeForm(request.POST)
    if not form.is_valid():
        return _task_row(request, task, error="Snooze for 1 day or 1 week")
    try:
        task = crm_task_snooze(
            task=task, days=form.cleaned_data["days"], actor=request.user, today=timezone.localdate()
        )
    except ValidationError as exc:
        return _task_row(request, task, error=_errors(exc))
    return _task_row(request, task, notice=f"Snoozed to {task.due_on.day} {task.due_on:%b}")


def _feed_query(raw: str) -> str:
    return urlencode([(k, v) for k, v in parse_qsl(raw) if k in FEED_PARAMS and v])


@require_POST
@permission_required("retention.view_partner")
def saved_view_create(request: AuthedHttpRequest) -> HttpResponse:
    form = SavedViewForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The view was not saved: give it a name")
        return redirect("retention:home")
    data = form.cleaned_data
    query = _feed_query(data["query"])
    try:
        view = services.saved_view_create(
            owner=request.user, name=data["name"], query=query, shared=data["shared"]
        )
    except ValidationError as exc:
        messages.error(request, _errors(exc))
        return redirect(f"/?{query}" if query else "/")
    messages.success(request, f"Saved the view “{view.name}”{' for the team' if view.shared else ''}")
    return redirect(f"/?{query}" if query else "/")


def _visible_view(request: AuthedHttpRequest, pk: int) -> SavedView:
    return get_object_or_404(SavedView.objects.filter(Q(owner=request.user) | Q(shared=True)), pk=pk)


@require_GET
@permission_required("retention.view_partner")
def saved_view_open(request: AuthedHttpRequest, pk: int) -> HttpResponse:
    view = _visible_view(request, pk)
    return redirect(f"/?{view.query}" if view.query else "/")


@require_POST
@permission_required("retention.view_partner")
def saved_view_delete(request: AuthedHttpRequest, pk: int) -> HttpResponse:
    view = _visible_view(request, pk)
    try:
        services.saved_view_delete(view=view, actor=request.user)
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Deleted the view “{view.name}”")
    return redirect("retention:home")


@permission_required("retention.view_partner")
def digest_preview(request: AuthedHttpRequest) -> HttpResponse:
    """Tomorrow's digest as it would be sent to me now, and my digest settings."""

    prefs = digest_settings(user=request.user)
    if request.method == "POST":
        form = DigestSettingsForm(request.POST)
        if form.is_valid():
            services.desk_preference_update(user=request.user, actor=request.user, **form.cleaned_data)
            messages.success(request, "Digest settings saved")
            return redirect("desk:digest_preview")
    else:
        form = DigestSettingsForm(
            initial={
                "digest_enabled": prefs["enabled"],
                "digest_time": prefs["time"],
                "digest_timezone": prefs["timezone_name"],
            }
        )
    today = timezone.now().astimezone(prefs["timezone"]).date()
    digest = digest_for(user=request.user, today=today)
    subject, text, html = services.digest_render(digest=digest)
    context = {"form": form, "prefs": prefs, "digest": digest, "subject": subject, "text": text, "html": html}
    return render(request, "desk/digest_preview.html", context)
