from django.contrib import admin

from retention.models import Intervention, Invoice, MonthlyActivity, Partner
from retention.services import INTERVENTION_EDITABLE, intervention_update


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    """Managers' partner list; bench/feed_bench.py compares the Live Feed with this changelist."""

    list_display = [
        "external_id",
        "name",
        "tier",
        "region",
        "segment",
        "monthly_revenue",
        "status",
        "account_owner",
    ]
    list_filter = ["tier", "status", "region", "segment"]
    search_fields = ["external_id", "name"]
    list_select_related = ["account_owner"]
    raw_id_fields = ["account_owner"]
    list_per_page = 50


@admin.register(MonthlyActivity)
class MonthlyActivityAdmin(admin.ModelAdmin):
    list_display = ["partner", "month", "transactions", "revenue", "active_users", "support_tickets"]
    raw_id_fields = ["partner"]
    search_fields = ["partner__external_id"]


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    list_display = ["partner", "issued_on", "due_on", "paid_on", "amount"]
    raw_id_fields = ["partner"]
    search_fields = ["partner__external_id"]


# Intervention ----------------------------------------------------------------------
# History must not change here: every field is read-only but the note and the assignee, which
# go through retention.services.intervention_update (audited). Outcomes change through the
# Intervention Log, reviews through the review page, sends through the send service. Issue 9:
# a staff Retention user set review_status=approved here and a manager rewrote a sent agent
# intervention's source and sent_at, both without an audit event.


@admin.register(Intervention)
class InterventionAdmin(admin.ModelAdmin):
    list_display = [
        "partner",
        "action",
        "source",
        "review_status",
        "outcome",
        "assigned_to",
        "created_at",
        "outcome_set_at",
    ]
    list_filter = ["review_status", "outcome", "source", "action", "partner__tier"]
    search_fields = ["partner__external_id", "partner__name"]
    list_select_related = ["partner", "assigned_to"]
    raw_id_fields = ["assigned_to"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False  # logged from the partner page or by the agent, through the services

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the audit trail points at it

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Intervention._meta.fields if f.name not in INTERVENTION_EDITABLE]

    def save_model(self, request, obj, form, change):
        changes = {f: form.cleaned_data[f] for f in form.changed_data if f in INTERVENTION_EDITABLE}
        if changes:
            intervention_update(intervention=obj, actor=request.user, **changes)
