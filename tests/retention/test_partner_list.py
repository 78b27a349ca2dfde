import pytest

from tests.conftest import htmx
from tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db


def test_the_partner_list_searches_and_filters_by_tier(retention_client):
    PartnerFactory(external_id="P18477", name="Northwind Traders", tier="platinum")
    PartnerFactory(external_id="P10342", name="Contoso Retail", tier="bronze")

    page = retention_client.get("/partners/", {"tier": "platinum"}).content.decode()
    assert "P18477" in page and "P10342" not in page

    page = retention_client.get("/partners/", {"q": "contoso"}).content.decode()
    assert "P10342" in page and "P18477" not in page


def test_the_partner_list_htmx_request_gets_only_the_results(retention_client):
    PartnerFactory(external_id="P18477")
    response = retention_client.get("/partners/", headers=htmx("results"))
    html = response.content.decode()
    assert 'id="results"' in html and "P18477" in html
    assert "<nav" not in html.split('id="results"')[0], "the partial must not carry the page layout"
