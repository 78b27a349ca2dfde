"""What the API reads and writes, as pydantic schemas (the OpenAPI document is built from them)."""

import datetime as dt
from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import BaseModel, Field, StringConstraints

from ml.models import Bucket
from retention.models import Intervention, Partner

# Text in: PostgreSQL text and jsonb cannot hold NUL, so it is refused here (422), not at the database.
NO_NUL = r"^[^\x00]*$"

Note = Annotated[str, StringConstraints(max_length=5000, pattern=NO_NUL)]
Username = Annotated[str, StringConstraints(max_length=150, pattern=NO_NUL)]
Subject = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
Body = Annotated[str, StringConstraints(min_length=1, max_length=20000, pattern=NO_NUL)]
OutcomeReason = Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)]
ListReason = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)]


# Path parameters, bounded: a 30-digit id is a 404 or 422, never a database overflow.
PartnerRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$"),
    Field(examples=["P10000"], description="A partner's id"),
]
ObjectId = Annotated[int, Field(ge=1, le=2**31 - 1)]
Limit = Annotated[int, Field(ge=1, le=200)]

# The models' own TextChoices: the schema's enums are the database's CheckConstraint values.
TierName = Partner.Tier
PartnerStatusName = Partner.Status
BucketName = Bucket
ActionName = Intervention.Action
SourceName = Intervention.Source
OutcomeName = Intervention.Outcome


class Error(Schema):
    detail: str
    code: str = ""


class Out(BaseModel):
    """An answer built from plain dicts: a pydantic model without ninja Schema's per-object
    wrapper (DjangoGetter), which was a third of a partners page's CPU (bench/api_bench.py)."""


class ScoreBrief(Out):
    risk: float
    bucket: str
    revenue_at_risk: float
    scored_at: dt.datetime


class PartnerOut(Out):
    id: str = Field(description="The partner's id, e.g. P18477")
    name: str
    tier: str
    region: str
    segment: str
    status: str
    monthly_revenue: float
    contact_email: str
    owner: str | None = Field(description="The account owner's username")
    joined_on: dt.date
    churned_on: dt.date | None
    do_not_contact: bool
    score: ScoreBrief | None


class PartnerPage(Out):
    items: list[PartnerOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last")


class Driver(Schema):
    text: str
    model_config = {"extra": "allow"}


class ScoreOut(Schema):
    risk: float = Field(description="Calibrated probability of churning within 90 days")
    bucket: str = Field(description="The most likely window if the partner churns")
    p_7d: float
    p_30d: float
    p_90d: float
    p_later: float
    revenue_at_risk: float
    previous_risk: float | None
    risk_change: float | None
    scored_at: dt.datetime
    drivers: list[dict[str, Any]]


class PartnerDetail(PartnerOut):
    current: ScoreOut | None


class HistoryPoint(Schema):
    as_of: dt.date
    risk: float
    bucket: str
    scored_at: dt.datetime


class InterventionOut(Schema):
    id: int
    partner: str
    partner_name: str
    action: str
    action_label: str
    source: str
    outcome: str
    review_status: str
    note: str
    assigned_to: str | None
    created_by: str | None
    risk_at_action: float | None
    bucket_at_action: str
    email_subject: str
    sent_at: dt.datetime | None
    outcome_set_by: str | None
    outcome_set_at: dt.datetime | None
    created_at: dt.datetime


class InterventionPage(Schema):
    items: list[InterventionOut]
    next_cursor: str | None


class OutcomeSummary(Schema):
    saved: int
    churned: int
    pending: int
    total: int
    save_rate: float | None
    roi: dict[str, Any] = Field(description="Realized and predicted ROI of all contacts (the Outcomes page)")
    control_group: dict[str, Any] = Field(
        description="Treated vs held-out churn and the uplift's 95% interval"
    )


class ModelVersionOut(Schema):
    id: int
    trained_at: dt.datetime
    window_start: dt.date
    window_end: dt.date
    is_active: bool
    source: str
    features: list[str]
    metrics: dict[str, Any]


# Writes -----------------------------------------------------------------------------------


class InterventionIn(Schema):
    action: ActionName = Field(description="Not holdout: only the agent draws the control group")
    note: Note = ""
    assigned_to: Username | None = Field(default=None, description="A team member's username")
    model_config = {"json_schema_extra": {"examples": [{"action": "meeting", "note": "Quarterly review"}]}}


class EmailIn(Schema):
    subject: Subject
    body: Body
    send: bool = Field(default=True, description="false: only log an email you sent yourself")


class EmailOut(Schema):
    result: Literal["sent", "queued", "held_for_review", "logged"]
    intervention: InterventionOut


class OutcomeIn(Schema):
    outcome: OutcomeName
    reason: OutcomeReason = ""


class DoNotContactIn(Schema):
    reason: ListReason = ""


class DoNotContactOut(Schema):
    partner: str
    on_list: bool
    reason: str


class AgentRunIn(Schema):
    partner: PartnerRef | None = Field(default=None, description="Intervene on one partner now")
    dry_run: bool = False


class JobOut(Schema):
    id: int
    status: str
    status_url: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    detail: dict[str, Any] = Field(description="The run's summary or the import's figures and errors")
