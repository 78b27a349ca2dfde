import re

import pytest

from tests.factories import InterventionFactory, PartnerFactory

pytestmark = pytest.mark.django_db


def test_managers_search_and_filter_partners_in_the_admin(manager_client):
    PartnerFactory(external_id="P18477", name="Northwind Traders", tier="gold")
    PartnerFactory(external_id="P10342", name="Contoso Retail", tier="bronze")

    searched = manager_client.get("/admin/retention/partner/", {"q": "northwind"}).content.decode()
    filtered = manager_client.get("/admin/retention/partner/", {"tier__exact": "bronze"}).content.decode()

    assert "P18477" in searched and "P10342" not in searched
    assert "P10342" in filtered and "P18477" not in filtered


def test_the_intervention_admin_lists_by_review_status_and_keeps_outcomes_read_only(manager_client):
    intervention = InterventionFactory(partner=PartnerFactory(external_id="P1"), review_status="awaiting")

    listing = manager_client.get("/admin/retention/intervention/", {"review_status__exact": "awaiting"})
    change = manager_client.get(f"/admin/retention/intervention/{intervention.pk}/change/").content.decode()

    assert listing.status_code == 200 and re.search(r">P1\b", listing.content.decode())  # a cell, not a token
    # Outcomes change only through the audited service (the Intervention Log), not this form.
    assert 'name="outcome"' not in change
