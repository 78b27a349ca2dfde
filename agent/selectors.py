"""Reads for the agent: who is eligible, how much of the hourly budget is used, the activity log."""

import datetime as dt

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from agent.models import AgentConfig, AgentRun, AuditEvent, AuditVerification, DoNotContact
from retention.models import Intervention, Partner

BUDGET_WINDOW = dt.timedelta(minutes=60)


def agent_config_get() -> AgentConfig:
    """The one configuration row (created with the defaults on first use)."""
    config, _ = AgentConfig.objects.get_or_create(pk=1)
    return config


def _recent_or_open_interventions(*, cooldown_days: int, now: dt.datetime) -> Exists:
    # Any intervention inside the cooldown (manual ones too), or an open agent one of any age
    # (the unique constraint would refuse a second one anyway).
    return Exists(
        Intervention.objects.filter(partner=OuterRef("pk")).filter(
            Q(created_at__gte=now - dt.timedelta(days=cooldown_days))
            | Q(source=Intervention.Source.AGENT, outcome=Intervention.Outcome.PENDING)
        )
    )


def partners_eligible(
    *, threshold: float | None, cooldown_days: int, now: dt.datetime | None = None
) -> QuerySet[Partner]:
    """Active partners with risk strictly above `threshold` (None: any score), no intervention in
    the cooldown, no open agent intervention, not on the do-not-contact list; riskiest first."""
    now = now or timezone.now()
    partners = Partner.objects.filter(status=Partner.Status.ACTIVE, current_score__isnull=False)
    if threshold is not None:
        partners = partners.filter(current_score__risk__gt=threshold)
    return (
        partners.exclude(_recent_or_open_interventions(cooldown_days=cooldown_days, now=now))
        .exclude(Exists(DoNotContact.objects.filter(partner=OuterRef("pk"))))
        .select_related("account_owner", "current_score")
        .order_by("-current_score__risk", "pk")
    )


def partner_ineligibility(
    *, partner: Partner, config: AgentConfig, skip_threshold: bool = False, now: dt.datetime | None = None
) -> str:
    """Why the agent may not act on `partner` now ("" = it may). Re-checked under the partner's lock."""
    now = now or timezone.now()
    if partner.status != Partner.Status.ACTIVE:
        return "not_active"
    if DoNotContact.objects.filter(partner=partner).exists():
        return "do_not_contact"
    score = partner_score(partner=partner)
    if score is None:
        return "no_score"
    if not skip_threshold and not score.risk > config.risk_threshold:
        return "below_threshold"
    recent = Intervention.objects.filter(partner=partner).filter(
        Q(created_at__gte=now - dt.timedelta(days=config.cooldown_days))
        | Q(source=Intervention.Source.AGENT, outcome=Intervention.Outcome.PENDING)
    )
    if recent.exists():
        return "cooldown"
    return ""


def partner_score(*, partner: Partner):
    from ml.models import PartnerScore

    try:
        return partner.current_score
    except PartnerScore.DoesNotExist:
        return None


def partner_drivers_for_agent(*, partner: Partner) -> list[dict]:
    """The partner's current drivers (stored with the score, or computed on demand by ml)."""
    try:
        from ml.selectors import partner_drivers
    except ImportError:
        partner_drivers = None
    if partner_drivers is not None:
        return list(partner_drivers(partner=partner) or [])
    score = partner_score(partner=partner)
    return list(score.drivers or []) if score is not None else []


def budget_used(*, now: dt.datetime | None = None) -> int:
    """Agent contacts (holdouts excluded: nobody was contacted) in the last 60 minutes."""
    now = now or timezone.now()
    return (
        Intervention.objects.filter(source=Intervention.Source.AGENT, created_at__gt=now - BUDGET_WINDOW)
        .exclude(action=Intervention.Action.HOLDOUT)
        .count()
    )


def activity_log(*, run_id: int | None = None, event_type: str = "", limit: int = 50) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.select_related("actor_user", "partner", "run")
    if run_id:
        events = events.filter(run_id=run_id)
    if event_type:
        events = events.filter(event_type=event_type)
    return events[:limit]


def audit_event_types() -> list[str]:
    return sorted(AuditEvent.objects.order_by().values_list("event_type", flat=True).distinct())


def review_queue(*, limit: int = 50) -> QuerySet[Intervention]:
    return (
        Intervention.objects.filter(review_status=Intervention.Review.AWAITING)
        .select_related("partner")
        .order_by("created_at")[:limit]
    )


def recent_runs(*, limit: int = 10) -> QuerySet[AgentRun]:
    return AgentRun.objects.select_related("requested_by")[:limit]


def do_not_contact_list() -> QuerySet[DoNotContact]:
    return DoNotContact.objects.select_related("partner", "added_by")


def writer_status() -> dict:
    """Which email writer is active, for the Agent Control page."""
    from agent.llm import llm_configured

    config = agent_config_get()
    if llm_configured():
        model = config.llm_model or settings.OPENAI_MODEL
        base_url = settings.OPENAI_BASE_URL or "https://api.openai.com/v1"
        return {"llm": True, "label": f"LLM: {model} at {base_url}"}
    return {"llm": False, "label": "Template writer: no OPENAI_API_KEY"}


def audit_verification_latest() -> AuditVerification | None:
    """The last walk of the audit chain (audit_verify, nightly), for the Agent page."""
    return AuditVerification.objects.order_by("-checked_at", "-id").first()
