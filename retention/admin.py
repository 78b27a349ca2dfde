import difflib

from django.contrib import admin
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from agent.models import AuditEvent
from ml.explain import feature_label
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


# How a manager reads an intervention in the admin (issue 12: a held draft opened as "Email sent
# for 2408 (pending)" with raw JSON drivers and risk 0.3347237286597048). The agent's review
# page uses the same helpers.

REVIEW_STATES: dict[str, str] = {
    Intervention.Review.AWAITING: "Held for approval",
    Intervention.Review.APPROVED: "Approved",
    Intervention.Review.REJECTED: "Rejected",
}


def intervention_heading(intervention: Intervention) -> str:
    """ "Held for approval: P10430 Cobalt Tech Co, Platinum" (the state, then who)."""
    partner = intervention.partner
    state = REVIEW_STATES.get(intervention.review_status) or intervention.action_label
    return f"{state}: {partner.external_id} {partner.name}, {partner.get_tier_display()}"


def risk_in_percent(risk: float | None) -> str:
    return "—" if risk is None else f"{risk:.0%}"


def drivers_in_words(drivers: list | None) -> list[str]:
    """Each driver as a sentence with what it did to the risk: "Payment 45 days overdue (adds
    18.0 points to the risk)"."""
    sentences = []
    for driver in drivers or []:
        text = driver.get("text") or feature_label(driver.get("feature", ""))
        points = driver.get("points")
        if isinstance(points, int | float) and points:
            effect = "adds" if points > 0 else "takes"
            text += f" ({effect} {abs(points):.1f} points {'to' if points > 0 else 'off'} the risk)"
        sentences.append(text)
    return sentences


def draft_edit_side_by_side(intervention: Intervention) -> SafeString | None:
    """The manager's edit before approval as a two-column table (difflib.HtmlDiff, which escapes
    the text): the draft as written on the left, what was sent on the right. None if unedited."""
    approved = (
        AuditEvent.objects.filter(intervention=intervention, event_type="review_approved")
        .order_by("-seq")
        .first()
    )
    if approved is None or not approved.payload.get("edited"):
        return None
    draft = approved.payload.get("draft")
    if draft is None:  # approved before the draft was kept: the unified diff is all there is
        return format_html('<pre class="edit-diff">{}</pre>', approved.payload.get("diff", ""))
    before = f"Subject: {draft['subject']}\n\n{draft['body']}".splitlines()
    after = f"Subject: {intervention.email_subject}\n\n{intervention.email_body}".splitlines()
    table = difflib.HtmlDiff(wrapcolumn=60).make_table(
        before, after, "Draft as written", "As approved and sent"
    )
    return mark_safe(f'<div class="edit-diff">{EDIT_DIFF_STYLE}{table}</div>')  # noqa: S308 - HtmlDiff escapes


EDIT_DIFF_STYLE = (
    "<style>.edit-diff table.diff{border-collapse:collapse;font-family:monospace;font-size:12px}"
    ".edit-diff td{padding:1px 6px;vertical-align:top}.edit-diff .diff_header{color:#6b7280}"
    ".edit-diff .diff_next{display:none}.edit-diff .diff_add{background:#d1fadf}"
    ".edit-diff .diff_chg{background:#fff3bf}.edit-diff .diff_sub{background:#fde2e1}</style>"
)


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

    # The change page shows these in words in place of the raw fields.
    SHOWN_AS = {"risk_at_action": "risk", "drivers_at_action": "drivers", "email_body": "draft"}

    def get_readonly_fields(self, request, obj=None):
        names = [f.name for f in Intervention._meta.fields if f.name not in INTERVENTION_EDITABLE]
        return [self.SHOWN_AS.get(name, name) for name in names] + ["edit"]

    def get_fields(self, request, obj=None):
        names = [self.SHOWN_AS.get(f.name, f.name) for f in Intervention._meta.fields if f.name != "id"]
        return [*names[: names.index("draft") + 1], "edit", *names[names.index("draft") + 1 :]]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is not None:
            heading = intervention_heading(obj)
            extra_context = {**(extra_context or {}), "title": heading, "subtitle": None}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="Risk at action")
    def risk(self, obj: Intervention) -> str:
        return risk_in_percent(obj.risk_at_action)

    @admin.display(description="Drivers at action")
    def drivers(self, obj: Intervention) -> SafeString | str:
        sentences = drivers_in_words(obj.drivers_at_action)
        if not sentences:
            return "—"
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((s,) for s in sentences)))

    @admin.display(description="Email")
    def draft(self, obj: Intervention) -> SafeString | str:
        if not obj.email_body:
            return "—"
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', obj.email_body)

    @admin.display(description="Edited before approval")
    def edit(self, obj: Intervention) -> SafeString | str:
        return draft_edit_side_by_side(obj) or "—"

    def save_model(self, request, obj, form, change):
        changes = {f: form.cleaned_data[f] for f in form.changed_data if f in INTERVENTION_EDITABLE}
        if changes:
            intervention_update(intervention=obj, actor=request.user, **changes)
