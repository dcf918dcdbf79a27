"""The catalogue contract: how a shop's category paths become categories, and the per-date category vocabulary.

A shop's catalogue is taken as it is: category paths of any depth and any names (`Drama|Thriller`,
`Electronics>Audio>Headphones`, a numeric category id). The `catalogue:` section of the profile says
how to read them (docs/data-contract.md): which characters separate levels, which separates several
values, which level is the interest-tag level, how many tags at most, aliases, and whether the built-in
e-commerce taxonomy (jobs/common/taxonomy.py) applies. Every consumer (features, model, scoring,
publish, quality) uses the same per-date vocabulary, `gold.category_vocab`, built by
`transform_category_vocab`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs.common.errors import ConfigError
from jobs.common.taxonomy import PATH_SEPARATOR, TOP_LEVEL

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from jobs.common.config import Config

TAXONOMIES = ("builtin", "none")
UNKNOWN = "unknown"   # an item without a category path, or (builtin) one outside the taxonomy
OTHER = "other"       # the vocabulary's bucket for categories past the cap
VALUE_SEPARATOR = "|"  # how silver.items.category_path joins several values
VOCAB_COLUMNS = ("category", "position", "n_items", "n_events", "n_members", "as_of_date")

# Other spellings of the built-in top-level categories (the public export layout's category_code among
# them); used only when catalogue.taxonomy is builtin. Keys are normalised paths (levels joined by ">").
BUILTIN_ALIASES: Mapping[str, str] = {
    "appliances": "home_appliances", "appliance": "home_appliances", "computer": "computers",
    "electronics>smartphone": "phones", "electronics>telephone": "phones", "phone": "phones",
    "apparel": "apparel_women", "kids": "baby_kids", "baby": "baby_kids", "sport": "sports_outdoors",
    "sports": "sports_outdoors", "auto": "automotive", "medicine": "health", "stationery": "office_stationery",
    "country_yard": "home_living", "home": "home_living", "accessories": "shoes_bags", "shoes": "shoes_bags",
    "toys": "toys_games", "books": "books_media", "food": "food_beverage", "jewelry": "jewelry_watches",
    "cosmetics": "beauty", "pet": "pets",
}

_KEYS = ("path_separators", "multi_value_separator", "tag_level", "max_tags", "taxonomy", "aliases")


@dataclass(frozen=True)
class CatalogueParams:
    """The `catalogue:` section of the profile, checked once."""

    path_separators: tuple[str, ...] = (">", "/", ".")
    multi_value_separator: str | None = "|"
    tag_level: int = 1
    max_tags: int = 30
    taxonomy: str = "builtin"
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.taxonomy not in TAXONOMIES:
            raise ConfigError(f"catalogue.taxonomy is '{self.taxonomy}'; use one of {', '.join(TAXONOMIES)}")
        if not self.path_separators or any(not isinstance(s, str) or not s for s in self.path_separators):
            raise ConfigError(f"catalogue.path_separators must be a non-empty list of non-empty strings, "
                              f"got {list(self.path_separators)!r}")
        if self.multi_value_separator is not None and (
                not isinstance(self.multi_value_separator, str) or not self.multi_value_separator
                or self.multi_value_separator in self.path_separators):
            raise ConfigError(f"catalogue.multi_value_separator must be a non-empty string that is not also a path "
                              f"separator (or ~ for single-valued paths), got {self.multi_value_separator!r}")
        if not isinstance(self.tag_level, int) or isinstance(self.tag_level, bool) or self.tag_level < 1:
            raise ConfigError(f"catalogue.tag_level must be a whole number of at least 1, got {self.tag_level!r}")
        if self.taxonomy == "builtin" and self.tag_level != 1:
            raise ConfigError(f"catalogue.tag_level is {self.tag_level}, but the builtin taxonomy tags its top level; "
                              "set catalogue.tag_level to 1 or catalogue.taxonomy to none")
        if not isinstance(self.max_tags, int) or isinstance(self.max_tags, bool) or self.max_tags < 2:
            raise ConfigError(f"catalogue.max_tags must be a whole number of at least 2 (the cap includes "
                              f"'{OTHER}'), got {self.max_tags!r}")
        for key, value in self.aliases.items():
            if not isinstance(key, str) or not isinstance(value, str) or not key.strip() or not value.strip():
                raise ConfigError(f"catalogue.aliases.{key}: an alias maps a category name to a name, got {value!r}")
            if self.taxonomy == "builtin" and value not in TOP_LEVEL:
                raise ConfigError(f"catalogue.aliases.{key}: '{value}' is not a builtin top-level category; "
                                  f"use one of {', '.join(TOP_LEVEL)} (or catalogue.taxonomy: none)")

    @classmethod
    def from_config(cls, cfg: "Config") -> "CatalogueParams":
        section = cfg.get("catalogue", {}) or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"catalogue must be a mapping of {', '.join(_KEYS)}; got {section!r}")
        unknown = sorted(set(section) - set(_KEYS))
        if unknown:
            raise ConfigError(f"catalogue.{unknown[0]} is not a setting; known: {', '.join(_KEYS)}")
        default = cls()
        separators = section.get("path_separators", list(default.path_separators))
        if isinstance(separators, str) or not isinstance(separators, Sequence):
            raise ConfigError(f"catalogue.path_separators must be a list such as ['>', '/'], got {separators!r}")
        aliases = section.get("aliases") or {}
        if not isinstance(aliases, Mapping):
            raise ConfigError(f"catalogue.aliases must map names to categories, got {aliases!r}")

        def whole(key: str) -> Any:
            value = section.get(key, getattr(default, key))
            try:
                return int(value) if not isinstance(value, bool) and float(value) == int(value) else value
            except (TypeError, ValueError):
                return value

        return cls(
            path_separators=tuple(separators),
            multi_value_separator=section.get("multi_value_separator", default.multi_value_separator),
            tag_level=whole("tag_level"),
            max_tags=whole("max_tags"),
            taxonomy=str(section.get("taxonomy", default.taxonomy)),
            aliases={normalise_name(str(k), tuple(separators)): v for k, v in aliases.items()},
        )

    @property
    def builtin(self) -> bool:
        return self.taxonomy == "builtin"

    def all_aliases(self) -> dict[str, str]:
        """The builtin spellings (builtin taxonomy only), then the profile's, which win."""
        base = dict(BUILTIN_ALIASES) if self.builtin else {}
        base.update({k: (v.strip() if self.builtin else normalise_name(v, self.path_separators))
                     for k, v in self.aliases.items()})
        return base


