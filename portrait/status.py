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
