"""Writes of the ml app: registering and activating model versions, scoring runs."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, IntegerField, Q, Sum, Value
from django.db.models.expressions import F as Field
from django.db.models.functions import Cast, Floor, Least
from django.utils import timezone

from agent.audit import audit_record
from churnsite.failpoints import failpoint
from ml import backtest
from ml import features as F
from ml.churn_model import ChurnModel, save_model
from ml.frames import history_frames
from ml.levels import WORSE_BY
from ml.models import (
    ModelVersion,
    PartnerScore,
    RiskScore,
    ScoringRun,
    ScoringSummary,
    ValidationRun,
)
from ml.registry import active_version, artifact_full_path, model_for_version
from ml.score_store import current_stage_swap, current_stage_vacuum, scores_persist
from ml.signals import scoring_run_succeeded
from ml.sim.today import scoring_as_of
from retention.models import Partner

DEFAULT_CHUNK = 10_000


class ModelActivationError(ValueError):
    pass


def model_version_register(
    *,
    model: ChurnModel,
    report: dict[str, Any],
    source: str = ModelVersion.Source.DATABASE,
    activate: bool = False,
    actor: User | None = None,
) -> ModelVersion:
    """Save the artifact under MEDIA_ROOT/models and record it (optionally activating it)."""
    trained_at = timezone.now()
    relative = f"models/churn-{trained_at:%Y%m%d-%H%M%S-%f}.skops"
    sha = save_model(model, artifact_full_path(relative))
    with transaction.atomic():
        version = ModelVersion.objects.create(
            trained_at=trained_at,
            window_start=report.get("window_start") or trained_at.date(),
            window_end=report.get("window_end") or trained_at.date(),
            features=list(model.features),
            metrics=report,
            artifact_path=relative,
            artifact_sha256=sha,
            source=source,
        )
        if activate:
            model_version_activate(version=version, actor=actor)
    return version


def model_version_activate(*, version: ModelVersion, actor: User | None = None) -> ModelVersion:
    """Make ``version`` the one active model; the partial unique constraint guarantees one."""
    if version.source != ModelVersion.Source.DATABASE:
        raise ModelActivationError("Only models trained on the partner database can score partners.")
    with transaction.atomic():
        previous = list(
            ModelVersion.objects.select_for_update().filter(is_active=True).exclude(pk=version.pk)
        )
        ModelVersion.objects.filter(pk__in=[v.pk for v in previous]).update(is_active=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
        version.is_active = True
        audit_record(
            event_type="model_activated",
            actor=actor,
            payload={
                "model_version": version.pk,
                "previous": [v.pk for v in previous],
                "sha256": version.artifact_sha256,
                "roc_auc": version.metrics.get("roc_auc"),
            },
        )
    return version


# Scoring ---------------------------------------------------------------------------------


def scoring_run_start(
    *, model_version: ModelVersion | None = None, as_of: dt.date | None = None
) -> ScoringRun:
    """A run scores at the desk's today, or at a past date (a backfill: history rows only,
    the current scores the Live Feed and the agent read stay as they are)."""
    version = model_version or active_version()
    if version is None:
        raise ModelActivationError("No active model version: run train_churn_model first.")
    today = scoring_as_of()
    as_of = as_of or today
    if as_of > today:
        raise ValueError(f"cannot score at {as_of}: the data ends {today}")
    return ScoringRun.objects.create(
        model_version=version,
        started_at=timezone.now(),
        as_of=as_of,
        backfill=as_of < today,
    )


def scoring_partner_ids(*, as_of: dt.date | None = None) -> list[int]:
    """The partners a run scores: active now, or active at `as_of` (a backfill run's date)."""
    if as_of is None:
        qs = Partner.objects.filter(status=Partner.Status.ACTIVE)
    else:
        qs = Partner.objects.filter(joined_on__lte=as_of).filter(
            Q(status=Partner.Status.ACTIVE) | Q(churned_on__gt=as_of)
        )
    return list(qs.order_by("pk").values_list("pk", flat=True))


def partner_features(*, partner_ids: Sequence[int], as_of: dt.date, model: ChurnModel) -> pd.DataFrame:
    """Features of these partners at the end of ``as_of``, from their own rows in the
    bounded windows only (indexed by partner id)."""
    anchor = pd.Timestamp(as_of) - pd.DateOffset(months=F.ACTIVITY_MONTHS + 1)
    partners, activity, invoices = history_frames(
        key="partner_id",
        partner_ids=partner_ids,
        activity_since=anchor.date(),
        invoices_since=as_of - dt.timedelta(days=F.INVOICE_DAYS + 1),
    )
    return F.build_features(
        partners, activity, invoices, as_of, churn_table=model.churn_table, key="partner_id"
    )


def score_chunk(*, run_id: int, partner_ids: Sequence[int]) -> dict[str, float]:
    """Score one chunk: features, risk and buckets, drivers from the at-risk level, persistence.

    Safe to run twice (a redelivered task): history rows are unique per (run, partner) and
    the current score is an upsert. Returns the seconds spent in each stage."""
    run = ScoringRun.objects.select_related("model_version").get(pk=run_id)
    model = model_for_version(run.model_version)
    as_of = run.as_of
    if as_of is None:
        raise ValueError(f"Scoring run {run.pk} has no as_of date")  # every run started here has one
    times: dict[str, float] = {}
    t = time.perf_counter()
    X = partner_features(partner_ids=partner_ids, as_of=as_of, model=model)
    times["features"] = time.perf_counter() - t

    t = time.perf_counter()
    pred = model.predict(X, at_risk=settings.AT_RISK_LEVEL) if len(X) else pd.DataFrame()
    times["predict"] = time.perf_counter() - t

    t = time.perf_counter()
    drivers: dict[int, list] = {}
    if len(X):
        # Every partner shown at risk has its drivers on the feed; the rest are on demand.
        hot = pred.index[pred["risk"].to_numpy() >= settings.AT_RISK_LEVEL]
        if len(hot):
            for pid, d in zip(hot, model.drivers(X.loc[hot]), strict=True):
                drivers[int(pid)] = d
    times["drivers"] = time.perf_counter() - t

    failpoint("ml.score_chunk")  # scored, not yet written: the worker tests fail one chunk here
    t = time.perf_counter()
    scores_persist(run=run, pred=pred, drivers=drivers, current=not run.backfill, now=timezone.now())
    times["persist"] = time.perf_counter() - t
    times["n"] = len(pred)
    times["drivers_n"] = len(drivers)
    return times


def scoring_summary_write(*, run: ScoringRun) -> int:
    """The header strip's figures per account owner for this run's current scores (one
    GROUP BY over the run's partners); returns the number of owner rows."""
    level = settings.AT_RISK_LEVEL
    rows = (
        PartnerScore.objects.filter(run_id=run.pk, partner__status=Partner.Status.ACTIVE)
        .values("partner__account_owner")
        .annotate(
            n=Count("pk"),
            at_risk_n=Count("pk", filter=Q(risk__gte=level)),
            new_n=Count("pk", filter=Q(risk__gte=level, previous_risk__lt=level)),
            worse_n=Count("pk", filter=Q(risk_change__gte=WORSE_BY)),
            rar=Sum("revenue_at_risk"),
        )
        .order_by()
    )
    summaries = [
        ScoringSummary(
            run=run, owner_id=r["partner__account_owner"], partners=r["n"], at_risk=r["at_risk_n"],
            new_at_risk=r["new_n"], worse=r["worse_n"], revenue_at_risk=r["rar"] or 0,
        )
        for r in rows
    ]  # fmt: skip
    ScoringSummary.objects.filter(run=run).delete()
    ScoringSummary.objects.bulk_create(summaries)
    return len(summaries)


def risk_histogram_count(*, bins: int = 20) -> list[int]:
    """Counts of current scores per 5-point risk band (one aggregate query)."""
    rows = (
        PartnerScore.objects.annotate(
            band=Least(Cast(Floor(Field("risk") * bins), IntegerField()), Value(bins - 1))
        )
        .values("band")
        .annotate(n=Count("pk"))
    )
    counts = [0] * bins
    for r in rows:
        counts[int(r["band"])] = r["n"]
    return counts


def scoring_run_finish(*, run_id: int, stats: dict | None = None, error: str | None = None) -> ScoringRun:
    """Close a run: succeeded (the chord's callback), or failed with `error` (its error
    callback, or the in-process run that raised); audited either way."""
    # Before the close's transaction (VACUUM runs outside one): the staged scores get their
    # visibility map, so the feed's index-only scans skip the heap from the first request.
    vacuum = None if error else current_stage_vacuum(run_id=run_id)
    with transaction.atomic():
        run = ScoringRun.objects.select_for_update().get(pk=run_id)
        if error and run.status == ScoringRun.Status.FAILED:
            return run  # both error paths fired (an eager callback that raised): the first stands
        run.finished_at = timezone.now()
        run.scored = RiskScore.objects.filter(run_id=run_id).count()
        run.status = ScoringRun.Status.FAILED if error else ScoringRun.Status.SUCCEEDED
        run.stats = {**run.stats, **(stats or {})} | ({"error": error[:500]} if error else {})
        # A failed run's staged scores stay out of the feed (a retry stages them afresh).
        swap = None if error else current_stage_swap(run=run)
        if swap is not None:
            # Persisting counts the swap: the chunks' writes alone would flatter it.
            stages = run.stats.setdefault("stages", {})
            stages["persist"] = round(stages.get("persist", 0.0) + swap, 3)
            run.stats["persist_swap"] = round(swap, 3)
        if vacuum is not None:
            run.stats.setdefault("stages", {})["vacuum"] = round(vacuum, 3)
        run.save(update_fields=["finished_at", "scored", "status", "stats", "updated_at"])
        if not error:
            # Partners who churned since their last score leave the feed; history stays.

            PartnerScore.objects.exclude(partner__status=Partner.Status.ACTIVE).delete()
            if not run.backfill:
                scoring_summary_write(run=run)
                # The Model page's live histogram, counted once here, where the current scores
                # change: per page view it cost 170-250 ms at 1M partners.
                run.stats["risk_histogram"] = risk_histogram_count()
                run.save(update_fields=["stats", "updated_at"])
                scoring_run_succeeded.send(sender=ScoringRun, run=run)
        audit_record(
            event_type="scoring_failed" if error else "scoring_finished",
            payload={
                "run": run.pk,
                "model_version": run.model_version_id,
                "scored": run.scored,
                "status": run.status,
            }
            | ({"error": error[:500]} if error else {}),
        )
    return run


def scoring_run_retry(*, run_id: int, actor: User | None = None) -> ScoringRun:
    """Reopen a failed run so its chunks are scored again (they are idempotent per run and
    partner, so chunks that succeeded the first time rewrite the same rows)."""
    with transaction.atomic():
        run = ScoringRun.objects.select_for_update().get(pk=run_id)
        if run.status != ScoringRun.Status.FAILED:
            raise ValueError(f"Scoring run {run.pk} is {run.status}: only a failed run is retried")
        error = run.stats.pop("error", "")
        run.status, run.finished_at = ScoringRun.Status.RUNNING, None
        run.save(update_fields=["status", "finished_at", "stats", "updated_at"])
        audit_record(
            event_type="scoring_retried",
            actor=actor,
            payload={"run": run.pk, "model_version": run.model_version_id, "previous_error": error},
        )
    return run


def chunked(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def partner_score_store_drivers(*, partner_id: int, run_id: int | None, drivers: list[dict]) -> int:
    """Cache on-demand drivers on the current score, only if it is still the same run's."""
    return PartnerScore.objects.filter(partner_id=partner_id, run_id=run_id, drivers__isnull=True).update(
        drivers=drivers
    )


def model_validate(*, as_of: dt.date | None = None, horizon_days: int = 90) -> ValidationRun:
    """Judge past scores by what happened, and measure drift since training (one row).

    The scores judged are those of live runs (not backfills: a backfill is computed later, by
    a model that may have seen what came after its date) made ``horizon_days`` or more
    before the data's today, so every partner's outcome within the horizon is known. Drift:
    the active model's features of the partners active at its training window's end against
    those of the partners active at ``as_of``."""
    as_of = as_of or scoring_as_of()
    scored_until = as_of - dt.timedelta(days=horizon_days)
    rows = RiskScore.objects.filter(
        run__backfill=False, run__as_of__lte=scored_until, run__status=ScoringRun.Status.SUCCEEDED
    ).values_list("risk", "run__as_of", "partner__churned_on")
    scores = pd.DataFrame(list(rows), columns=["risk", "scored_on", "churned_on"])
    bins = backtest.realized_reliability(scores, horizon_days=horizon_days)
    version = active_version()
    psi: dict[str, float] = {}
    if version is not None:
        model = model_for_version(version)
        reference = version.window_end
        expected = partner_features(
            partner_ids=scoring_partner_ids(as_of=reference), as_of=reference, model=model
        )
        actual = partner_features(partner_ids=scoring_partner_ids(as_of=as_of), as_of=as_of, model=model)
        names = [f for f in version.features if f in expected.columns] or list(expected.columns)
        if len(expected) and len(actual):
            psi = backtest.feature_stability(expected[names], actual[names])
    return ValidationRun.objects.create(
        model_version=version,
        as_of=as_of,
        scored_until=scored_until,
        horizon_days=horizon_days,
        n_scores=sum(b["n"] for b in bins),
        n_churned=sum(b["churned"] for b in bins),
        reliability=bins,
        psi=psi,
        max_psi=max(psi.values()) if psi else None,
    )
