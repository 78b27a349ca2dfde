"""The Import page: a job per upload, run by a worker, its progress through the cache."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from agent.audit import audit_record
from retention.importing.history import history_import
from retention.models import ImportJob

JOB_ERRORS_KEPT = 1_000  # shown on the page; the count says how many there were


def _progress_key(job_id: int) -> str:
    return f"import-job-{job_id}-progress"


def import_job_create(*, uploads: list, actor, dry_run: bool = False, replace: bool = False):
    """Keep the uploaded files under MEDIA_ROOT/imports/<job>/ and queue their import."""
    with transaction.atomic():
        job = ImportJob.objects.create(created_by=actor, dry_run=dry_run, replace=replace)
        folder = Path(settings.MEDIA_ROOT) / "imports" / str(job.pk)
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for i, upload in enumerate(uploads):
            # Our own file names: an uploaded name is for messages only, never a path.
            target = folder / f"{i:02d}.upload"
            with open(target, "wb") as fh:
                for block in upload.chunks():
                    fh.write(block)
            files.append({"name": Path(upload.name).name[:200], "path": str(target)})
        job.files = files
        job.save(update_fields=["files", "updated_at"])
        audit_record(
            event_type="import_queued",
            actor=actor,
            payload={
                "job": job.pk,
                "files": [f["name"] for f in files],
                "dry_run": dry_run,
                "replace": replace,
            },
        )
    return job


def import_job_run(*, job_id: int):
    """Run a queued job once (a redelivered task finds it claimed and does nothing)."""
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.RUNNING, updated_at=timezone.now()
    )
    if not claimed:
        return ImportJob.objects.get(pk=job_id)
    job = ImportJob.objects.select_related("created_by").get(pk=job_id)
    paths = {Path(f["path"]): f["name"] for f in job.files}

    def progress(fraction: float, stage: str) -> None:
        # The import's own transaction hides any row update until it ends: the cache is
        # how the page sees progress meanwhile.
        cache.set(_progress_key(job_id), {"fraction": round(fraction, 3), "stage": stage}, 3600)

    try:
        report = history_import(
            paths=list(paths), actor=job.created_by, dry_run=job.dry_run, replace=job.replace,
            progress=progress, names=paths,
        )  # fmt: skip
    except Exception as exc:  # the job must end, whatever broke; the error is kept for the page
        job.status = ImportJob.Status.FAILED
        job.errors = [{"file": "", "line": 0, "column": "", "reason": f"the import failed: {exc}"[:500]}]
        job.error_count = 1
        job.finished_at = timezone.now()
        job.save()
        raise
    job.status = ImportJob.Status.SUCCEEDED if report.ok else ImportJob.Status.FAILED
    job.summary = report.as_dict()
    job.errors = [e.as_dict() for e in report.errors[:JOB_ERRORS_KEPT]]
    job.error_count = report.error_count
    job.finished_at = timezone.now()
    job.save()
    cache.delete(_progress_key(job_id))
    return job


def import_job_progress(*, job) -> dict:
    """{"fraction", "stage"} of a running job (0 and "waiting" until the worker starts it)."""
    if job.is_done:
        return {"fraction": 1.0, "stage": "done"}
    return cache.get(_progress_key(job.pk)) or {"fraction": 0.0, "stage": "waiting for a worker"}
