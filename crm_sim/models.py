"""The simulated CRM's system of record: one row per follow-up task.

In simulation this table IS the CRM; a real adapter (see crm_sim/client.py) would
keep its tasks in the remote CRM and only return records shaped like these rows.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from churnsite.db import TimeStampedModel


class CrmTask(TimeStampedModel):
    class Kind(models.TextChoices):
        RETENTION_CALL = "retention_call", "Retention Call"
        FOLLOW_UP_EMAIL = "follow_up_email", "Follow-up Email"
        MEETING = "meeting", "Meeting"
        ESCALATION = "escalation", "Escalation"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    class Outcome(models.TextChoices):
        SAVED = "saved", "Saved"
        CHURNED = "churned", "Churned"
        NONE = "none", "No outcome"

    partner = models.ForeignKey("retention.Partner", on_delete=models.PROTECT, related_name="crm_tasks")
    intervention = models.ForeignKey(
        "retention.Intervention",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="crm_tasks",
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    title = models.CharField(max_length=200)
    notes = models.TextField(blank=True)
    due_on = models.DateField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.NONE)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="crm_tasks",
    )
    # "SIM-000123" in simulation; set right after the insert, in the same transaction,
    # because it is derived from the primary key (hence nullable for that instant).
    external_id = models.CharField(max_length=40, unique=True, null=True, blank=True)
    # Every create carries one: a retried call finds the task its first attempt made.
    idempotency_key = models.CharField(max_length=200, unique=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    completed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["due_on", "id"]
        verbose_name = "CRM task"
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["retention_call", "follow_up_email", "meeting", "escalation"]),
                name="crmtask_kind_valid",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["open", "completed", "cancelled"]), name="crmtask_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(outcome__in=["saved", "churned", "none"]), name="crmtask_outcome_valid"
            ),
            # Only a completed task carries an outcome, and a completed task knows when.
            models.CheckConstraint(
                condition=Q(outcome="none") | Q(status="completed"),
                name="crmtask_outcome_only_when_completed",
            ),
            models.CheckConstraint(
                condition=~Q(status="completed") | Q(completed_at__isnull=False),
                name="crmtask_completed_has_time",
            ),
        ]
        indexes = [
            # CRM page: open tasks by due date (all, overdue, due this week), and the desk's tasks
            # due today: the id ends the index as it ends their order (due_on, id), so a page of
            # them is its first entries, not a sort of every task due (bench/feed_bench.py).
            models.Index(fields=["status", "due_on", "id"], name="crmtask_status_due_id_idx"),
            # CRM page "Mine": a user's open tasks by due date.
            models.Index(fields=["assigned_to", "status", "due_on"], name="crmtask_owner_status_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.external_id or 'unsaved'} {self.partner_id} {self.get_kind_display()}"

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN
