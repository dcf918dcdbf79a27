"""What is in the lakehouse: rows per table and date, read with delta-rs so no Spark is needed."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from jobs.common.catalog import TABLES, table_path
from jobs.common.config import Config


@dataclass(frozen=True)
class TableStatus:
    name: str
    path: str
    version: int | None
    rows_total: int | None
    rows_on_date: int | None


def table_status(cfg: Config, name: str, on: dt.date | None) -> TableStatus:
    import pyarrow.compute as pc
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    path = table_path(cfg, name)
    try:
        table = DeltaTable(path)
    except TableNotFoundError:
        return TableStatus(name, path, None, None, None)
    dataset = table.to_pyarrow_dataset()
    rows_on = None
    if on is not None:
        column = TABLES[name].date_column
        rows_on = dataset.count_rows(filter=pc.field(column) == on)
    return TableStatus(name, path, table.version(), dataset.count_rows(), rows_on)


def lakehouse_status(cfg: Config, on: dt.date | None = None) -> list[TableStatus]:
    return [table_status(cfg, name, on) for name in TABLES]


def format_status(rows: list[TableStatus], on: dt.date | None) -> str:
    header = f"{'table':<26}{'version':>8}{'rows':>12}" + (f"{'rows ' + on.isoformat():>18}" if on else "")
    lines = [header, "-" * len(header)]
    for r in rows:
        if r.version is None:
            lines.append(f"{r.name:<26}{'-':>8}{'(not written yet)':>30}")
            continue
        line = f"{r.name:<26}{r.version:>8}{r.rows_total:>12,}"
        if on:
            line += f"{r.rows_on_date:>18,}"
        lines.append(line)
    return "\n".join(lines)


def lakehouse_exists(cfg: Config) -> bool:
    root = cfg.lakehouse_root
    return "://" in root or Path(root).exists()


# What analysts read: every table of the publish layer.
PUBLISHED_TABLES: tuple[str, ...] = tuple(name for name in TABLES if name.startswith("publish."))


def latest_date(cfg: Config, name: str) -> dt.date | None:
    """The newest date partition of a table, from its Delta log (no data files read)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(table_path(cfg, name))
    except TableNotFoundError:
        return None
    column = TABLES[name].date_column
    days = {dict(p).get(column) for p in table.partitions()}
    days.discard(None)
    return max(dt.date.fromisoformat(str(d)) for d in days) if days else None


def published_counts(cfg: Config, on: dt.date | None = None) -> dict[str, object]:
    """Rows per published table on `on` (default: the newest published day), read with delta-rs."""
    on = on or latest_date(cfg, PUBLISHED_TABLES[0])
    rows = {name: (table_status(cfg, name, on).rows_on_date if on else None) for name in PUBLISHED_TABLES}
    return {"as_of_date": on.isoformat() if on else None, "rows": rows}


def published_counts_for_events(events) -> dict[str, object]:
    """profile_consumers' task: the day named by the newest triggering asset event, counted and logged."""
    import logging

    from jobs.common.config import load_config

    days = [e.extra.get("as_of_date") for key in events for e in events[key] if (e.extra or {}).get("as_of_date")]
    counts = published_counts(load_config(), dt.date.fromisoformat(max(days)) if days else None)
    for name, rows in counts["rows"].items():
        logging.getLogger("portrait").info("portrait: %s %s: %s rows", name, counts["as_of_date"], rows)
    return counts
