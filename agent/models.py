from django.conf import settings
from django.db import models

from churnsite.db import TimeStampedModel


class AgentRun(TimeStampedModel):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        FINISHED = "finished", "Finished"
        FAILED = "failed", "Failed"
        STOPPED = "stopped", "Stopped"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        MANUAL = "manual", "Manual"
        COMMAND = "command", "Command"

    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    dry_run = models.BooleanField(default=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    summary = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Agent run {self.pk} ({self.status})"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("The audit trail is append-only")

    def delete(self):
        raise PermissionError("The audit trail is append-only")


class AuditEvent(models.Model):
    """Append-only record of every step the agent and the team take."""

    class Actor(models.TextChoices):
        AGENT = "agent", "Agent"
        USER = "user", "User"
        SYSTEM = "system", "System"

    created_at = models.DateTimeField(auto_now_add=True)
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

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
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
