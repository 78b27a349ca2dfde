import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from churnsite.db import TimeStampedModel
from retention.models import Intervention


def default_approval_tiers() -> list[str]:
    return ["platinum"]


class AgentRunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SKIPPED = "skipped", "Skipped (another run was active, or the agent is stopped)"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"


class AgentRunTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"
    COMMAND = "command", "Command"
    PARTNER = "partner", "Intervene now (one partner)"


class AgentRun(TimeStampedModel):
    Status = AgentRunStatus
    Trigger = AgentRunTrigger

    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    dry_run = models.BooleanField(default=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The one partner of an "intervene now" run: the sweep re-enqueues a queued run from here.
    partner = models.ForeignKey(
        "retention.Partner", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    summary = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=AgentRunStatus.values), name="agentrun_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(trigger__in=AgentRunTrigger.values), name="agentrun_trigger_valid"
            ),
        ]
        indexes = [
            # The sweep: queued and running runs by age.
            models.Index(fields=["status", "created_at"], name="agentrun_status_created_idx"),
        ]

    def __str__(self) -> str:
        return f"Agent run {self.pk} ({self.status})"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("The audit trail is append-only")

    def delete(self):
        raise PermissionError("The audit trail is append-only")


class AuditActor(models.TextChoices):
    AGENT = "agent", "Agent"
    USER = "user", "User"
    SYSTEM = "system", "System"


UNCHAINED = "Audit events are appended to the hash chain: use agent.audit.audit_record"


# A module-level name, so django-stubs can type the generated class.
_AuditEventBaseManager = models.Manager.from_queryset(AuditEventQuerySet)


class AuditEventManager(_AuditEventBaseManager):
    # from_queryset copies only the methods a Manager lacks, and it has create/bulk_create.
    def create(self, **kwargs):
        raise PermissionError(UNCHAINED)

    def bulk_create(self, objs, *args, **kwargs):
        raise PermissionError(UNCHAINED)


