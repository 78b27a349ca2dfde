"""Scoring: one orchestration, a Celery chord over chunks of partners.

`score_all_partners` (the nightly beat entry) starts a run and fans it out; the command
`score_partners` runs the same chord in-process. The chord's callback closes the run; its
error callback marks the run failed (audited) when any chunk fails, and `retry_scoring_run`
scores the same run again (chunks are idempotent: one history row per run and partner).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from celery import chord, shared_task
from celery.canvas import Signature
from celery.signals import worker_init
from django.conf import settings
from django.db import connections

from ml import services
from ml.models import ScoringRun
from ml.registry import active_version, model_for_version
from ml.score_store import current_stage_open

log = logging.getLogger(__name__)

# The nightly schedule is declared in churnsite/schedules.py.


@shared_task(time_limit=settings.CELERY_TASK_TIME_LIMIT, soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT)
def score_all_partners(chunk_size: int = services.DEFAULT_CHUNK, as_of: str | None = None) -> dict:
    """Start a run (at the desk's today, or a past `as_of` YYYY-MM-DD) and fan it out."""
    try:
        run = services.scoring_run_start(as_of=dt.date.fromisoformat(as_of) if as_of else None)
    except services.ModelActivationError as exc:
        return {"skipped": str(exc)}  # nothing trained yet: not an error for the nightly beat
    return scoring_run_dispatch(run_id=run.pk, chunk_size=chunk_size)


@shared_task(time_limit=settings.CELERY_TASK_TIME_LIMIT, soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT)
def retry_scoring_run(run_id: int, chunk_size: int = services.DEFAULT_CHUNK) -> dict:
    """Score a failed run again, all its partners (chunks already written are rewritten as is)."""
    services.scoring_run_retry(run_id=run_id)
    return scoring_run_dispatch(run_id=run_id, chunk_size=chunk_size)


@worker_init.connect
def warm_scoring_model(**_: Any) -> None:
    """Load the active model and its SHAP explainer in the worker's main process, before it
    forks its pool: every child starts with them (shared, copy-on-write) instead of paying
    the load on its first chunk, which on 2 workers counted twice in the chord's wall time.
    Pre-fork is safe: loading runs no OpenMP region, so no thread pool is forked."""
    try:
        started = time.perf_counter()
        version = active_version()
        if version is not None:
            model_for_version(version).explainer  # noqa: B018  (the property builds it)
            log.info("scoring model v%s loaded in %.1f s", version.pk, time.perf_counter() - started)
    except Exception:  # a worker with a broken artifact still starts; its chunks fail audited
        log.warning("could not warm the scoring model", exc_info=True)
    finally:
        connections.close_all()  # the children must not inherit this connection


# acks_late is safe: a redelivered chunk rewrites the same rows (unique per run and partner).
@shared_task(acks_late=True, time_limit=settings.CELERY_TASK_TIME_LIMIT)
def score_chunk(run_id: int, partner_ids: list[int]) -> dict:
    return services.score_chunk(run_id=run_id, partner_ids=partner_ids)


# Both callbacks set their soft limit too: the project-wide soft limit (540 s) is above 120 s,
# and Celery refuses to run a task whose soft limit exceeds its hard one.
@shared_task(time_limit=120, soft_time_limit=110)
def finish_scoring_run(chunk_times: list[dict], *, run_id: int, read_ids: float = 0.0) -> int:
    """The chord's callback: every chunk succeeded; close the run with the stage times."""
    # When the last chunk was done (epoch seconds): the chord's wall time splits into the
    # chunks, which spread over workers, and the close, which does not (bench/scale_bench.py).
    stats = _stats(chunk_times, read_ids=read_ids) | {"chunks_done_at": time.time()}
    return services.scoring_run_finish(run_id=run_id, stats=stats).scored


@shared_task(time_limit=120, soft_time_limit=110)
def fail_scoring_run(request: Any, exc: BaseException, traceback: Any, *, run_id: int) -> int:
    """The chord's error callback (called with the failed request): the run ends failed."""
    return services.scoring_run_finish(run_id=run_id, error=f"{type(exc).__name__}: {exc}").pk


def scoring_chord(*, run_id: int, chunks: list[list[int]], read_ids: float = 0.0) -> Signature:
    callback = finish_scoring_run.s(run_id=run_id, read_ids=read_ids)
    callback.link_error(fail_scoring_run.s(run_id=run_id))
    return chord([score_chunk.si(run_id, chunk) for chunk in chunks], callback)


def scoring_run_dispatch(*, run_id: int, chunk_size: int, in_process: bool = False) -> dict:
    """Fan a RUNNING run's partners out as a chord; `in_process` (or without a broker) runs
    it here and returns when the run is closed."""
    run = ScoringRun.objects.get(pk=run_id)
    started = time.perf_counter()
    ids = services.scoring_partner_ids(as_of=run.as_of if run.backfill else None)
    chunks = services.chunked(ids, chunk_size)
    read_ids = time.perf_counter() - started
    summary = {"run": run.pk, "chunks": len(chunks), "partners": len(ids)}
    if not chunks:
        services.scoring_run_finish(run_id=run.pk, stats=_stats([], read_ids=read_ids))
        return summary
    current_stage_open(run=run)  # the chunks stage current scores; the close swaps them in
    work = scoring_chord(run_id=run.pk, chunks=chunks, read_ids=read_ids)
    if not (in_process or score_chunk.app.conf.task_always_eager):
        work.apply_async()
        return summary
    # In-process, Celery raises the chunk's error here instead of calling the error callback.
    try:
        work.apply().get()
    except Exception as exc:
        services.scoring_run_finish(run_id=run.pk, error=f"{type(exc).__name__}: {exc}")
        raise
    return summary


def _stats(chunk_times: list[dict], *, read_ids: float) -> dict:
    stages = {"read_ids": read_ids, "features": 0.0, "predict": 0.0, "drivers": 0.0, "persist": 0.0}
    drivers_n = 0
    for times in chunk_times:
        drivers_n += int(times.get("drivers_n", 0))
        for stage in ("features", "predict", "drivers", "persist"):
            stages[stage] += float(times.get(stage, 0.0))
    return {"stages": {k: round(v, 3) for k, v in stages.items()}, "drivers_computed": drivers_n}


@shared_task(time_limit=settings.CELERY_TASK_TIME_LIMIT, soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT)
def validate_model() -> dict:
    """Nightly: judge the scores made 90+ days ago by what happened, and the drift since training."""
    run = services.model_validate()
    return {"validation": run.pk, "scores": run.n_scores, "max_psi": run.max_psi}
