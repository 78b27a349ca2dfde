from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from churnsite.db import TimeStampedModel


class DeskPreference(TimeStampedModel):
    """One person's desk settings, remembered across sessions and devices."""

    class Scope(models.TextChoices):
        MINE = "mine", "My partners"
        ALL = "all", "All partners"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="desk")
    # Blank until the person picks: then "mine" for anyone who owns partners.
    feed_scope = models.CharField(max_length=4, choices=Scope.choices, blank=True)
    digest_enabled = models.BooleanField(default=True, help_text="Send me the morning digest")
    digest_time = models.TimeField(null=True, blank=True, help_text="Local time; blank = DIGEST_TIME")
    digest_timezone = models.CharField(max_length=64, blank=True, help_text="Blank = DIGEST_TIMEZONE")
    last_digest_on = models.DateField(null=True, blank=True, help_text="Local date of the last digest")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(feed_scope__in=["", "mine", "all"]), name="desk_scope_valid"),
        ]

    def __str__(self) -> str:
        return f"Desk of {self.user}"


class SavedView(TimeStampedModel):
    """A named Live Feed filter and sort (the query string), private or shared with the team."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_views")
    name = models.CharField(max_length=60)
    query = models.CharField(max_length=500, blank=True, help_text="The feed's query string")
    shared = models.BooleanField(default=False, help_text="Listed for the whole team")

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="savedview_unique_name_per_owner"),
        ]
        indexes = [
            # Navigation: the team's shared views.
            models.Index(fields=["shared", "name"], name="savedview_shared_idx"),
        ]

    def __str__(self) -> str:
        return self.name


class ChatAlert(TimeStampedModel):
    """An outbox row for one chat message: written where the event happens, sent by a task,
    so a slow or failing webhook never holds up scoring or the agent."""

    class Kind(models.TextChoices):
        AT_RISK = "at_risk", "Crossed into at risk"
        DRAFT_WAITING = "draft_waiting", "Platinum draft waiting"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed (gave up)"

    partner = models.ForeignKey("retention.Partner", on_delete=models.CASCADE, related_name="chat_alerts")
    kind = models.CharField(max_length=15, choices=Kind.choices)
    day = models.DateField(default=timezone.localdate)
    text = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # Deduplicated per partner per day (and per kind of event).
            models.UniqueConstraint(fields=["partner", "kind", "day"], name="chatalert_once_per_day"),
            models.CheckConstraint(
                condition=Q(kind__in=["at_risk", "draft_waiting"]), name="chatalert_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "sent", "failed"]), name="chatalert_status_valid"
            ),
        ]
        indexes = [
            # The sender: pending alerts whose next attempt is due.
            models.Index(fields=["status", "next_attempt_at"], name="chatalert_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.partner_id} {self.day} ({self.status})"
