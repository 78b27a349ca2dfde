"""Reads for the Intervention Log: its rows, filters, outcome summary and what may be undone."""

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.utils import timezone

from agent.models import AuditEvent
from retention.models import Intervention
from retention.roi import not_contacts

Outcome = Intervention.Outcome
HOLDOUT = Intervention.Action.HOLDOUT

# How long the person who changed an outcome may take it back (the Intervention Log's Undo).
UNDO_SECONDS = 10
OUTCOME_EVENTS = ("outcome_set", "outcome_corrected", "outcome_undone")


def intervention_log_rows() -> QuerySet[Intervention]:
    """Interventions as the Intervention Log shows them: with the latest outcome change's type
    and reason (so a correction reads "corrected by X: reason" under the outcome)."""
    latest_change = AuditEvent.objects.filter(
        intervention=OuterRef("pk"), event_type__in=OUTCOME_EVENTS
    ).order_by("-seq")
    return Intervention.objects.select_related(
        "partner", "assigned_to", "created_by", "outcome_set_by", "email_outbox"
    ).annotate(
        outcome_event=Subquery(latest_change.values("event_type")[:1]),
        outcome_reason=Subquery(
            latest_change.annotate(r=KeyTextTransform("reason", "payload")).values("r")[:1]
        ),
    )


def outcome_undoable_event(*, intervention: Intervention, actor) -> AuditEvent | None:
    """The outcome change `actor` may still undo on this intervention (their own, the latest,
    younger than UNDO_SECONDS), else None."""
    latest = (
        AuditEvent.objects.filter(intervention=intervention, event_type__in=OUTCOME_EVENTS)
        .order_by("-seq")
        .first()
    )
    if (
        latest is None
        or latest.event_type == "outcome_undone"
        or latest.actor_user_id != actor.pk
        or (timezone.now() - latest.created_at).total_seconds() > UNDO_SECONDS
    ):
        return None
    return latest


def intervention_list(
    *,
    action: str = "",
    source: str = "",
    outcome: str = "",
    tier: str = "",
    assigned_to: int | None = None,
    search: str = "",
) -> QuerySet[Intervention]:
    qs = intervention_log_rows()
    if action:
        qs = qs.filter(action=action)
    if source:
        qs = qs.filter(source=source)
    if outcome:
        qs = qs.filter(outcome=outcome)
    if tier:
        qs = qs.filter(partner__tier=tier)
    if assigned_to:
        qs = qs.filter(assigned_to_id=assigned_to)
    search = search.strip()
    if search:
        qs = qs.filter(Q(partner__external_id__iexact=search) | Q(partner__name__icontains=search))
    return qs.order_by("-created_at", "-pk")


def outcome_summary(**filters) -> dict:
    """Saved / churned / pending counts of the (filtered) log and the save rate.

    Holdouts and rejected drafts are left out (nobody was contacted), unless the filter
    asks for holdouts explicitly.
    """
    qs = intervention_list(**filters)
    if filters.get("action") != HOLDOUT:
        qs = qs.exclude(not_contacts())
    counts = qs.aggregate(
        saved=Count("pk", filter=Q(outcome=Outcome.SAVED)),
        churned=Count("pk", filter=Q(outcome=Outcome.CHURNED)),
        pending=Count("pk", filter=Q(outcome=Outcome.PENDING)),
    )
    resolved = counts["saved"] + counts["churned"]
    counts["total"] = resolved + counts["pending"]
    counts["save_rate"] = counts["saved"] / resolved if resolved else None
    return counts
