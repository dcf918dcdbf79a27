"""Clean: bronze to silver. Typed UTC events without duplicates, pseudonymous keys, no direct PII.

Every landed event row gets exactly one outcome (docs/cleaning.md): `silver`, `duplicate`, or a
reason (quarantined, or held for late master data). The pure `transform_*` functions decide the
outcomes; `run()` reads bronze, calls them and writes silver, the hold table and the quarantine.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs.common.audit import write_audit
from jobs.common.catalogue import CatalogueParams, category_path, item_categories
from jobs.common.catalog import TABLES, spec, table_path
from jobs.common.config import Config
from jobs.common.delta import range_write_options, read_table, replace_dates, table_exists
from jobs.common.errors import ConfigError
from jobs.common.migrations import migrate
from jobs.common.pii import EVENT_PII_COLUMNS, PII_REASONS, USER_PII_COLUMNS, PiiParams, pii_counts, transform_pii
from jobs.common.privacy import (
    DEFAULT_AGE_EDGES, Generalisation, load_hmac_key, pseudonymise, pseudonymise_contact,
)
from jobs.common.step import StepResult, TableCount
from jobs.common.text import normalise_text, strip_invisible

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

EVENT_TYPES = (
    "view", "click", "add_to_cart", "remove_from_cart", "purchase", "search", "review", "rating", "share",
)
ITEM_EVENTS = tuple(t for t in EVENT_TYPES if t != "search")
PRICED_EVENTS = ("view", "click", "add_to_cart", "purchase")
QUANTITY_EVENTS = ("add_to_cart", "remove_from_cart", "purchase")
EDGE_TYPES = ("follow", "share_to")

# The default bands (privacy.generalise.age_band_edges); jobs.quality reads the labels from here.
AGE_BANDS = Generalisation(DEFAULT_AGE_EDGES).age_bands

SILVER_EVENT_COLUMNS = (
    "event_id", "user_key", "session_id", "event_type", "item_id", "ts", "price", "quantity", "query",
    "review_text", "rating", "device", "channel", "geo", "event_date", "landed_date",
)
SOCIAL_EDGE_COLUMNS = ("src_key", "dst_key", "edge_type", "ts", "event_date", "landed_date")
HELD_COLUMNS = (*SILVER_EVENT_COLUMNS, "hold_reason", "status", "resolved_on", "_source_file", "_line", "_ingested_at")
USER_FLAG_COLUMNS = ("user_key", "landed_date", "n_events", "n_purchases", "spend", "z_events", "z_purchases",
                     "z_spend", "is_outlier", "outlier_reason")
QUARANTINE_COLUMNS = ("step", "reason", "_source_file", "_line", "_raw", "event_date", "_ingested_at")

# What bronze.events holds for a landed line; missing columns (an older bronze) read as null.
BRONZE_EVENT_TYPES = {
    "event_id": "string", "user_id": "string", "session_id": "string", "event_type": "string",
    "item_id": "string", "ts": "string", "price": "double", "quantity": "long", "query": "string",
    "review_text": "string", "rating": "double", "device": "string", "channel": "string", "geo": "string",
    "_raw": "string", "_source_file": "string", "_line": "long", "_ingested_at": "timestamp", "event_date": "date",
}

# Outcomes. Row checks come first, in this order; then duplicates; then the rate rules; then the master
# data; then the outlier detector. The first that applies is the row's only reason.
ROW_REASONS = (
    "missing_user_id", "unknown_event_type", "bad_timestamp", "too_late", "price_out_of_range",
    "quantity_out_of_range", "rating_out_of_range", "rating_off_scale", "unknown_item",
)
HELD_REASONS = ("held_unknown_user", "held_unknown_item")
REASONS = (
    "missing_user_id", "unknown_event_type", "bad_timestamp", "price_out_of_range", "quantity_out_of_range",
    "rating_out_of_range", "rating_off_scale", "unknown_item", "unknown_user", "held_unknown_item", "held_unknown_user", "bot_rate",
    "impossible_sequence", "outlier", "too_late", *PII_REASONS,
)
# The column of array<string> that carries the user's own names into transform_type_events (run() joins it).
USER_NAMES = "_user_names"
SILVER, DUPLICATE = "silver", "duplicate"
LANDED, HELD = "landed", "held"


@dataclass(frozen=True)
class MissingRule:
    """What a null in one column does: reject (with the reason), impute, default (to the value), or keep.

    `event_types` limits the rule to some event types; for the others a null is kept as null.
    `stage` says which step applies it ('collect' rules are listed for completeness).
    """

    action: str
    value: Any = None
    event_types: tuple[str, ...] | None = None
    note: str = ""
    stage: str = "clean"


# One rule per silver.events column; the code below applies these and docs/cleaning.md lists them.
MISSING_VALUE_RULES: dict[str, MissingRule] = {
    "event_id": MissingRule("reject", "missing_event_id", note="quarantined by collect", stage="collect"),
    "user_id": MissingRule("reject", "missing_user_id"),
    "event_type": MissingRule("reject", "unknown_event_type"),
    "ts": MissingRule("reject", "bad_timestamp"),
    "session_id": MissingRule("impute", "own_session", note="a session of its own: 'nosession-' + event_id"),
    "item_id": MissingRule("reject", "unknown_item", ITEM_EVENTS, note="search events carry no item"),
    "price": MissingRule("impute", "item_list_price", PRICED_EVENTS,
                         note="the item's list price from silver.items (its newest snapshot); null when that has none"),
    "quantity": MissingRule("default", 1, QUANTITY_EVENTS),
    "rating": MissingRule("reject", "rating_out_of_range", ("rating",), note="a rating event needs a rating"),
    "query": MissingRule("keep", note="a search without words still counts as a search"),
    "review_text": MissingRule("keep", note="a review may be a bare rating"),
    "device": MissingRule("default", "unknown"),
    "channel": MissingRule("default", "unknown"),
    "geo": MissingRule("default", "unknown"),
}
MISSING_SESSION_PREFIX = "nosession-"
# The free-text columns and their caps when the profile names none (clean.max_text_chars).
DEFAULT_MAX_TEXT_CHARS = {"query": 200, "review_text": 2000, "title": 500, "brand": 100}

@dataclass(frozen=True)
class CleanParams:
    """The `clean:` section of the profile, checked once."""

    price_range: tuple[float, float] = (0.0, 1_000_000.0)
    quantity_range: tuple[int, int] = (1, 99)
    rating_range: tuple[float, float] = (1.0, 5.0)
    # The rating scale's step, counted from the range's min (0.5: half stars); None takes any number in range.
    rating_step: float | None = None
    late_max_days: int = 7
    future_tolerance_minutes: int = 10
    naive_timezone: str = "UTC"
    hold_days: int = 2
    unknown_master: str = "hold"
    bot_max_events_per_minute: int = 30
    max_purchases_per_second: int = 5
    outlier_action: str = "flag"
    outlier_z: float = 5.0
    outlier_min_users: int = 20
    # Free-text columns are cut to this many characters (clean.max_text_chars; conf/local.yaml has the defaults).
    max_text_chars: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_TEXT_CHARS))

    def __post_init__(self) -> None:
        unknown = set(self.max_text_chars) - set(DEFAULT_MAX_TEXT_CHARS)
        if unknown:
            raise ConfigError(f"clean.max_text_chars names {sorted(unknown)}; it takes "
                              f"{', '.join(DEFAULT_MAX_TEXT_CHARS)}")
        for column, cap in self.max_text_chars.items():
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
                raise ConfigError(f"clean.max_text_chars.{column} is {cap!r}; write a whole number of characters, 1 or more")
        if self.unknown_master not in ("hold", "quarantine"):
            raise ConfigError(f"clean.unknown_master is '{self.unknown_master}'; use hold or quarantine")
        if self.outlier_action not in ("flag", "remove"):
            raise ConfigError(f"clean.outliers.action is '{self.outlier_action}'; use flag or remove")
        for name in ("price_range", "quantity_range", "rating_range"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"clean.ranges.{name.removesuffix('_range')}: min {low} is above max {high}")
        if self.rating_step is not None:
            low, high = self.rating_range
            if not self.rating_step > 0:
                raise ConfigError(f"clean.ranges.rating.step must be above 0, got {self.rating_step}; "
                                  "leave it out to take any number between min and max")
            if not _on_scale(high, low, self.rating_step):
                raise ConfigError(f"clean.ranges.rating: max {high} is not min {low} plus whole steps of "
                                  f"{self.rating_step}; fix min, max or step so the top of the scale is on it")
        for name in ("late_max_days", "hold_days", "bot_max_events_per_minute", "max_purchases_per_second",
                     "outlier_min_users", "future_tolerance_minutes"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"clean.{name} must not be negative, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, cfg: Config) -> "CleanParams":
        section = cfg.get("clean", {}) or {}
        ranges = section.get("ranges", {}) or {}
        outliers = section.get("outliers", {}) or {}
        default = cls()

        def given(name: str) -> Mapping:
            settings = ranges.get(name, {}) or {}
            known = {"min", "max", "step"} if name == "rating" else {"min", "max"}
            if not isinstance(settings, Mapping) or set(settings) - known:
                raise ConfigError(f"clean.ranges.{name} takes {', '.join(sorted(known))}, got {settings!r} "
                                  "(docs/cleaning.md)")
            return settings

        def number(name: str, key: str, value: Any, kind: type) -> Any:
            try:
                parsed = float(value)
                if isinstance(value, bool) or not math.isfinite(parsed) or (kind is int and parsed != int(parsed)):
                    raise ValueError
                return kind(parsed)
            except (TypeError, ValueError):
                word = "a whole number" if kind is int else "a number"
                raise ConfigError(f"clean.ranges.{name}.{key} is {value!r}; write {word}") from None

        def bounds(name: str, kind: type) -> tuple:
            low, high = getattr(default, f"{name}_range")
            settings = given(name)
            return (number(name, "min", settings.get("min", low), kind),
                    number(name, "max", settings.get("max", high), kind))

        step = given("rating").get("step")
        return cls(
            price_range=bounds("price", float), quantity_range=bounds("quantity", int),
            rating_range=bounds("rating", float),
            rating_step=None if step is None else number("rating", "step", step, float),
            late_max_days=int(section.get("late_max_days", default.late_max_days)),
            future_tolerance_minutes=int(section.get("future_tolerance_minutes", default.future_tolerance_minutes)),
            naive_timezone=str(section.get("naive_timezone", default.naive_timezone)),
            hold_days=int(section.get("hold_days", default.hold_days)),
            unknown_master=str(section.get("unknown_master", default.unknown_master)),
            bot_max_events_per_minute=int(section.get("bot_max_events_per_minute", default.bot_max_events_per_minute)),
            max_purchases_per_second=int(section.get("max_purchases_per_second", default.max_purchases_per_second)),
            outlier_action=str(outliers.get("action", default.outlier_action)),
            outlier_z=float(outliers.get("z_threshold", default.outlier_z)),
            outlier_min_users=int(outliers.get("min_users", default.outlier_min_users)),
            max_text_chars={**DEFAULT_MAX_TEXT_CHARS, **(section.get("max_text_chars") or {})},
        )


# --------------------------------------------------------------------------------------------------
# Row level: typing, normalising, defaults and the checks that need only the row itself


def conform(df: "DataFrame", types: dict[str, str]) -> "DataFrame":
    """Add the columns of `types` that df lacks, as typed nulls, so transforms see one shape."""
    from pyspark.sql import functions as F

    missing = [F.lit(None).cast(kind).alias(name) for name, kind in types.items() if name not in df.columns]
    return df.select("*", *missing) if missing else df


def parse_timestamp(raw: "Column", naive_timezone: str = "UTC") -> "Column":
    """An instant in UTC from ISO-8601 with an offset, `2019-10-01 00:00:00 UTC`, or epoch seconds/millis.

    A timestamp without an offset is read in `naive_timezone`. The session time zone must be UTC
    (spark.sql.session.timeZone in the profile) so that the parsed value is the UTC wall clock.
    """
    from pyspark.sql import functions as F

    text = F.trim(raw.cast("string"))
    zoned = text.rlike(r"(Z|[+-]\d{2}(:?\d{2})?|\s?(UTC|GMT)|\s[A-Za-z]+/[A-Za-z_]+)$")
    parsed = F.try_to_timestamp(text)
    return (
        F.when(text.rlike(r"^\d{12,13}$"), F.timestamp_millis(text.try_cast("long")))
        .when(text.rlike(r"^\d{9,10}(\.\d+)?$"), F.timestamp_seconds(text.try_cast("double")))
        .when(zoned, parsed)
        .otherwise(F.to_utc_timestamp(parsed, naive_timezone))
    )


def _landed_end(params: CleanParams) -> "Column":
    """The latest instant a row of its landing date may carry: the end of that UTC day plus the tolerance."""
    from pyspark.sql import functions as F

    day_end = F.to_timestamp(F.date_add(F.col("landed_date"), 1))
    return day_end + F.expr(f"INTERVAL '{int(params.future_tolerance_minutes)}' MINUTE")


def capped_text(column: "Column", cap: int) -> "Column":
    """normalise_text, cut to `cap` characters (and trimmed again); see clean.max_text_chars."""
    from pyspark.sql import functions as F

    return F.rtrim(F.substring(normalise_text(column), 1, cap))


def truncated_counts(frame: "DataFrame", caps: Mapping[str, int]) -> dict[str, int]:
    """column -> rows whose normalised text is longer than its cap (what capped_text cuts), in one pass."""
    from pyspark.sql import functions as F

    present = {c: cap for c, cap in caps.items() if c in frame.columns}
    if not present:
        return {}
    # NFKC goes through `reflect`, which Spark will not evaluate inside an aggregate: flag first, then count.
    flags = frame.select(*[(F.length(normalise_text(F.col(c))) > F.lit(cap)).alias(c) for c, cap in present.items()])
    row = flags.agg(*[F.count(F.when(F.col(c), 1)).alias(c) for c in present]).first()
    return {c: int(row[c]) for c in present if row[c]}


def _blank_to_null(column: "Column") -> "Column":
    """Trimmed, without invisible characters (jobs/common/text.py); null when nothing is left."""
    from pyspark.sql import functions as F

    value = F.trim(strip_invisible(column))
    return F.when(value == F.lit(""), F.lit(None)).otherwise(value)


def _rule_applies(rule: MissingRule) -> "Column":
    from pyspark.sql import functions as F

    return F.lit(True) if rule.event_types is None else F.col("event_type").isin(*rule.event_types)


def _null_rejects(reason: str) -> "Column | None":
    """True where a column that the rules say must not be null for this reason is null."""
    from pyspark.sql import functions as F

    conditions = [
        F.col(column).isNull() & _rule_applies(rule)
        for column, rule in MISSING_VALUE_RULES.items()
        if rule.action == "reject" and rule.value == reason and rule.stage == "clean"
    ]
    if not conditions:
        return None
    combined = conditions[0]
    for condition in conditions[1:]:
        combined = combined | condition
    return combined


def _out_of(column: str, bounds: tuple) -> "Column":
    from pyspark.sql import functions as F

    value = F.col(column)
    low, high = bounds
    bad = (value < F.lit(low)) | (value > F.lit(high))
    if column in ("price", "rating"):  # doubles: NaN (and +-Infinity, past either bound) is out too
        bad = bad | F.isnan(value)
    return value.isNotNull() & bad


# Steps are counted in doubles: 3.5 - 0.5 is exact, but a scale of tenths is not (0.3 / 0.1 = 2.9999999999999996).
_STEP_TOLERANCE = 1e-6


def _on_scale(value: float, low: float, step: float) -> bool:
    steps = (value - low) / step
    return abs(steps - round(steps)) <= _STEP_TOLERANCE


def _off_scale(column: str, low: float, step: float | None) -> "Column | None":
    """True where a value in range is not min plus a whole number of steps (3.7 on a half-star scale)."""
    from pyspark.sql import functions as F

    if step is None:
        return None
    steps = (F.col(column) - F.lit(low)) / F.lit(step)
    return F.col(column).isNotNull() & (F.abs(steps - F.round(steps)) > F.lit(_STEP_TOLERANCE))


def transform_type_events(events: "DataFrame", params: CleanParams | None = None,
                          pii: Mapping[str, str] | None = None) -> "DataFrame":
    """Type, normalise and check each landed row on its own; `_reject_reason` says why a row cannot be used.

    `event_date` of the input is the landing date; the output has `landed_date` for it and
    `event_date` = the UTC date of `ts`, which is where the event belongs.
    pii: column -> action (privacy.pii_columns) for the text columns scanned for personal data after
    they are normalised; a `_user_names` column (array of the user's own names) is searched too.
    `_pii_found` lists the columns where PII was found; a `quarantine` column's hit is the row's
    reason (pii_in_<column>) when no row check rejected it first.
    """
    from pyspark.sql import functions as F

    params = params or CleanParams()
    df = conform(events, BRONZE_EVENT_TYPES)
    typed = df.select(
        _blank_to_null(F.col("event_id")).alias("event_id"),
        _blank_to_null(F.col("user_id")).alias("user_id"),
        _blank_to_null(F.col("session_id")).alias("session_id"),
        F.lower(_blank_to_null(F.col("event_type"))).alias("event_type"),
        _blank_to_null(F.col("item_id")).alias("item_id"),
        parse_timestamp(F.col("ts"), params.naive_timezone).alias("ts"),
        F.col("price").cast("double").alias("price"),
        F.col("quantity").cast("long").alias("quantity"),
        capped_text(F.col("query"), params.max_text_chars["query"]).alias("query"),
        capped_text(F.col("review_text"), params.max_text_chars["review_text"]).alias("review_text"),
        F.col("rating").cast("double").alias("rating"),
        F.lower(_blank_to_null(F.col("device"))).alias("device"),
        F.lower(_blank_to_null(F.col("channel"))).alias("channel"),
        _blank_to_null(F.col("geo")).alias("geo"),
        F.col("event_date").alias("landed_date"),
        "_raw", "_source_file", "_line", "_ingested_at", *([USER_NAMES] if USER_NAMES in df.columns else []),
    ).withColumn("event_date", F.to_date("ts"))
    if pii is not None:
        typed = transform_pii(typed, pii, USER_NAMES if USER_NAMES in typed.columns else None)
    typed = typed.drop(USER_NAMES)

    landed_end = _landed_end(params)
    checks = {
        "unknown_event_type": ~F.col("event_type").isin(*EVENT_TYPES),
        "bad_timestamp": F.col("ts") >= landed_end,
        "too_late": F.datediff(F.col("landed_date"), F.col("event_date")) > F.lit(params.late_max_days),
        "price_out_of_range": _out_of("price", params.price_range),
        "quantity_out_of_range": _out_of("quantity", params.quantity_range),
        "rating_out_of_range": _out_of("rating", params.rating_range),
        "rating_off_scale": _off_scale("rating", params.rating_range[0], params.rating_step),
    }
    reason = F.lit(None).cast("string")
    for name in reversed(ROW_REASONS):
        conditions = [c for c in (_null_rejects(name), checks.get(name)) if c is not None]
        if not conditions:  # a check the settings switch off (no rating step)
            continue
        condition = conditions[0] if len(conditions) == 1 else conditions[0] | conditions[1]
        reason = F.when(F.coalesce(condition, F.lit(False)), F.lit(name)).otherwise(reason)
    if pii is not None:
        reason = F.coalesce(reason, F.col("_pii_reason"))
    return transform_defaults(typed.withColumn("_reject_reason", reason).drop("_pii_reason"))


def transform_defaults(events: "DataFrame") -> "DataFrame":
    """Fill the nulls that MISSING_VALUE_RULES default or impute without other tables."""
    from pyspark.sql import functions as F

    out = events
    for column, rule in MISSING_VALUE_RULES.items():
        if column not in out.columns or rule.stage != "clean":
            continue
        if rule.action == "default":
            fill = F.when(F.col(column).isNull() & _rule_applies(rule), F.lit(rule.value)).otherwise(F.col(column))
            out = out.withColumn(column, fill.cast(out.schema[column].dataType))
        elif rule.action == "impute" and rule.value == "own_session":
            out = out.withColumn(column, F.coalesce(F.col(column), F.concat(F.lit(MISSING_SESSION_PREFIX), "event_id")))
    return out


def transform_dedupe(events: "DataFrame") -> "DataFrame":
    """Keep one copy of each event_id; the order is total so reruns keep the same copy."""
    from pyspark.sql import functions as F

    return events.withColumn("_copy", _copy_number(events.columns)).where("_copy = 1").drop("_copy")


def _copy_number(columns: list[str], usable: "Column | None" = None) -> "Column":
    """1 for the copy of an event_id that is kept: earliest landing, then ingest, file, line, raw text."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = [c for c in ("landed_date", "_ingested_at", "_source_file", "_line", "_raw") if c in columns]
    keys = [F.col("event_id")] + ([usable] if usable is not None else [])
    return F.row_number().over(Window.partitionBy(*keys).orderBy(*order))


# --------------------------------------------------------------------------------------------------
# Batch level: duplicates, rate rules, master data, outliers


def transform_label_events(
    typed: "DataFrame",
    key: bytes,
    run_date: dt.date,
    params: CleanParams | None = None,
    earlier_ids: "DataFrame | None" = None,
    known_users: "DataFrame | None" = None,
    known_items: "DataFrame | None" = None,
    held: "DataFrame | None" = None,
) -> "DataFrame":
    """Give every row one `_outcome`: silver, duplicate, a hold reason or a quarantine reason.

    typed:       transform_type_events() of the landed rows of this run.
    earlier_ids: event_id of events that earlier landing dates already put in silver or on hold.
    known_users: user_key of silver.users; known_items: item_id and its list `price`. None = all known.
    held:        silver.held_events rows to check again (`_origin` = held); they skip the landing checks.
    The result keeps the internal columns (raw line, file, line) that the writers need.
    """
    from pyspark.sql import functions as F

    params = params or CleanParams()
    landed = typed.withColumn("user_key", pseudonymise(key, F.col("user_id"))).withColumn("_origin", F.lit(LANDED))
    usable = F.col("_reject_reason").isNull()
    landed = landed.withColumn("_copy", F.when(usable, _copy_number(landed.columns, usable)))
    if earlier_ids is not None:
        seen = earlier_ids.select("event_id").distinct().withColumn("_seen", F.lit(True))
        landed = landed.join(seen, "event_id", "left")
    else:
        landed = landed.withColumn("_seen", F.lit(None).cast("boolean"))
    dup = usable & ((F.col("_copy") > 1) | F.coalesce(F.col("_seen"), F.lit(False)))
    landed = landed.withColumn(
        "_outcome", F.when(~usable, F.col("_reject_reason")).when(dup, F.lit(DUPLICATE))
    ).drop("_copy", "_seen")

    landed = _rate_rules(landed, params)

    if held is not None:
        held_rows = conform(held, {"_raw": "string", "user_id": "string", "_reject_reason": "string",
                                   "_pii_found": "array<string>"}).select(
            *landed.drop("_origin", "_outcome").columns
        ).withColumn("_origin", F.lit(HELD)).withColumn("_outcome", F.lit(None).cast("string"))
        rows = landed.unionByName(held_rows)
    else:
        rows = landed
    return _master_data(rows, run_date, params, known_users, known_items)


def _rate_rules(rows: "DataFrame", params: CleanParams) -> "DataFrame":
    """bot_rate: a user-day with more than N events in one calendar minute loses all its events.
    impossible_sequence: more than M purchases by one user within one second."""
    from pyspark.sql import functions as F

    pending = rows.where(F.col("_outcome").isNull())
    minute = F.date_trunc("minute", F.col("ts"))
    bots = (
        pending.groupBy("user_key", "event_date", minute.alias("_minute")).count()
        .where(F.col("count") > params.bot_max_events_per_minute)
        .select("user_key", "event_date").distinct().withColumn("_bot", F.lit(True))
    )
    second = F.date_trunc("second", F.col("ts"))
    bursts = (
        pending.where(F.col("event_type") == "purchase")
        .groupBy("user_key", second.alias("_second")).count()
        .where(F.col("count") > params.max_purchases_per_second)
        .select("user_key", "_second").withColumn("_burst", F.lit(True))
    )
    marked = (
        rows.join(F.broadcast(bots), ["user_key", "event_date"], "left")
        .withColumn("_second", second)
        .join(F.broadcast(bursts), ["user_key", "_second"], "left")
    )
    outcome = (
        F.when(F.col("_outcome").isNotNull(), F.col("_outcome"))
        .when(F.coalesce(F.col("_bot"), F.lit(False)), F.lit("bot_rate"))
        .when(F.coalesce(F.col("_burst"), F.lit(False)) & (F.col("event_type") == "purchase"),
              F.lit("impossible_sequence"))
    )
    return marked.withColumn("_outcome", outcome).drop("_bot", "_burst", "_second")


def _master_data(rows: "DataFrame", run_date: dt.date, params: CleanParams,
                 known_users: "DataFrame | None", known_items: "DataFrame | None") -> "DataFrame":
    """Unknown users and items: held while younger than hold_days (by landing date), else quarantined.
    A missing price of a priced event is imputed from the item's list price here."""
    from pyspark.sql import functions as F

    if known_users is not None:
        users = known_users.select("user_key").distinct().withColumn("_user_known", F.lit(True))
        rows = rows.join(users, "user_key", "left")
    else:
        rows = rows.withColumn("_user_known", F.lit(True))
    if known_items is not None:
        items = known_items.select("item_id", F.col("price").alias("_list_price")).dropDuplicates(["item_id"])
        rows = rows.join(F.broadcast(items.withColumn("_item_known", F.lit(True))), "item_id", "left")
    else:
        rows = rows.withColumn("_item_known", F.lit(True)).withColumn("_list_price", F.lit(None).cast("double"))

    age = F.datediff(F.lit(run_date), F.col("landed_date"))
    may_wait = F.lit(params.unknown_master == "hold") & (age < F.lit(params.hold_days))
    user_unknown = ~F.coalesce(F.col("_user_known"), F.lit(False))
    item_unknown = F.col("item_id").isNotNull() & ~F.coalesce(F.col("_item_known"), F.lit(False))
    outcome = (
        F.when(F.col("_outcome").isNotNull(), F.col("_outcome"))
        .when(user_unknown & may_wait, F.lit("held_unknown_user"))
        .when(user_unknown, F.lit("unknown_user"))
        .when(item_unknown & may_wait, F.lit("held_unknown_item"))
        .when(item_unknown, F.lit("unknown_item"))
        .otherwise(F.lit(SILVER))
    )
    price_rule = MISSING_VALUE_RULES["price"]
    price = F.when(F.col("price").isNull() & _rule_applies(price_rule), F.col("_list_price")).otherwise(F.col("price"))
    return rows.withColumn("_outcome", outcome).withColumn("price", price).drop(
        "_user_known", "_item_known", "_list_price")


# Smallest spread a metric's z-score divides by: one event, one purchase, one yuan. Without it a day on
# which nearly every buyer bought exactly once would make a second purchase look extreme.
OUTLIER_METRICS = {"events": ("n_events", 1.0), "purchases": ("n_purchases", 1.0), "spend": ("spend", 1.0)}


def transform_user_days(labelled: "DataFrame", params: CleanParams | None = None) -> "DataFrame":
    """Robust z-scores of each user's landing-day events, purchases and spend, and the outlier flag.

    For each metric, among the users of the same landing day with a value above 0 (buyers, for purchases
    and spend): z = (x - median) / scale with scale = 1.4826 * MAD, or 1.2533 * the mean absolute
    deviation where the MAD is 0, and never below the metric's floor. A metric is scored only on days with
    at least `outlier_min_users` such users; only high values count (z > clean.outliers.z_threshold).
    """
    from pyspark.sql import functions as F

    params = params or CleanParams()
    rows = labelled.where((F.col("_outcome") == SILVER) & (F.col("_origin") == LANDED))
    purchase = F.col("event_type") == "purchase"
    days = rows.groupBy("user_key", "landed_date").agg(
        F.count("*").cast("long").alias("n_events"),
        F.sum(F.when(purchase, 1).otherwise(0)).cast("long").alias("n_purchases"),
        F.coalesce(F.sum(F.when(purchase, F.col("price") * F.coalesce(F.col("quantity"), F.lit(1)))),
                   F.lit(0.0)).cast("double").alias("spend"),
    )

    def positive(column: str) -> "Column":
        return F.when(F.col(column) > 0, F.col(column))

    centres = days.groupBy("landed_date").agg(
        *[F.count(positive(c)).alias(f"_n_{m}") for m, (c, _) in OUTLIER_METRICS.items()],
        *[F.median(positive(c)).alias(f"_med_{m}") for m, (c, _) in OUTLIER_METRICS.items()],
    )
    scored = days.join(centres, "landed_date")
    spreads = scored.groupBy("landed_date").agg(
        *[F.median(F.abs(positive(c) - F.col(f"_med_{m}"))).alias(f"_mad_{m}") for m, (c, _) in OUTLIER_METRICS.items()],
        *[F.avg(F.abs(positive(c) - F.col(f"_med_{m}"))).alias(f"_meanad_{m}") for m, (c, _) in OUTLIER_METRICS.items()],
    )
    scored = scored.join(spreads, "landed_date")
    for m, (c, floor) in OUTLIER_METRICS.items():
        robust = F.when(F.col(f"_mad_{m}") > 0, F.lit(1.4826) * F.col(f"_mad_{m}")).otherwise(
            F.lit(1.253314) * F.col(f"_meanad_{m}"))
        scale = F.greatest(robust, F.lit(floor))
        z = (positive(c) - F.col(f"_med_{m}")) / scale
        scored = scored.withColumn(f"z_{m}", F.when(F.col(f"_n_{m}") >= params.outlier_min_users, F.round(z, 3)))
    over = [F.when(F.col(f"z_{m}") > F.lit(params.outlier_z), F.format_string(f"{m} z=%.1f", F.col(f"z_{m}")))
            for m in OUTLIER_METRICS]
    reason = F.concat_ws("; ", *over)
    return scored.select(
        *USER_FLAG_COLUMNS[:8],
        (reason != F.lit("")).alias("is_outlier"),
        F.when(reason != F.lit(""), reason).alias("outlier_reason"),
    )


def transform_remove_outliers(labelled: "DataFrame", user_days: "DataFrame") -> "DataFrame":
    """clean.outliers.action = remove: the silver rows of flagged user-days become `outlier`."""
    from pyspark.sql import functions as F

    flagged = user_days.where("is_outlier").select("user_key", "landed_date").withColumn("_flag", F.lit(True))
    out = labelled.join(F.broadcast(flagged), ["user_key", "landed_date"], "left")
    outcome = F.when((F.col("_outcome") == SILVER) & (F.col("_origin") == LANDED)
                     & F.coalesce(F.col("_flag"), F.lit(False)), F.lit("outlier")).otherwise(F.col("_outcome"))
    return out.withColumn("_outcome", outcome).drop("_flag")


def outcome_counts(labelled: "DataFrame") -> dict[tuple[str, str], int]:
    """(origin, outcome) -> rows: one pass that feeds the audit and the hold bookkeeping."""
    from pyspark.sql import functions as F

    rows = labelled.groupBy("_origin", "_outcome").agg(F.count("*").alias("n")).collect()
    return {(r["_origin"], r["_outcome"]): int(r["n"]) for r in rows}


def count_events(breakdown: dict[tuple[str, str], int], table: str = "silver.events") -> TableCount:
    """The audit row: landed rows, plus held rows that left the hold in this run (released or expired)."""
    by_outcome: dict[str, int] = {}
    for (origin, outcome), n in breakdown.items():
        if origin == LANDED or outcome not in HELD_REASONS:
            by_outcome[outcome] = by_outcome.get(outcome, 0) + n
    rows_out = by_outcome.pop(SILVER, 0)
    duplicates = by_outcome.pop(DUPLICATE, 0)
    return TableCount(table, rows_out + duplicates + sum(by_outcome.values()), rows_out, duplicates,
                      dict(sorted(by_outcome.items())))


def event_counts(labelled: "DataFrame", table: str = "silver.events") -> TableCount:
    return count_events(outcome_counts(labelled), table)


# --------------------------------------------------------------------------------------------------
# Master data and social edges


def age_band(age: "Column") -> "Column":
    """The default age band of an age (privacy.generalise can choose other edges)."""
    return Generalisation().age_band(age)


def age_band_labels(cfg: Config) -> tuple[str, ...]:
    """Every age band label the profile can produce, 'unknown' included (for the quality suites)."""
    return Generalisation.from_config(cfg).age_band_labels


def _first_per_key(df: "DataFrame", key: str) -> "DataFrame":
    """One row per key, the same one on every run: newest ingest, then file and line, then content."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = [F.col(c).desc_nulls_last() for c in ("_ingested_at",) if c in df.columns]
    order += [F.col(c).asc_nulls_last() for c in ("_source_file", "_line") if c in df.columns]
    order.append(F.to_json(F.struct(*[F.col(c) for c in df.columns])))
    ranked = df.withColumn("_n", F.row_number().over(Window.partitionBy(key).orderBy(*order)))
    return ranked.where("_n = 1").drop("_n")


def transform_users(users: "DataFrame", key: bytes, generalise: Generalisation | None = None,
                    pii: Mapping[str, str] | None = None) -> "DataFrame":
    """Pseudonymise the id and generalise demographics; name, email and phone go no further.

    pii: column -> mask | drop_value (privacy.pii_columns) for occupation and city, which are searched
    for contacts, ID and card numbers and the user's own name before `name` is dropped.
    Rows without a user_id are dropped (the audit counts them as missing_user_id).
    """
    from pyspark.sql import functions as F

    generalise = generalise or Generalisation()
    users = conform(users, {"age": "long", "gender": "string", "occupation": "string", "city": "string",
                            "signup_date": "string", "name": "string"})  # all optional (docs/data-contract.md)
    valid = users.withColumn("user_id", _blank_to_null(F.col("user_id"))).where(F.col("user_id").isNotNull())
    if pii is not None:
        spelled = valid.withColumns({c: normalise_text(F.col(c)) for c in USER_PII_COLUMNS}).withColumn(
            USER_NAMES, F.array(normalise_text(F.col("name"))))
        valid = transform_pii(spelled, {c: pii[c] for c in USER_PII_COLUMNS}, USER_NAMES)
    gender = F.upper(F.trim("gender"))
    out = valid.select(
        pseudonymise(key, F.col("user_id")).alias("user_key"),
        generalise.age_band(F.col("age")).alias("age_band"),
        F.when(gender.isin("F", "M", "U"), gender).otherwise(F.lit("U")).alias("gender"),
        F.coalesce(F.lower(normalise_text(F.col("occupation"))), F.lit("unknown")).alias("occupation"),
        generalise.city(F.col("city")).alias("city"),
        F.try_to_date(F.col("signup_date").cast("string")).alias("signup_date"),
        "snapshot_date",
        *[c for c in ("_ingested_at", "_source_file", "_line") if c in valid.columns],
    )
    return _first_per_key(out, "user_key").select(
        "user_key", "age_band", "gender", "occupation", "city", "signup_date", "snapshot_date")


def transform_user_contacts(users: "DataFrame", key: bytes) -> "DataFrame":
    """Contact fields as keyed pseudonyms (for matching one person's accounts), never in the clear."""
    from pyspark.sql import functions as F

    users = conform(users, {"email": "string", "phone": "string"})
    valid = users.withColumn("user_id", _blank_to_null(F.col("user_id"))).where(F.col("user_id").isNotNull())
    out = valid.select(
        pseudonymise(key, F.col("user_id")).alias("user_key"),
        pseudonymise_contact(key, "email", F.col("email")).alias("email_key"),
        pseudonymise_contact(key, "phone", F.col("phone")).alias("phone_key"),
        "snapshot_date",
        *[c for c in ("_ingested_at", "_source_file", "_line") if c in valid.columns],
    )
    return _first_per_key(out, "user_key").select("user_key", "email_key", "phone_key", "snapshot_date")


def transform_items(items: "DataFrame", price_range: tuple[float, float] | None = None,
                    catalogue: CatalogueParams | None = None,
                    max_text_chars: Mapping[str, int] | None = None) -> "DataFrame":
    """Read each item's category path as the catalogue settings say; normalise title and brand.

    `categories` holds the item's tag-level categories (several for `Drama|Thriller`), `category` the
    first. Nothing is invented: a missing title, brand or price stays null, and a price outside
    clean.ranges.price becomes null (docs/cleaning.md). Rows without an item_id are dropped (counted
    as missing_item_id).
    """
    from pyspark.sql import functions as F

    low, high = price_range or CleanParams().price_range
    caps = {**DEFAULT_MAX_TEXT_CHARS, **(max_text_chars or {})}
    catalogue = catalogue or CatalogueParams()
    items = conform(items, {"title": "string", "category_path": "string", "brand": "string", "price": "double"})
    valid = items.withColumn("item_id", _blank_to_null(F.col("item_id"))).where(F.col("item_id").isNotNull())
    path = F.col("category_path").cast("string")
    shaped = valid.select(
        "item_id",
        capped_text(F.col("title"), caps["title"]).alias("title"),
        category_path(path, catalogue).alias("category_path"),
        item_categories(path, catalogue).alias("categories"),
        _blank_to_null(capped_text(F.col("brand"), caps["brand"])).alias("brand"),
        F.when((F.col("price") >= low) & (F.col("price") <= high), F.col("price").cast("double")).alias("price"),
        "snapshot_date",
        *[c for c in ("_ingested_at", "_source_file", "_line") if c in valid.columns],
    )
    return _first_per_key(shaped, "item_id").select(
        "item_id", "title", "category_path", F.col("categories")[0].alias("category"), "categories",
        "brand", "price", "snapshot_date")


def transform_social_edges(edges: "DataFrame", key: bytes, params: CleanParams | None = None) -> "DataFrame":
    """Both ends pseudonymised; `_outcome` silver, duplicate or a reason (missing end, type, timestamp)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    params = params or CleanParams()
    df = conform(edges, {"src_user_id": "string", "dst_user_id": "string", "edge_type": "string", "ts": "string",
                         "_raw": "string", "_source_file": "string", "_line": "long",
                         "_ingested_at": "timestamp", "event_date": "date"})
    edge_type = F.regexp_replace(F.lower(F.trim("edge_type")), r"[\s-]+", "_")
    typed = df.select(
        _blank_to_null(F.col("src_user_id")).alias("src_user_id"),
        _blank_to_null(F.col("dst_user_id")).alias("dst_user_id"),
        edge_type.alias("edge_type"),
        parse_timestamp(F.col("ts").cast("string"), params.naive_timezone).alias("ts"),
        F.col("event_date").alias("landed_date"),
        "_raw", "_source_file", "_line", "_ingested_at",
    ).withColumn("event_date", F.to_date("ts"))
    landed_end = _landed_end(params)
    reason = (
        F.when(F.col("src_user_id").isNull() | F.col("dst_user_id").isNull(), F.lit("missing_user_id"))
        .when(~F.coalesce(F.col("edge_type").isin(*EDGE_TYPES), F.lit(False)), F.lit("unknown_event_type"))
        .when(F.col("ts").isNull() | F.coalesce(F.col("ts") >= landed_end, F.lit(False)), F.lit("bad_timestamp"))
        .when(F.coalesce(F.datediff("landed_date", "event_date") > params.late_max_days, F.lit(False)),
              F.lit("too_late"))
    )
    keyed = typed.withColumn("src_key", pseudonymise(key, F.col("src_user_id"))).withColumn(
        "dst_key", pseudonymise(key, F.col("dst_user_id"))).withColumn("_reason", reason)
    order = Window.partitionBy("src_key", "dst_key", "edge_type", "ts", F.col("_reason").isNull()).orderBy(
        "landed_date", "_ingested_at", "_source_file", "_line", "_raw")
    ranked = keyed.withColumn("_copy", F.row_number().over(order))
    outcome = (F.when(F.col("_reason").isNotNull(), F.col("_reason"))
               .when(F.col("_copy") > 1, F.lit(DUPLICATE)).otherwise(F.lit(SILVER)))
    return ranked.withColumn("_outcome", outcome).drop("_reason", "_copy", "src_user_id", "dst_user_id")


# --------------------------------------------------------------------------------------------------
# Writing


def _write(df: "DataFrame", cfg: Config, name: str, predicate: str, days: int = 1) -> None:
    """Replace exactly the rows matching `predicate` (Delta replaceWhere; a data column is fine) for `days` days."""
    (
        df.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
        .options(**range_write_options(days))
        .partitionBy(*spec(name).partition_by).save(table_path(cfg, name))
    )


def _dates_sql(column: str, dates: list[dt.date]) -> str:
    return f"{column} IN ({', '.join(repr(d.isoformat()) for d in sorted(set(dates)))})"


def _quarantine_rows(rows: "DataFrame", columns: tuple[str, ...]) -> "DataFrame":
    from pyspark.sql import functions as F

    shaped = rows.select(
        F.lit("clean").alias("step"), F.col("_outcome").alias("reason"), "_source_file",
        F.col("_line").cast("long").alias("_line"), "_raw", F.col("landed_date").alias("event_date"), "_ingested_at",
    )
    return shaped.select(*columns)


def _quarantine_columns(spark: "SparkSession", cfg: Config) -> tuple[str, ...]:
    """The quarantine columns this table has (an older bronze.quarantine has no `_line`)."""
    if not table_exists(spark, cfg, "bronze.quarantine"):
        return QUARANTINE_COLUMNS
    present = set(read_table(spark, cfg, "bronze.quarantine").columns)
    return tuple(c for c in QUARANTINE_COLUMNS if c in present)


def _resolve_held(spark: "SparkSession", cfg: Config, labelled: "DataFrame", run_date: dt.date,
                  quarantine_columns: tuple[str, ...], rechecked_counts: dict[str, int]) -> None:
    """Apply the re-check of held rows: release into silver, expire into quarantine, record the status."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    if not rechecked_counts:
        return
    rechecked = labelled.where(F.col("_origin") == HELD).select(*SILVER_EVENT_COLUMNS, "_source_file", "_line", "_outcome")
    if rechecked_counts.get(SILVER):
        released = rechecked.where(F.col("_outcome") == SILVER).select(*SILVER_EVENT_COLUMNS)
        (DeltaTable.forPath(spark, table_path(cfg, "silver.events")).alias("t")
         .merge(released.alias("s"), "t.event_id = s.event_id AND t.event_date = s.event_date")
         .whenNotMatchedInsertAll().execute())
    if rechecked_counts.keys() - set(HELD_REASONS):
        resolved = rechecked.where(~F.col("_outcome").isin(*HELD_REASONS))
        line_match = ("q._line = h._line" if "_line" in quarantine_columns
                      else "get_json_object(q._raw, '$.event_id') = h.event_id")
        (DeltaTable.forPath(spark, table_path(cfg, "bronze.quarantine")).alias("q")
         .merge(resolved.alias("h"),
                "q.step = 'clean' AND q.event_date = h.landed_date AND q._source_file = h._source_file "
                f"AND q.reason LIKE 'held_%' AND {line_match}")
         .whenMatchedDelete(condition=f"h._outcome = '{SILVER}'")
         .whenMatchedUpdate(set={"reason": "h._outcome"})
         .execute())
    still = F.col("_outcome").isin(*HELD_REASONS)
    status = F.when(F.col("_outcome") == SILVER, F.lit("released")).when(still, F.lit("held")).otherwise(F.lit("expired"))
    updates = rechecked.select("event_id", "landed_date", status.alias("status"),
                               F.when(~still, F.lit(run_date)).alias("resolved_on"))
    (DeltaTable.forPath(spark, table_path(cfg, "silver.held_events")).alias("t")
     .merge(updates.alias("u"), "t.landed_date = u.landed_date AND t.event_id = u.event_id")
     .whenMatchedUpdate(set={"status": "u.status", "resolved_on": "u.resolved_on"}).execute())


def _earlier(spark: "SparkSession", cfg: Config, first_landed: dt.date, params: CleanParams) -> "DataFrame | None":
    """event_id of what earlier landing dates put in silver (recent event dates) or on hold."""
    from pyspark.sql import functions as F

    parts = []
    if table_exists(spark, cfg, "silver.events"):
        horizon = first_landed - dt.timedelta(days=params.late_max_days + 1)
        parts.append(read_table(spark, cfg, "silver.events").where(
            (F.col("event_date") >= F.lit(horizon)) & (F.col("landed_date") < F.lit(first_landed))).select("event_id"))
    if table_exists(spark, cfg, "silver.held_events"):
        parts.append(read_table(spark, cfg, "silver.held_events").where(
            F.col("landed_date") < F.lit(first_landed)).select("event_id"))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])