class AuditEvent(models.Model):
    """Append-only record of every step the agent and the team take.

    A hash chain makes it tamper-evident: event `seq` n stores the hash of event n-1
    (`prev_hash`) and `hash` = SHA-256 of its own content and prev_hash (agent.audit), so a row
    changed, removed or inserted by anyone who got past the database trigger (a superuser, the
    table owner) breaks the chain at that event, and `manage.py audit_verify` names it."""

    Actor = AuditActor

    # Set before the hash is computed (auto_now_add would stamp it after), never edited.
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    seq = models.PositiveBigIntegerField("chain position", unique=True, editable=False)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, editable=False)
    actor_type = models.CharField(max_length=10, choices=Actor.choices)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    run = models.ForeignKey(AgentRun, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    partner = models.ForeignKey(
        "retention.Partner", null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    intervention = models.ForeignKey(
        "retention.Intervention", null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    event_type = models.CharField(max_length=50)
    payload = models.JSONField(default=dict, blank=True)

    objects = AuditEventManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(actor_type__in=AuditActor.values), name="audit_actor_type_valid"
            ),
        ]
        indexes = [
            # Agent Control activity log: latest events, filtered by type.
            models.Index(fields=["event_type", "-created_at"], name="audit_type_time_idx"),
            # Activity log filtered by run.
            models.Index(fields=["run", "-created_at"], name="audit_run_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.event_type}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise PermissionError("The audit trail is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("The audit trail is append-only")


class AuditChainHead(models.Model):
    """The chain's last link (one row, pk=1). Appenders lock it FOR UPDATE, which serialises
    appends across every process and records where the chain must end, so events removed from
    its end are detected too. No foreign key to the events: TRUNCATE ... CASCADE of the events
    leaves the head saying how many there were."""

    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"Audit chain head: event {self.seq}"


class AuditVerification(models.Model):
    """One walk of the chain (`audit_verify`, nightly on the beat): the Agent page shows the last."""

    checked_at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    events = models.PositiveBigIntegerField(help_text="Events checked")
    head_seq = models.PositiveBigIntegerField(null=True, blank=True)
    head_hash = models.CharField(max_length=64, blank=True)
    broken_seq = models.PositiveBigIntegerField(null=True, blank=True, help_text="First broken link")
    broken_event_id = models.BigIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    seconds = models.FloatField(default=0)

    class Meta:
        ordering = ["-checked_at", "-id"]
        get_latest_by = "checked_at"

    def __str__(self) -> str:
        return f"Audit chain {'verified' if self.ok else 'BROKEN'} {self.checked_at:%Y-%m-%d %H:%M}"


class AgentConfig(models.Model):
    """The agent's settings: one row (pk=1), edited on the Agent Control page and in the admin."""

    enabled = models.BooleanField(default=False, help_text="Start/Stop: checked before every partner")
    risk_threshold = models.FloatField(default=0.85, help_text="Act on partners whose risk is above this")
    max_per_hour = models.PositiveIntegerField(
        default=50, help_text="Most agent contacts in any rolling 60 minutes, across all workers"
    )
    cooldown_days = models.PositiveIntegerField(
        default=30, help_text="Skip partners with any intervention in this many days"
    )
    follow_up_days = models.PositiveIntegerField(
        "follow-up days",
        default=7,
        help_text="Days after a contact when the agent checks the partner's risk again",
    )
    approval_tiers = models.JSONField(
        default=default_approval_tiers, blank=True, help_text="Tiers whose emails wait for a manager"
    )
    control_fraction = models.FloatField(
        default=0.10, help_text="Share of eligible partners held out (not contacted) to measure uplift"
    )
    llm_model = models.CharField("LLM model", max_length=100, blank=True, help_text="Blank = OPENAI_MODEL")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "agent configuration"
        verbose_name_plural = "agent configuration"
        permissions = [("run_agent", "Can start, stop and run the agent")]
        constraints = [
            models.CheckConstraint(condition=Q(pk=1), name="agentconfig_single_row"),
            models.CheckConstraint(
                condition=Q(risk_threshold__gte=0, risk_threshold__lte=1), name="agentconfig_threshold_prob"
            ),
            models.CheckConstraint(
                condition=Q(control_fraction__gte=0, control_fraction__lte=0.5),
                name="agentconfig_control_fraction_range",
            ),
            models.CheckConstraint(condition=Q(follow_up_days__gte=1), name="agentconfig_follow_up_positive"),
        ]

    def __str__(self) -> str:
        return "Agent configuration"


class DoNotContact(models.Model):
    """Partners the agent must never contact (their request, legal, a sensitive negotiation)."""

    partner = models.OneToOneField(
        "retention.Partner", on_delete=models.CASCADE, related_name="do_not_contact"
    )
    reason = models.CharField(max_length=200, blank=True)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "do-not-contact entry"
        verbose_name_plural = "do-not-contact list"

    def __str__(self) -> str:
        return f"Do not contact {self.partner_id}"


class PartnerClaim(models.Model):
    """A partner being worked on by one agent process; the primary key makes the claim exclusive.

    Held only while one partner is processed (the LLM call happens outside any transaction),
    so overlapping runs and per-partner tasks never draft or act on the same partner twice.
    A claim older than agent.locks.CLAIM_TTL is stale (its worker died) and may be taken over.
    """

    partner = models.OneToOneField(
        "retention.Partner", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    run = models.ForeignKey(AgentRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    token = models.CharField(max_length=32)
    claimed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"Claim on {self.partner_id}"


class FollowUpStatus(models.TextChoices):
    OPEN = "open", "Open"
    ESCALATED = "escalated", "Escalated (call task)"
    CLOSED = "closed", "Closed (risk improved)"


class FollowUp(TimeStampedModel):
    """The agent's follow-up check on one contacted partner, mirrored as a CRM task."""

    Status = FollowUpStatus

    intervention = models.OneToOneField(
        "retention.Intervention", on_delete=models.CASCADE, related_name="agent_follow_up"
    )
    due_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    crm_task_id = models.CharField(max_length=64, blank=True)
    escalation_task_id = models.CharField(max_length=64, blank=True)
    risk_at_check = models.FloatField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["due_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=FollowUpStatus.values), name="followup_status_valid"
            ),
        ]
        indexes = [
            # The hourly follow-up check: open follow-ups that are due.
            models.Index(fields=["status", "due_at"], name="followup_status_due_idx"),
        ]

    def __str__(self) -> str:
        return f"Follow-up on intervention {self.intervention_id} ({self.status})"


class EmailOutbox(TimeStampedModel):
    """One email to send for one intervention. It commits with the intervention (or its approval);
    sending is a separate idempotent step keyed on this row: the row is claimed under a lock, the
    guards are re-checked, and the email's Message-ID carries `key`. At most one row (and so one
    email) per intervention."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        REFUSED = "refused", "Refused at send time"
        FAILED = "failed", "Failed (gave up)"
        # The sender died during or right after the SMTP call: it may have gone out.
        IN_DOUBT = "in_doubt", "Interrupted mid-send (may have gone out)"

    intervention = models.OneToOneField(
        "retention.Intervention", on_delete=models.PROTECT, related_name="email_outbox"
    )
    key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    run = models.ForeignKey(AgentRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name = "outbox email"
        verbose_name_plural = "email outbox"
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "sending", "sent", "refused", "failed", "in_doubt"]),
                name="emailoutbox_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status="sent") | Q(sent_at__isnull=False), name="emailoutbox_sent_has_time"
            ),
        ]
        indexes = [
            # The sweep: queued rows that are due.
            models.Index(fields=["status", "next_attempt_at"], name="emailoutbox_status_due_idx"),
        ]

    def __str__(self) -> str:
        return f"Email for intervention {self.intervention_id} ({self.status})"


class InterventionReview(Intervention):
    """The managers' review queue in the admin: agent interventions that needed approval."""

    class Meta:
        proxy = True
        verbose_name = "intervention review"
        verbose_name_plural = "intervention reviews (approval queue)"
