"""Date parsing for run dates: one format, clear errors."""

from __future__ import annotations

import datetime as dt

from jobs.common.errors import ConfigError


def parse_date(value: str | dt.date | dt.datetime, what: str = "date") -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise ConfigError(f"{what} '{value}' is not a date; use YYYY-MM-DD") from None


def days_ending(end: dt.date, count: int) -> list[dt.date]:
    """`count` consecutive days ending at `end`, oldest first."""
    if count < 1:
        raise ConfigError(f"the number of days must be at least 1, got {count}")
    return [end - dt.timedelta(days=offset) for offset in range(count - 1, -1, -1)]
