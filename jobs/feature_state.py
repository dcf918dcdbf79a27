"""Per-user day aggregates and their fold into windowed state (gold.user_feature_state).

Every user feature is a function of day aggregates A(u, d, L): what user u did on UTC day d, counting
only events known at the end of day L (event_date <= L and landed_date <= L). The state of day D holds,
per user, the window totals T_w(D) = sum of A(u, d, D) over the w days ending at D, and exponentially
decayed sums S(D) = sum of A(u, d, D) * 0.5 ** ((D - d) / half_life) over the longest window L.
The windows are `features.windows` (jobs/common/feature_windows.py; default 1, 7, 30, 90 days).

Two ways to get the state of day D, equal up to float rounding (tests/test_features.py checks it):

* full: aggregate every day of the window from silver.events and sum (an L-day scan);
* incremental: from the state of D-1, the days that D's landing touched and the days leaving each window:
      T_w(D) = T_w(D-1) + sum over touched d within w of [A(d, D) - A(d, D-1)] - A(D-w, D-1)
      S(D)   = 0.5 ** (1/h) * S(D-1) + sum over touched d of [A(d, D) - A(d, D-1)] * 0.5 ** ((D-d)/h)
               - A(D-L, D-1) * 0.5 ** (L/h)
  It reads today's events, the late events that landed today (and the rest of their user-days), and
  the days that leave each window longer than a day (with the default windows the days leaving the
  7-, 30- and 90-day windows: 5 days of events instead of 90).

Counts that are not sums of events (active days, sessions, session length) fold the same way because
the fold works on whole user-days: a late event recomputes its user-day, and the difference is added.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from jobs.common.catalogue import UNKNOWN, CatalogueParams, with_categories
from jobs.common.errors import InputDataError
from jobs.common.feature_windows import LONG, MEDIUM, SHORT, FeatureWindows

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# Bump when the state's columns or meaning change: an older state is then not continued but recomputed.
STATE_FORMAT = "3"  # 3: category weights over the shop's own (and several) categories
EVENT_TYPES = ("view", "click", "add_to_cart", "remove_from_cart", "purchase", "search", "review", "rating", "share")
# How much one event says about interest in a category (a search counts for the category of its intent).
EVENT_WEIGHTS = {
    "view": 1.0, "click": 2.0, "add_to_cart": 3.0, "remove_from_cart": 0.5, "purchase": 5.0,
    "search": 1.0, "review": 2.0, "rating": 1.0, "share": 2.0,
}
DAYPARTS = (("night", 0, 6), ("morning", 6, 12), ("afternoon", 12, 18), ("evening", 18, 24))
DEVICES = ("ios", "android", "web", "mini_program")
CHANNELS = ("organic", "search_ads", "social", "email", "push")
# Map entries below this are float residue of a subtraction, not weight.
MAP_EPSILON = 1e-9

# Names of the keyed day aggregates (map columns of the state); map_specs gives their windows.
MAP_NAMES = ("category_weight", "brand_weight", "intent_count", "search_terms", "review_terms")


@lru_cache(maxsize=16)
def scalar_windows(windows: FeatureWindows) -> dict[str, tuple[int, ...]]:
    """Day aggregates that the state sums, and the windows (days ending at D) kept for each: counts for
    every window, the rest for their role's window (jobs/common/feature_windows.py)."""
    every = windows.days
    short, medium, long = windows.role(SHORT), windows.role(MEDIUM), windows.role(LONG)

    def unique(*days: int) -> tuple[int, ...]:
        return tuple(dict.fromkeys(days))

    return {
        "n_events": every,
        **{f"n_{t}": every for t in EVENT_TYPES},
        "active": unique(short, medium, long),
        "n_sessions": unique(short, medium),
        "session_seconds": unique(short, medium),
        **{f"n_{part}": (medium,) for part, _, _ in DAYPARTS},
        "n_weekend": (medium,),
        **{f"n_device_{d}": (medium,) for d in DEVICES},
        **{f"n_channel_{c}": (medium,) for c in CHANNELS},
        **{name: (long,) for name in ("spend", "purchase_price_sum", "n_purchase_priced", "price_ratio_sum",
                                      "n_price_ratio", "price_pct_sum", "n_price_pct", "rating_sum", "n_rated",
                                      "sentiment_sum", "n_sentiment", "n_negative_reviews")},
    }


