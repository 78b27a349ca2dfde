"""The desk's today: the simulated world's when the data comes from the simulator; on imported
data the DESK_TODAY setting, else the end of the imported history; the real date when empty.
Scores, drivers and payment lateness are computed at it. Production code asks this module
(it reads a row or two) and never the simulator or its store."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone

from agent.models import AuditEvent
from ml.models import SimulatedWorld


def simulated_today() -> dt.date | None:
    """The simulated world's 'today' when the data comes from the simulator."""
    world = SimulatedWorld.objects.order_by("-created_at").first()
    return world.today if world else None


def scoring_as_of() -> dt.date:
    """The date features are computed at: the simulated world's today; on imported data the
    DESK_TODAY setting, else the end of the imported history; the real date when empty."""
    return simulated_today() or settings.DESK_TODAY or history_end() or timezone.localdate()


def history_end() -> dt.date | None:
    """The end of the imported history, as the latest import measured it (one indexed read;
    None when nothing was ever imported)."""
    payload = (
        AuditEvent.objects.filter(event_type="history_imported")
        .order_by("-created_at")
        .values_list("payload", flat=True)
        .first()
    )
    end = (payload or {}).get("history_end")
    return dt.date.fromisoformat(end) if end else None
