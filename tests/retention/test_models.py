import datetime as dt

import pytest
from django.db import IntegrityError, transaction

from retention.models import Intervention
from tests.factories import InterventionFactory, InvoiceFactory, MonthlyActivityFactory, PartnerFactory

pytestmark = pytest.mark.django_db


def test_a_partner_id_is_unique():
    PartnerFactory(external_id="P18477")
    with pytest.raises(IntegrityError):
        PartnerFactory(external_id="P18477")


def test_an_unknown_tier_is_refused_by_the_database():
    with pytest.raises(IntegrityError):
        PartnerFactory(tier="diamond")


def test_a_churned_partner_needs_a_churn_date():
    with pytest.raises(IntegrityError):
        PartnerFactory(status="churned", churned_on=None)


def test_an_active_partner_has_no_churn_date():
    with pytest.raises(IntegrityError):
        PartnerFactory(status="active", churned_on=dt.date(2026, 1, 1))


def test_a_partner_has_one_activity_row_per_month(partner):
    MonthlyActivityFactory(partner=partner, month=dt.date(2026, 3, 1))
    with pytest.raises(IntegrityError):
        MonthlyActivityFactory(partner=partner, month=dt.date(2026, 3, 1))


def test_an_invoice_cannot_fall_due_before_it_is_issued(partner):
    with pytest.raises(IntegrityError):
        InvoiceFactory(partner=partner, issued_on=dt.date(2026, 3, 1), due_on=dt.date(2026, 2, 1))


def test_the_agent_has_at_most_one_open_intervention_per_partner(partner):
    InterventionFactory(partner=partner, source="agent")
    with pytest.raises(IntegrityError), transaction.atomic():
        InterventionFactory(partner=partner, source="agent")
    # A resolved one frees the slot; manual interventions are never limited.
    Intervention.objects.filter(partner=partner).update(outcome="saved")
    InterventionFactory(partner=partner, source="agent")
    InterventionFactory(partner=partner, source="manual")
    InterventionFactory(partner=partner, source="manual")
    assert partner.interventions.count() == 4


def test_a_risk_outside_zero_to_one_is_refused(partner):
    with pytest.raises(IntegrityError):
        InterventionFactory(partner=partner, risk_at_action=1.2)