def normalise_name(path: str, separators: tuple[str, ...] = (">", "/", ".")) -> str:
    """The Python twin of the Spark normalisation of one path value: lower case, levels joined by '>'."""
    levels = re.split("|".join(re.escape(s) for s in separators), path.strip().lower())
    return PATH_SEPARATOR.join(level.strip() for level in levels if level.strip())


# --- item columns ------------------------------------------------------------------------------------


def _values(path: "Column", params: CatalogueParams) -> "Column":
    """array<array<string>>: each value of a path, as its non-empty levels (lower case, trimmed)."""
    from pyspark.sql import functions as F

    raw = F.lower(F.trim(path))
    values = (F.split(raw, re.escape(params.multi_value_separator)) if params.multi_value_separator
              else F.array(raw))
    level_split = "|".join(re.escape(s) for s in params.path_separators)
    levels = F.transform(values, lambda v: F.filter(F.transform(F.split(v, level_split), lambda x: F.trim(x)),
                                                     lambda x: x != ""))
    return F.filter(levels, lambda lv: F.size(lv) > 0)


def category_path(path: "Column", params: CatalogueParams) -> "Column":
    """The normalised path: levels joined by '>', values by '|'; 'unknown' when there is none."""
    from pyspark.sql import functions as F

    joined = F.array_join(F.transform(_values(path, params), lambda lv: F.array_join(lv, PATH_SEPARATOR)),
                          VALUE_SEPARATOR)
    return F.when(F.coalesce(joined, F.lit("")) != "", joined).otherwise(F.lit(UNKNOWN))


def item_categories(path: "Column", params: CatalogueParams) -> "Column":
    """array<string>: the item's categories at the tag level, one per value, distinct, in the path's order.

    builtin: each value maps onto a top-level id (aliases of its first two levels, then its top level,
    then aliases of the top level) or 'unknown'. none: the value's first `tag_level` levels, renamed by
    an alias when one matches. A missing path is ['unknown'].
    """
    from pyspark.sql import functions as F

    aliases = params.all_aliases()
    alias_map = F.create_map(*[F.lit(x) for pair in sorted(aliases.items()) for x in pair]) if aliases else None

    def alias(key: "Column") -> "Column":
        return F.try_element_at(alias_map, key) if alias_map is not None else F.lit(None).cast("string")

    def one(levels: "Column") -> "Column":
        tag = F.array_join(F.slice(levels, 1, params.tag_level), PATH_SEPARATOR)
        if not params.builtin:
            return F.coalesce(alias(tag), tag)
        top = levels[0]
        two = F.array_join(F.slice(levels, 1, 2), PATH_SEPARATOR)
        return F.coalesce(alias(two), F.when(top.isin(*TOP_LEVEL), top), alias(top), F.lit(UNKNOWN))

    mapped = F.array_distinct(F.transform(_values(path, params), one))
    return F.when(F.size(mapped) > 0, mapped).otherwise(F.array(F.lit(UNKNOWN)))


