"""Collect: landed event, user and item files into the bronze layer, one partition per date."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.common.audit import write_audit
from jobs.common.config import Config
from jobs.common.delta import replace_dates
from jobs.common.errors import InputDataError
from jobs.common.step import StepResult, TableCount

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

EVENT_SCHEMA = (
    "event_id string, user_id string, session_id string, event_type string, item_id string, ts string, "
    "price double, quantity long, query string, review_text string, rating long, device string, "
    "channel string, geo string"
)
USER_SCHEMA = (
    "user_id string, name string, email string, phone string, age long, gender string, "
    "occupation string, city string, signup_date string"
)
ITEM_SCHEMA = "item_id string, title string, category_path string, brand string, price double"

REASON_UNPARSEABLE = "unparseable_json"
REASON_NO_EVENT_ID = "missing_event_id"


def landing_path(cfg: Config, *parts: str) -> str:
    return "/".join([cfg.landing_zone.rstrip("/"), *parts])


def _require_landing(cfg: Config, path: str, what: str) -> None:
    if "://" not in path and not Path(path).exists():
        raise InputDataError(
            f"no {what} at {path}: the landing zone ({cfg.landing_zone}) has nothing for it; "
            "run `portrait generate` or point landing_zone in the profile at the shop's files"
        )


def transform_parse_events(lines: "DataFrame", event_date: dt.date) -> "DataFrame":
    """Type each raw JSON line; keep the raw line and say why a line could not be used."""
    from pyspark.sql import functions as F

    parsed = lines.withColumn("_parsed", F.from_json("_raw", EVENT_SCHEMA, {"mode": "PERMISSIVE"}))
    # PERMISSIVE parsing yields an all-null struct for broken JSON; a valid object always has keys.
    broken = F.col("_parsed").isNull() | (F.to_json("_parsed") == F.lit("{}"))
    return parsed.select(
        "_parsed.*",
        "_raw",
        "_source_file",
        F.lit(event_date).alias("event_date"),
        F.when(broken, F.lit(REASON_UNPARSEABLE))
        .when(F.col("_parsed.event_id").isNull(), F.lit(REASON_NO_EVENT_ID))
        .alias("_parse_error"),
    )


def _read_lines(spark: "SparkSession", path: str) -> "DataFrame":
    from pyspark.sql import functions as F

    return spark.read.text(path).select(
        F.col("value").alias("_raw"), F.col("_metadata.file_path").alias("_source_file")
    )


def preflight(cfg: Config, run_date: dt.date, collect_days: int = 1) -> None:
    """Fail before Spark starts when the landing zone lacks a file this run needs."""
    from jobs.common.dates import days_ending

    for day in days_ending(run_date, collect_days):
        _require_landing(cfg, landing_path(cfg, "events", f"event_date={day.isoformat()}"), f"events for {day}")
    for folder in ("users", "items"):
        _require_landing(cfg, landing_path(cfg, folder), f"{folder} master data")


def run(spark: "SparkSession", cfg: Config, run_date: dt.date, collect_days: int = 1) -> StepResult:
    from pyspark.sql import functions as F

    from jobs.common.dates import days_ending

    preflight(cfg, run_date, collect_days)  # also when run() is called without the runner
    result = StepResult("collect", run_date)
    dates = days_ending(run_date, collect_days)
    ingested_at = F.current_timestamp()

    events = None
    for day in dates:
        path = landing_path(cfg, "events", f"event_date={day.isoformat()}")
        typed = transform_parse_events(_read_lines(spark, path), day)
        events = typed if events is None else events.unionByName(typed)
    events = events.withColumn("_ingested_at", ingested_at).cache()
    try:
        landed = replace_dates(events, cfg, "bronze.events", dates)
        bad = events.where("_parse_error IS NOT NULL").select(
            F.lit("collect").alias("step"), F.col("_parse_error").alias("reason"),
            "_source_file", "_raw", "event_date", "_ingested_at",
        )
        quarantined = {r["reason"]: r["n"] for r in bad.groupBy("reason").agg(F.count("*").alias("n")).collect()}
        replace_dates(bad, cfg, "bronze.quarantine", dates, extra_predicate="step = 'collect'")
    finally:
        events.unpersist()
    usable = landed - sum(quarantined.values())
    result.tables.append(TableCount("bronze.events", landed, usable, 0, quarantined))

    for name, folder, schema in (("bronze.users", "users", USER_SCHEMA), ("bronze.items", "items", ITEM_SCHEMA)):
        path = landing_path(cfg, folder)
        master = (
            spark.read.schema(schema).json(path)
            .withColumn("_source_file", F.col("_metadata.file_path"))
            .withColumn("_ingested_at", ingested_at)
            .withColumn("snapshot_date", F.lit(run_date))
        )
        written = replace_dates(master, cfg, name, [run_date])
        result.tables.append(TableCount(name, written, written))

    write_audit(spark, cfg, "collect", run_date, result.tables)
    result.details["dates"] = [d.isoformat() for d in dates]
    return result
