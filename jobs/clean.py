"""Clean: bronze to silver. Typed UTC events without duplicates, pseudonymous keys, no direct PII."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from jobs.common.audit import write_audit
from jobs.common.config import Config
from jobs.common.delta import read_table, replace_dates
from jobs.common.privacy import load_hmac_key, pseudonymise
from jobs.common.step import StepResult, TableCount
from jobs.common.taxonomy import TOP_LEVEL

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

EVENT_TYPES = (
    "view", "click", "add_to_cart", "remove_from_cart", "purchase", "search", "review", "rating", "share",
)
AGE_BANDS = ((0, 18, "<18"), (18, 25, "18-24"), (25, 35, "25-34"), (35, 45, "35-44"), (45, 55, "45-54"),
             (55, 65, "55-64"), (65, 200, "65+"))

SILVER_EVENT_COLUMNS = (
    "event_id", "user_key", "session_id", "event_type", "item_id", "ts", "price", "quantity", "query",
    "review_text", "rating", "device", "channel", "geo", "event_date",
)


def transform_dedupe(events: "DataFrame") -> "DataFrame":
    """Keep one copy of each event_id; the order is total so reruns keep the same copy."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("event_id").orderBy("_ingested_at", "_source_file", "_raw")
    return events.withColumn("_n", F.row_number().over(order)).where("_n = 1").drop("_n")


def transform_type_events(events: "DataFrame") -> "DataFrame":
    """Parse ISO-8601 timestamps with their offsets into UTC and say why a row cannot be used."""
    from pyspark.sql import functions as F

    ts = F.try_to_timestamp(F.col("ts"))
    reason = (
        F.when(F.col("user_id").isNull(), F.lit("missing_user_id"))
        .when(~F.col("event_type").isin(*EVENT_TYPES), F.lit("unknown_event_type"))
        .when(ts.isNull(), F.lit("bad_timestamp"))
        .when(F.col("price").isNotNull() & (F.col("price") < 0), F.lit("negative_price"))
        .when(F.col("quantity").isNotNull() & (F.col("quantity") < 1), F.lit("bad_quantity"))
    )
    return events.withColumn("ts", ts).withColumn("_reject_reason", reason)


def age_band(age: "Column") -> "Column":
    from pyspark.sql import functions as F

    band = F.lit("unknown")
    for low, high, label in reversed(AGE_BANDS):
        band = F.when((age >= low) & (age < high), F.lit(label)).otherwise(band)
    return band


def transform_users(users: "DataFrame", key: bytes) -> "DataFrame":
    """Pseudonymise the id and generalise demographics; name, email and phone go no further."""
    from pyspark.sql import functions as F

    return users.select(
        pseudonymise(key, F.col("user_id")).alias("user_key"),
        age_band(F.col("age")).alias("age_band"),
        F.coalesce(F.upper("gender"), F.lit("U")).alias("gender"),
        F.coalesce("occupation", F.lit("unknown")).alias("occupation"),
        F.coalesce(F.trim("city"), F.lit("unknown")).alias("city"),
        F.to_date("signup_date").alias("signup_date"),
        "snapshot_date",
    ).dropDuplicates(["user_key"])


def transform_items(items: "DataFrame") -> "DataFrame":
    """Map each item onto the top level of the taxonomy; unknown paths keep 'unknown'."""
    from pyspark.sql import functions as F

    top = F.lower(F.trim(F.split("category_path", ">").getItem(0)))
    return items.select(
        "item_id",
        F.trim("title").alias("title"),
        F.lower(F.regexp_replace("category_path", r"\s*>\s*", ">")).alias("category_path"),
        F.when(top.isin(*TOP_LEVEL), top).otherwise(F.lit("unknown")).alias("category"),
        F.coalesce(F.trim("brand"), F.lit("unknown")).alias("brand"),
        "price",
        "snapshot_date",
    ).dropDuplicates(["item_id"])


def run(spark: "SparkSession", cfg: Config, run_date: dt.date, collect_days: int = 1) -> StepResult:
    from pyspark.sql import functions as F

    from jobs.common.dates import days_ending

    result = StepResult("clean", run_date)
    dates = days_ending(run_date, collect_days)
    key = load_hmac_key(cfg)

    bronze = read_table(spark, cfg, "bronze.events").where(
        F.col("event_date").isin(*dates) & F.col("_parse_error").isNull()
    )
    typed = transform_type_events(bronze).cache()
    try:
        rows_in = typed.count()
        rejected = typed.where("_reject_reason IS NOT NULL")
        quarantined = {r["_reject_reason"]: r["n"] for r in
                       rejected.groupBy("_reject_reason").agg(F.count("*").alias("n")).collect()}
        replace_dates(
            rejected.select(F.lit("clean").alias("step"), F.col("_reject_reason").alias("reason"),
                            "_source_file", "_raw", "event_date", "_ingested_at"),
            cfg, "bronze.quarantine", dates, extra_predicate="step = 'clean'",
        )
        kept = transform_dedupe(typed.where("_reject_reason IS NULL"))
        silver = kept.withColumn("user_key", pseudonymise(key, F.col("user_id"))).select(*SILVER_EVENT_COLUMNS)
        rows_out = replace_dates(silver, cfg, "silver.events", dates)
    finally:
        typed.unpersist()
    duplicates = rows_in - sum(quarantined.values()) - rows_out
    result.tables.append(TableCount("silver.events", rows_in, rows_out, duplicates, quarantined))

    users = read_table(spark, cfg, "bronze.users").where(F.col("snapshot_date") == F.lit(run_date))
    users_in = users.count()
    users_out = replace_dates(transform_users(users, key), cfg, "silver.users", [run_date])
    result.tables.append(TableCount("silver.users", users_in, users_out, users_in - users_out))

    items = read_table(spark, cfg, "bronze.items").where(F.col("snapshot_date") == F.lit(run_date))
    items_in = items.count()
    items_out = replace_dates(transform_items(items), cfg, "silver.items", [run_date])
    result.tables.append(TableCount("silver.items", items_in, items_out, items_in - items_out))

    write_audit(spark, cfg, "clean", run_date, result.tables)
    return result
