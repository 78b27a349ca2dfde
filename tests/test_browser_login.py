import pytest
from playwright.sync_api import expect

from tests.conftest import browser_login
from tests.factories import PartnerFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_retention_user_logs_in_and_sees_partners(page):
    UserFactory(username="retention", password="retention-demo", groups=["Retention"])
    PartnerFactory(external_id="P18477", name="Northwind Traders")
    PartnerFactory(external_id="P10342", name="Contoso Retail")

    page.goto("/")
    assert "/login/" in page.url, "an anonymous visitor should land on the login page"
    browser_login(page, "retention", "retention-demo")

    body = page.locator("main").inner_text()
    assert "P18477" in body and "Northwind Traders" in body
    assert "P10342" in body


def test_a_wrong_password_is_refused_with_a_message(page):
    UserFactory(username="retention", password="retention-demo", groups=["Retention"])
    page.goto("/login/")
    page.fill("#id_username", "retention")
    page.fill("#id_password", "nope")
    page.click("button[type=submit]")
    expect(page.locator("main")).to_contain_text("didn't match")
    assert "/login/" in page.url
