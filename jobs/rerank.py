"""Re-rank recommendation candidates: drop bought and unavailable items, apply business rules, diversify (MMR).

Candidates come from several sources (user embedding against item embeddings, interest tags, items
similar to what the user viewed); this module turns them into the final top-K list of each user with a
reason in words. Greedy MMR (maximal marginal relevance) is sequential per user, so it runs in
`applyInPandas` grouped by user_key, with numpy inside.

The published score is the MMR value at the moment an item was picked, shifted into [0, 1]:

    score = λ · relevance + (1 − λ) · (1 − max similarity to the items already picked)

where relevance is the candidate score divided by the user's best candidate score (negative scores
count as 0) and similarity is 1.0 for the same category, 0.5 for the same brand in another category.
Greedy MMR never picks an item with a higher value later, so scores are non-increasing by rank and
ranks and scores always agree. Ties go to the higher original score, then to the smaller item_id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jobs.common.errors import ConfigError, InputDataError

if TYPE_CHECKING:
    import pandas as pd

    from jobs.common.config import Config
    from pyspark.sql import DataFrame

SOURCES: tuple[str, ...] = ("embedding", "tag", "similar_item", "seen", "neighbour", "item_item")
# How `seen` words the event type of the user's most recent step on the item.
SEEN_VERBS = {"view": "viewed", "click": "clicked", "add_to_cart": "put in your cart",
              "remove_from_cart": "took out of your cart", "purchase": "bought", "review": "reviewed",
              "rating": "rated", "share": "shared"}
# Business rules that recommend.rules may set; anything else is a typo and is refused.
RULES: dict[str, str] = {
    "exclude_categories": "top-level categories never recommended (list)",
    "min_price": "items cheaper than this are dropped",
    "max_price": "items dearer than this are dropped",
    "max_per_brand": "at most this many items of one brand in a user's list",
    "max_per_category": "at most this many items of one category in a user's list",
}
SAME_CATEGORY, SAME_BRAND = 1.0, 0.5

CANDIDATE_COLUMNS = ("user_key", "item_id", "score", "source", "evidence")
BOUGHT_COLUMNS = ("user_key", "item_id")
ITEM_COLUMNS = ("item_id", "category", "brand", "price", "available")
OUTPUT_SCHEMA = "user_key string, rank int, item_id string, score double, reason string"
# A brand that says nothing makes no two items alike.
NO_BRAND = ("", "unknown")


def check_rules(rules: Mapping[str, Any] | None) -> dict[str, Any]:
    """The rules with unset ones removed; a clear error for an unknown rule or a wrong value."""
    rules = dict(rules or {})
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise ConfigError(f"recommend.rules has unknown rule(s) {', '.join(unknown)}; known: {', '.join(RULES)}")
    checked: dict[str, Any] = {}
    for name, value in rules.items():
        if value is None or value == []:
            continue
        if name == "exclude_categories":
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"recommend.rules.exclude_categories must be a list of categories, got {value!r}")
            checked[name] = sorted(set(value))
        elif name in ("min_price", "max_price"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"recommend.rules.{name} must be a number >= 0, got {value!r}")
            checked[name] = float(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"recommend.rules.{name} must be an integer >= 1, got {value!r}")
            checked[name] = value
    return checked


# recommend.mmr_lambda `auto` with a model registered before the weight was tuned (ModelSpec.mmr_lambda None).
UNTUNED_MMR_LAMBDA = 0.7


def settings(cfg: "Config", model_mmr_lambda: float | None = None) -> dict[str, Any]:
    """k, mmr_lambda and rules from the profile's recommend section: rerank(c, b, i, **settings(cfg, spec.mmr_lambda)).

    recommend.mmr_lambda is a number in [0, 1], or `auto`: the weight the champion's training chose on its
    validation days (`model_mmr_lambda`, ml.train.tune_mmr), UNTUNED_MMR_LAMBDA for a model without one.
    """
    weight = cfg.get("recommend.mmr_lambda")
    if weight == "auto":
        weight = UNTUNED_MMR_LAMBDA if model_mmr_lambda is None else model_mmr_lambda
    return {"k": cfg.integer("recommend.k"), "mmr_lambda": weight, "rules": cfg.get("recommend.rules", {}) or {}}


def _require_columns(df: "DataFrame", columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputDataError(f"rerank: {what} lacks column(s) {', '.join(missing)}; it has {', '.join(df.columns)}")


def rerank(
    candidates: "DataFrame",
    bought: "DataFrame",
    items: "DataFrame",
    k: int,
    mmr_lambda: float,
    rules: Mapping[str, Any] | None = None,
) -> "DataFrame":
    """Top-k items per user from candidates: (user_key, rank, item_id, score, reason), ranks 1..n without gaps.

    A user gets fewer than k rows when fewer candidates survive the filters, and no rows when none do.
    Candidates of items missing from `items` count as unavailable.
    """
    from pyspark.sql import functions as F

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"recommend.k must be an integer >= 1, got {k!r}")
    if not (isinstance(mmr_lambda, (int, float)) and 0.0 <= float(mmr_lambda) <= 1.0):
        raise ConfigError(f"recommend.mmr_lambda must be a number in [0, 1] or auto, got {mmr_lambda!r}")
    checked = check_rules(rules)
    _require_columns(candidates, CANDIDATE_COLUMNS, "candidates")
    _require_columns(bought, BOUGHT_COLUMNS, "bought")
    _require_columns(items, ITEM_COLUMNS, "items")
    odd = [r["source"] for r in candidates.where(~F.coalesce(F.col("source").isin(*SOURCES), F.lit(False)))
           .select("source").distinct().limit(5).collect()]
    if odd:
        raise InputDataError(f"rerank: candidates have unknown source(s) {odd}; sources are: {', '.join(SOURCES)}")

    usable = items.where(F.coalesce(F.col("available"), F.lit(False)))
    if "exclude_categories" in checked:
        usable = usable.where(~F.col("category").isin(*checked["exclude_categories"]))
    if "min_price" in checked:
        usable = usable.where(F.col("price") >= F.lit(checked["min_price"]))
    if "max_price" in checked:
        usable = usable.where(F.col("price") <= F.lit(checked["max_price"]))
    pool = (
        candidates.select(*CANDIDATE_COLUMNS)
        .where(F.col("user_key").isNotNull() & F.col("item_id").isNotNull() & F.col("score").isNotNull())
        .join(bought.select(*BOUGHT_COLUMNS), ["user_key", "item_id"], "left_anti")
        .join(usable.select("item_id", "category", "brand"), "item_id")
        .select("user_key", "item_id", F.col("score").cast("double"), "source",
                F.coalesce("evidence", F.lit("")).alias("evidence"), "category",
                F.when(F.lower(F.trim("brand")).isin(*NO_BRAND), F.lit("")).otherwise(F.coalesce("brand", F.lit("")))
                .alias("brand"))
    )
    select = _user_selector(k, float(mmr_lambda), checked.get("max_per_brand"), checked.get("max_per_category"))
    return pool.groupBy("user_key").applyInPandas(select, OUTPUT_SCHEMA)


def _user_selector(k: int, mmr_lambda: float, max_per_brand: int | None, max_per_category: int | None):
    """The per-user function for applyInPandas (a closure, so executors get the settings with it)."""

    def select(group: "pd.DataFrame") -> "pd.DataFrame":
        return mmr_select(group, k, mmr_lambda, max_per_brand, max_per_category)

    return select


def mmr_select(
    group: "pd.DataFrame", k: int, mmr_lambda: float,
    max_per_brand: int | None = None, max_per_category: int | None = None,
) -> "pd.DataFrame":
    """Greedy MMR over one user's candidates -> rows of OUTPUT_SCHEMA.

    `group` has user_key, item_id, score, source, evidence, category and brand ("" when unknown).
    """
    import numpy as np
    import pandas as pd

    columns = ["user_key", "rank", "item_id", "score", "reason"]
    if group.empty:
        return pd.DataFrame(columns=columns)
    # One row per item: the best-scoring source explains it. The sort also fixes every tie-break below.
    source_order = group["source"].map({s: i for i, s in enumerate(SOURCES)}).fillna(len(SOURCES))
    ordered = (group.assign(_source_order=source_order)
               .sort_values(["score", "item_id", "_source_order", "evidence"], ascending=[False, True, True, True],
                            kind="mergesort")
               .drop_duplicates("item_id", keep="first")
               .reset_index(drop=True))
    scores = ordered["score"].to_numpy(dtype=float)
    best = max(float(scores.max()), 0.0)
    relevance = np.clip(scores, 0.0, None) / best if best > 0 else np.zeros(len(scores))
    categories = ordered["category"].to_numpy(dtype=object)
    brands = ordered["brand"].to_numpy(dtype=object)

    max_similarity = np.zeros(len(ordered))
    open_slots = np.ones(len(ordered), dtype=bool)
    brand_counts: dict[str, int] = {}
    category_counts: dict[str, int] = {}
    picked: list[tuple[int, float]] = []
    while len(picked) < k and open_slots.any():
        value = mmr_lambda * relevance - (1.0 - mmr_lambda) * max_similarity
        # np.argmax takes the first maximum: the higher original score, then the smaller item_id.
        j = int(np.argmax(np.where(open_slots, value, -np.inf)))
        picked.append((j, round(float(value[j]) + (1.0 - mmr_lambda), 6)))
        open_slots[j] = False
        same_category = categories == categories[j]
        same_brand = (brands == brands[j]) & (brands[j] != "")
        max_similarity = np.maximum(max_similarity, np.where(same_category, SAME_CATEGORY,
                                                             np.where(same_brand, SAME_BRAND, 0.0)))
        brand_counts[brands[j]] = brand_counts.get(brands[j], 0) + 1
        category_counts[categories[j]] = category_counts.get(categories[j], 0) + 1
        if max_per_brand is not None and brands[j] != "" and brand_counts[brands[j]] >= max_per_brand:
            open_slots &= brands != brands[j]
        if max_per_category is not None and category_counts[categories[j]] >= max_per_category:
            open_slots &= ~same_category

    rows = [(ordered.at[j, "user_key"], rank, ordered.at[j, "item_id"], score,
             reason(ordered.at[j, "source"], ordered.at[j, "evidence"], ordered.at[j, "category"]))
            for rank, (j, score) in enumerate(picked, start=1)]
    out = pd.DataFrame(rows, columns=columns)
    out["rank"] = out["rank"].astype("int32")
    return out


def category_label(category: str | None) -> str:
    """运动户外/sports outdoors for a taxonomy id; anything else as it is."""
    from jobs.common.taxonomy import CATEGORIES

    found = CATEGORIES.get(category or "")
    return f"{found.name_zh}/{found.name_en}" if found else (category or "")


def reason(source: str, evidence: str | None, category: str | None) -> str:
    """Why an item is recommended, in words a shopper or an analyst reads.

    tag: evidence is the interest tag; similar_item: evidence names the viewed item; neighbour:
    evidence names the item of the user's sequence that other users chose together with this one;
    item_item: evidence names the item of the user's whole history that the item-item term (EASE)
    links this one to; seen: evidence is the event type of the user's latest step on this very item; embedding: the
    item's category is the readable part of an embedding match.
    """
    evidence = (evidence or "").strip()
    if source == "seen":
        return f"an item you {SEEN_VERBS.get(evidence, 'looked at')} recently"
    if source == "tag":
        return f"matches your interest in {category_label(evidence or category)}"
    if source == "similar_item":
        return f"similar to an item you viewed ({evidence})" if evidence else "similar to an item you viewed"
    if source == "neighbour":
        return f"often chosen together with an item you viewed ({evidence})" if evidence else \
            "often chosen together with items you viewed"
    if source == "item_item":
        return f"people who chose an item you had ({evidence}) also chose this" if evidence else \
            "people with your history also chose this"
    return f"fits your taste profile in {category_label(category)}"