def _held_to_recheck(spark: "SparkSession", cfg: Config, first_landed: dt.date, run_date: dt.date) -> "DataFrame | None":
    """Rows still held from earlier landing dates, and those this date resolved before (a rerun redoes them)."""
    from pyspark.sql import functions as F

    if not table_exists(spark, cfg, "silver.held_events"):
        return None
    held = read_table(spark, cfg, "silver.held_events").where(
        (F.col("landed_date") < F.lit(first_landed))
        & ((F.col("status") == "held") | (F.col("resolved_on") == F.lit(run_date)))
    )
    return held.select(*SILVER_EVENT_COLUMNS, "_source_file", "_line", "_ingested_at")


def _known(spark: "SparkSession", cfg: Config, run_date: dt.date) -> tuple["DataFrame", "DataFrame"]:
    """Users and items known on the run date: every snapshot up to it; an item's newest list price."""
    from pyspark.sql import functions as F

    users = read_table(spark, cfg, "silver.users").where(F.col("snapshot_date") <= F.lit(run_date)).select("user_key")
    items = read_table(spark, cfg, "silver.items").where(F.col("snapshot_date") <= F.lit(run_date)).groupBy(
        "item_id").agg(F.max_by("price", "snapshot_date").alias("price"))
    return users, items


def _check_silver_events_schema(spark: "SparkSession", cfg: Config) -> None:
    """A silver.events written before `landed_date` existed cannot take reruns by landing date."""
    from jobs.common.errors import InputDataError

    if table_exists(spark, cfg, "silver.events") and "landed_date" not in read_table(spark, cfg, "silver.events").columns:
        raise InputDataError(
            f"silver.events at {table_path(cfg, 'silver.events')} has no landed_date column (it was written by an "
            "older clean step); remove that folder and run clean again with --collect-days covering the history "
            "(docs/cleaning.md, 'Upgrading an older lakehouse')"
        )


