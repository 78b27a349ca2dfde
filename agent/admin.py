"""The agent in the admin: the managers' review queue, configuration, and the read-only trail."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.html import format_html

from agent import outbox, services
from agent.emails import diff_in_words
from agent.forms import ReviewForm
from agent.models import AgentConfig, AgentRun, AuditEvent, DoNotContact, FollowUp, InterventionReview
from churnsite.access import AuthedHttpRequest
from retention.admin import draft_edit_side_by_side, drivers_in_words, intervention_heading, risk_in_percent
from retention.models import Intervention

APPROVE_PERM = "retention.approve_intervention"


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(InterventionReview)
class InterventionReviewAdmin(ReadOnlyAdmin):
    """Agent drafts held for approval: managers review, edit, approve (sends) or reject."""

    list_display = [
        "created_at",
        "partner",
        "tier",
        "risk",
        "review_status",
        "writer",
        "sent_at",
        "review_link",
    ]
    list_filter = ["review_status", "partner__tier", "writer"]
    search_fields = ["partner__external_id", "partner__name", "email_subject"]
    list_select_related = ["partner"]
    ordering = ["created_at"]
    actions = ["approve_selected"]
    readonly_fields = (
        "partner",
        "review_status",
        "risk_at_action",
        "drivers_at_action",
        "email_subject",
        "email_body",
        "writer",
        "sent_at",
        "agent_run",
        "note",
    )
    fields = readonly_fields

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .filter(
                source=Intervention.Source.AGENT,
                review_status__in=[
                    Intervention.Review.AWAITING,
                    Intervention.Review.APPROVED,
                    Intervention.Review.REJECTED,
                ],
            )
        )

    @admin.display(description="Tier", ordering="partner__tier")
    def tier(self, obj):
        return obj.partner.get_tier_display()

    @admin.display(description="Risk", ordering="risk_at_action")
    def risk(self, obj):
        return f"{obj.risk_at_action:.0%}" if obj.risk_at_action is not None else "—"

    @admin.display(description="")
    def review_link(self, obj):
        label = "Review" if obj.review_status == Intervention.Review.AWAITING else "Details"
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:agent_interventionreview_review", args=[obj.pk]), label
        )

    def has_approve_permission(self, request):
        return request.user.has_perm(APPROVE_PERM)

    @admin.action(description="Approve and send selected drafts (as drafted)", permissions=["approve"])
    def approve_selected(self, request, queryset):
        approved = 0
        for intervention in queryset.filter(review_status=Intervention.Review.AWAITING):
            try:
                services.intervention_approve(intervention=intervention, actor=request.user)
            except ValidationError as exc:
                self.message_user(
                    request, f"{intervention.partner}: {'; '.join(exc.messages)}", messages.ERROR
                )
            else:
                approved += 1
        self.message_user(request, f"Approved {approved} intervention{'s' if approved != 1 else ''}")

    def get_urls(self):
        review = self.admin_site.admin_view(self.review_view)
        return [path("<id:pk>/review/", review, name="agent_interventionreview_review"), *super().get_urls()]

    def review_view(self, request: AuthedHttpRequest, pk: int) -> HttpResponse:
        """One held draft: partner, tier, risk, drivers, the editable draft; approve or reject."""
        intervention = get_object_or_404(self.get_queryset(request).select_related("partner"), pk=pk)
        if request.method == "POST" and not request.user.has_perm(APPROVE_PERM):
            # The service audits the refused attempt and raises PermissionDenied (403).
            if request.POST.get("decision") == "reject":
                services.intervention_reject(intervention=intervention, actor=request.user, reason="-")
            services.intervention_approve(intervention=intervention, actor=request.user)
        if not self.has_view_permission(request):
            raise PermissionDenied
        initial = {"email_subject": intervention.email_subject, "email_body": intervention.email_body}
        refusal = services.approve_refusal(intervention=intervention, partner=intervention.partner)
        form = ReviewForm(request.POST or None, initial=initial)
        if request.method == "POST":
            decision = request.POST.get("decision")
            if form.is_valid():
                data = form.cleaned_data
                try:
                    # The services audit and refuse (403) anyone without the approve permission.
                    if decision == "approve":
                        approved = services.intervention_approve(
                            intervention=intervention,
                            actor=request.user,
                            subject=data["email_subject"],
                            body=data["email_body"],
                        )
                        self.message_user(request, outbox.approved_notice(approved))
                    elif decision == "reject":
                        services.intervention_reject(
                            intervention=intervention, actor=request.user, reason=data["reason"]
                        )
                        self.message_user(request, f"Rejected the draft for {intervention.partner}")
                    else:
                        raise ValidationError("Choose approve or reject")
                except ValidationError as exc:
                    form.add_error(None, exc)
                else:
                    return redirect("admin:agent_interventionreview_changelist")
        approved = intervention.audit_events.filter(event_type="review_approved").first()
        held = intervention.audit_events.filter(event_type="held_for_review").first()
        context = {
            **self.admin_site.each_context(request),
            "edit_in_words": diff_in_words(approved.payload.get("diff") or "") if approved else [],
            "held_reason": (held.payload.get("reason") or "") if held else "",
            "opts": self.model._meta,
            "title": intervention_heading(intervention),
            "risk": risk_in_percent(intervention.risk_at_action),
            "drivers": drivers_in_words(intervention.drivers_at_action),
            "edit_side_by_side": draft_edit_side_by_side(intervention),
            "intervention": intervention,
            "form": form,
            "can_approve": request.user.has_perm(APPROVE_PERM),
            "awaiting": intervention.review_status == Intervention.Review.AWAITING,
            # Say before the click why an approval would be refused (listed do-not-contact, ...).
            "blocked": outbox.refusal_message(refusal, partner=intervention.partner) if refusal else "",
        }
        return render(request, "admin/agent/interventionreview/review.html", context)


@admin.register(AgentConfig)
class AgentConfigAdmin(admin.ModelAdmin):
    list_display = ["__str__", "enabled", "risk_threshold", "max_per_hour", "cooldown_days", "approval_tiers"]
    readonly_fields = ["updated_at"]

    def has_add_permission(self, request):
        return not AgentConfig.objects.exists() and super().has_add_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        # Through the service, so the change is validated the same way and audited.
        changes = {
            name: form.cleaned_data[name] for name in form.changed_data if name in services.CONFIG_FIELDS
        }
        if not change:
            obj.pk = 1
            obj.save()
        services.agent_config_update(actor=request.user, **changes)


@admin.register(DoNotContact)
class DoNotContactAdmin(admin.ModelAdmin):
    list_display = ["partner", "reason", "added_by", "created_at"]
    search_fields = ["partner__external_id", "partner__name"]
    autocomplete_fields = ["partner"]
    readonly_fields = ["added_by", "created_at"]

    def has_change_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        services.do_not_contact_add(partner=obj.partner, reason=obj.reason, actor=request.user)

    def delete_model(self, request, obj):
        services.do_not_contact_remove(partner=obj.partner, actor=request.user)

    def delete_queryset(self, request, queryset):
        for entry in queryset.select_related("partner"):
            services.do_not_contact_remove(partner=entry.partner, actor=request.user)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Append-only: no add, change or delete here (the model and a database trigger agree)."""

    list_display = ["created_at", "event_type", "actor_type", "actor_user", "run", "partner", "intervention"]
    list_filter = ["event_type", "actor_type"]
    search_fields = ["partner__external_id", "event_type"]
    list_select_related = ["actor_user", "run", "partner", "intervention"]
    date_hierarchy = "created_at"


@admin.register(AgentRun)
class AgentRunAdmin(ReadOnlyAdmin):
    list_display = [
        "pk",
        "trigger",
        "status",
        "dry_run",
        "requested_by",
        "started_at",
        "finished_at",
        "summary",
    ]
    list_filter = ["status", "trigger"]


@admin.register(FollowUp)
class FollowUpAdmin(ReadOnlyAdmin):
    list_display = ["intervention", "due_at", "status", "crm_task_id", "escalation_task_id", "risk_at_check"]
    list_filter = ["status"]