@lru_cache(maxsize=16)
def map_specs(windows: FeatureWindows) -> dict[str, tuple[int, bool]]:
    """Keyed day aggregates: name -> (window in days, decayed by the half-life?)."""
    medium, long = windows.role(MEDIUM), windows.role(LONG)
    specs = {"category_weight": (long, True), "brand_weight": (long, True), "intent_count": (medium, False),
             "search_terms": (medium, False), "review_terms": (long, False)}
    return {name: specs[name] for name in MAP_NAMES}


def expiry_windows(windows: FeatureWindows) -> tuple[int, ...]:
    """Windows other than 1 day carry over from D-1; their leaving days are read for the subtraction."""
    return tuple(sorted({w for ws in scalar_windows(windows).values() for w in ws if w > 1}
                        | {w for w, _ in map_specs(windows).values()}))


_REQUIRED_EVENT_COLUMNS = ("user_key", "event_type", "event_date")
_OPTIONAL_EVENT_COLUMNS = {
    "session_id": "string", "item_id": "string", "ts": "timestamp", "price": "double", "quantity": "double",
    "query": "string", "review_text": "string", "rating": "double", "device": "string", "channel": "string",
}


@dataclass(frozen=True)
class FeatureParams:
    half_life_days: float = 14.0
    session_gap_minutes: float = 30.0
    local_timezone: str = "Asia/Shanghai"
    exclude_outliers: bool = False
    catalogue: CatalogueParams = field(default_factory=CatalogueParams)
    windows: FeatureWindows = field(default_factory=FeatureWindows)

    def __post_init__(self) -> None:
        if not self.half_life_days > 0:
            raise ValueError(f"the affinity half-life must be > 0 days, got {self.half_life_days}")
        if not self.session_gap_minutes > 0:
            raise ValueError(f"the session gap must be > 0 minutes, got {self.session_gap_minutes}")

    @property
    def daily_decay(self) -> float:
        return 0.5 ** (1.0 / self.half_life_days)

    def fingerprint(self) -> str:
        """What a stored state was computed with; a different one is recomputed, never continued."""
        c = self.catalogue
        catalogue = "" if c == CatalogueParams() else (  # the default leaves older fingerprints as they were
            f";catalogue={c.taxonomy}/{c.tag_level}/{''.join(c.path_separators)}/{c.multi_value_separator}/"
            f"{sorted(c.aliases.items())}")
        windows = "" if self.windows.is_default else f";windows={self.windows.label()}"  # idem
        return (f"state={STATE_FORMAT};half_life={self.half_life_days:g};gap={self.session_gap_minutes:g};"
                f"tz={self.local_timezone};exclude_outliers={self.exclude_outliers}{catalogue}{windows}")


def state_columns(windows: FeatureWindows) -> list[str]:
    """The scalar columns of gold.user_feature_state, `<aggregate>__<window>`."""
    return [f"{name}__{w}" for name, kept in scalar_windows(windows).items() for w in kept]


# --- inputs ----------------------------------------------------------------------------------------


