import pytest
from django.core.cache import cache

from api.tokens import api_token_create, api_token_revoke
from api.webhooks import subscribed_events_forget
from tests.factories import PartnerFactory, PartnerScoreFactory, UserFactory


@pytest.fixture(autouse=True)
def _fresh_webhook_cache():
    # The subscribed-events cache outlives a test's database: never let one test's
    # subscriptions make another test's audited changes query for subscribers.
    subscribed_events_forget()
    yield
    subscribed_events_forget()


@pytest.fixture
def token_for():
    def make(user, name="test"):
        _, token = api_token_create(user=user, name=name, actor=user)
        return token

    return make


@pytest.fixture
def api_users(db, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return {
        "retention": UserFactory(username="rita", groups=["Retention"]),
        "manager": UserFactory(username="max", is_staff=True, groups=["Managers"]),
        "no group": UserFactory(username="nora"),
    }


@pytest.fixture
def tokens(api_users, token_for):
    revoked_user = api_users["manager"]
    row_token = token_for(revoked_user, "revoked")
    from api.models import ApiToken
    from api.tokens import token_hash

    api_token_revoke(token=ApiToken.objects.get(key_hash=token_hash(row_token)), actor=revoked_user)
    return {
        "retention": token_for(api_users["retention"]),
        "manager": token_for(api_users["manager"]),
        "no group": token_for(api_users["no group"]),
        "revoked": row_token,
    }


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture
def scored_partners(db):
    out = []
    for i, tier in enumerate(["silver", "gold", "platinum", "bronze", "silver"]):
        partner = PartnerFactory(external_id=f"P{20000 + i}", tier=tier)
        PartnerScoreFactory(partner=partner, risk_value=0.9 - i * 0.1)
        out.append(partner)
    return out


@pytest.fixture
def no_rate_limit_state():
    cache.clear()
