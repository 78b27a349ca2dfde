import datetime as dt
import itertools

import pytest

from crm_sim.client import CreateTask, get_crm_client
from tests.factories import InterventionFactory, PartnerFactory

_keys = itertools.count(1)


@pytest.fixture
def make_task(db):
    """Create a task through the real client; returns its CrmTaskRecord."""

    def make(
        *,
        partner=None,
        intervention=False,
        kind="retention_call",
        title="Retention Call",
        due_on=dt.date(2026, 2, 8),
        assigned_to=None,
        key=None,
    ):
        partner = partner or PartnerFactory()
        if intervention is True:
            intervention = InterventionFactory(partner=partner)
        return get_crm_client().create_task(
            CreateTask(
                partner_external_id=partner.external_id,
                kind=kind,
                title=title,
                due_on=due_on,
                idempotency_key=key or f"test-{next(_keys)}",
                intervention_id=intervention.pk if intervention else None,
                assigned_to_username=assigned_to.username if assigned_to else None,
            )
        )

    return make
