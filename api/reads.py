"""Read operations of /api/v1/: thin, over the same selectors as the site's pages."""

import base64
import binascii
import datetime as dt
import json
from decimal import Decimal
from typing import Any

from django.db.models import BooleanField, F, Func, Q
from django.shortcuts import get_object_or_404
from ninja import Query, Router, Schema
from ninja.errors import HttpError

from api import schemas as s
from api.auth import needs
from churnsite.access import AuthedHttpRequest
from ml.models import ModelVersion
from ml.selectors import URGENT_BUCKETS, bucket_partner_ids, partner_drivers
from retention import log_selectors, roi, selectors
from retention.models import Intervention, Partner

router = Router()


# Cursors: opaque to callers, the keyset of the last row seen (a constant cost per page at any
# depth, unlike OFFSET, and stable while rows are added).


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise HttpError(400, "Bad cursor: pass back next_cursor as it was given") from None


def plain(value: Any) -> Any:
    """JSON numbers for Decimals, recursively (selectors keep money as Decimal)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def partner_out(p: Partner) -> dict:
    score = getattr(p, "current_score", None)
    return {
        "id": p.external_id,
        "name": p.name,
        "tier": p.tier,
        "region": p.region,
        "segment": p.segment,
        "status": p.status,
        "monthly_revenue": float(p.monthly_revenue),
        "contact_email": p.contact_email,
        "owner": p.account_owner.username if p.account_owner else None,
        "joined_on": p.joined_on,
        "churned_on": p.churned_on,
        "do_not_contact": getattr(p, "do_not_contact", None) is not None,
        "score": None
        if score is None
        else {
            "risk": score.risk,
            "bucket": score.bucket,
            "revenue_at_risk": float(score.revenue_at_risk),
            "scored_at": score.scored_at,
        },
    }


def _username(user) -> str | None:
    return user.username if user is not None else None


def intervention_out(i: Intervention) -> dict:
    return {
        "id": i.pk,
        "partner": i.partner.external_id,
        "partner_name": i.partner.name,
        "action": i.action,
        "action_label": i.action_label,
        "source": i.source,
        "outcome": i.outcome,
        "review_status": i.review_status,
        "note": i.note,
        "assigned_to": _username(i.assigned_to),
        "created_by": _username(i.created_by),
        "risk_at_action": i.risk_at_action,
        "bucket_at_action": i.bucket_at_action,
        "email_subject": i.email_subject,
        "sent_at": i.sent_at,
        "outcome_set_by": _username(i.outcome_set_by),
        "outcome_set_at": i.outcome_set_at,
        "created_at": i.created_at,
    }


def get_partner(external_id: str) -> Partner:
    return get_object_or_404(
        Partner.objects.select_related("account_owner", "current_score", "do_not_contact"),
        external_id=external_id.upper(),
    )


# Partners -----------------------------------------------------------------------------------


class PartnerFilters(Schema):
    search: str = s.Field(
        default="", max_length=100, pattern=s.NO_NUL, description="An exact id (P18477) or part of a name"
    )
    tier: s.TierName | None = None
    status: s.PartnerStatusName | None = None
    bucket: s.BucketName | None = None
    cursor: str | None = s.Field(default=None, max_length=200, pattern=r"^[A-Za-z0-9_-]*$")
    limit: s.Limit = 50


# What a list row reads, as plain values: model instances (the score's drivers JSON decoded
# for every row) cost more CPU than the page's query (bench/api_bench.py).
PARTNER_ROW_FIELDS = (
    "external_id",
    "name",
    "tier",
    "region",
    "segment",
    "status",
    "monthly_revenue",
    "contact_email",
    "joined_on",
    "churned_on",
)
PARTNER_ROW_RELATED = {
    "owner": F("account_owner__username"),
    "dnc_id": F("do_not_contact__id"),
    "score_risk": F("current_score__risk"),
    "score_bucket": F("current_score__bucket"),
    "score_rar": F("current_score__revenue_at_risk"),
    "score_at": F("current_score__scored_at"),
}


def partner_row_out(row: dict) -> dict:
    return {
        "id": row["external_id"],
        "name": row["name"],
        "tier": row["tier"],
        "region": row["region"],
        "segment": row["segment"],
        "status": row["status"],
        "monthly_revenue": float(row["monthly_revenue"]),
        "contact_email": row["contact_email"],
        "owner": row["owner"],
        "joined_on": row["joined_on"],
        "churned_on": row["churned_on"],
        "do_not_contact": row["dnc_id"] is not None,
        "score": None
        if row["score_at"] is None
        else {
            "risk": row["score_risk"],
            "bucket": row["score_bucket"],
            "revenue_at_risk": float(row["score_rar"]),
            "scored_at": row["score_at"],
        },
    }


class HashedIn(Func):
    """`(id IN (subquery)) IS TRUE`: PostgreSQL reads the subquery once into a hash table and
    tests each row it walks against it, where a bare `IN` would become a join probing an
    index for every row walked."""

    template = "(%(expressions)s) IS TRUE"
    output_field = BooleanField()


@router.get("/partners", response=s.PartnerPage, tags=["partners"], operation_id="partners_list")
@needs("retention.view_partner")
def partners_list(request: AuthedHttpRequest, filters: Query[PartnerFilters]):
    """Partners by id, filtered and searched like the Partners page; one query per page."""
    qs = selectors.partner_list(
        search=filters.search.strip(), tier=filters.tier or "", status=filters.status or ""
    )
    if filters.bucket in URGENT_BUCKETS and not (filters.tier or filters.search):
        # An urgent bucket is a small share of partners (0.7% each at 100k), so a page walks
        # ~140 partners in id order per match: tested against the bucket's ids in a hash,
        # read from the (covering) id-order index, that walk costs the same at 100k and 1M
        # partners (a join probed an index for each: 27,000 buffers at 1M, 2,600 at 100k).
        qs = qs.filter(HashedIn(Q(pk__in=bucket_partner_ids(bucket=filters.bucket))))
    elif filters.bucket:
        # "later" is most partners (the walk meets one almost at every step); an urgent
        # bucket and a tier or a search can match too few to walk for: the planner picks
        # between walking and reading the bucket's partners first.
        qs = qs.filter(current_score__bucket=filters.bucket)
    if filters.cursor:
        after = decode_cursor(filters.cursor)
        if not isinstance(after, str):
            raise HttpError(400, "Bad cursor: pass back next_cursor as it was given")
        qs = qs.filter(external_id__gt=after)
    # One statement in two steps: the page's ids, then their rows. The ids come from indexes
    # alone (the id order with each partner's tier and status; a bucket's partner ids), so
    # the partners a filter skips are never read from the table (api migrations 0002, 0003).
    page_ids = qs.values("pk")[: filters.limit + 1]
    rows = list(
        Partner.objects.filter(pk__in=page_ids)
        .order_by("external_id")
        .values(*PARTNER_ROW_FIELDS, **PARTNER_ROW_RELATED)
    )
    more = len(rows) > filters.limit
    rows = rows[: filters.limit]
    return {
        "items": [partner_row_out(row) for row in rows],
        "next_cursor": encode_cursor(rows[-1]["external_id"]) if more else None,
    }


@router.get("/partners/{partner_id}", response=s.PartnerDetail, tags=["partners"], operation_id="partner_get")
@needs("retention.view_partner")
def partner_get(request: AuthedHttpRequest, partner_id: s.PartnerRef):
    """A partner with its current score, urgency buckets and drivers (the partner page's)."""
    partner = get_partner(partner_id)
    out = partner_out(partner)
    score = getattr(partner, "current_score", None)
    out["current"] = (
        None
        if score is None
        else {
            "risk": score.risk,
            "bucket": score.bucket,
            "p_7d": score.p_7d,
            "p_30d": score.p_30d,
            "p_90d": score.p_90d,
            "p_later": score.p_later,
            "revenue_at_risk": float(score.revenue_at_risk),
            "previous_risk": score.previous_risk,
            "risk_change": score.risk_change,
            "scored_at": score.scored_at,
            "drivers": plain(partner_drivers(partner=partner)),
        }
    )
    return out


@router.get(
    "/partners/{partner_id}/risk-history",
    response=list[s.HistoryPoint],
    tags=["partners"],
    operation_id="partner_risk_history",
)
@needs("ml.view_riskscore")
def partner_risk_history(request: AuthedHttpRequest, partner_id: s.PartnerRef):
    """The partner's risk by the date each score describes, oldest first (at most 60)."""
    partner = get_partner(partner_id)
    return [
        {"as_of": r.as_of, "risk": r.risk, "bucket": r.bucket, "scored_at": r.scored_at}  # type: ignore[attr-defined]
        for r in selectors.partner_risk_history(partner=partner)
    ]


# Interventions -------------------------------------------------------------------------------


class InterventionFilters(Schema):
    """The Intervention Log's filters."""

    action: s.ActionName | None = None
    source: s.SourceName | None = None
    outcome: s.OutcomeName | None = None
    tier: s.TierName | None = None
    assigned_to: s.ObjectId | None = s.Field(default=None, description="A user id")
    search: str = s.Field(default="", max_length=100, pattern=s.NO_NUL)

    def selector_kwargs(self) -> dict:
        return {
            "action": self.action or "",
            "source": self.source or "",
            "outcome": self.outcome or "",
            "tier": self.tier or "",
            "assigned_to": self.assigned_to,
            "search": self.search,
        }


class Page(Schema):
    cursor: str | None = s.Field(default=None, max_length=200, pattern=r"^[A-Za-z0-9_-]*$")
    limit: s.Limit = 50


@router.get(
    "/interventions", response=s.InterventionPage, tags=["interventions"], operation_id="interventions_list"
)
@needs("retention.view_intervention")
def interventions_list(request: AuthedHttpRequest, filters: Query[InterventionFilters], page: Query[Page]):
    """The Intervention Log, newest first, with its filters; one query per page."""
    qs = log_selectors.intervention_list(**filters.selector_kwargs())
    if page.cursor:
        after = decode_cursor(page.cursor)
        try:
            at, pk = dt.datetime.fromisoformat(after[0]), int(after[1])
        except (TypeError, ValueError, IndexError, KeyError):
            raise HttpError(400, "Bad cursor: pass back next_cursor as it was given") from None
        qs = qs.filter(Q(created_at__lt=at) | Q(created_at=at, pk__lt=pk))
    rows = list(qs[: page.limit + 1])
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    last = rows[-1] if rows else None
    return {
        "items": [intervention_out(i) for i in rows],
        "next_cursor": encode_cursor([last.created_at.isoformat(), last.pk]) if more and last else None,
    }


@router.get(
    "/interventions/{intervention_id}",
    response=s.InterventionOut,
    tags=["interventions"],
    operation_id="intervention_get",
)
@needs("retention.view_intervention")
def intervention_get(request: AuthedHttpRequest, intervention_id: s.ObjectId):
    return intervention_out(get_object_or_404(log_selectors.intervention_list(), pk=intervention_id))


@router.get(
    "/outcomes/summary", response=s.OutcomeSummary, tags=["outcomes"], operation_id="outcomes_summary"
)
@needs("retention.view_intervention")
def outcomes_summary(request: AuthedHttpRequest, filters: Query[InterventionFilters]):
    """Saved / churned / pending of the (filtered) log, the ROI and the control group's uplift."""
    summary = log_selectors.outcome_summary(**filters.selector_kwargs())
    return summary | {
        "roi": plain(roi.roi_totals()),
        "control_group": plain(roi.control_group_uplift()),
    }


# Models -----------------------------------------------------------------------------------------


def model_out(v: ModelVersion) -> dict:
    return {
        "id": v.pk,
        "trained_at": v.trained_at,
        "window_start": v.window_start,
        "window_end": v.window_end,
        "is_active": v.is_active,
        "source": v.source,
        "features": [str(f) for f in v.features or []],
        "metrics": plain(v.metrics or {}),
    }


@router.get("/models", response=list[s.ModelVersionOut], tags=["models"], operation_id="models_list")
@needs("ml.view_modelversion")
def models_list(request: AuthedHttpRequest):
    """Model versions, newest first, with their metrics (the Model page's figures)."""
    return [model_out(v) for v in ModelVersion.objects.order_by("-trained_at", "-pk")[:100]]


@router.get("/models/{model_id}", response=s.ModelVersionOut, tags=["models"], operation_id="model_get")
@needs("ml.view_modelversion")
def model_get(request: AuthedHttpRequest, model_id: s.ObjectId):
    return model_out(get_object_or_404(ModelVersion, pk=model_id))
