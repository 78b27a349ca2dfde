from django.conf import settings
from django.db import models
from django.db.models import Q

from churnsite.db import TimeStampedModel

WEBHOOK_EVENTS = (
    "partner.at_risk",
    "intervention.created",
    "intervention.sent",
    "intervention.outcome_set",
    "review.waiting",
)


class ApiToken(TimeStampedModel):
    """A person's API token. Only its SHA-256 is kept: the token itself is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    # hex SHA-256 of the token; the token is 256 bits of randomness, so no salt or slow hash.
    key_hash = models.CharField(max_length=64, unique=True)
    # The first characters, so a person can tell their tokens apart (not enough to use one).
    prefix = models.CharField(max_length=12)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class WebhookSubscription(TimeStampedModel):
    """Another system's URL that receives some of WEBHOOK_EVENTS, signed with its secret."""

    url = models.URLField(max_length=500)
    events = models.JSONField(default=list, help_text="Event names from WEBHOOK_EVENTS")
    secret = models.CharField(max_length=100, help_text="HMAC-SHA256 key of the signature header")
    description = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(TimeStampedModel):
    """One event for one subscription: the outbox row the sender claims, retries and records."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (gave up)"

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40)
    # The event's id, the same for every subscription and every attempt: receivers deduplicate on it.
    event_id = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "delivered", "failed"]), name="webhookdelivery_status_valid"
            ),
            # An event reaches a subscription once, however often its audit event is seen.
            models.UniqueConstraint(
                fields=["subscription", "event_id"], name="webhook_one_delivery_per_event"
            ),
        ]
        indexes = [
            # The sender's due query: queued rows by next attempt.
            models.Index(fields=["next_attempt_at"], condition=Q(status="queued"), name="webhook_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event} -> {self.subscription_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One HTTP attempt of a delivery: what the receiver answered (the deliveries page lists them)."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    seconds = models.FloatField(default=0)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.delivery_id} {self.status_code or self.error}"