def _with_user_names(bronze: "DataFrame", users: "DataFrame") -> "DataFrame":
    """bronze events with `_user_names`: the names the user's rows of `users` (the run date's bronze.users
    snapshot) carry."""
    from pyspark.sql import functions as F

    if "name" not in users.columns:
        return bronze
    names = (users.select(_blank_to_null(F.col("user_id")).alias("_name_user_id"), normalise_text(F.col("name")).alias("n"))
             .where(F.col("_name_user_id").isNotNull() & F.col("n").isNotNull())
             .groupBy("_name_user_id").agg(F.collect_set("n").alias(USER_NAMES)))
    keyed = bronze.withColumn("_name_user_id", _blank_to_null(F.col("user_id")))
    return keyed.join(names, "_name_user_id", "left").drop("_name_user_id")


def _rows_and_missing(master: "DataFrame", id_column: str) -> tuple[int, int]:
    """Rows of a master-data snapshot and how many lack their id, in one pass."""
    from pyspark.sql import functions as F

    row = master.agg(F.count("*").alias("n"),
                     F.count(F.when(_blank_to_null(F.col(id_column)).isNull(), 1)).alias("missing")).collect()[0]
    return int(row["n"]), int(row["missing"])


def preflight(cfg: Config, run_date: dt.date, collect_days: int = 1) -> None:
    """Cheap checks before Spark starts: the key exists and the clean settings make sense."""
    load_hmac_key(cfg)
    CleanParams.from_config(cfg)
    CatalogueParams.from_config(cfg)
    Generalisation.from_config(cfg)
    PiiParams.from_config(cfg)


