from django.contrib import admin

from retention.models import Intervention, Invoice, MonthlyActivity, Partner


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
# Kept simple and separate on purpose: the agent engineer extends InterventionAdmin with
# the managers' review actions (approve / reject held interventions), which must call
# the agent's services. Outcomes are read-only here: they change only through
# retention.services.intervention_set_outcome (the Intervention Log), which audits them.


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
    raw_id_fields = ["partner", "created_by", "assigned_to", "outcome_set_by", "agent_run"]
    date_hierarchy = "created_at"
    readonly_fields = ["outcome", "outcome_set_by", "outcome_set_at", "created_at", "updated_at"]
