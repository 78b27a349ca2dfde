"""Reads of the ml app: current scores, drivers (on demand, cached), the Model page."""

from __future__ import annotations

import datetime as dt
import logging

from django.core.cache import cache
from django.db import DatabaseError

from ml.models import Bucket, ModelVersion, PartnerScore, ScoringRun
from ml.registry import active_version, model_for_version
from ml.services import partner_features, partner_score_store_drivers, risk_histogram_count
from ml.sim.today import scoring_as_of
from retention.models import Partner

DRIVERS_CACHE_SECONDS = 24 * 3600
log = logging.getLogger(__name__)


def partner_current_score(*, partner: Partner) -> PartnerScore | None:
    """The partner's current score, for every app (the agent, the partner page, logging an
    intervention): the row the caller's select_related("current_score") loaded, else one query."""
    try:
        return partner.current_score
    except PartnerScore.DoesNotExist:
        return None


def bucket_partner_ids(*, bucket: str):
    """The ids of the partners whose current score is in `bucket` (a subquery)."""
    return PartnerScore.objects.filter(bucket=bucket).values("partner_id")


# Only partners at risk get an urgent bucket (ml.churn_model: "later" below the at-risk
# level), so these hold a small share of the partners; "later" holds most of them.
URGENT_BUCKETS = frozenset({Bucket.D7, Bucket.D30, Bucket.D90})


def partner_drivers(*, partner: Partner) -> list[dict]:
    """The partner's top drivers: stored by scoring (risk >= 50%), else computed now from the
    partner's own rows, at the date and with the model of its current score, and cached
    (on the score row and in the cache). An explanation that fails is logged and reads as no
    drivers: it must not take a page or the agent down."""
    score = partner_current_score(partner=partner)
    if score is not None and score.drivers is not None:
        return score.drivers
    version: ModelVersion | None
    if score is not None:
        version = score.model_version
        as_of = score.run.as_of if score.run and score.run.as_of else scoring_as_of()
        run_id = score.run_id
    else:
        version = active_version()
        if version is None:
            return []
        as_of, run_id = scoring_as_of(), None
    stamp = score.scored_at.timestamp() if score is not None else as_of.isoformat()
    key = f"ml:drivers:{partner.pk}:{version.pk}:{version.artifact_sha256[:12]}:{run_id}:{stamp}"
    drivers = cache.get(key)
    if drivers is None:
        try:
            drivers = compute_partner_drivers(partner_id=partner.pk, version=version, as_of=as_of)
        except DatabaseError:
            raise  # not the explanation's fault, and the caller's transaction is unusable now
        except Exception:  # noqa: BLE001 - a missing or altered artifact, or a bug explaining
            # The Model page and scoring surface a broken artifact loudly.
            log.exception("Model v%s could not explain partner %s", version.pk, partner.pk)
            return []
        cache.set(key, drivers, DRIVERS_CACHE_SECONDS)
    if score is not None:
        partner_score_store_drivers(partner_id=partner.pk, run_id=run_id, drivers=drivers)
    return drivers


def compute_partner_drivers(*, partner_id: int, version: ModelVersion, as_of: dt.date) -> list[dict]:
    model = model_for_version(version)
    X = partner_features(partner_ids=[partner_id], as_of=as_of, model=model)
    if not len(X):
        return []
    return model.drivers(X)[0]


def latest_run() -> ScoringRun | None:
    return (
        ScoringRun.objects.filter(status=ScoringRun.Status.SUCCEEDED, backfill=False)
        .select_related("model_version")
        .first()
    )


def current_risk_histogram(*, bins: int = 20) -> list[int]:
    """Counts of current scores per 5-point risk band: as the latest run's close counted them
    (current scores change at a close), else counted now."""
    run = latest_run()
    counted = run.stats.get("risk_histogram") if run else None
    if isinstance(counted, list) and len(counted) == bins:
        return counted
    return risk_histogram_count(bins=bins)
