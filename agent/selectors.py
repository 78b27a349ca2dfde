"""Reads for the agent: who is eligible, how much of the hourly budget is used, the activity log."""

import datetime as dt
from collections import Counter

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from agent import results
from agent.llm import llm_configured
from agent.models import AgentConfig, AgentRun, AuditEvent, AuditVerification, DoNotContact
from agent.playbooks import plan_for
from ml.selectors import partner_current_score
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
    score = partner_current_score(partner=partner)
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


def intervene_refusal(*, partner: Partner) -> tuple[str, str]:
    """Why "Intervene now" on `partner` would do nothing, said before it is queued (the task
    checks all of it again under its locks): (code, words), or ("", "") when it may go. The
    codes are the API's: "stopped", "cap", or a partner_ineligibility code."""
    config = agent_config_get()
    p = partner.external_id
    if not config.enabled:
        return "stopped", f"{p} was not contacted: the agent is stopped (start it first)."
    if budget_used() >= config.max_per_hour:
        return "cap", f"{p} was not contacted: the hourly cap of {config.max_per_hour} contacts is reached."
    code = partner_ineligibility(partner=partner, config=config, skip_threshold=True)
    return code, results.skip_reason_text(code, partner_ref=p, config=config) if code else ""


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
        .select_related("partner", "partner__do_not_contact")
        .order_by("created_at")[:limit]
    )


def recent_runs(*, limit: int = 10) -> QuerySet[AgentRun]:
    return AgentRun.objects.select_related("requested_by")[:limit]


def do_not_contact_list() -> QuerySet[DoNotContact]:
    return DoNotContact.objects.select_related("partner", "added_by")


def writer_status() -> dict:
    """Which email writer is active, for the Agent Control page."""
    config = agent_config_get()
    if llm_configured():
        model = config.llm_model or settings.OPENAI_MODEL
        base_url = settings.OPENAI_BASE_URL or "https://api.openai.com/v1"
        return {"llm": True, "label": f"LLM: {model} at {base_url}"}
    return {"llm": False, "label": "Template writer: no OPENAI_API_KEY"}


def audit_verification_latest() -> AuditVerification | None:
    """The last walk of the audit chain (audit_verify, nightly), for the Agent page."""
    return AuditVerification.objects.order_by("-checked_at", "-id").first()


# The LLM writer: trust, hit rate, examples -------------------------------------------


def _llm_drafted(key: str | None = None) -> QuerySet[AuditEvent]:
    drafted = AuditEvent.objects.filter(
        event_type="email_drafted", payload__writer="llm", intervention__isnull=False
    )
    return drafted.filter(payload__writer_key=key) if key is not None else drafted


def writer_trust(*, key: str) -> dict:
    """How a model (base URL + model) did with the managers: its drafts approved without an edit,
    edited, rejected. It is trusted (its drafts stop being held) after LLM_TRUSTED_AFTER clean
    approvals."""
    reviews = AuditEvent.objects.filter(
        event_type__in=("review_approved", "review_rejected"),
        intervention_id__in=_llm_drafted(key).values("intervention_id"),
    )
    counts = reviews.aggregate(
        clean=Count("id", filter=Q(event_type="review_approved", payload__edited=False)),
        edited=Count("id", filter=Q(event_type="review_approved", payload__edited=True)),
        rejected=Count("id", filter=Q(event_type="review_rejected")),
    )
    reviewed = counts["clean"] + counts["edited"] + counts["rejected"]
    needed = int(getattr(settings, "LLM_TRUSTED_AFTER", 20))
    return {
        "key": key,
        "approved_clean": counts["clean"],
        "approved_edited": counts["edited"],
        "rejected": counts["rejected"],
        "reviewed": reviewed,
        "clean_rate": counts["clean"] / reviewed if reviewed else None,
        "needed": needed,
        "trusted": counts["clean"] >= needed,
    }


def writer_trust_table() -> list[dict]:
    """Every model that drafted an email, with its approval-without-edit rate (Agent page)."""
    keys = (
        AuditEvent.objects.filter(event_type="email_drafted", payload__writer_key__isnull=False)
        .exclude(payload__writer_key="")
        .order_by()
        .values_list("payload__writer_key", flat=True)
        .distinct()
    )
    return [writer_trust(key=key) for key in sorted(set(keys))]


def llm_hit_rate(*, runs: int = 10) -> list[dict]:
    """Per recent run: drafts by the LLM, fell back to the template (with the reasons), and
    whether the circuit breaker opened."""
    run_ids = list(AgentRun.objects.order_by("-pk").values_list("pk", flat=True)[:runs])
    llm: Counter[int] = Counter()
    template: Counter[int] = Counter()
    reasons: dict[int, Counter[str]] = {pk: Counter() for pk in run_ids}
    circuit_open: set[int] = set()
    events = AuditEvent.objects.filter(
        run_id__in=run_ids, event_type__in=("email_drafted", "llm_circuit_open")
    ).values_list("run_id", "event_type", "payload__writer", "payload__fallback_reason")
    for run_id, event_type, writer, reason in events:
        if event_type == "llm_circuit_open":
            circuit_open.add(run_id)
        elif writer == "llm":
            llm[run_id] += 1
        else:
            template[run_id] += 1
            reasons[run_id][(reason or "unknown").split(" '")[0]] += 1
    result = []
    for pk in run_ids:
        total = llm[pk] + template[pk]
        if total or pk in circuit_open:
            result.append(
                {
                    "run_id": pk,
                    "llm": llm[pk],
                    "template": template[pk],
                    "reasons": sorted(reasons[pk].items(), key=lambda kv: -kv[1]),
                    "circuit_open": pk in circuit_open,
                    "total": total,
                    "rate": llm[pk] / total if total else None,
                }
            )
    return result


def approved_edited_examples(
    *, playbook_key: str, exclude_partner_id: int | None = None, limit: int = 3
) -> list[dict]:
    """The last emails a manager edited and then approved for agent drafts led by the same
    playbook: the writer gets them as examples of what managers want."""
    approved = Intervention.objects.filter(
        source=Intervention.Source.AGENT,
        review_status=Intervention.Review.APPROVED,
        writer=Intervention.Writer.MANUAL,
    )
    if exclude_partner_id is not None:
        approved = approved.exclude(partner_id=exclude_partner_id)
    recent = approved.select_related("partner", "assigned_to").order_by("-updated_at")[:100]
    found = []
    for intervention in recent:
        plan = plan_for(intervention.drivers_at_action)
        if not plan or plan[0][0].key != playbook_key:
            continue
        owner = intervention.assigned_to
        found.append(
            {
                "subject": intervention.email_subject,
                "body": intervention.email_body,
                "partner_name": intervention.partner.name,
                "sender_name": (owner.get_full_name() or owner.get_username()) if owner else "",
            }
        )
        if len(found) >= limit:
            break
    return found
