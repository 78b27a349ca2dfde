from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from api import tokens, webhooks
from api.models import ApiToken, WebhookDelivery, WebhookSubscription


class ApiTokenAddForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "user__username", "prefix")
    readonly_fields = ("user", "name", "prefix", "created_at", "last_used_at", "revoked_at", "revoked_by")
    exclude = ("key_hash",)
    actions = ["revoke"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ()

    def get_exclude(self, request, obj=None):
        return (
            ("key_hash", "prefix", "last_used_at", "revoked_at", "revoked_by")
            if obj is None
            else self.exclude
        )

    def save_model(self, request, obj, form, change):
        if change:
            return  # history: nothing about a token changes but through revoke
        row, token = tokens.api_token_create(user=obj.user, name=obj.name, actor=request.user)
        obj.pk, obj.key_hash, obj.prefix, obj.created_at = row.pk, row.key_hash, row.prefix, row.created_at
        obj._state.adding = False
        # Shown this once; only its hash is kept.
        messages.warning(request, f"The new token (shown only now): {token}")

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset) -> None:
        n = 0
        for token in queryset.filter(revoked_at__isnull=True):
            tokens.api_token_revoke(token=token, actor=request.user)  # type: ignore[arg-type]
            n += 1
        self.message_user(request, f"Revoked {n} token{'s' if n != 1 else ''}")

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoked, not deleted: the audit trail names them


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    list_display = ("url", "events", "is_active", "created_by", "created_at")
    list_filter = ("is_active",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "event",
        "event_id",
        "subscription",
        "status",
        "last_status_code",
        "attempts",
        "created_at",
    )
    list_filter = ("status", "event")
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ["replay"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Replay the selected deliveries", permissions=["change"])
    def replay(self, request: HttpRequest, queryset) -> None:
        for delivery in queryset:
            webhooks.webhook_delivery_replay(delivery=delivery, actor=request.user)  # type: ignore[arg-type]
        self.message_user(request, f"Queued {queryset.count()} deliveries again")

    def has_change_permission(self, request, obj=None) -> bool:
        # The replay action needs "change"; the rows themselves stay read-only (readonly_fields).
        return request.user.has_perm("api.change_webhooksubscription")