# --- the vocabulary ----------------------------------------------------------------------------------


def transform_category_vocab(items: "DataFrame", events: "DataFrame", as_of: dt.date,
                             params: CatalogueParams) -> "DataFrame":
    """gold.category_vocab rows of one date: the tag-level categories, most used first, capped.

    `items` is the item snapshot (item_id, categories); `events` the events that count (item_id). A
    category's n_events counts the events on its items, n_items its items; a multi-valued item counts
    toward each value. Order: n_events, then n_items (both descending), then the name. 'unknown' is not
    a category. With more than max_tags categories the first max_tags - 1 stay and the rest become one
    'other' row (n_members says how many it holds), last.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    exploded = (items.select("item_id", F.explode("categories").alias("category"))
                .where((F.col("category") != UNKNOWN) & F.col("category").isNotNull()).distinct())
    n_items = exploded.groupBy("category").agg(F.count("*").alias("n_items"))
    n_events = (events.where(F.col("item_id").isNotNull()).select("item_id").join(exploded, "item_id")
                .groupBy("category").agg(F.count("*").alias("n_events")))
    counted = n_items.join(n_events, "category", "left").fillna({"n_events": 0})
    order = Window.orderBy(F.col("n_events").desc(), F.col("n_items").desc(), F.col("category").asc())
    ranked = counted.withColumn("_rank", F.row_number().over(order)).withColumn(
        "_total", F.count("*").over(Window.partitionBy()))
    keep = (F.col("_total") <= params.max_tags) | (F.col("_rank") < params.max_tags)
    bucketed = ranked.withColumn("_name", F.when(keep, F.col("category")).otherwise(F.lit(OTHER))).groupBy(
        "_name").agg(F.min(F.when(keep, F.col("_rank")).otherwise(F.lit(params.max_tags))).alias("_rank"),
                     F.sum("n_items").alias("n_items"), F.sum("n_events").alias("n_events"),
                     F.count("*").alias("n_members"))
    return bucketed.select(
        F.col("_name").alias("category"), (F.col("_rank") - 1).cast("int").alias("position"),
        F.col("n_items").cast("long").alias("n_items"), F.col("n_events").cast("long").alias("n_events"),
        F.col("n_members").cast("long").alias("n_members"), F.lit(as_of).alias("as_of_date"),
    )


def vocab_list(vocab: "DataFrame") -> list[str]:
    """The vocabulary of one date as a list, in position order."""
    return [r["category"] for r in vocab.select("category", "position").orderBy("position").collect()]


def tag_of(category: "Column", vocab: Sequence[str]) -> "Column":
    """The vocabulary entry a category counts toward: itself, else 'other' (when the vocabulary has it), else null."""
    from pyspark.sql import functions as F

    known = category.isin(*vocab) if vocab else F.lit(False)
    tail = F.lit(OTHER) if OTHER in vocab else F.lit(None).cast("string")
    return (F.when(category.isNull() | (category == UNKNOWN), F.lit(None).cast("string"))
            .when(known, category).otherwise(tail))


def with_categories(items: "DataFrame") -> "DataFrame":
    """items + `categories`; an older silver.items that has only `category` gets [category]."""
    from pyspark.sql import functions as F

    if "categories" in items.columns:
        return items
    return items.withColumn("categories", F.array(F.coalesce(F.col("category"), F.lit(UNKNOWN))))


def read_category_vocab(spark: "SparkSession", cfg: "Config", as_of: dt.date) -> list[str]:
    """The vocabulary gold.category_vocab holds for `as_of`; InputDataError when the features step has not written it."""
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table, table_exists
    from jobs.common.errors import InputDataError

    if table_exists(spark, cfg, "gold.category_vocab"):
        day = read_table(spark, cfg, "gold.category_vocab").where(F.col("as_of_date") == F.lit(as_of))
        found = vocab_list(day)
        if found:
            return found
    raise InputDataError(f"gold.category_vocab has no rows for {as_of}: the features step has not run for that "
                         "date, or no item has a category; run the features step for it")
