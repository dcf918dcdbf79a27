"""Date parsing for run dates: one format, clear errors."""

from __future__ import annotations

import datetime as dt
import re

from jobs.common.errors import ConfigError

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(value: str | dt.date | dt.datetime, what: str = "date") -> dt.date:
    """YYYY-MM-DD, or a full ISO-8601 instant that starts with it (Airflow's logical date); nothing else.

    `20261104` and `2026-11-04xyz` are refused: Python reads the first as a date and a prefix of the
    second would be one, so a typo would silently run another day or a wrong one.
    """
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    try:
        if _DAY.fullmatch(text):
            return dt.date.fromisoformat(text)
        if _DAY.match(text) and text[10] in "T ":
            return dt.datetime.fromisoformat(text).date()
    except ValueError:
        pass
    raise ConfigError(f"{what} '{value}' is not a date; use YYYY-MM-DD")


def days_ending(end: dt.date, count: int) -> list[dt.date]:
    """`count` consecutive days ending at `end`, oldest first."""
    if count < 1:
        raise ConfigError(f"the number of days must be at least 1, got {count}")
    return [end - dt.timedelta(days=offset) for offset in range(count - 1, -1, -1)]
