"""Celery tasks of the retention app: thin wrappers over retention services."""

from celery import shared_task

from retention.importing import import_job_run


# A big history takes minutes; the job row is claimed atomically, so a retry does no harm.
@shared_task(time_limit=3600, soft_time_limit=3500)
def run_import_job(job_id: int) -> str:
    return import_job_run(job_id=job_id).status
