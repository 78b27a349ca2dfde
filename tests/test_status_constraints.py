"""Every status-like field is a TextChoices whose values the database itself enforces."""

import pytest
from django.db import IntegrityError, transaction

from agent.audit import audit_record
from agent.models import AgentRun
from tests.factories import ModelVersionFactory, ScoringRunFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: AgentRun.objects.create(trigger=AgentRun.Trigger.MANUAL), "status"),
        (lambda: AgentRun.objects.create(trigger=AgentRun.Trigger.MANUAL), "trigger"),
        (lambda: ScoringRunFactory(), "status"),
        (lambda: ModelVersionFactory(), "source"),
    ],
    ids=["agent run status", "agent run trigger", "scoring run status", "model version source"],
)
def test_the_database_refuses_a_value_outside_the_choices(make, field):
    row = make()
    model = type(row)
    with pytest.raises(IntegrityError), transaction.atomic():
        model.objects.filter(pk=row.pk).update(**{field: "bogus"})


def test_an_audit_event_with_an_unknown_actor_type_is_refused():
    with pytest.raises(IntegrityError), transaction.atomic():
        audit_record(event_type="x", actor_type="robot")
