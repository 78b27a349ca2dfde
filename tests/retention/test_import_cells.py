"""The import's column scans give the same verdict as checking each cell on its own."""

import re

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.validators import validate_email

from retention.importing.contract import EXTERNAL_ID, ISO_DATE, PLAIN_EMAIL
from retention.importing.validation import nonmatching
from retention.models import Partner


def scan(values: list[str], pattern: re.Pattern) -> list[bool]:
    cells = np.array(values, dtype=object)
    lens = np.fromiter(map(len, cells), dtype=np.int64, count=len(cells))
    return nonmatching(cells, lens, pattern).tolist()


def test_a_column_scan_refuses_exactly_the_cells_a_cell_by_cell_match_refuses():
    ids = ["P1", "", "P 2", "x" * 16, "x" * 17, "P3\nP4", "-P5", "P6.", "ÄP", "P7", "\n", "P8"]
    assert scan(ids, EXTERNAL_ID) == [not EXTERNAL_ID.fullmatch(v) for v in ids]
    dates = ["2025-01-31", "2025-1-31", "03/04/2025", "2025-01-31 ", "", "20250-01-31", "2025-01-3"]
    assert scan(dates, ISO_DATE) == [not ISO_DATE.fullmatch(v) for v in dates]


def is_email(value: str) -> bool:
    try:
        validate_email(value)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    "address",
    ["ap@partners.example", "first.last+tag@mail.co.uk", "x@localhost", "a@b.c", "a@-b.com", "a@b-.com",
     "a..b@c.com", ".a@c.com", "a@c.com.", "a@[127.0.0.1]", '"q r"@c.com', "a@c.c0m", "a@xn--bcher-kva.ch",
     "a@bücher.ch", "a b@c.com", "a@c", "@c.com", "a@@c.com", "a@" + "b" * 64 + ".com"],
)  # fmt: skip
def test_the_plain_email_pattern_never_accepts_what_django_refuses(address):
    if PLAIN_EMAIL.fullmatch(address):
        assert is_email(address)


@pytest.mark.django_db
def test_emails_the_plain_pattern_cannot_vouch_for_get_django_s_verdict(tmp_path, capsys):
    rows = [("P1", "x@localhost"), ("P2", "a@[127.0.0.1]"), ("P3", "a..b@c.com"), ("P4", "a@c")]
    text = "external_id,name,tier,region,segment,monthly_revenue,contact_email,joined_on\n" + "".join(
        f"{pid},Name {pid},gold,na,reseller,10,{email},2024-01-01\n" for pid, email in rows
    )
    (tmp_path / "partners.csv").write_text(text)
    with pytest.raises(Exception, match="nothing was written"):
        call_command("import_data", str(tmp_path / "partners.csv"))
    err = capsys.readouterr().err
    assert "line 4: contact_email" in err and "line 5: contact_email" in err
    assert "line 2: contact_email" not in err and "line 3: contact_email" not in err


@pytest.mark.django_db
def test_tabs_backslashes_and_line_breaks_in_a_note_arrive_as_they_were(tmp_path, capsys):
    note = 'Call Mo\tor Jo; path C:\\deals\\2025\nsecond line, "quoted"'
    csv_note = '"' + note.replace('"', '""') + '"'
    (tmp_path / "partners.csv").write_text(
        "external_id,name,tier,region,segment,monthly_revenue,contact_email,joined_on,notes\n"
        f" P1 ,Name\\One,Gold,NA,reseller,10.5,a@b.example,2024-01-01,{csv_note}\n"
    )
    call_command("import_data", str(tmp_path / "partners.csv"))
    partner = Partner.objects.get(external_id="P1")
    assert (partner.notes, partner.name, partner.tier, partner.region) == (note, "Name\\One", "gold", "na")