def run(spark: "SparkSession", cfg: Config, run_date: dt.date, collect_days: int = 1) -> StepResult:
    from pyspark.sql import functions as F

    from jobs.common.dates import days_ending

    result = StepResult("clean", run_date)
    dates = days_ending(run_date, collect_days)
    key = load_hmac_key(cfg)
    params = CleanParams.from_config(cfg)
    generalise = Generalisation.from_config(cfg)
    pii = PiiParams.from_config(cfg)
    _check_silver_events_schema(spark, cfg)  # before anything is written
    for name in ("silver.events", "silver.held_events"):
        migrate(spark, cfg, name)  # an older lakehouse holds rating as bigint; doubles would not go in

    # Master data first: today's snapshot decides which events' users and items are known.
    users = read_table(spark, cfg, "bronze.users").where(F.col("snapshot_date") == F.lit(run_date)).cache()
    try:
        users_in, no_id = _rows_and_missing(users, "user_id")
        users_out = replace_dates(transform_users(users, key, generalise, pii.for_columns(USER_PII_COLUMNS)), cfg,
                                  "silver.users", [run_date])
        result.tables.append(TableCount("silver.users", users_in, users_out, users_in - no_id - users_out,
                                        {"missing_user_id": no_id} if no_id else {}))
        contacts_out = replace_dates(transform_user_contacts(users, key), cfg, "silver.user_contacts", [run_date])
        result.tables.append(TableCount("silver.user_contacts", users_out, contacts_out))
    finally:
        users.unpersist()

    truncated: dict[str, int] = {}  # free text cut to clean.max_text_chars, by column
    items = read_table(spark, cfg, "bronze.items").where(F.col("snapshot_date") == F.lit(run_date)).cache()
    try:
        items_in, no_id = _rows_and_missing(items, "item_id")
        cleaned = transform_items(items, params.price_range, CatalogueParams.from_config(cfg), params.max_text_chars)
        truncated.update(truncated_counts(conform(items, {"title": "string", "brand": "string"}),
                                          {c: params.max_text_chars[c] for c in ("title", "brand")}))
        # add_columns: a silver.items written before `categories` existed takes the new column.
        items_out = replace_dates(cleaned, cfg, "silver.items", [run_date], add_columns=True)
        result.tables.append(TableCount("silver.items", items_in, items_out, items_in - no_id - items_out,
                                        {"missing_item_id": no_id} if no_id else {}))
    finally:
        items.unpersist()

    bronze = read_table(spark, cfg, "bronze.events").where(F.col("event_date").isin(*dates))
    if "_parse_error" in bronze.columns:
        bronze = bronze.where(F.col("_parse_error").isNull())
    truncated.update(truncated_counts(conform(bronze, {"query": "string", "review_text": "string"}),
                                      {c: params.max_text_chars[c] for c in ("query", "review_text")}))
    if truncated:
        import logging

        logging.getLogger(__name__).warning(
            "clean %s: text longer than clean.max_text_chars was cut (rows per column: %s); bronze keeps it whole",
            run_date, truncated)
    result.details["truncated"] = truncated
    # Geo is a place like the user's city: generalised to the same level.
    typed = transform_type_events(_with_user_names(bronze, users), params,
                                  pii.for_columns(EVENT_PII_COLUMNS)).withColumn("geo", generalise.city(F.col("geo")))
    known_users, known_items = _known(spark, cfg, run_date)
    labelled = transform_label_events(
        typed, key, run_date, params, earlier_ids=_earlier(spark, cfg, dates[0], params),
        known_users=known_users, known_items=known_items, held=_held_to_recheck(spark, cfg, dates[0], run_date),
    )
    labelled = labelled.localCheckpoint()  # one evaluation feeds the counts and every write below
    user_days = transform_user_days(labelled, params).cache()
    if params.outlier_action == "remove":
        labelled = transform_remove_outliers(labelled, user_days).localCheckpoint()

    try:
        breakdown = outcome_counts(labelled)
        found = pii_counts(labelled.where(F.col("_origin") == LANDED))
        if found:
            import logging

            logging.getLogger(__name__).warning(
                "clean %s: personal data found in other columns (rows per column: %s); handled as "
                "privacy.pii_columns says", run_date, found)
        result.details["pii"] = found
        counts = count_events(breakdown)
        rechecked = {outcome: n for (origin, outcome), n in breakdown.items() if origin == HELD}
        landed = labelled.where(F.col("_origin") == LANDED)
        written = landed.where(F.col("_outcome") == SILVER).select(*SILVER_EVENT_COLUMNS)
        _write(written, cfg, "silver.events", _dates_sql("landed_date", dates), len(dates))

        held_now = landed.where(F.col("_outcome").isin(*HELD_REASONS)).select(
            *SILVER_EVENT_COLUMNS, F.col("_outcome").alias("hold_reason"), F.lit("held").alias("status"),
            F.lit(None).cast("date").alias("resolved_on"), "_source_file", F.col("_line").cast("long").alias("_line"),
            "_ingested_at",
        )
        _write(held_now, cfg, "silver.held_events", _dates_sql("landed_date", dates), len(dates))

        columns = _quarantine_columns(spark, cfg)
        quarantine = _quarantine_rows(landed.where(~F.col("_outcome").isin(SILVER, DUPLICATE)), columns)
        edges_count = None
        if "bronze.social_edges" in TABLES and table_exists(spark, cfg, "bronze.social_edges"):
            edges_count, edge_quarantine = _clean_social_edges(spark, cfg, key, params, dates)
            quarantine = quarantine.unionByName(edge_quarantine.select(*columns))
        _write(quarantine, cfg, "bronze.quarantine", f"({_dates_sql('event_date', dates)}) AND step = 'clean'",
               len(dates))

        _resolve_held(spark, cfg, labelled, run_date, columns, rechecked)
        flags_out = replace_dates(user_days, cfg, "silver.user_flags", dates)
        result.details.update({
            "released": rechecked.get(SILVER, 0),
            "expired": sum(v for k, v in rechecked.items() if k not in (SILVER, *HELD_REASONS)),
            "still_held": sum(rechecked.get(r, 0) for r in HELD_REASONS),
            "outlier_user_days": user_days.where("is_outlier").count(),
        })
    finally:
        user_days.unpersist()

    result.tables.insert(0, counts)
    if edges_count is not None:
        result.tables.append(edges_count)
    result.tables.append(TableCount("silver.user_flags", flags_out, flags_out))
    write_audit(spark, cfg, "clean", run_date, result.tables)
    return result


