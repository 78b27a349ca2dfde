"""ml.frames reads the same history however it reads it (one text value, or COPY)."""

import datetime as dt

import pandas as pd
import pytest
from django.db import connection

from ml import frames
from tests.factories import InvoiceFactory, MonthlyActivityFactory, PartnerFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="both reads are PostgreSQL's"),
]


@pytest.fixture
def history():
    # Text that CSV must quote (a comma, quotes), missing values, and partners that are not read.
    odd = PartnerFactory(external_id='P,"odd"', joined_on=dt.date(2024, 2, 29))
    plain = PartnerFactory(status="churned", churned_on=dt.date(2026, 3, 31))
    other = PartnerFactory()
    for partner in (odd, plain, other):
        for month in (1, 2, 3):
            MonthlyActivityFactory(
                partner=partner, month=dt.date(2026, month, 1), transactions=10 * month,
                transactions_last_14d=None if month == 2 else 4, transactions_last_7d=None if month == 2 else 2,
            )  # fmt: skip
        InvoiceFactory(
            partner=partner, issued_on=dt.date(2026, 2, 1), due_on=dt.date(2026, 3, 3), paid_on=None
        )
        InvoiceFactory(partner=partner)
    return [odd.pk, plain.pk]


def read(ids, key, **kw):
    return frames.history_frames(key=key, partner_ids=ids, **kw)


@pytest.mark.parametrize("key", ["external_id", "partner_id"])
@pytest.mark.parametrize("window", [{}, {"activity_since": dt.date(2026, 2, 1), "active_only": True}])
def test_one_value_reads_what_copy_reads(history, monkeypatch, key, window):
    one = read(history, key, **window)
    monkeypatch.setattr(frames, "ONE_VALUE_PARTNERS", 0)  # every read through COPY
    copied = read(history, key, **window)
    for a, b in zip(one, copied, strict=True):
        pd.testing.assert_frame_equal(a, b)
    partners, activity, invoices = one
    expected = {'P,"odd"'} if window else {'P,"odd"', partners[key].iloc[-1]}
    if key == "external_id":
        assert set(partners[key]) == expected
    assert len(partners) == (1 if window else 2)
    assert activity["transactions_last_14d"].isna().sum() == (1 if window else 2)
    assert invoices["paid_on"].isna().sum() == (1 if window else 2)


def test_scattered_ids_read_only_their_own_rows(history):
    # Far apart ids are matched exactly (no key range), consecutive ones through their range.
    far = [history[0], history[0] + 10**6]
    partners, activity, _ = read(far, "partner_id")
    assert set(partners["partner_id"]) == set(activity["partner_id"]) == {history[0]}
    partners, activity, _ = read(history, "partner_id")
    assert set(activity["partner_id"]) == set(history)
