"""Features: silver to gold. One point-in-time feature vector per user and per item for an as-of date."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from jobs.common.audit import write_audit
from jobs.common.config import Config
from jobs.common.delta import read_table, replace_dates
from jobs.common.step import StepResult, TableCount
from jobs.common.taxonomy import TOP_LEVEL

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

FEATURE_VERSION = "1"

# How much one event says about interest in its item's category.
EVENT_WEIGHTS = {
    "view": 1.0, "click": 2.0, "add_to_cart": 3.0, "remove_from_cart": 0.5, "purchase": 5.0,
    "review": 2.0, "rating": 1.0, "share": 2.0,
}

# The numeric part of the vector, in model input order; docs/features.md defines each one.
NUMERIC_FEATURES = (
    "n_events_7d", "n_events_30d", "n_views_30d", "n_clicks_30d", "n_carts_30d", "n_purchases_30d",
    "n_searches_30d", "active_days_30d", "recency_days", "n_purchases_90d", "monetary_90d",
    "avg_purchase_price_90d", "conversion_30d", "avg_rating", "price_index",
)


def _window(events: "DataFrame", as_of: dt.date, days: int) -> "DataFrame":
    from pyspark.sql import functions as F

    start = as_of - dt.timedelta(days=days - 1)
    return events.where((F.col("event_date") >= F.lit(start)) & (F.col("event_date") <= F.lit(as_of)))


def transform_user_features(
    events: "DataFrame", users: "DataFrame", items: "DataFrame", as_of: dt.date,
    window_days: int = 90, half_life_days: float = 14.0,
) -> "DataFrame":
    """Point in time: only events dated on or before `as_of` count, whatever else `events` holds."""
    from pyspark.sql import functions as F

    recent = _window(events, as_of, window_days).join(
        items.select("item_id", "category", F.col("price").alias("list_price")), "item_id", "left"
    ).withColumn("age_days", F.datediff(F.lit(as_of), F.col("event_date")))

    def count_if(condition) -> "F.Column":
        return F.sum(F.when(condition, 1).otherwise(0))

    in_7 = F.col("age_days") < 7
    in_30 = F.col("age_days") < 30
    is_type = lambda t: F.col("event_type") == t  # noqa: E731
    is_purchase = is_type("purchase")
    spend = F.col("price") * F.coalesce(F.col("quantity"), F.lit(1))

    category_median = items.groupBy("category").agg(F.percentile_approx("price", 0.5).alias("cat_median"))
    priced = recent.join(category_median, "category", "left")
    activity = priced.groupBy("user_key").agg(
        count_if(in_7).alias("n_events_7d"),
        count_if(in_30).alias("n_events_30d"),
        count_if(in_30 & is_type("view")).alias("n_views_30d"),
        count_if(in_30 & is_type("click")).alias("n_clicks_30d"),
        count_if(in_30 & is_type("add_to_cart")).alias("n_carts_30d"),
        count_if(in_30 & is_purchase).alias("n_purchases_30d"),
        count_if(in_30 & is_type("search")).alias("n_searches_30d"),
        F.countDistinct(F.when(in_30, F.col("event_date"))).alias("active_days_30d"),
        F.min("age_days").alias("recency_days"),
        count_if(is_purchase).alias("n_purchases_90d"),
        F.sum(F.when(is_purchase, spend)).alias("monetary_90d"),
        F.avg(F.when(is_purchase, F.col("price"))).alias("avg_purchase_price_90d"),
        F.avg("rating").alias("avg_rating"),
        # Consumption capacity: what the user pays relative to the median of the same category.
        F.avg(F.when(is_purchase | is_type("add_to_cart"), F.try_divide(F.col("price"), F.col("cat_median")))).alias("price_index"),
    ).withColumn(
        "conversion_30d",
        F.when(F.col("n_views_30d") > 0, F.col("n_purchases_30d") / F.col("n_views_30d")).otherwise(0.0),
    )

    weights = F.create_map(*[F.lit(x) for pair in EVENT_WEIGHTS.items() for x in pair])
    weight = F.coalesce(F.try_element_at(weights, F.col("event_type")), F.lit(0.0))
    decayed = recent.where(F.col("category").isin(*TOP_LEVEL)).withColumn(
        "w", weight.cast("double") * F.pow(F.lit(0.5), F.col("age_days") / F.lit(half_life_days))
    )
    # Sum per (user, category), then lay the sums out in TOP_LEVEL order, normalised to sum 1.
    per_category = decayed.groupBy("user_key", "category").agg(F.sum("w").alias("w"))
    by_user = per_category.groupBy("user_key").agg(
        F.map_from_entries(F.collect_list(F.struct("category", "w"))).alias("weights"), F.sum("w").alias("total")
    )
    top_level = F.array(*[F.lit(c) for c in TOP_LEVEL])
    affinity = by_user.select(
        "user_key",
        F.transform(
            top_level,
            lambda c: F.when(F.col("total") > 0, F.coalesce(F.try_element_at("weights", c), F.lit(0.0)) / F.col("total"))
            .otherwise(F.lit(0.0)),
        ).alias("category_affinity"),
    )

    zero_affinity = F.array(*[F.lit(0.0) for _ in TOP_LEVEL])
    features = users.select("user_key", "age_band", "gender", "city").join(activity, "user_key", "left").join(
        affinity, "user_key", "left"
    )
    fills = {c: 0 for c in NUMERIC_FEATURES}
    fills.update({"recency_days": window_days, "avg_rating": 0.0, "price_index": 1.0})
    return features.fillna(fills).select(
        "user_key", "age_band", "gender", "city",
        *[F.col(c).cast("double").alias(c) for c in NUMERIC_FEATURES],
        F.coalesce("category_affinity", zero_affinity).alias("category_affinity"),
        F.lit(as_of).alias("as_of_date"),
        F.lit(FEATURE_VERSION).alias("feature_version"),
    )


def transform_item_features(events: "DataFrame", items: "DataFrame", as_of: dt.date,
                            half_life_days: float = 14.0) -> "DataFrame":
    """Popularity (decayed interactions), 30-day conversion, and the price's rank within its category."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    recent = _window(events, as_of, 30).where(F.col("item_id").isNotNull()).withColumn(
        "age_days", F.datediff(F.lit(as_of), F.col("event_date"))
    )
    stats = recent.groupBy("item_id").agg(
        F.sum(F.when(F.col("event_type") == "view", 1).otherwise(0)).alias("views_30d"),
        F.sum(F.when(F.col("event_type") == "purchase", 1).otherwise(0)).alias("purchases_30d"),
        F.sum(F.pow(F.lit(0.5), F.col("age_days") / F.lit(half_life_days))).alias("popularity"),
    )
    by_category = Window.partitionBy("category").orderBy("price")
    return items.select("item_id", "category", "brand", "price").join(stats, "item_id", "left").fillna(
        {"views_30d": 0, "purchases_30d": 0, "popularity": 0.0}
    ).select(
        "item_id", "category", "brand", "price",
        F.col("views_30d").cast("long"), F.col("purchases_30d").cast("long"), F.col("popularity").cast("double"),
        F.when(F.col("views_30d") > 0, F.col("purchases_30d") / F.col("views_30d")).otherwise(0.0).alias("conversion_30d"),
        F.percent_rank().over(by_category).alias("price_pct_in_category"),
        F.lit(as_of).alias("as_of_date"),
    )


