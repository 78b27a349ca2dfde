"""The simulation clock: `world_advance` (`simulate_days`) moves the simulated world on and
resolves pending outcomes from what happened. The desk's today is in ml/sim/today.py.
"""

from __future__ import annotations

import time
from datetime import date, timedelta

from django.db import transaction

from ml.sim import simulator
from ml.sim.store import apply_delta, state_read, state_write, world_current
from retention.models import Intervention, Partner
from retention.services import intervention_set_outcome

APPLIED_KEY = "churnsite_interventions"  # intervention id -> simulated contact date, in the state file


def world_advance(*, days: int, horizon_days: int = 90) -> dict:
    """Advance the simulated world `days` days and apply what happened to the tables.

    Partners reached by an intervention (any non-holdout intervention that was not held
    back or rejected) get the simulator's true effect from their contact date; holdouts and
    everybody else are untouched. The world stands still between advances, so a contact
    logged since the last one happened in its present: it counts from the next simulated
    day, whatever the wall clock said (the simulated today may lag or lead the real one). Pending interventions then resolve
    from what happened: churned if the partner churned, saved once `horizon_days` passed
    with the partner still active (unless a person resolved them first).
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    started = time.perf_counter()
    record = world_current()
    if record is None:
        raise LookupError(
            "This database holds no simulated world (its partners were imported, or nothing is "
            "seeded yet): simulate_days only moves a world made by seed_demo on"
        )
    raw = state_read(record)
    seen: dict[str, str] = raw.pop(APPLIED_KEY, {})
    world = simulator.world_from_state(simulator.world_state_from_json(raw))

    first_new_day = world.today + timedelta(days=1)
    contacted: dict[str, date] = {}
    rows = Intervention.objects.exclude(pk__in=[int(k) for k in seen]).values_list(
        "pk", "partner__external_id", "action", "review_status"
    )
    for pk, ext, action, review in rows.order_by("created_at"):
        sim_day = first_new_day
        seen[str(pk)] = sim_day.isoformat()
        reached = action != Intervention.Action.HOLDOUT and review in (
            Intervention.Review.NOT_REQUIRED,
            Intervention.Review.APPROVED,
        )
        if reached:
            contacted[ext] = sim_day  # the latest contact wins
    delta = simulator.advance_world(world, days, contacted=contacted or None)

    resolved = {"saved": 0, "churned": 0}
    with transaction.atomic():
        written = apply_delta(delta)
        churned_ids = set(Partner.objects.filter(status=Partner.Status.CHURNED).values_list("pk", flat=True))
        for intervention in Intervention.objects.filter(outcome=Intervention.Outcome.PENDING).select_related(
            "partner"
        ):
            contact_day = date.fromisoformat(seen.get(str(intervention.pk), world.today.isoformat()))
            if intervention.partner_id in churned_ids:
                outcome = Intervention.Outcome.CHURNED
                # The day it happened in the simulated world, not the wall clock of this run.
                outcome_day = max(intervention.partner.churned_on or world.today, contact_day)
            elif (world.today - contact_day).days >= horizon_days:
                outcome = Intervention.Outcome.SAVED
                outcome_day = contact_day + timedelta(days=horizon_days)
            else:
                continue
            intervention_set_outcome(
                intervention=intervention,
                outcome=outcome,
                outcome_date=outcome_day,
                actor=None,
                reason=f"simulation clock: {'churned' if outcome == 'churned' else f'active {horizon_days} days after contact'}",
            )
            resolved[outcome] += 1
        payload = simulator.world_state_to_json(world.state)
        payload[APPLIED_KEY] = seen
        record.state_path = state_write(payload, seed=world.state.seed)
        record.today = world.today
        record.save(update_fields=["state_path", "today", "updated_at"])
    return {
        "days": days,
        "simulated_today": world.today.isoformat(),
        "contacts_applied": len(contacted),
        **written,
        "resolved_saved": resolved["saved"],
        "resolved_churned": resolved["churned"],
        "seconds": round(time.perf_counter() - started, 2),
    }
