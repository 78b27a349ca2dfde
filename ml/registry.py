"""Loading registered model artifacts, once per process.

Drivers on demand must answer in ~100 ms, so a process keeps each loaded model (and its
SHAP explainer) in memory; the key includes the checksum, so a replaced artifact is reloaded.
"""

from __future__ import annotations

import threading
from pathlib import Path

from django.conf import settings

from ml.churn_model import ChurnModel, load_model
from ml.models import ModelVersion

_cache: dict[tuple[int, str], ChurnModel] = {}
_lock = threading.Lock()


def artifact_full_path(relative: str) -> Path:
    return Path(settings.MEDIA_ROOT) / relative


def model_for_version(version: ModelVersion) -> ChurnModel:
    cache_key = (version.pk, version.artifact_sha256)
    model = _cache.get(cache_key)
    if model is None:
        with _lock:
            model = _cache.get(cache_key)
            if model is None:
                model = load_model(artifact_full_path(version.artifact_path), sha256=version.artifact_sha256)
                _cache[cache_key] = model
    return model


def active_version() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()