def conform_events(events: "DataFrame", params: FeatureParams | None = None) -> "DataFrame":
    """The columns the features read, typed; optional ones are null where the input lacks them.

    `landed_date` (the day the event reached silver) defaults to `event_date`. With
    `exclude_outliers`, rows that cleaning flagged `is_outlier` are left out.
    """
    from pyspark.sql import functions as F

    missing = [c for c in _REQUIRED_EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise InputDataError(f"events for the features lack column(s) {', '.join(missing)}; "
                             f"columns present: {', '.join(events.columns)}")
    if params is not None and params.exclude_outliers and "is_outlier" in events.columns:
        events = events.where(~F.coalesce(F.col("is_outlier"), F.lit(False)))
    cols = [F.col("user_key"), F.col("event_type"), F.col("event_date").cast("date").alias("event_date")]
    landed = F.col("landed_date").cast("date") if "landed_date" in events.columns else F.lit(None).cast("date")
    cols.append(F.coalesce(landed, F.col("event_date").cast("date")).alias("landed_date"))
    for name, kind in _OPTIONAL_EVENT_COLUMNS.items():
        cols.append((F.col(name) if name in events.columns else F.lit(None)).cast(kind).alias(name))
    return events.select(*cols)


def known_at(events: "DataFrame", day: dt.date) -> "DataFrame":
    """Point in time: events of days up to `day` that had landed by the end of `day`."""
    from pyspark.sql import functions as F

    return events.where((F.col("event_date") <= F.lit(day)) & (F.col("landed_date") <= F.lit(day)))


def conform_items(items: "DataFrame") -> "DataFrame":
    from pyspark.sql import functions as F

    missing = [c for c in ("item_id", "category", "price") if c not in items.columns]
    if missing:
        raise InputDataError(f"items for the features lack column(s) {', '.join(missing)}; "
                             f"columns present: {', '.join(items.columns)}")
    items = with_categories(items)
    cols = [F.col("item_id"), F.col("category"), F.col("categories"),
            (F.col("brand") if "brand" in items.columns else F.lit(None)).cast("string").alias("brand"),
            F.col("price").cast("double").alias("list_price")]
    if "snapshot_date" in items.columns:
        cols.append(F.col("snapshot_date"))
    return items.select(*cols)


def item_positions(items: "DataFrame", by: tuple[str, ...]) -> "DataFrame":
    """+ category_median (the lower median list price of the category) and price_pct (percent rank, 0..1)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    group = Window.partitionBy(*by)
    priced = Window.partitionBy(*by, F.col("list_price").isNull()).orderBy("list_price")
    return items.select(
        "*",
        F.percentile_approx("list_price", 0.5, 100_000).over(group).alias("category_median"),
        # Ranked among the priced items only; an item without a list price has no position.
        F.when(F.col("list_price").isNotNull(), F.percent_rank().over(priced)).alias("price_pct"),
    )


def snapshot_for_days(snapshot_dates: list[dt.date], days: list[dt.date]) -> dict[dt.date, dt.date]:
    """Each day's master-data snapshot: the newest one not after it, else the oldest (before the first load)."""
    if not snapshot_dates:
        raise InputDataError("silver.items has no snapshot; run collect and clean first")
    ordered = sorted(snapshot_dates)
    return {day: max((s for s in ordered if s <= day), default=ordered[0]) for day in days}


def attach_items(events: "DataFrame", items: "DataFrame", days: list[dt.date]) -> "DataFrame":
    """events + category, brand, list_price, category_median, price_pct of each event's item.

    With dated snapshots each event sees the snapshot of its own day (`snapshot_for_days`), so a
    day's aggregate does not change when master data changes later; a frame without
    `snapshot_date` is one snapshot for every day.
    """
    from pyspark.sql import functions as F

    items = conform_items(items)
    if "snapshot_date" not in items.columns:
        return events.join(item_positions(items, ("category",)), "item_id", "left")
    snapshots = [r[0] for r in items.select("snapshot_date").distinct().collect()]
    chosen = snapshot_for_days(snapshots, sorted(set(days)))
    mapping = events.sparkSession.createDataFrame(sorted(chosen.items()), "event_date date, snapshot_date date")
    positioned = item_positions(items.where(F.col("snapshot_date").isin(*set(chosen.values()))),
                                ("snapshot_date", "category"))
    return (events.join(F.broadcast(mapping), "event_date", "left")
            .join(positioned, ["snapshot_date", "item_id"], "left").drop("snapshot_date"))


# --- day aggregates -------------------------------------------------------------------------------


def transform_event_facts(events: "DataFrame", items: "DataFrame", days: list[dt.date],
                          catalogue: CatalogueParams | None = None) -> "DataFrame":
    """Conformed events + item attributes of their day + content (intent, sentiment, tokens).

    Search intent uses the builtin phrase dictionary where the builtin taxonomy applies, else one made
    of the shop's own category names and aliases. Text first: annotate_content splits rows with and
    without text, so it should sit on a cheap input.
    """
    from jobs.content import annotate_content

    catalogue = catalogue or CatalogueParams()
    dictionary = None if catalogue.builtin else shop_dictionary(items, catalogue)
    return attach_items(annotate_content(events, dictionary), items, days)


def shop_dictionary(items: "DataFrame", catalogue: CatalogueParams) -> dict[str, str]:
    """The search-intent dictionary of the shop's categories (jobs.content.shop_intent_dictionary)."""
    from jobs.content import shop_intent_dictionary

    column = "category_path" if "category_path" in items.columns else "category"
    paths = sorted(r[0] for r in items.select(column).distinct().collect() if r[0] and r[0] != UNKNOWN)
    return shop_intent_dictionary(paths, catalogue.all_aliases(), catalogue.tag_level)


def transform_day_aggregates(facts: "DataFrame", params: FeatureParams,
                             group: tuple[str, ...] = ()) -> tuple["DataFrame", "DataFrame"]:
    """(scalars, entries) per user and UTC day (and `group` columns).

    scalars: one row per (group, user_key, event_date) with every scalar_windows aggregate;
    entries: (group, user_key, event_date, name, key, value), the keyed aggregates of MAP_NAMES.
    Sessions are cut at UTC midnight so that a day is complete on its own.
    """
    from pyspark.sql import functions as F

    keys = [*group, "user_key", "event_date"]
    etype = F.col("event_type")
    # Expressions as SQL text: hundreds of them, and one call each costs far less than building Columns.
    local = F.from_utc_timestamp(F.col("ts"), params.local_timezone)
    facts = facts.select(
        "*", F.hour(local).alias("_hour"), F.dayofweek(local).alias("_weekday"),
        (F.unix_micros(F.col("ts")) / 1e6).alias("_seconds"),
        F.try_divide(F.col("price"), F.col("category_median")).alias("_ratio"),
    )

    def count_if(condition: str) -> str:
        return f"sum(CASE WHEN {condition} THEN 1D ELSE 0D END)"

    def sum_if(condition: str, value: str) -> str:
        return f"coalesce(sum(CASE WHEN {condition} THEN {value} END), 0D)"

    buying = "event_type IN ('purchase', 'add_to_cart')"
    partials = {
        "n_events": "CAST(count(1) AS DOUBLE)",
        **{f"n_{t}": count_if(f"event_type = '{t}'") for t in EVENT_TYPES},
        **{f"n_{part}": count_if(f"_hour >= {lo} AND _hour < {hi}") for part, lo, hi in DAYPARTS},
        "n_weekend": count_if("_weekday IN (1, 7)"),
        **{f"n_device_{d}": count_if(f"device = '{d}'") for d in DEVICES},
        **{f"n_channel_{c}": count_if(f"channel = '{c}'") for c in CHANNELS},
        "spend": sum_if("event_type = 'purchase'", "price * coalesce(quantity, 1D)"),
        "purchase_price_sum": sum_if("event_type = 'purchase'", "price"),
        "n_purchase_priced": count_if("event_type = 'purchase' AND price IS NOT NULL"),
        "price_ratio_sum": sum_if(buying, "_ratio"),
        "n_price_ratio": count_if(f"{buying} AND _ratio IS NOT NULL"),
        "price_pct_sum": sum_if(buying, "price_pct"),
        "n_price_pct": count_if(f"{buying} AND price_pct IS NOT NULL"),
        "rating_sum": sum_if("true", "rating"),
        "n_rated": count_if("rating IS NOT NULL"),
        "sentiment_sum": sum_if("true", "sentiment"),
        "n_sentiment": count_if("sentiment IS NOT NULL"),
        "n_negative_reviews": count_if("sentiment < 0.4"),
    }

    # Sessions: the shop's session_id. Events without one share a group per user-day whose sorted times
    # are cut wherever the gap exceeds N minutes: sessions = 1 + cuts, their summed length = last - first
    # - the gaps cut at. Events without session_id and without ts make one more session of length 0.
    # Two levels in one pass (per session_id, then per user-day), no window and no second scan.
    per_session = facts.groupBy(*keys, "session_id").agg(
        *[F.expr(f"{sql} AS {name}") for name, sql in partials.items()],
        F.expr("coalesce(max(_seconds) - min(_seconds), 0D) AS _span"),
        F.expr("array_sort(collect_list(CASE WHEN session_id IS NULL THEN _seconds END)) AS _times"),
        F.expr("max(CASE WHEN session_id IS NULL AND ts IS NULL THEN 1 ELSE 0 END) AS _untimed"),
    )
    gap = params.session_gap_minutes * 60.0
    gaps = (f"filter(zip_with(slice(_times, 2, greatest(size(_times) - 1, 1)), _times, (b, a) -> b - a), "
            f"g -> g IS NOT NULL AND g > {gap!r}D)")
    gap_sessions = f"(CASE WHEN size(_times) > 0 THEN size({gaps}) + 1 ELSE 0 END + _untimed)"
    gap_span = (f"CASE WHEN size(_times) > 0 THEN aggregate({gaps}, 0D, (acc, g) -> acc - g) "
                f"+ try_element_at(_times, -1) - try_element_at(_times, 1) ELSE 0D END")
    scalars = per_session.groupBy(*keys).agg(
        *[F.expr(f"CAST(sum({name}) AS DOUBLE) AS {name}") for name in partials],
        F.expr(f"CAST(sum(CASE WHEN session_id IS NOT NULL THEN 1 ELSE {gap_sessions} END) AS DOUBLE) AS n_sessions"),
        F.expr(f"CAST(sum(CASE WHEN session_id IS NOT NULL THEN _span ELSE {gap_span} END) AS DOUBLE) AS session_seconds"),
    ).select(*keys, *[F.lit(1.0).alias(name) if name == "active" else F.col(name) for name in scalar_windows(params.windows)])

    weights = F.create_map(*[F.lit(x) for pair in EVENT_WEIGHTS.items() for x in pair])
    weight = F.coalesce(F.try_element_at(weights, etype), F.lit(0.0))
    # A search counts for its intent; an item event for each of the item's categories (Drama|Thriller).
    item_categories = F.coalesce(F.col("categories"), F.array(F.col("category")))
    signals = F.filter(F.when(etype == "search", F.array(F.col("intent"))).otherwise(item_categories),
                       lambda c: c.isNotNull() & (c != UNKNOWN))

    def entry(name: str, key: "Column", value: "Column") -> "Column":
        return F.struct(F.lit(name).alias("name"), key.alias("key"), value.cast("double").alias("value"))

    term_map = F.when(F.col("query").isNotNull(), F.lit("search_terms")).otherwise(F.lit("review_terms"))
    entries = facts.select(
        *keys,
        F.explode(F.concat(
            F.transform(F.filter(signals, lambda c: weight > 0), lambda c: entry("category_weight", c, weight)),
            F.array(
                entry("brand_weight", F.when(F.col("item_id").isNotNull() & (F.col("brand") != "unknown") & (weight > 0),
                                             F.col("brand")), weight),
                entry("intent_count", F.when(F.col("query").isNotNull(), F.col("intent")), F.lit(1.0)),
            ),
            F.transform(F.coalesce(F.col("tokens"), F.array().cast("array<string>")),
                        lambda t: entry("", t, F.lit(1.0)).withField("name", term_map)),
        )).alias("e"),
    ).where(F.col("e.key").isNotNull()).groupBy(*keys, F.col("e.name").alias("name"), F.col("e.key").alias("key")).agg(
        F.sum("e.value").alias("value")
    )
    return scalars, entries


# --- folds ----------------------------------------------------------------------------------------


def _map_window(name: "Column", windows: FeatureWindows) -> "Column":
    from pyspark.sql import functions as F

    specs = map_specs(windows)
    return F.try_element_at(F.create_map(*[F.lit(x) for n, (w, _) in specs.items() for x in (n, w)]), name)


def _map_decayed(name: "Column", windows: FeatureWindows) -> "Column":
    from pyspark.sql import functions as F

    specs = map_specs(windows)
    return F.try_element_at(F.create_map(*[F.lit(x) for n, (_, d) in specs.items() for x in (n, d)]), name)


def _collect_maps(entries: "DataFrame") -> "DataFrame":
    """(user_key, name, key, value) -> user_key + one map<string,double> column per MAP_NAMES name."""
    from pyspark.sql import functions as F

    kept = entries.where(F.col("value") > MAP_EPSILON)
    return kept.groupBy("user_key").agg(*[
        F.map_from_entries(F.collect_list(F.when(F.col("name") == name, F.struct("key", "value")))).alias(name)
        for name in MAP_NAMES
    ])


def _finish_state(scalars: "DataFrame", maps: "DataFrame", as_of: dt.date, params: FeatureParams) -> "DataFrame":
    from pyspark.sql import functions as F

    empty = F.create_map().cast("map<string,double>")
    # A user stays in the state while they have an event in the longest window.
    longest = params.windows.longest
    return scalars.join(maps, "user_key", "left").where(F.col(f"n_events__{longest}") > 0.5).select(
        "user_key", *state_columns(params.windows), "last_event_date", "last_purchase_date",
        *[F.coalesce(F.col(name), empty).alias(name) for name in MAP_NAMES],
        F.lit(params.fingerprint()).alias("state_version"),
        F.lit(as_of).alias("as_of_date"),
    )


def _facts(events: "DataFrame", items: "DataFrame", days: list[dt.date], cache: list | None,
           catalogue: CatalogueParams | None = None) -> "DataFrame":
    """The event facts, persisted (and listed in `cache` for the caller to release) when asked:
    the day aggregates read them twice (scalars and keyed entries)."""
    facts = transform_event_facts(events, items, days, catalogue)
    if cache is not None:
        from pyspark import StorageLevel

        facts = facts.persist(StorageLevel.MEMORY_AND_DISK)
        cache.append(facts)
    return facts


def transform_full_state(events: "DataFrame", items: "DataFrame", as_of: dt.date, params: FeatureParams,
                         cache: list | None = None) -> "DataFrame":
    """The state of `as_of` from the events of its longest window alone."""
    from pyspark.sql import functions as F

    longest = params.windows.longest
    first = as_of - dt.timedelta(days=longest - 1)
    days = [first + dt.timedelta(days=i) for i in range(longest)]
    window = known_at(conform_events(events, params), as_of).where(F.col("event_date") >= F.lit(first))
    scalars, entries = transform_day_aggregates(_facts(window, items, days, cache, params.catalogue), params)
    age = F.datediff(F.lit(as_of), F.col("event_date"))

    totals = scalars.withColumn("_age", age).groupBy("user_key").agg(
        *[F.expr(f"sum(CASE WHEN _age < {w} THEN {name} ELSE 0D END) AS {name}__{w}")
          for name, kept in scalar_windows(params.windows).items() for w in kept],
        F.max("event_date").alias("last_event_date"),
        F.max(F.when(F.col("n_purchase") > 0, F.col("event_date"))).alias("last_purchase_date"),
    )
    coefficient = F.when(_map_decayed(F.col("name"), params.windows),
                         F.pow(F.lit(0.5), age / F.lit(params.half_life_days))).otherwise(1.0)
    summed = entries.where(age < _map_window(F.col("name"), params.windows)).groupBy("user_key", "name", "key").agg(
        F.sum(F.col("value") * coefficient).alias("value"))
    return _finish_state(totals, _collect_maps(summed), as_of, params)


@dataclass(frozen=True)
class IncrementalPlan:
    """What an incremental run of `as_of` reads: the touched days and the days leaving a window."""

    as_of: dt.date
    touched_days: tuple[dt.date, ...]
    expiry_days: tuple[dt.date, ...]

    @property
    def late_days(self) -> tuple[dt.date, ...]:
        return tuple(d for d in self.touched_days if d < self.as_of)


def plan_increment(events: "DataFrame", as_of: dt.date,
                   windows: FeatureWindows) -> tuple[IncrementalPlan, "DataFrame"]:
    """The events new at `as_of` (landed that day, or dated that day and landed early) and the plan."""
    from pyspark.sql import functions as F

    new = known_at(events, as_of).where((F.col("landed_date") == F.lit(as_of)) | (F.col("event_date") == F.lit(as_of)))
    touched = sorted({r[0] for r in new.select("event_date").distinct().collect()} | {as_of})
    expiry = tuple(as_of - dt.timedelta(days=w) for w in expiry_windows(windows))
    return IncrementalPlan(as_of, tuple(touched), expiry), new


def transform_incremental_state(events: "DataFrame", items: "DataFrame", previous: "DataFrame", as_of: dt.date,
                                params: FeatureParams, cache: list | None = None) -> "DataFrame":
    """The state of `as_of` from the state of the day before (`previous`) and the events that changed."""
    from pyspark.sql import functions as F

    yesterday = as_of - dt.timedelta(days=1)
    events = conform_events(events, params)
    plan, new = plan_increment(events, as_of, params.windows)
    now, before = known_at(events, as_of), known_at(events, yesterday)
    pairs = new.select("user_key", "event_date").distinct()
    # Whole user-days that changed, as known now (+1) and as known yesterday (-1), and the leaving days.
    touched_now = now.where(F.col("event_date").isin(*plan.touched_days)).join(pairs, ["user_key", "event_date"], "left_semi")
    parts = [touched_now.withColumn("_part", F.lit("now"))]
    if plan.late_days:
        touched_before = before.where(F.col("event_date").isin(*plan.late_days)).join(
            pairs, ["user_key", "event_date"], "left_semi")
        parts.append(touched_before.withColumn("_part", F.lit("before")))
    parts.append(before.where(F.col("event_date").isin(*plan.expiry_days)).withColumn("_part", F.lit("leaving")))
    rows = parts[0]
    for part in parts[1:]:
        rows = rows.unionByName(part)

    days = sorted(set(plan.touched_days) | set(plan.expiry_days))
    scalars, entries = transform_day_aggregates(_facts(rows, items, days, cache, params.catalogue), params, group=("_part",))
    age = F.datediff(F.lit(as_of), F.col("event_date"))
    part = F.col("_part")
    sign = F.when(part == "before", -1.0).otherwise(1.0)

    def change(name: str, window: int) -> str:
        """What a row adds to a window total: touched days inside it, minus the day leaving it."""
        return (f"sum(CASE WHEN _part <> 'leaving' AND _age < {window} THEN _sign * {name} "
                f"WHEN _part = 'leaving' AND _age = {window} THEN -{name} ELSE 0D END) AS d_{name}__{window}")

    delta = scalars.select("*", age.alias("_age"), sign.alias("_sign")).groupBy("user_key").agg(
        *[F.expr(change(name, w)) for name, kept in scalar_windows(params.windows).items() for w in kept],
        F.max(F.when((part == "now") & (F.col("n_events") > 0), F.col("event_date"))).alias("d_last_event_date"),
        F.max(F.when((part == "now") & (F.col("n_purchase") > 0), F.col("event_date"))).alias("d_last_purchase_date"),
    )
    oldest_gone = as_of - dt.timedelta(days=params.windows.longest)  # the last day outside the window
    prev = previous.select("user_key", *state_columns(params.windows), "last_event_date", "last_purchase_date",
                           *MAP_NAMES)
    joined = prev.join(delta, "user_key", "full_outer")
    totals = joined.select(
        "user_key",
        # A 1-day total is today's aggregate alone; longer ones carry over.
        *[F.expr(f"coalesce(d_{name}__{w}, 0D) + coalesce({name}__{w}, 0D) AS {name}__{w}" if w > 1
                 else f"coalesce(d_{name}__{w}, 0D) AS {name}__{w}")
          for name, kept in scalar_windows(params.windows).items() for w in kept],
        F.greatest("last_event_date", "d_last_event_date").alias("last_event_date"),
        # As in the full state, a purchase that left the longest window is no longer known.
        F.when(F.greatest("last_purchase_date", "d_last_purchase_date") > F.lit(oldest_gone),
               F.greatest("last_purchase_date", "d_last_purchase_date")).alias("last_purchase_date"),
    )

    window = _map_window(F.col("name"), params.windows)
    decayed = _map_decayed(F.col("name"), params.windows)
    coefficient = F.when(decayed, F.pow(F.lit(0.5), age / F.lit(params.half_life_days))).otherwise(1.0)
    leaving_coefficient = F.when(decayed, F.pow(F.lit(0.5), window / F.lit(params.half_life_days))).otherwise(1.0)
    moved = entries.select(
        "user_key", "name", "key",
        F.when((part != "leaving") & (age < window), sign * F.col("value") * coefficient)
        .when((part == "leaving") & (age == window), -F.col("value") * leaving_coefficient)
        .alias("value"),
    ).where(F.col("value").isNotNull())
    carried = previous.select("user_key", F.explode(F.array(*[
        F.struct(F.lit(name).alias("name"), F.col(name).alias("m")) for name in MAP_NAMES])).alias("s")).select(
        "user_key", F.col("s.name").alias("name"), F.explode("s.m").alias("key", "value"),
    ).withColumn("value", F.col("value") * F.when(_map_decayed(F.col("name"), params.windows),
                                                    F.lit(params.daily_decay)).otherwise(1.0))
    summed = carried.unionByName(moved).groupBy("user_key", "name", "key").agg(F.sum("value").alias("value"))
    return _finish_state(totals, _collect_maps(summed), as_of, params)