def latest_snapshot(spark: "SparkSession", cfg: Config, name: str, as_of: dt.date) -> "DataFrame":
    """Master data as known on `as_of`: the newest snapshot not after it.

    Before the first load there is no such snapshot; then the oldest one stands in, and users who
    signed up after `as_of` are left out so that nothing from the future leaks into the features.
    """
    from pyspark.sql import functions as F

    table = read_table(spark, cfg, name)
    bounds = table.agg(
        F.max(F.when(F.col("snapshot_date") <= F.lit(as_of), F.col("snapshot_date"))).alias("newest"),
        F.min("snapshot_date").alias("oldest"),
    ).collect()[0]
    chosen = bounds["newest"] or bounds["oldest"]
    if chosen is None:
        from jobs.common.errors import InputDataError

        raise InputDataError(f"{name} is empty; run collect and clean first")
    snapshot = table.where(F.col("snapshot_date") == F.lit(chosen))
    if "signup_date" in snapshot.columns:
        snapshot = snapshot.where(F.col("signup_date").isNull() | (F.col("signup_date") <= F.lit(as_of)))
    return snapshot


def _half_life(cfg: Config) -> float:
    return float(cfg.get("pipeline.affinity_half_life_days", 14))


def build_user_features(spark: "SparkSession", cfg: Config, as_of: dt.date,
                        events: "DataFrame | None" = None, items: "DataFrame | None" = None) -> "DataFrame":
    """User features as of a date; pass `events`/`items` when the caller already read them."""
    events = read_table(spark, cfg, "silver.events") if events is None else events
    items = latest_snapshot(spark, cfg, "silver.items", as_of) if items is None else items
    users = latest_snapshot(spark, cfg, "silver.users", as_of)
    return transform_user_features(
        events, users, items, as_of,
        window_days=int(cfg.get("pipeline.feature_window_days", 90)), half_life_days=_half_life(cfg),
    )


def run(spark: "SparkSession", cfg: Config, run_date: dt.date) -> StepResult:
    result = StepResult("features", run_date)
    # Read once: both feature tables come from the same events and the same item snapshot.
    events = read_table(spark, cfg, "silver.events")
    items = latest_snapshot(spark, cfg, "silver.items", run_date)

    users = build_user_features(spark, cfg, run_date, events=events, items=items)
    written = replace_dates(users, cfg, "gold.user_features", [run_date])
    result.tables.append(TableCount("gold.user_features", written, written))

    item_features = transform_item_features(events, items, run_date, half_life_days=_half_life(cfg))
    written = replace_dates(item_features, cfg, "gold.item_features", [run_date])
    result.tables.append(TableCount("gold.item_features", written, written))
    write_audit(spark, cfg, "features", run_date, result.tables)
    return result
