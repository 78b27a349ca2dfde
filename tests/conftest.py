import json
import os
from io import StringIO

import pytest

from retention.models import Partner
from tests.factories import PartnerFactory, PartnerScoreFactory, UserFactory

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def _product_defaults(settings):
    """The suite runs on the product's defaults, whatever the developer's shell exports: with
    OPENAI_API_KEY set, partner prompts would go to a real API and the template-writer tests
    would fail. Tests that want the LLM point it at the local server (llm_settings)."""
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = None
    settings.RETENTION_BOOKING_URL = ""
    settings.CRM_BACKEND = "crm_sim.simulated.SimulatedCrmBackend"


@pytest.fixture
def retention_user(db):
    return UserFactory(username="rita", first_name="Rita", last_name="Retention", groups=["Retention"])


@pytest.fixture
def manager(db):
    return UserFactory(
        username="max", first_name="Max", last_name="Manager", is_staff=True, groups=["Managers"]
    )


@pytest.fixture
def retention_client(client, retention_user):
    client.force_login(retention_user)
    return client


@pytest.fixture
def manager_client(client, manager):
    client.force_login(manager)
    return client


@pytest.fixture
def partner(db):
    return PartnerFactory()


# Helpers the tests of every app share ------------------------------------------


def htmx(target: str = "", **extra: str) -> dict[str, str]:
    """The headers htmx sends (`client.get(url, headers=htmx("results"))`): a request from
    htmx, swapping the element with id `target` when one is given."""
    headers = {"HX-Request": "true", **extra}
    if target:
        headers["HX-Target"] = target
    return headers


def last_json(output: str | StringIO) -> dict:
    """A management command's summary: the JSON on the last line of its output (a StringIO
    passed as stdout=, or the text capsys captured)."""
    text = output.getvalue() if isinstance(output, StringIO) else output
    return json.loads(text.strip().splitlines()[-1])


def scored_partner(risk: float = 0.9, *, bucket: str = "", **partner_fields) -> Partner:
    """A partner with a current score; the bucket (and its urgency rank) defaults to what the
    score factory derives from the risk."""
    partner = PartnerFactory(**partner_fields)
    extra = {}
    if bucket:
        extra = {"bucket": bucket, "urgency_rank": {"7d": 0, "30d": 1, "90d": 2, "later": 3}[bucket]}
    PartnerScoreFactory(partner=partner, risk_value=risk, **extra)
    partner.refresh_from_db()
    return partner


# Browser tests ---------------------------------------------------------------

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """One real headless Chromium for the session (Debian's, driven by Playwright)."""
    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests
    # make beside it are still plain synchronous calls.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def browser_login(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)
