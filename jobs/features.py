"""Features: silver to gold. One point-in-time feature vector per user and per item for an as-of date.

The user vector of day D is made from gold.user_feature_state (window totals and decayed sums, see
jobs/feature_state.py), which is either continued from D-1 (incremental, the default) or recomputed
from the longest window (full). The windows are `features.windows` (default 1, 7, 30, 90 days) and the
names carry them (jobs/common/feature_windows.py). docs/features.md defines every column, its window
and its null rule.

Backfill a range in one command (each day continues the day before; the first falls back to full
when its previous state is missing):

    python -m jobs.features --start 2026-11-01 --end 2026-11-14 [--mode full|incremental]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from jobs.common.audit import write_audit
from jobs.common.catalogue import (
    OTHER, CatalogueParams, transform_category_vocab, vocab_list, with_categories,
)
from jobs.common.config import Config
from jobs.common.delta import read_table, replace_dates, table_exists
from jobs.common.errors import ConfigError, InputDataError
from jobs.common.feature_windows import LONG, MEDIUM, SHORT, FeatureWindows
from jobs.common.step import StepResult, TableCount
from jobs.common.taxonomy import TOP_LEVEL
from jobs.feature_state import (  # noqa: F401  (EVENT_WEIGHTS is re-exported: readers import it from here)
    CHANNELS, DAYPARTS, DEVICES, EVENT_TYPES, EVENT_WEIGHTS, FeatureParams,
    conform_events, known_at, transform_full_state, transform_incremental_state,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger("portrait.features")

FEATURE_VERSION = "3"  # 3: affinities and search intent over the date's category vocabulary; price band null
MODES = ("incremental", "full")

# Event type -> the plural used in count names (n_views_30d, n_carts_7d, ...).
PLURALS = {
    "view": "views", "click": "clicks", "add_to_cart": "carts", "remove_from_cart": "cart_removals",
    "purchase": "purchases", "search": "searches", "review": "reviews", "rating": "ratings", "share": "shares",
}
# Rates: name -> (numerator event type, denominator event type); 0 when the denominator is 0.
RATES = {
    "click_rate": ("click", "view"), "cart_rate": ("add_to_cart", "view"),
    "conversion": ("purchase", "view"), "cart_conversion": ("purchase", "add_to_cart"),
}
# Where price_percentile_<long>d (price_percentile_90d by default) falls: below 1/3 budget, above 2/3 premium, else mid.
PRICE_BAND_CUTS = (1 / 3, 2 / 3)

# The version-1 vector, first and in its order, so older readers keep their columns. Written for the
# default windows; its 7/30/90-day names follow the configured windows (FeatureWindows.rename).
_LEGACY = (
    "n_events_7d", "n_events_30d", "n_views_30d", "n_clicks_30d", "n_carts_30d", "n_purchases_30d",
    "n_searches_30d", "active_days_30d", "recency_days", "n_purchases_90d", "monetary_90d",
    "avg_purchase_price_90d", "conversion_30d", "avg_rating", "price_index",
)


@lru_cache(maxsize=16)
def numeric_features(windows: FeatureWindows) -> tuple[str, ...]:
    """The numeric part of the vector, in model input order (ml/dataset.py reads it); every one is a double.

    Counts and rates for every window; the other windowed features for their role's window
    (short/medium/long, jobs/common/feature_windows.py). With the default windows these are the
    names and the order the vector always had.
    """
    def name(base: str, role: str) -> str:
        return windows.name(base, role)

    names = [windows.rename(n) for n in _LEGACY]
    names += [f"n_events_{w}d" for w in windows.days]
    names += [f"n_{PLURALS[t]}_{w}d" for t in EVENT_TYPES for w in windows.days]
    names += [f"{rate}_{w}d" for rate in RATES for w in windows.days]
    names += [name("active_days", SHORT), name("active_days", LONG), name("n_sessions", SHORT),
              name("n_sessions", MEDIUM), name("avg_session_events", MEDIUM), name("avg_session_minutes", MEDIUM)]
    names += [name(f"{part}_share", MEDIUM) for part, _, _ in DAYPARTS] + [name("weekend_share", MEDIUM)]
    names += [name(f"device_{d}_share", MEDIUM) for d in DEVICES] + [name(f"channel_{c}_share", MEDIUM) for c in CHANNELS]
    names += ["purchase_recency_days", name("price_percentile", LONG), name("review_sentiment", LONG),
              name("negative_review_share", LONG), "tenure_days", "social_degree"]
    return tuple(dict.fromkeys(names))
# Category affinities and search intent: arrays over the date's category vocabulary (gold.category_vocab,
# jobs/common/catalogue.py), each summing to 1 (or all 0); `affinity_name` names one entry.
AFFINITY_FEATURES = ("category_affinity",)   # array<double> over the vocabulary
# Array and map-like columns: ranked lists and the search-intent distribution.
BRAND_FEATURES = ("top_brands",)             # array<struct<brand string, score double>>, strongest first
KEYWORD_FEATURES = ("search_keywords", "review_keywords")  # array<string>, most frequent first
INTENT_FEATURES = ("search_intent",)         # array<double> over the vocabulary, summing to 1 (or all 0)
ARRAY_FEATURES = ("category_affinity", *INTENT_FEATURES)
CATEGORICAL_FEATURES = ("age_band", "gender", "occupation", "city", "price_band", "top_search_intent")


def user_feature_columns(windows: FeatureWindows) -> tuple[str, ...]:
    """Every column of gold.user_features, in table order."""
    return ("user_key", *CATEGORICAL_FEATURES, *numeric_features(windows), "category_affinity",
            *INTENT_FEATURES, *BRAND_FEATURES, *KEYWORD_FEATURES, "as_of_date", "feature_version")


def feature_version(windows: FeatureWindows) -> str:
    """FEATURE_VERSION, with the windows when they are not the default ones: features (and a model
    trained on them) of other windows have other columns, so they are never taken for these."""
    return FEATURE_VERSION if windows.is_default else f"{FEATURE_VERSION}+windows={windows.label()}"


def affinity_name(category: str) -> str:
    """The name of one vocabulary entry of category_affinity where it becomes a model input."""
    return f"affinity_{category}"


# --- configuration --------------------------------------------------------------------------------


def feature_params(cfg: Config) -> FeatureParams:
    half_life = cfg.get("features.affinity_half_life_days", cfg.get("pipeline.affinity_half_life_days", 14))
    return FeatureParams(
        half_life_days=float(half_life),
        session_gap_minutes=float(cfg.get("features.session_gap_minutes", 30)),
        local_timezone=str(cfg.get("features.local_timezone", "Asia/Shanghai")),
        exclude_outliers=bool(cfg.get("features.exclude_outliers", False)),
        catalogue=CatalogueParams.from_config(cfg),
        windows=FeatureWindows.from_config(cfg),
    )


def _top_n(cfg: Config | None, key: str, default: int) -> int:
    return int(cfg.get(f"features.{key}", default)) if cfg is not None else default


# --- the user vector from the state ---------------------------------------------------------------


def _ratio(numerator: "Column", denominator: "Column", default: float) -> "Column":
    from pyspark.sql import functions as F

    return F.when(denominator > 0, F.try_divide(numerator, denominator)).otherwise(F.lit(default))


def _ranked_keys(m: "Column", n: int) -> "Column":
    """The n keys of a map<string,double> with the largest values (ties by key), as entries."""
    from pyspark.sql import functions as F

    def by_value_desc(left: "Column", right: "Column") -> "Column":
        return (F.when(left["value"] > right["value"], -1).when(left["value"] < right["value"], 1)
                .when(left["key"] < right["key"], -1).when(left["key"] > right["key"], 1).otherwise(0))

    return F.slice(F.array_sort(F.map_entries(m), by_value_desc), 1, n)


def _map_total(m: "Column") -> "Column":
    from pyspark.sql import functions as F

    return F.aggregate(F.map_values(m), F.lit(0.0), lambda acc, x: acc + x)


def transform_social_degree(edges: "DataFrame", as_of: dt.date) -> "DataFrame":
    """user_key -> distinct users linked to them by an edge (either direction) dated on or before as_of."""
    from pyspark.sql import functions as F

    known = edges.where((F.col("event_date") <= F.lit(as_of)) & F.col("src_key").isNotNull()
                        & F.col("dst_key").isNotNull() & (F.col("src_key") != F.col("dst_key")))
    both = known.select(F.col("src_key").alias("user_key"), F.col("dst_key").alias("other")).unionByName(
        known.select(F.col("dst_key").alias("user_key"), F.col("src_key").alias("other")))
    return both.groupBy("user_key").agg(F.count_distinct("other").cast("double").alias("social_degree"))


def conform_users(users: "DataFrame") -> "DataFrame":
    from pyspark.sql import functions as F

    if "user_key" not in users.columns:
        raise InputDataError(f"users for the features lack user_key; columns present: {', '.join(users.columns)}")
    def text(name: str, default: str) -> "Column":
        return F.coalesce(F.col(name) if name in users.columns else F.lit(None), F.lit(default)).cast("string").alias(name)

    signup = (F.col("signup_date") if "signup_date" in users.columns else F.lit(None)).cast("date").alias("signup_date")
    return users.select("user_key", text("age_band", "unknown"), text("gender", "U"), text("occupation", "unknown"),
                        text("city", "unknown"), signup)


def _shares(m: "Column", total: "Column", vocab: Sequence[str]) -> "Column":
    """array<double> over `vocab`: each entry's share of the map's total; `other` takes every key the
    vocabulary does not name. All 0 when the total is 0."""
    from pyspark.sql import functions as F

    named = [c for c in vocab if c != OTHER]
    entries = {c: F.coalesce(F.try_element_at(m, F.lit(c)), F.lit(0.0)) for c in named}
    if OTHER in vocab:
        inside = F.aggregate(F.map_values(F.map_filter(m, lambda k, v: k.isin(*named) if named else F.lit(False))),
                             F.lit(0.0), lambda acc, x: acc + x)
        entries[OTHER] = F.greatest(total - inside, F.lit(0.0))
    shares = [F.when(total > 0, entries[c] / total).otherwise(F.lit(0.0)) for c in vocab]
    return (F.array(*shares) if shares else F.array()).cast("array<double>")


def transform_features_from_state(state: "DataFrame", users: "DataFrame", as_of: dt.date,
                                  social: "DataFrame | None" = None, top_brands: int = 5,
                                  top_keywords: int = 10, vocab: Sequence[str] | None = None,
                                  *, windows: FeatureWindows) -> "DataFrame":
    """gold.user_features rows: every user of the snapshot, with the documented defaults when idle.

    category_affinity and search_intent are arrays over `vocab`, the date's category vocabulary
    (gold.category_vocab); without one, over the builtin taxonomy's top level. `windows` are the
    ones the state was computed with (FeatureParams.windows).
    """
    from pyspark.sql import functions as F

    vocab = list(vocab) if vocab is not None else list(TOP_LEVEL)  # empty when no item has a category

    joined = conform_users(users).join(state.drop("as_of_date"), "user_key", "left")
    if social is not None:
        joined = joined.join(social, "user_key", "left")
    else:
        joined = joined.withColumn("social_degree", F.lit(None).cast("double"))

    # SQL text, one expression per feature: cheaper to build than ~100 trees of Column calls.
    def s(name: str) -> str:
        return f"coalesce({name}, 0D)"

    def count(t: str, w: int) -> str:
        return s(f"n_events__{w}") if t == "events" else s(f"n_{t}__{w}")

    def ratio(numerator: str, denominator: str, default: float) -> str:
        return f"CASE WHEN {denominator} > 0 THEN try_divide({numerator}, {denominator}) ELSE {default!r}D END"

    short, medium, long = windows.role(SHORT), windows.role(MEDIUM), windows.role(LONG)

    def named(base: str, role: str) -> str:
        return windows.name(base, role)

    def days_since(column: str) -> str:
        cap = float(long)
        return f"CASE WHEN {column} IS NULL THEN {cap!r}D ELSE least(CAST(datediff(DATE'{as_of}', {column}) AS DOUBLE), {cap!r}D) END"

    out: dict[str, str] = {}
    for w in windows.days:
        out[f"n_events_{w}d"] = count("events", w)
        for t in EVENT_TYPES:
            out[f"n_{PLURALS[t]}_{w}d"] = count(t, w)
        for rate, (num, den) in RATES.items():
            out[f"{rate}_{w}d"] = ratio(count(num, w), count(den, w), 0.0)
    for w in dict.fromkeys((short, medium, long)):
        out[f"active_days_{w}d"] = s(f"active__{w}")
    for w in dict.fromkeys((short, medium)):
        out[f"n_sessions_{w}d"] = s(f"n_sessions__{w}")
    m = medium  # the behaviour mix
    out[named("avg_session_events", MEDIUM)] = ratio(s(f"n_events__{m}"), s(f"n_sessions__{m}"), 0.0)
    out[named("avg_session_minutes", MEDIUM)] = ratio(s(f"session_seconds__{m}") + " / 60D", s(f"n_sessions__{m}"), 0.0)
    for part, _, _ in DAYPARTS:
        out[named(f"{part}_share", MEDIUM)] = ratio(s(f"n_{part}__{m}"), s(f"n_events__{m}"), 0.0)
    out[named("weekend_share", MEDIUM)] = ratio(s(f"n_weekend__{m}"), s(f"n_events__{m}"), 0.0)
    for d in DEVICES:
        out[named(f"device_{d}_share", MEDIUM)] = ratio(s(f"n_device_{d}__{m}"), s(f"n_events__{m}"), 0.0)
    for c in CHANNELS:
        out[named(f"channel_{c}_share", MEDIUM)] = ratio(s(f"n_channel_{c}__{m}"), s(f"n_events__{m}"), 0.0)
    out["recency_days"] = days_since("last_event_date")
    out["purchase_recency_days"] = days_since("last_purchase_date")
    out[named("monetary", LONG)] = s(f"spend__{long}")
    out[named("avg_purchase_price", LONG)] = ratio(s(f"purchase_price_sum__{long}"), s(f"n_purchase_priced__{long}"), 0.0)
    out["avg_rating"] = ratio(s(f"rating_sum__{long}"), s(f"n_rated__{long}"), 0.0)
    out["price_index"] = ratio(s(f"price_ratio_sum__{long}"), s(f"n_price_ratio__{long}"), 1.0)
    out[named("price_percentile", LONG)] = ratio(s(f"price_pct_sum__{long}"), s(f"n_price_pct__{long}"), 0.5)
    out[named("review_sentiment", LONG)] = ratio(s(f"sentiment_sum__{long}"), s(f"n_sentiment__{long}"), 0.5)
    out[named("negative_review_share", LONG)] = ratio(s(f"n_negative_reviews__{long}"), s(f"n_sentiment__{long}"), 0.0)
    numeric = numeric_features(windows)
    out["tenure_days"] = f"greatest(coalesce(CAST(datediff(DATE'{as_of}', signup_date) AS DOUBLE), 0D), 0D)"
    out["social_degree"] = s("social_degree")
    missing = set(numeric) - set(out)
    if missing:  # a programming error: numeric_features names a feature nothing computes
        raise AssertionError(f"no definition for {sorted(missing)}")

    empty = F.create_map().cast("map<string,double>")

    def keyed(name: str) -> "Column":
        return F.coalesce(F.col(name), empty)

    # Map totals and rankings once, in their own projection: Spark keeps a projection of non-trivial
    # expressions apart instead of copying them into every column that reads them.
    ranked = joined.select(
        "*",
        _map_total(keyed("category_weight")).alias("_category_total"),
        _map_total(keyed("intent_count")).alias("_intent_total"),
        _map_total(keyed("brand_weight")).alias("_brand_total"),
        _ranked_keys(keyed("intent_count"), 1).alias("_top_intent"),
        _ranked_keys(keyed("brand_weight"), top_brands).alias("_brands"),
        _ranked_keys(keyed("search_terms"), top_keywords).alias("_search_terms"),
        _ranked_keys(keyed("review_terms"), top_keywords).alias("_review_terms"),
    )

    pct = out[named("price_percentile", LONG)]
    # Null, not a made-up band, when none of the user's items had a list price (docs/features.md).
    price_band = (f"CASE WHEN {s(f'n_price_pct__{long}')} = 0 THEN NULL WHEN {pct} < {PRICE_BAND_CUTS[0]!r}D THEN 'budget' "
                  f"WHEN {pct} > {PRICE_BAND_CUTS[1]!r}D THEN 'premium' ELSE 'mid' END")
    brand_total = F.col("_brand_total")
    vector = ranked.select(
        "user_key", "age_band", "gender", "occupation", "city",
        F.expr(f"{price_band} AS price_band"),
        F.when(F.size("_top_intent") > 0, F.col("_top_intent")[0]["key"]).alias("top_search_intent"),
        *[F.expr(f"CAST({out[name]} AS DOUBLE) AS {name}") for name in numeric],
        _shares(keyed("category_weight"), F.col("_category_total"), vocab).alias("category_affinity"),
        _shares(keyed("intent_count"), F.col("_intent_total"), vocab).alias("search_intent"),
        F.transform("_brands", lambda e: F.struct(e["key"].alias("brand"), (e["value"] / brand_total).alias("score")))
        .alias("top_brands"),
        F.transform("_search_terms", lambda e: e["key"]).alias("search_keywords"),
        F.transform("_review_terms", lambda e: e["key"]).alias("review_keywords"),
    )
    return vector.select(
        "user_key", *CATEGORICAL_FEATURES, *numeric, "category_affinity", *INTENT_FEATURES, *BRAND_FEATURES, *KEYWORD_FEATURES,
        F.lit(as_of).alias("as_of_date"),
        F.lit(feature_version(windows)).alias("feature_version"),
    )


def transform_user_features(
    events: "DataFrame", users: "DataFrame", items: "DataFrame", as_of: dt.date,
    half_life_days: float = 14.0, params: FeatureParams | None = None,
    social: "DataFrame | None" = None, vocab: Sequence[str] | None = None,
) -> "DataFrame":
    """Full recomputation. Point in time: only events dated on or before `as_of` that had landed by then count.

    `vocab` is the category vocabulary the arrays are over (default: the builtin taxonomy's top level);
    the windows are `params.windows`.
    """
    params = params or FeatureParams(half_life_days=half_life_days)
    state = transform_full_state(events, items, as_of, params)
    return transform_features_from_state(state, users, as_of, social, vocab=vocab, windows=params.windows)


# --- item features --------------------------------------------------------------------------------

ITEM_WINDOWS = (1, 7, 30)


def transform_item_features(events: "DataFrame", items: "DataFrame", as_of: dt.date,
                            half_life_days: float = 14.0) -> "DataFrame":
    """Popularity and conversion by window, price position within the category, title words.

    A 30-day scan of the events known at `as_of`; items are the snapshot passed in.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from jobs.content import tokens_column

    first = as_of - dt.timedelta(days=max(ITEM_WINDOWS) - 1)
    recent = known_at(conform_events(events), as_of).where(
        (F.col("event_date") >= F.lit(first)) & F.col("item_id").isNotNull()
    ).withColumn("age_days", F.datediff(F.lit(as_of), F.col("event_date")))

    def count_if(condition: "Column") -> "Column":
        return F.sum(F.when(condition, 1).otherwise(0)).cast("long")

    etype = F.col("event_type")
    age = F.col("age_days")
    stats = recent.groupBy("item_id").agg(
        *[count_if(age < w).alias(f"n_events_{w}d") for w in ITEM_WINDOWS],
        *[count_if((age < w) & (etype == "view")).alias(f"views_{w}d") for w in ITEM_WINDOWS],
        *[count_if((age < w) & (etype == "add_to_cart")).alias(f"carts_{w}d") for w in ITEM_WINDOWS],
        *[count_if((age < w) & (etype == "purchase")).alias(f"purchases_{w}d") for w in ITEM_WINDOWS],
        F.sum(F.pow(F.lit(0.5), age / F.lit(half_life_days))).alias("popularity"),
        F.avg("rating").alias("avg_rating_30d"),
    )
    item_cols = [F.col(c) if c in items.columns else F.lit(None).cast("string").alias(c)
                 for c in ("item_id", "title", "category_path", "category", "brand")]
    base = items.select(*item_cols, F.col("price").cast("double").alias("price"))
    by_category = Window.partitionBy("category", F.col("price").isNull()).orderBy("price")
    counts = [f"{kind}_{w}d" for kind in ("n_events", "views", "carts", "purchases") for w in ITEM_WINDOWS]
    joined = base.join(stats, "item_id", "left").fillna({**{c: 0 for c in counts}, "popularity": 0.0})
    return joined.select(
        "item_id", "category", "category_path", "brand", "price",
        *[F.col(c) for c in counts],
        F.col("popularity").cast("double").alias("popularity"),
        *[_ratio(F.col(f"purchases_{w}d").cast("double"), F.col(f"views_{w}d").cast("double"), 0.0).alias(f"conversion_{w}d")
          for w in ITEM_WINDOWS],
        F.col("avg_rating_30d").cast("double").alias("avg_rating_30d"),
        F.when(F.col("price").isNotNull(), F.percent_rank().over(by_category)).alias("price_pct_in_category"),
        tokens_column(F.col("title")).alias("title_tokens"),
        F.lit(as_of).alias("as_of_date"),
        F.lit(FEATURE_VERSION).alias("feature_version"),
    )


# --- the category vocabulary ----------------------------------------------------------------------


def category_vocab(events: "DataFrame", items: "DataFrame", as_of: dt.date, catalogue: CatalogueParams,
                   window_days: int) -> "DataFrame":
    """gold.category_vocab of `as_of`: the item snapshot's categories, ranked by the events of the window
    (the longest feature window, `window_days`) on them."""
    from pyspark.sql import functions as F

    first = as_of - dt.timedelta(days=window_days - 1)
    window = known_at(conform_events(events), as_of).where(F.col("event_date") >= F.lit(first))
    return transform_category_vocab(with_categories(items), window, as_of, catalogue)


# --- reading and running --------------------------------------------------------------------------


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
        raise InputDataError(f"{name} is empty; run collect and clean first")
    snapshot = table.where(F.col("snapshot_date") == F.lit(chosen))
    if "signup_date" in snapshot.columns:
        snapshot = snapshot.where(F.col("signup_date").isNull() | (F.col("signup_date") <= F.lit(as_of)))
    return snapshot


def read_social_degree(spark: "SparkSession", cfg: Config, as_of: dt.date) -> "DataFrame | None":
    """Social degree from silver.social_edges, or None (degree 0) while that table does not exist."""
    if not table_exists(spark, cfg, "silver.social_edges"):
        log.info("silver.social_edges does not exist; social_degree is 0 for %s", as_of)
        return None
    return transform_social_degree(read_table(spark, cfg, "silver.social_edges"), as_of)


def build_user_features(spark: "SparkSession", cfg: Config, as_of: dt.date,
                        events: "DataFrame | None" = None, items: "DataFrame | None" = None) -> "DataFrame":
    """User features as of a date, fully recomputed; pass `events`/`items` when the caller already read them.

    Without `items`, every event sees the item snapshot of its own day (all of silver.items is read).
    The category vocabulary is the one the features step would write for `as_of` (gold.category_vocab).
    """
    from pyspark.sql import functions as F

    events = read_table(spark, cfg, "silver.events") if events is None else events
    items = read_table(spark, cfg, "silver.items") if items is None else items
    users = latest_snapshot(spark, cfg, "silver.users", as_of)
    params = feature_params(cfg)
    snapshot = items
    if "snapshot_date" in items.columns:  # the snapshot latest_snapshot picks: newest by as_of, else the oldest
        bounds = items.agg(F.max(F.when(F.col("snapshot_date") <= F.lit(as_of), F.col("snapshot_date"))),
                           F.min("snapshot_date")).collect()[0]
        chosen = bounds[0] or bounds[1]
        snapshot = items.where(F.col("snapshot_date") == F.lit(chosen)) if chosen else items
    vocab = vocab_list(category_vocab(events, snapshot, as_of, params.catalogue, params.windows.longest))
    state = transform_full_state(events, items, as_of, params)
    return transform_features_from_state(state, users, as_of, read_social_degree(spark, cfg, as_of),
                                         _top_n(cfg, "top_brands", 5), _top_n(cfg, "top_keywords", 10), vocab,
                                         windows=params.windows)


def previous_state(spark: "SparkSession", cfg: Config, as_of: dt.date,
                   params: FeatureParams) -> tuple["DataFrame | None", str]:
    """The state of the day before `as_of` if it can be continued, else (None, why not)."""
    from pyspark.sql import functions as F

    yesterday = as_of - dt.timedelta(days=1)
    if not table_exists(spark, cfg, "gold.user_feature_state"):
        return None, "gold.user_feature_state does not exist yet"
    state = read_table(spark, cfg, "gold.user_feature_state").where(F.col("as_of_date") == F.lit(yesterday))
    found = state.select("state_version").limit(1).collect()
    if not found:
        return None, f"no state for {yesterday}"
    if found[0][0] != params.fingerprint():
        return None, f"the state of {yesterday} was computed with other settings ({found[0][0]})"
    return state, ""


def _delete_old_state(spark: "SparkSession", cfg: Config, as_of: dt.date) -> None:
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from jobs.common.catalog import table_path

    keep = int(cfg.get("features.state_retention_days", 14))
    if keep <= 0:
        return
    oldest_kept = as_of - dt.timedelta(days=keep)
    DeltaTable.forPath(spark, table_path(cfg, "gold.user_feature_state")).delete(F.col("as_of_date") < F.lit(oldest_kept))


def run(spark: "SparkSession", cfg: Config, run_date: dt.date, mode: str | None = None) -> StepResult:
    """gold.user_feature_state, gold.user_features, gold.item_features and gold.user_sequences for `run_date`.

    mode: incremental (default, `features.mode`) continues the state of the day before and falls
    back to full when it is missing or was computed with other settings; full recomputes the window.
    """
    from pyspark.sql import functions as F

    from jobs.sequences import write_user_sequences

    mode = str(mode or cfg.get("features.mode", "incremental"))
    if mode not in MODES:
        raise ConfigError(f"features mode '{mode}' is unknown; use one of {', '.join(MODES)}")
    params = feature_params(cfg)  # a bad catalogue setting fails here, before anything is written
    result = StepResult("features", run_date)
    events = read_table(spark, cfg, "silver.events")
    items = read_table(spark, cfg, "silver.items")

    used, reason = mode, ""
    previous = None
    if mode == "incremental":
        previous, reason = previous_state(spark, cfg, run_date, params)
        if previous is None:
            used = "full"
            log.info("features %s: full recomputation because %s", run_date, reason)
    cached: list = []
    try:
        if previous is not None:
            state = transform_incremental_state(events, items, previous, run_date, params, cache=cached)
        else:
            state = transform_full_state(events, items, run_date, params, cache=cached)
        written = replace_dates(state, cfg, "gold.user_feature_state", [run_date])
    finally:
        for frame in cached:
            frame.unpersist()
    result.tables.append(TableCount("gold.user_feature_state", written, written))

    item_snapshot = latest_snapshot(spark, cfg, "silver.items", run_date)
    written = replace_dates(category_vocab(events, item_snapshot, run_date, params.catalogue, params.windows.longest),
                            cfg, "gold.category_vocab", [run_date])
    result.tables.append(TableCount("gold.category_vocab", written, written))
    vocab = vocab_list(read_table(spark, cfg, "gold.category_vocab").where(F.col("as_of_date") == F.lit(run_date)))
    if not vocab:
        log.warning("features %s: no item has a category; category_affinity and search_intent are empty", run_date)

    stored = read_table(spark, cfg, "gold.user_feature_state").where(F.col("as_of_date") == F.lit(run_date))
    users = latest_snapshot(spark, cfg, "silver.users", run_date)
    features = transform_features_from_state(
        stored, users, run_date, read_social_degree(spark, cfg, run_date),
        _top_n(cfg, "top_brands", 5), _top_n(cfg, "top_keywords", 10), vocab, windows=params.windows)
    written = replace_dates(features, cfg, "gold.user_features", [run_date])
    result.tables.append(TableCount("gold.user_features", written, written))

    item_features = transform_item_features(events, item_snapshot, run_date, half_life_days=params.half_life_days)
    written = replace_dates(item_features, cfg, "gold.item_features", [run_date])
    result.tables.append(TableCount("gold.item_features", written, written))
    result.tables.append(write_user_sequences(spark, cfg, run_date, events=events, items=item_snapshot))

    _delete_old_state(spark, cfg, run_date)
    write_audit(spark, cfg, "features", run_date, result.tables)
    result.details.update({"mode": used, "requested_mode": mode, "feature_version": feature_version(params.windows)})
    if reason and used != mode:
        result.details["fallback_reason"] = reason
    return result


def backfill(spark: "SparkSession", cfg: Config, start: dt.date, end: dt.date, mode: str | None = None) -> list[StepResult]:
    """Run the features step for every day from start to end, oldest first.

    In incremental mode each day continues the state the day before wrote, so only the first day
    (when its previous state is missing) scans the full window.
    """
    if end < start:
        raise ConfigError(f"backfill end {end} is before its start {start}")
    results = []
    day = start
    while day <= end:
        results.append(run(spark, cfg, day, mode=mode))
        log.info("%s", results[-1].summary())
        day += dt.timedelta(days=1)
    return results


def main(argv: list[str] | None = None) -> None:
    """Backfill the features of a range of days: python -m jobs.features --start D1 --end D2 [--mode M]."""
    from jobs.common.config import load_config
    from jobs.common.dates import parse_date
    from jobs.common.spark import build_spark

    parser = argparse.ArgumentParser(prog="python -m jobs.features", description=main.__doc__)
    parser.add_argument("--start", required=True, help="first as-of date, YYYY-MM-DD")
    parser.add_argument("--end", help="last as-of date (default: --start)")
    parser.add_argument("--mode", choices=MODES, default=None, help="default: features.mode in the profile")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = parse_date(args.start, "--start")
    end = parse_date(args.end or args.start, "--end")
    cfg = load_config()
    results = backfill(build_spark(cfg, app_suffix="features-backfill"), cfg, start, end, args.mode)
    print(json.dumps([r.to_dict() for r in results], default=str))


if __name__ == "__main__":
    main()
