"""The import page: managers upload a team's history files and follow the job."""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from churnsite.access import AuthedHttpRequest, permission_required
from churnsite.broker import enqueue
from churnsite.http import MAX_ID, partial_template
from retention.forms import (
    ImportForm,
)
from retention.importing import import_job_create, import_job_progress
from retention.models import ImportJob
from retention.tasks import run_import_job


def _import_context(
    request: AuthedHttpRequest, job: ImportJob | None, form: ImportForm | None = None
) -> dict:
    return {
        "form": form or ImportForm(),
        "job": job,
        "progress": import_job_progress(job=job) if job else None,
        "jobs": ImportJob.objects.order_by("-created_at")[:10],
    }


@permission_required("retention.import_data", message="Only managers can import data.")
def import_page(request: AuthedHttpRequest) -> HttpResponse:
    """Managers upload a team's history files; the page follows the job and lists bad rows."""
    job = None
    if request.GET.get("job", "").isdigit() and int(request.GET["job"]) <= MAX_ID:
        job = get_object_or_404(ImportJob, pk=int(request.GET["job"]))
    if request.method == "POST":
        form = ImportForm(request.POST, request.FILES)
        if not form.is_valid():
            return render(request, "retention/import.html", _import_context(request, None, form), status=400)
        job = import_job_create(
            uploads=form.cleaned_data["files"], actor=request.user,
            dry_run=form.cleaned_data["dry_run"], replace=form.cleaned_data["replace"],
        )  # fmt: skip
        if not enqueue(run_import_job, job.pk):
            messages.warning(request, f"Import {job.pk} waits: the task queue is unreachable.")
        return redirect(f"{reverse('retention:import')}?job={job.pk}")
    template = partial_template(request, "retention/import.html", {"import-job": "job"})
    return render(request, template, _import_context(request, job))
