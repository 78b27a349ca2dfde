"""argparse types shared by the ml commands."""

import argparse
import datetime as dt


def iso_date(value: str) -> dt.date:
    """YYYY-MM-DD, or argparse's usage error (a CommandError under call_command)."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None
