from django.conf import settings
from django.db import models
from django.db.models import Q

from churnsite.db import TimeStampedModel


class Partner(TimeStampedModel):
    class Tier(models.TextChoices):
        BRONZE = "bronze", "Bronze"
        SILVER = "silver", "Silver"
        GOLD = "gold", "Gold"
        PLATINUM = "platinum", "Platinum"

    class Region(models.TextChoices):
        NA = "na", "North America"
        EMEA = "emea", "EMEA"
        APAC = "apac", "APAC"
        LATAM = "latam", "LATAM"

    class Segment(models.TextChoices):
        RESELLER = "reseller", "Reseller"
        MERCHANT = "merchant", "Merchant"
        REFERRAL = "referral", "Referral"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        CHURNED = "churned", "Churned"

    external_id = models.CharField(max_length=16, unique=True)
    name = models.CharField(max_length=200)
    tier = models.CharField(max_length=10, choices=Tier.choices)
    region = models.CharField(max_length=10, choices=Region.choices)
    segment = models.CharField(max_length=10, choices=Segment.choices)
    monthly_revenue = models.DecimalField(max_digits=12, decimal_places=2)
    contact_email = models.EmailField()
    # Indexed by partner_owner_idx (which leads with it) rather than on its own.
    account_owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_partners",
        db_index=False,
    )
    joined_on = models.DateField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    churned_on = models.DateField(null=True, blank=True)
    # db_default: the simulator seeds partners with COPY and does not name this column.
    churn_reason = models.CharField(
        max_length=200, blank=True, default="", db_default="", help_text="From an imported churn event"
    )
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["external_id"]
        permissions = [("import_data", "Can import partner data")]
        constraints = [
            models.CheckConstraint(
                condition=Q(tier__in=["bronze", "silver", "gold", "platinum"]),
                name="partner_tier_valid",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["active", "churned"]), name="partner_status_valid"
            ),
            models.CheckConstraint(condition=Q(monthly_revenue__gte=0), name="partner_revenue_non_negative"),
            # A churned partner has a churn date and an active one has none.
            models.CheckConstraint(
                condition=Q(status="active", churned_on__isnull=True)
                | Q(status="churned", churned_on__isnull=False),
                name="partner_churned_on_matches_status",
            ),
        ]
        indexes = [
            # Partner list: tier filter + status.
            models.Index(fields=["tier", "status"], name="partner_tier_status_idx"),
            # "Did any partner change since the scoring run?" (the Live Feed's free count).
            models.Index(fields=["updated_at"], name="partner_updated_at_idx"),
            # An owner's partners as ids without their rows (index-only): the desk strip's tasks
            # due and drafts waiting for an owner hash-join them (bench/feed_bench.py); the Live
            # Feed's owner filter and the digest read the owner's rows through it.
            models.Index(fields=["account_owner", "id"], name="partner_owner_idx"),
            # The Live Feed's owner and tier together ("my platinum partners"): the count
            # intersected the owner's and the tier's bitmaps, 7 of its 13.4 ms at 1M partners
            # (bench/scale_bench.py, the combined variant); one index range reads 6.4 ms.
            models.Index(fields=["account_owner", "tier", "status", "id"], name="partner_owner_tier_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.external_id} {self.name}"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class MonthlyActivity(models.Model):
    # No index of its own: the unique (partner, month) index serves every partner lookup, and
    # one index fewer to maintain is a sixth of a big import's insert time.
    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="activity", db_index=False)
    month = models.DateField(help_text="First day of the month")
    transactions = models.PositiveIntegerField()
    revenue = models.DecimalField(max_digits=12, decimal_places=2)
    active_users = models.PositiveIntegerField()
    support_tickets = models.PositiveIntegerField()
    # Optional (docs/data.md): of the month's transactions, those of its last 14 and 7 days,
    # so a partner that starts winding down late in a month shows it within the month.
    transactions_last_14d = models.PositiveIntegerField(null=True, blank=True)
    transactions_last_7d = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["partner", "month"]
        verbose_name_plural = "monthly activity"
        constraints = [
            models.UniqueConstraint(fields=["partner", "month"], name="activity_one_row_per_month"),
        ]

    def __str__(self) -> str:
        return f"{self.partner_id} {self.month:%Y-%m}"


class Invoice(models.Model):
    # No index of its own: the unique (partner, invoice_id) index serves partner lookups.
    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="invoices", db_index=False)
    # The team's own invoice number, the natural key of an import (the simulator has none).
    invoice_id = models.CharField(max_length=64, null=True, blank=True)
    issued_on = models.DateField()
    due_on = models.DateField()
    paid_on = models.DateField(null=True, blank=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        ordering = ["partner", "issued_on"]
        constraints = [
            models.CheckConstraint(
                condition=Q(due_on__gte=models.F("issued_on")), name="invoice_due_after_issue"
            ),
            models.CheckConstraint(condition=Q(amount__gte=0), name="invoice_amount_non_negative"),
            # Re-importing the same invoices updates them (NULLs, the simulator's, never clash).
            models.UniqueConstraint(fields=["partner", "invoice_id"], name="invoice_one_row_per_invoice_id"),
        ]
        indexes = [
            # Partner page payment chart and feature extraction read a partner's invoices by date.
            models.Index(fields=["partner", "issued_on"], name="invoice_partner_issued_idx"),
        ]

    def __str__(self) -> str:
        return f"Invoice {self.partner_id} {self.issued_on}"


HOLDOUT_OUTCOME_LABELS = {
    "pending": "Pending (not contacted)",
    "saved": "Stayed (not contacted)",
    "churned": "Churned (not contacted)",
}


# agent.EmailOutbox statuses that mean the email is not (yet) sent; "sent" reads "Email sent".
OUTBOX_LABELS = {
    "queued": "Email queued (not sent yet)",
    "sending": "Email sending",
    "in_doubt": "Email interrupted mid-send (may have gone out: check before sending again)",
    "refused": "Email refused at send time (not sent)",
    "failed": "Email failed (not sent)",
}


class Intervention(TimeStampedModel):
    """One contact (or deliberate non-contact, for the control group) with a partner."""

    class Action(models.TextChoices):
        EMAIL_SENT = "email_sent", "Email sent"
        CALL_SCHEDULED = "call_scheduled", "Call scheduled"
        MEETING = "meeting", "Meeting"
        DISCOUNT_OFFERED = "discount_offered", "Discount offered"
        OTHER = "other", "Other"
        HOLDOUT = "holdout", "Control group (not contacted)"

    class Source(models.TextChoices):
        MANUAL = "manual", "Manual"
        AGENT = "agent", "Agent"

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        SAVED = "saved", "Saved ✓"
        CHURNED = "churned", "Churned ✗"

    class Review(models.TextChoices):
        NOT_REQUIRED = "not_required", "Not required"
        AWAITING = "awaiting", "Awaiting approval"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    class Writer(models.TextChoices):
        NONE = "", "None"
        MANUAL = "manual", "Written by a person"
        TEMPLATE = "template", "Template writer"
        LLM = "llm", "LLM"

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="interventions")
    action = models.CharField(max_length=20, choices=Action.choices)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.MANUAL)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.PENDING)
    review_status = models.CharField(max_length=15, choices=Review.choices, default=Review.NOT_REQUIRED)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_interventions",
    )
    note = models.TextField(blank=True)
    # What the desk knew when it acted: kept so the log explains itself later.
    risk_at_action = models.FloatField(null=True, blank=True)
    bucket_at_action = models.CharField(max_length=10, blank=True)
    drivers_at_action = models.JSONField(default=list, blank=True)
    email_subject = models.CharField(max_length=200, blank=True)
    email_body = models.TextField(blank=True)
    writer = models.CharField(max_length=10, choices=Writer.choices, blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    agent_run = models.ForeignKey(
        "agent.AgentRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="interventions"
    )
    outcome_set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    outcome_set_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("approve_intervention", "Can approve or reject held interventions"),
            ("correct_outcome", "Can change an already resolved outcome"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(outcome__in=["pending", "saved", "churned"]), name="intervention_outcome_valid"
            ),
            models.CheckConstraint(
                condition=Q(source__in=["manual", "agent"]), name="intervention_source_valid"
            ),
            models.CheckConstraint(
                condition=Q(review_status__in=["not_required", "awaiting", "approved", "rejected"]),
                name="intervention_review_valid",
            ),
            models.CheckConstraint(
                condition=Q(risk_at_action__isnull=True) | Q(risk_at_action__gte=0, risk_at_action__lte=1),
                name="intervention_risk_is_probability",
            ),
            # The agent never has two open interventions on the same partner.
            models.UniqueConstraint(
                fields=["partner"],
                condition=Q(source="agent", outcome="pending"),
                name="one_open_agent_intervention_per_partner",
            ),
        ]
        indexes = [
            # Intervention Log filtered by source, and the agent's rolling-hour budget count.
            models.Index(fields=["source", "created_at"], name="intv_source_created_idx"),
            # Intervention Log default order, newest first: a page reads 50 rows off its top
            # instead of sorting the whole history (200k rows: 1 s).
            models.Index(fields=["-created_at", "-id"], name="intv_log_newest_idx"),
            # Cooldown check and partner timeline: a partner's interventions by date.
            models.Index(fields=["partner", "created_at"], name="intv_partner_created_idx"),
            # Drafts waiting for approval: the Live Feed's strip, the digest, chat alerts.
            models.Index(
                fields=["created_at"], condition=Q(review_status="awaiting"), name="intv_awaiting_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} for {self.partner_id} ({self.outcome})"

    @classmethod
    def describe_action(cls, action: str, review_status: str, outbox_status: str | None = None) -> str:
        """What was done, as the desk should read it: a held, refused or still queued email was not
        sent (`outbox_status` is its agent.EmailOutbox status, when it went through the outbox)."""
        if action == cls.Action.EMAIL_SENT:
            if outbox_status in OUTBOX_LABELS:
                return OUTBOX_LABELS[outbox_status]
            if review_status == cls.Review.AWAITING:
                return "Email drafted (not sent)"
            if review_status == cls.Review.REJECTED:
                return "Email rejected (not sent)"
        return cls.Action(action).label if action in cls.Action.values else action

    @property
    def saved_but_churned_on(self):
        """The churn date when the partner churned after this was marked Saved (a person's
        call that the facts overturned: a manager should correct it), else None."""
        partner = self.partner
        if (
            self.outcome == self.Outcome.SAVED
            and partner.status == Partner.Status.CHURNED
            and partner.churned_on
            and partner.churned_on >= self.created_at.date()
        ):
            return partner.churned_on
        return None

    @property
    def outbox_status(self) -> str | None:
        # The reverse one-to-one raises an AttributeError subclass when there is no outbox row.
        outbox = getattr(self, "email_outbox", None)
        return outbox.status if outbox is not None else None

    @property
    def action_label(self) -> str:
        return self.describe_action(self.action, self.review_status, self.outbox_status)

    @property
    def is_holdout(self) -> bool:
        return self.action == self.Action.HOLDOUT

    @property
    def outcome_choices(self) -> list[tuple[str, str]]:
        """The outcome menu in this row's words: nobody saved a control partner, it stayed."""
        if not self.is_holdout:
            return list(self.Outcome.choices)
        return [(v, HOLDOUT_OUTCOME_LABELS.get(v, label)) for v, label in self.Outcome.choices]

    @property
    def is_resolved(self) -> bool:
        return self.outcome != self.Outcome.PENDING


class RoiAssumptions(TimeStampedModel):
    """The business assumptions behind the ROI figures: one row, edited by managers (audited)."""

    SINGLETON_PK = 1

    months_of_revenue_saved = models.PositiveSmallIntegerField(
        default=6, help_text="Months of a saved partner's revenue counted as retained"
    )
    assumed_save_rate = models.FloatField(
        default=0.3, help_text="Share of at-risk partners an intervention is expected to save (predicted ROI)"
    )
    cost_email_sent = models.DecimalField(max_digits=10, decimal_places=2, default=25)
    cost_call_scheduled = models.DecimalField(max_digits=10, decimal_places=2, default=150)
    cost_meeting = models.DecimalField(max_digits=10, decimal_places=2, default=400)
    cost_discount_offered = models.DecimalField(max_digits=10, decimal_places=2, default=500)
    cost_other = models.DecimalField(max_digits=10, decimal_places=2, default=50)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name_plural = "ROI assumptions"
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="roi_assumptions_singleton"),
            models.CheckConstraint(
                condition=Q(assumed_save_rate__gte=0, assumed_save_rate__lte=1),
                name="roi_assumed_save_rate_is_probability",
            ),
        ]

    def __str__(self) -> str:
        return "ROI assumptions"

    def cost_of(self, action: str):
        """Cost of one intervention of this action type (holdouts cost nothing)."""
        return getattr(self, f"cost_{action}", 0) or 0

    def action_costs(self) -> dict:
        return {a: self.cost_of(a) for a in Intervention.Action.values if a != Intervention.Action.HOLDOUT}


class ImportJob(TimeStampedModel):
    """One upload on the Import page: its files, how far it got, and its per-row errors."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Imported"
        FAILED = "failed", "Not imported"

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    dry_run = models.BooleanField(default=False)
    replace = models.BooleanField(default=False)
    files = models.JSONField(default=list, help_text="[{name, path}] as uploaded")
    summary = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(
        default=list, blank=True, help_text="The first errors, {file, line, column, reason}"
    )
    error_count = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "succeeded", "failed"]),
                name="importjob_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"Import {self.pk} ({self.status})"

    @property
    def is_done(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)