def _clean_social_edges(spark: "SparkSession", cfg: Config, key: bytes, params: CleanParams,
                        dates: list[dt.date]) -> tuple[TableCount, "DataFrame"]:
    from pyspark.sql import functions as F

    edges = read_table(spark, cfg, "bronze.social_edges").where(F.col("event_date").isin(*dates))
    if "_parse_error" in edges.columns:
        edges = edges.where(F.col("_parse_error").isNull())
    labelled = transform_social_edges(edges, key, params).localCheckpoint()
    by_outcome = {r["_outcome"]: int(r["n"]) for r in labelled.groupBy("_outcome").agg(F.count("*").alias("n")).collect()}
    kept = labelled.where(F.col("_outcome") == SILVER).select(*SOCIAL_EDGE_COLUMNS)
    _write(kept, cfg, "silver.social_edges", _dates_sql("landed_date", dates))
    rows_out = by_outcome.pop(SILVER, 0)
    duplicates = by_outcome.pop(DUPLICATE, 0)
    count = TableCount("silver.social_edges", rows_out + duplicates + sum(by_outcome.values()), rows_out, duplicates,
                       dict(sorted(by_outcome.items())))
    bad = labelled.where(~F.col("_outcome").isin(SILVER, DUPLICATE))
    return count, _quarantine_rows(bad, QUARANTINE_COLUMNS)
