from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from churnsite.access import AuthedHttpRequest, permission_required
from churnsite.http import MAX_ID, partial_template
from ml import charts, selectors, wording
from ml.backtest import PSI_WARNING
from ml.explain import feature_label
from ml.models import ModelVersion, ValidationRun
from ml.services import ModelActivationError, model_version_activate

# One line each on what the number means, for readers who are not data scientists.
METRIC_ROWS = [
    (
        "roc_auc",
        "ROC AUC",
        "the chance a random churner is ranked above a random stayer: 0.5 is a coin flip, 1 is perfect",
    ),
    (
        "pr_auc",
        "PR AUC",
        "how many of the partners flagged first really churn, averaged over how deep you go; compare with the base rate",
    ),
    (
        "brier",
        "Brier score",
        "the mean squared gap between the risk shown and what happened (0 or 1); lower is better",
    ),
    (
        "ece",
        "Calibration error (ECE, 10 bins)",
        "the average gap between the risk shown and the share that churned, per 10-point band; lower is better",
    ),
    (
        "bucket_macro_f1",
        "Time bucket macro F1",
        "how well the shown churn window (or Low risk) matches when partners left, averaged over the four; 1 is perfect",
    ),
]

ORACLE_KEYS = {"roc_auc": "oracle_auc"}


@permission_required("ml.view_modelversion")
@require_GET
def model_page(request: AuthedHttpRequest) -> HttpResponse:
    """The active model (or ?version=N): its holdout metrics beside the oracle's, pictures."""
    versions = list(ModelVersion.objects.order_by("-trained_at")[:20])
    version = None
    if request.GET.get("version", "").isdigit() and int(request.GET["version"]) <= MAX_ID:
        version = get_object_or_404(ModelVersion, pk=int(request.GET["version"]))
    else:
        version = next((v for v in versions if v.is_active), versions[0] if versions else None)
    validation = ValidationRun.objects.first()
    context: dict[str, Any] = {"versions": versions, "version": version, **_validation_context(validation)}
    if version is not None:
        m = version.metrics or {}
        live = selectors.current_risk_histogram() if version.is_active else None
        context.update(
            {
                "m": m,
                "in_words": wording.model_in_words(m),
                "rows": [
                    {
                        "key": k,
                        "label": label,
                        "hint": hint,
                        "model": m.get(k),
                        "oracle": m.get(ORACLE_KEYS.get(k, f"oracle_{k}")),
                        "baseline": m.get(f"baseline_{k}"),
                    }
                    for k, label, hint in METRIC_ROWS
                ],
                "has_oracle": "oracle_auc" in m,
                # Models trained before the baseline existed have no such figures.
                "has_baseline": "baseline_roc_auc" in m,
                "reliability": charts.reliability(m.get("reliability", []), m.get("oracle_reliability")),
                "live_histogram": charts.histogram(live) if live and sum(live) else None,
                "test_histogram": charts.histogram(m.get("risk_histogram", []))
                if m.get("risk_histogram")
                else None,
                "importance": charts.importance(m.get("feature_importance", [])),
                "confusion": charts.confusion(m.get("bucket_confusion")),
                "run": selectors.latest_run(),
                "can_activate": request.user.has_perm("ml.change_modelversion"),
            }
        )
    template = partial_template(request, "ml/model.html", {"model-detail": "detail"})
    return render(request, template, context)


def _validation_context(validation: ValidationRun | None) -> dict[str, Any]:
    """The latest backtest in words, and the features whose drift passes the warning level."""
    if validation is None:
        return {"validation": None}
    psi = sorted(validation.psi.items(), key=lambda kv: -kv[1])
    return {
        "validation": validation,
        "realized": wording.realized_sentences(validation.reliability, horizon_days=validation.horizon_days),
        "drift": [{"feature": feature_label(f), "psi": v, "high": v > PSI_WARNING} for f, v in psi[:12]],
        "drifted": [feature_label(f) for f, v in psi if v > PSI_WARNING],
        "psi_warning": PSI_WARNING,
    }


@permission_required("ml.change_modelversion")
@require_POST
def model_activate(request: AuthedHttpRequest, pk: int) -> HttpResponse:
    version = get_object_or_404(ModelVersion, pk=pk)
    try:
        model_version_activate(version=version, actor=request.user)
    except ModelActivationError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Model v{version.pk} is now active; the next scoring run uses it.")
    return redirect("ml:model")
