"""ops.run_audit: one row per step and table per run date, so every run accounts for its rows."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from jobs.common.config import Config
from jobs.common.delta import replace_dates
from jobs.common.step import TableCount

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

AUDIT_SCHEMA = (
    "run_date date, step string, table_name string, rows_in long, rows_out long, duplicates long, "
    "quarantined long, quarantined_by_reason map<string,long>, balanced boolean, written_at timestamp"
)


def write_audit(spark: "SparkSession", cfg: Config, step: str, run_date: dt.date, counts: list[TableCount]) -> None:
    """Replace this step's rows for the run date; `balanced` records rows_in = out + dups + quarantined."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = [
        (run_date, step, c.table, c.rows_in, c.rows_out, c.duplicates, c.quarantined_total,
         dict(c.quarantined), c.rows_in == c.rows_out + c.duplicates + c.quarantined_total, now)
        for c in counts
    ]
    df = spark.createDataFrame(rows, AUDIT_SCHEMA)
    replace_dates(df, cfg, "ops.run_audit", [run_date], extra_predicate=f"step = '{step}'")
