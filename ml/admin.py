from django.contrib import admin, messages

from ml.models import ModelVersion, ScoringRun, ValidationRun
from ml.services import ModelActivationError, model_version_activate


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "source", "is_active", "window_start", "window_end", "roc_auc", "ece"]
    list_filter = ["is_active", "source"]
    readonly_fields = [f.name for f in ModelVersion._meta.fields]
    actions = ["activate"]

    @admin.display(description="ROC AUC")
    def roc_auc(self, obj: ModelVersion):
        return obj.metrics.get("roc_auc")

    @admin.display(description="ECE")
    def ece(self, obj: ModelVersion):
        return obj.metrics.get("ece")

    def has_add_permission(self, request) -> bool:
        return False  # versions come from train_churn_model

    @admin.action(description="Activate the selected version", permissions=["change"])
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        try:
            version = model_version_activate(version=queryset.get(), actor=request.user)
        except ModelActivationError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"Activated model v{version.pk}")


@admin.register(ScoringRun)
class ScoringRunAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "model_version",
        "status",
        "as_of",
        "backfill",
        "started_at",
        "finished_at",
        "scored",
    ]
    list_filter = ["status", "backfill"]
    readonly_fields = [f.name for f in ScoringRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ValidationRun)
class ValidationRunAdmin(admin.ModelAdmin):
    """Backtests as `validate_model` recorded them: history, so read-only (no add, change or
    delete; the Model page shows the latest)."""

    list_display = ["__str__", "model_version", "as_of", "scored_until", "n_scores", "n_churned", "max_psi"]
    list_filter = ["model_version"]
    date_hierarchy = "as_of"
    readonly_fields = [f.name for f in ValidationRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
