import pytest

from tests.factories import PartnerFactory, PartnerScoreFactory


def scored_partner(*, risk: float, bucket: str = "", rank: int | None = None, **partner_kwargs):
    """A partner with a current score; bucket/rank default to what the factory derives from risk."""
    partner = PartnerFactory(**partner_kwargs)
    extra = {}
    if bucket:
        extra = {"bucket": bucket, "urgency_rank": {"7d": 0, "30d": 1, "90d": 2, "later": 3}[bucket]}
    PartnerScoreFactory(partner=partner, risk_value=risk, **extra)
    partner.refresh_from_db()
    return partner


@pytest.fixture
def make_scored_partner(db):
    return scored_partner
