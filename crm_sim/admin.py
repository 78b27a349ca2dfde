from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError

from crm_sim.models import CrmTask
from crm_sim.services import crm_task_complete


@admin.register(CrmTask)
class CrmTaskAdmin(admin.ModelAdmin):
    list_display = ["external_id", "partner", "kind", "title", "due_on", "status", "outcome", "assigned_to"]
    list_filter = ["status", "kind", "outcome"]
    search_fields = ["partner__external_id", "external_id", "title"]
    ordering = ["status", "due_on"]
    list_select_related = ["partner", "assigned_to"]
    raw_id_fields = ["partner", "intervention", "assigned_to"]
    # Status and outcome change only through the service (it resolves the intervention).
    readonly_fields = [
        "external_id",
        "idempotency_key",
        "status",
        "outcome",
        "completed_at",
        "completed_by",
        "created_at",
        "updated_at",
    ]
    actions = ["complete_saved", "complete_churned"]

    def has_add_permission(self, request) -> bool:
        # Tasks come from the agent and the CRM client (with an idempotency key).
        return False

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
