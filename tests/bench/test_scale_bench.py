"""bench/scale_bench.py's Live Feed variants: taken from the database, and the searches find."""

import datetime as dt
import sys
from pathlib import Path

import pytest

from tests.factories import PartnerFactory, PartnerScoreFactory

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import scale_bench  # noqa: E402

pytestmark = pytest.mark.django_db


def test_the_search_variants_come_from_a_seeded_name_and_each_finds_that_partner(
    retention_client, retention_user
):
    names = ["Vista Digital Ltd", "Sable Mobile Pty Ltd", "Pacific Outfitters SA", "Highland Data GmbH"]
    partners = [PartnerFactory(name=name, account_owner=retention_user) for name in names]
    for partner in partners:
        PartnerScoreFactory(partner=partner)
    PartnerFactory(
        name="Lantern Energy Corp", status="churned", churned_on=dt.date(2026, 1, 1)
    )  # not in the feed: not picked

    variants = scale_bench.feed_variants(owner_id=retention_user.pk)

    middle = partners[2]  # the scored active partner in the middle of the ids
    assert variants.pop("_search") == middle.external_id
    assert variants["search id"] == f"/?q={middle.external_id}"
    assert variants["search two words"] == "/?q=Pacific+Outfitters"
    assert variants["search name fragment"] == "/?q=utfi"
    for name in (
        "search id",
        "search one word",
        "search two words",
        "search name fragment",
        "owner (my partners)",
    ):
        html = retention_client.get(variants[name]).content.decode()
        assert middle.external_id in html, name
    assert scale_bench.deep("/?sort=revenue&page=20") == "/?sort=revenue&page=40"
    assert scale_bench.deep("/?tier=gold") == "/?tier=gold&page=20"
