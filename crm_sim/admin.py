from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError

from crm_sim.models import CrmTask
from crm_sim.services import crm_task_complete, crm_task_update

# What a person may edit on an open task; everything else is history or set by a service.
EDITABLE = ("title", "notes", "due_on", "assigned_to")


@admin.register(CrmTask)
class CrmTaskAdmin(admin.ModelAdmin):
    list_display = ["external_id", "partner", "kind", "title", "due_on", "status", "outcome", "assigned_to"]
    list_filter = ["status", "kind", "outcome"]
    search_fields = ["partner__external_id", "external_id", "title"]
    ordering = ["status", "due_on"]
    list_select_related = ["partner", "assigned_to"]
    raw_id_fields = ["assigned_to"]
    fields = [
        "external_id",
        "partner",
        "intervention",
        "kind",
        "title",
        "notes",
        "due_on",
        "assigned_to",
        "status",
        "outcome",
        "completed_at",
        "completed_by",
        "idempotency_key",
        "created_at",
        "updated_at",
    ]
    actions = ["complete_saved", "complete_churned"]

    def has_add_permission(self, request) -> bool:
        # Tasks come from the agent and the CRM client (with an idempotency key).
        return False

    def get_readonly_fields(self, request, obj=None):
        # Status and outcome change only through the services (completion resolves the intervention).
        if obj is not None and not obj.is_open:
            return self.fields
        return [f for f in self.fields if f not in EDITABLE]

    def save_model(self, request, obj, form, change):
        # Through the service, so the edit is validated and audited like any other.
        changes = {field: form.cleaned_data[field] for field in form.changed_data if field in EDITABLE}
        if changes:
            crm_task_update(task=obj, actor=request.user, **changes)

    def _complete(self, request, queryset, outcome: str) -> None:
        done, failed = 0, []
        for task in queryset.filter(status=CrmTask.Status.OPEN):
            try:
                crm_task_complete(task=task, outcome=outcome, actor=request.user)
                done += 1
            except (ValidationError, PermissionDenied) as exc:
                failed.append(f"{task.external_id}: {'; '.join(getattr(exc, 'messages', [str(exc)]))}")
        self.message_user(request, f"Completed {done} task{'s' if done != 1 else ''} as {outcome}")
        for line in failed:
            self.message_user(request, line, level=messages.ERROR)

    @admin.action(description="Complete selected open tasks as Saved", permissions=["change"])
    def complete_saved(self, request, queryset):
        self._complete(request, queryset, CrmTask.Outcome.SAVED)

    @admin.action(description="Complete selected open tasks as Churned", permissions=["change"])
    def complete_churned(self, request, queryset):
        self._complete(request, queryset, CrmTask.Outcome.CHURNED)
