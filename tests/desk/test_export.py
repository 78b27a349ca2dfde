"""The Live Feed as CSV: the filtered rows, formula-safe, streamed."""

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest

from tests.desk.conftest import run_scoring
from tests.factories import InterventionFactory, PartnerFactory

pytestmark = pytest.mark.django_db


def test_the_export_streams_the_filtered_feed_with_drivers_and_safe_cells(retention_client, retention_user):
    risky = PartnerFactory(external_id="P100", name="=HYPERLINK(evil)", tier="gold", account_owner=retention_user,
                           monthly_revenue=Decimal("1000"))  # fmt: skip
    calm = PartnerFactory(external_id="P101", tier="gold", account_owner=retention_user)
    PartnerFactory(external_id="P102", tier="bronze", account_owner=retention_user)
    run_scoring({risky: 0.8, calm: 0.2, **{}}, as_of=dt.date(2026, 12, 1))
    from ml.models import PartnerScore

    PartnerScore.objects.filter(partner=risky).update(
        drivers=[{"text": "Payment 45 days overdue"}, {"text": "Transactions down 38%"}]
    )
    InterventionFactory(partner=risky, action="call_scheduled")

    response = retention_client.get("/feed/export.csv", {"tier": "gold", "sort": "risk"})

    assert response.streaming and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["partner_id"] for r in rows] == ["P100", "P101"]
    first = rows[0]
    assert first["name"] == "'=HYPERLINK(evil)"
    assert first["tier"] == "gold" and first["owner"] == "Rita Retention"
    assert first["risk"] == "0.8000" and first["bucket"] == "7d"
    assert first["top_drivers"] == "Payment 45 days overdue; Transactions down 38%"
    assert first["revenue_at_risk"] == "800.00"
    assert first["last_intervention"] == "Call scheduled"


def test_the_feed_links_to_the_export_with_its_filters(retention_client):
    html = retention_client.get("/", {"tier": "gold"}).content.decode()

    assert "/feed/export.csv?tier=gold" in html
