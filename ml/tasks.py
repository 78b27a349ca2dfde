"""Celery tasks for scoring: thin wrappers over ml.services, taking primitive ids."""

from __future__ import annotations

from celery import chord, shared_task
from django.conf import settings

from ml import services

# The nightly schedule is declared in churnsite/schedules.py.


@shared_task(time_limit=settings.CELERY_TASK_TIME_LIMIT, soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT)
def score_all_partners(chunk_size: int = services.DEFAULT_CHUNK) -> dict:
    """Start a run and fan its chunks out as a group; the chord's callback closes the run."""
    try:
        run = services.scoring_run_start()
    except services.ModelActivationError as exc:
        return {"skipped": str(exc)}  # nothing trained yet: not an error for the nightly beat
    ids = services.scoring_partner_ids()
    chunks = services.chunked(ids, chunk_size)
    if not chunks:
        services.scoring_run_finish(run_id=run.pk)
        return {"run": run.pk, "chunks": 0}
    chord(score_chunk.s(run.pk, chunk) for chunk in chunks)(finish_scoring_run.si(run.pk))
    return {"run": run.pk, "chunks": len(chunks), "partners": len(ids)}


# acks_late is safe: a redelivered chunk rewrites the same rows (unique per run and partner).
@shared_task(acks_late=True, time_limit=settings.CELERY_TASK_TIME_LIMIT)
def score_chunk(run_id: int, partner_ids: list[int]) -> dict:
    return services.score_chunk(run_id=run_id, partner_ids=partner_ids)


@shared_task(time_limit=120)
def finish_scoring_run(run_id: int) -> int:
    return services.scoring_run_finish(run_id=run_id).scored
