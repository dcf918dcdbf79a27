"""Publish: make a validated staged day visible in publish.user_profile and publish.recommendations.

Analysts only ever read publish.*; a day reaches it after the score step staged it and the quality
step passed it, so a failed day leaves the previous good day in place.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from jobs.common.audit import write_audit
from jobs.common.config import Config
from jobs.common.delta import read_table, replace_dates
from jobs.common.errors import InputDataError
from jobs.common.step import StepResult, TableCount

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# staged table -> published table
PROMOTIONS = {
    "staging.user_profile": "publish.user_profile",
    "staging.recommendations": "publish.recommendations",
}


def run(spark: "SparkSession", cfg: Config, run_date: dt.date) -> StepResult:
    from pyspark.sql import functions as F

    result = StepResult("publish", run_date)
    for staged, published in PROMOTIONS.items():
        day = read_table(spark, cfg, staged).where(F.col("as_of_date") == F.lit(run_date))
        rows_in = day.count()
        if rows_in == 0:
            raise InputDataError(f"{staged} has no rows for {run_date}; run the score step for that date first")
        written = replace_dates(day, cfg, published, [run_date])
        result.tables.append(TableCount(published, rows_in, written))
    write_audit(spark, cfg, "publish", run_date, result.tables)
    return result
