"""Sequences: silver to gold. Each user's last N item interactions up to an as-of date, for the model's GRU.

A row of gold.user_sequences holds, for one user and one as_of_date, parallel arrays in time order
(oldest first, newest last): item_ids, categories, event_types and gaps (seconds since the user's
previous interaction, 0 for the first one ever seen), plus their length. Point in time, as in
jobs.features: only events dated on or before the as-of date that had landed by then (`landed_date`,
where silver has it) count. Events without an item (searches) are not interactions and are left
out; so are events older than the longest feature window (`features.windows`).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from jobs.common.audit import write_audit
from jobs.common.config import Config
from jobs.common.delta import read_table, replace_dates, table_exists
from jobs.common.errors import ConfigError
from jobs.common.feature_windows import FeatureWindows
from jobs.common.step import StepResult, TableCount

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SEQUENCE_COLUMNS = ("user_key", "item_ids", "categories", "event_types", "gaps", "length", "as_of_date")
SEQUENCE_SCHEMA = (
    "user_key string, item_ids array<string>, categories array<string>, event_types array<string>, "
    "gaps array<long>, length int, as_of_date date"
)
UNKNOWN_CATEGORY = "unknown"


def sequence_length(cfg: Config) -> int:
    length = int(cfg.get("model.sequence_length", 50))
    if length < 1:
        raise ConfigError(f"model.sequence_length must be at least 1, got {length}")
    return length


def transform_user_sequences(
    events: "DataFrame", items: "DataFrame", as_of: dt.date, max_length: int, window_days: int = 90
) -> "DataFrame":
    """One row per user with at least one item interaction in the window ending at `as_of`
    (`window_days`: the longest feature window, so that a user with features has a sequence).

    The order is (ts, event_id), so reruns agree when two events share a second. Gaps are measured
    over the whole window before truncating, so keeping the last N never changes a kept gap.
    Items missing from `items` get the category 'unknown'.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    start = as_of - dt.timedelta(days=window_days - 1)
    known = (F.col("event_date") <= F.lit(as_of)) & (F.col("event_date") >= F.lit(start)) & F.col("item_id").isNotNull()
    if "landed_date" in events.columns:
        known = known & (F.coalesce(F.col("landed_date"), F.col("event_date")) <= F.lit(as_of))
    interactions = events.where(known).select("user_key", "event_id", "event_type", "item_id", "ts")
    categories = items.select("item_id", F.col("category").alias("_category")).dropDuplicates(["item_id"])
    interactions = interactions.join(categories, "item_id", "left").withColumn(
        "category", F.coalesce(F.col("_category"), F.lit(UNKNOWN_CATEGORY))
    )

    in_time = Window.partitionBy("user_key").orderBy("ts", "event_id")
    newest_first = Window.partitionBy("user_key").orderBy(F.desc("ts"), F.desc("event_id"))
    previous = F.lag("ts").over(in_time)
    gap = F.when(previous.isNull(), F.lit(0)).otherwise(
        F.unix_timestamp(F.col("ts")) - F.unix_timestamp(previous)
    ).cast("long")
    recent = interactions.withColumn("gap", gap).withColumn("_n", F.row_number().over(newest_first)).where(
        F.col("_n") <= max_length
    )
    # sort_array on (ts, event_id, ...) structs puts each user's kept events back in time order.
    steps = F.sort_array(F.collect_list(F.struct("ts", "event_id", "item_id", "category", "event_type", "gap")))
    grouped = recent.groupBy("user_key").agg(steps.alias("_steps"))
    return grouped.select(
        "user_key",
        F.col("_steps.item_id").alias("item_ids"),
        F.col("_steps.category").alias("categories"),
        F.col("_steps.event_type").alias("event_types"),
        F.col("_steps.gap").alias("gaps"),
        F.size("_steps").cast("int").alias("length"),
        F.lit(as_of).alias("as_of_date"),
    )


def build_user_sequences(spark: "SparkSession", cfg: Config, as_of: dt.date,
                         events: "DataFrame | None" = None, items: "DataFrame | None" = None) -> "DataFrame":
    """Sequences as of a date from silver; pass `events`/`items` when the caller already read them."""
    from jobs.features import latest_snapshot

    events = read_table(spark, cfg, "silver.events") if events is None else events
    items = latest_snapshot(spark, cfg, "silver.items", as_of) if items is None else items
    return transform_user_sequences(
        events, items, as_of, sequence_length(cfg), FeatureWindows.from_config(cfg).longest
    )


def sequences_as_of(spark: "SparkSession", cfg: Config, as_of: dt.date) -> "DataFrame":
    """gold.user_sequences for `as_of` when the sequences step wrote that date, else built from silver.

    Training asks for past dates that a single demo run never wrote; building them is point in time too.
    """
    from pyspark.sql import functions as F

    if table_exists(spark, cfg, "gold.user_sequences"):
        stored = read_table(spark, cfg, "gold.user_sequences").where(F.col("as_of_date") == F.lit(as_of))
        if stored.limit(1).count():
            return stored.select(*SEQUENCE_COLUMNS)
    return build_user_sequences(spark, cfg, as_of)


def write_user_sequences(spark: "SparkSession", cfg: Config, run_date: dt.date,
                         events: "DataFrame | None" = None, items: "DataFrame | None" = None) -> TableCount:
    """Replace gold.user_sequences for as_of_date = run_date; the features step calls this every day."""
    written = replace_dates(build_user_sequences(spark, cfg, run_date, events=events, items=items), cfg,
                            "gold.user_sequences", [run_date])
    return TableCount("gold.user_sequences", written, written)


def run(spark: "SparkSession", cfg: Config, run_date: dt.date) -> StepResult:
    """Write gold.user_sequences alone (the daily features step writes it too), for a rebuild or a backfill."""
    result = StepResult("sequences", run_date)
    result.tables.append(write_user_sequences(spark, cfg, run_date))
    write_audit(spark, cfg, "sequences", run_date, result.tables)
    return result
