"""Evaluation metrics for interest tags and recommendations, in numpy (checkable by hand) and Spark."""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def micro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """F1 over all (user, tag) decisions pooled together."""
    labels = labels.astype(bool)
    predicted = predicted.astype(bool)
    tp = float(np.sum(labels & predicted))
    fp = float(np.sum(~labels & predicted))
    fn = float(np.sum(labels & ~predicted))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank statistic; ties get their average rank."""
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores).ravel().astype(float)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def top_k_tags(scores: np.ndarray, k: int) -> np.ndarray:
    """0/1 matrix marking each row's k highest scores (ties broken by column order)."""
    picked = np.zeros_like(scores, dtype=bool)
    if scores.size == 0 or k <= 0:
        return picked
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.put_along_axis(picked, idx, True, axis=1)
    return picked


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Share of decisions where the prediction equals the label.

    Element-wise: on a user x tag matrix this is per-decision accuracy (1 - Hamming loss), not the
    share of users whose whole tag set is right. NaN when there is nothing to score.
    """
    labels = np.asarray(labels)
    predicted = np.asarray(predicted)
    if labels.shape != predicted.shape:
        raise ValueError(f"labels have shape {labels.shape} but predictions {predicted.shape}; pass matching arrays")
    if labels.size == 0:
        return float("nan")
    return float(np.mean(labels == predicted))


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Unweighted mean of the per-column (per-tag) F1 scores of two 0/1 matrices (rows x columns).

    A column with no positive label and no positive prediction has an undefined F1 (0/0); it is
    skipped rather than counted as 1 (which would reward rare tags for silence) or 0 (which would
    punish a model for a tag nobody holds). NaN when every column is skipped.
    """
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    if labels.shape != predicted.shape:
        raise ValueError(f"labels have shape {labels.shape} but predictions {predicted.shape}; pass matching arrays")
    if labels.ndim == 1:
        labels, predicted = labels[:, None], predicted[:, None]
    tp = np.sum(labels & predicted, axis=0).astype(float)
    fp = np.sum(~labels & predicted, axis=0).astype(float)
    fn = np.sum(labels & ~predicted, axis=0).astype(float)
    denominator = 2 * tp + fp + fn
    scored = denominator > 0
    if not scored.any():
        return float("nan")
    return float(np.mean(2 * tp[scored] / denominator[scored]))


def _probabilities(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).ravel().astype(float)
    scores = np.asarray(scores).ravel().astype(float)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores; pass one score per label")
    if np.any(np.isnan(scores)) or np.any((scores < 0) | (scores > 1)):
        raise ValueError("calibration needs probabilities: every score must lie in [0, 1] and none may be NaN")
    return labels, scores


def calibration_table(labels: np.ndarray, scores: np.ndarray, bins: int = 10):
    """Reliability table over `bins` equal-width score bins of [0, 1].

    Bins are [lower, upper) except the last, which also holds 1.0. Returns a pandas DataFrame with
    one row per bin, empty bins included (count 0, NaN means), columns
    bin, lower, upper, count, mean_score, observed_rate. Matrices are flattened first.
    """
    import pandas as pd

    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    labels, scores = _probabilities(labels, scores)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    score_sum = np.bincount(which, weights=scores, minlength=bins)
    label_sum = np.bincount(which, weights=labels, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.where(count > 0, score_sum / count, np.nan)
        observed = np.where(count > 0, label_sum / count, np.nan)
    return pd.DataFrame({
        "bin": np.arange(bins), "lower": edges[:-1], "upper": edges[1:], "count": count.astype(int),
        "mean_score": mean_score, "observed_rate": observed,
    })


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Count-weighted mean gap |observed rate - mean score| over the bins of `calibration_table`."""
    table = calibration_table(labels, scores, bins)
    total = int(table["count"].sum())
    if total == 0:
        return float("nan")
    filled = table[table["count"] > 0]
    return float(np.sum(filled["count"] / total * np.abs(filled["observed_rate"] - filled["mean_score"])))


# --- Ranking metrics for recommendations -------------------------------------------------------
#
# Conventions, shared by the python functions and `ranking_metrics_spark`:
# - Averages run over the users with at least one relevant item. A user with nothing relevant
#   cannot be ranked well or badly (recall and nDCG are 0/0) and is skipped; a user with relevant
#   items but no recommendations counts, and scores 0.
# - A list is de-duplicated (first occurrence kept) and cut to its first k items.
# - Precision divides by k, so a list shorter than k counts its missing places as misses.
# - The result is NaN when no user has a relevant item.


def _ranked_lists_by_user(
    recommended: Mapping[Hashable, Sequence[Hashable]], relevant: Mapping[Hashable, Collection[Hashable]], k: int
) -> dict[Hashable, tuple[list[Hashable], set[Hashable]]]:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    pairs = {}
    for user, items in relevant.items():
        truth = set(items)
        if truth:
            top = list(dict.fromkeys(recommended.get(user, ())))[:k]
            pairs[user] = (top, truth)
    return pairs


def _ranked_lists(
    recommended: Mapping[Hashable, Sequence[Hashable]], relevant: Mapping[Hashable, Collection[Hashable]], k: int
) -> list[tuple[list[Hashable], set[Hashable]]]:
    return list(_ranked_lists_by_user(recommended, relevant, k).values())


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def precision_at_k(recommended: Mapping[Hashable, Sequence[Hashable]],
                   relevant: Mapping[Hashable, Collection[Hashable]], k: int) -> float:
    """Mean over users of |top-k ∩ relevant| / k."""
    return _mean([sum(i in truth for i in top) / k for top, truth in _ranked_lists(recommended, relevant, k)])


def recall_at_k(recommended: Mapping[Hashable, Sequence[Hashable]],
                relevant: Mapping[Hashable, Collection[Hashable]], k: int) -> float:
    """Mean over users of |top-k ∩ relevant| / |relevant|."""
    return _mean([sum(i in truth for i in top) / len(truth) for top, truth in _ranked_lists(recommended, relevant, k)])


def _ideal_dcg(n_relevant: int, k: int) -> float:
    return float(np.sum(1.0 / np.log2(np.arange(2, min(k, n_relevant) + 2))))


def ndcg_at_k(recommended: Mapping[Hashable, Sequence[Hashable]],
              relevant: Mapping[Hashable, Collection[Hashable]], k: int) -> float:
    """Mean over users of DCG / ideal DCG, binary relevance, gain 1 / log2(position + 1).

    The ideal list puts min(k, |relevant|) hits first, so a perfect top-k scores 1 even when the
    user has more relevant items than k.
    """
    return _mean(list(ndcg_per_user(recommended, relevant, k).values()))


def ndcg_per_user(recommended: Mapping[Hashable, Sequence[Hashable]],
                  relevant: Mapping[Hashable, Collection[Hashable]], k: int) -> dict[Hashable, float]:
    """Each user's nDCG@k, for the users `ndcg_at_k` averages over (those with a relevant item), in
    `relevant`'s order: what the registry gate resamples for its confidence intervals."""
    scores = {}
    for user, (top, truth) in _ranked_lists_by_user(recommended, relevant, k).items():
        dcg = sum(1.0 / np.log2(pos + 1) for pos, item in enumerate(top, start=1) if item in truth)
        scores[user] = dcg / _ideal_dcg(len(truth), k)
    return scores


def map_at_k(recommended: Mapping[Hashable, Sequence[Hashable]],
             relevant: Mapping[Hashable, Collection[Hashable]], k: int) -> float:
    """Mean over users of average precision at k: the sum of precision@position over the positions
    that hold a hit, divided by min(k, |relevant|) so that a perfect top-k scores 1."""
    scores = []
    for top, truth in _ranked_lists(recommended, relevant, k):
        hits, precision_sum = 0, 0.0
        for pos, item in enumerate(top, start=1):
            if item in truth:
                hits += 1
                precision_sum += hits / pos
        scores.append(precision_sum / min(k, len(truth)))
    return _mean(scores)


def catalog_coverage(recommended: Mapping[Hashable, Sequence[Hashable]], catalog_size: int,
                     k: int | None = None) -> float:
    """Share of the catalogue that appears in at least one list (cut to k items when k is given)."""
    if catalog_size < 1:
        raise ValueError(f"catalog_size must be at least 1, got {catalog_size}")
    shown = {item for items in recommended.values() for item in (list(items)[:k] if k else items)}
    return len(shown) / catalog_size


# --- Diversity of the lists: beside accuracy, never instead of it ---------------------------------
#
# Conventions, shared by every function below:
# - `recommended` maps a user to a ranked list; each list is de-duplicated (first occurrence kept) and
#   cut to its first k items when k is given (the same cut as the ranking metrics).
# - Only the users in `recommended` count: pass the same users the accuracy metrics average over.
# - A figure that has nothing to measure (no list, no scoreable pair) is NaN, not 0.


def _top_lists(recommended: Mapping[Hashable, Sequence[Hashable]], k: int | None) -> dict[Hashable, list[Hashable]]:
    if not isinstance(recommended, Mapping):
        raise ValueError(f"recommended must map each user to a ranked list of items, got {type(recommended).__name__}")
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    lists = {}
    for user, items in recommended.items():
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise ValueError(f"the list of user {user!r} must be a sequence of item ids, got {items!r}")
        lists[user] = list(dict.fromkeys(items))[:k]
    return lists


def distinct_items(recommended: Mapping[Hashable, Sequence[Hashable]], k: int | None = None) -> int:
    """How many different items appear in at least one list (the numerator of catalogue coverage)."""
    return len({item for top in _top_lists(recommended, k).values() for item in top})


def gini_coefficient(recommended: Mapping[Hashable, Sequence[Hashable]], catalog_size: int,
                     k: int | None = None) -> float:
    """Gini coefficient of how often each catalogue item is recommended.

    c_i is the number of lists that hold item i; the catalogue's other items (catalog_size less the
    distinct items shown) count with c = 0. With the n = catalog_size counts sorted ascending,
    c_(1) <= ... <= c_(n):

        G = sum_i (2i - n - 1) c_(i) / (n * sum_i c_(i))

    (the mean absolute difference of all pairs over twice the mean). 0: every item is recommended
    equally often; (n - 1) / n: one item fills every list. NaN when no list holds an item. An item
    count above catalog_size (lists naming items outside the catalogue) is a ValueError.
    """
    if catalog_size < 1:
        raise ValueError(f"catalog_size must be at least 1, got {catalog_size}")
    counts: dict[Hashable, int] = {}
    for top in _top_lists(recommended, k).values():
        for item in top:
            counts[item] = counts.get(item, 0) + 1
    if len(counts) > catalog_size:
        raise ValueError(f"the lists name {len(counts)} distinct items but the catalogue has only {catalog_size}; "
                         "pass the size of a catalogue that holds every recommended item")
    total = sum(counts.values())
    if total == 0:
        return float("nan")
    ranked = np.concatenate([np.zeros(catalog_size - len(counts)), np.sort(np.fromiter(counts.values(), float))])
    i = np.arange(1, catalog_size + 1)
    return float(np.sum((2 * i - catalog_size - 1) * ranked) / (catalog_size * total))


def _category_sets(item_category: Mapping[Hashable, "str | Collection[str] | None"]) -> dict[Hashable, frozenset[str]]:
    if not isinstance(item_category, Mapping):
        raise ValueError(f"item_category must map item ids to a category or a set of categories, "
                         f"got {type(item_category).__name__}")
    sets = {}
    for item, value in item_category.items():
        if value is None:
            continue
        values = (value,) if isinstance(value, str) else value
        if not isinstance(values, Collection) or not all(isinstance(c, str) for c in values):
            raise ValueError(f"the category of item {item!r} must be a string or a collection of strings, "
                             f"got {value!r}")
        if values:
            sets[item] = frozenset(values)
    return sets


def intra_list_diversity(recommended: Mapping[Hashable, Sequence[Hashable]],
                         item_category: Mapping[Hashable, "str | Collection[str] | None"],
                         k: int | None = None) -> float:
    """Mean over users of the mean category distance of the pairs of items in the user's list.

    An item's categories are a set (MovieLens films have several genres; a string is a set of one).
    The distance of two items is 1 - |A ∩ B| / |A ∪ B| (Jaccard) of their sets: for single-category
    items this is 1 when the categories differ and 0 when they are the same, so the figure is the share
    of pairs whose categories differ; Drama|Thriller against Drama|Comedy is 2/3. Items that are not
    in `item_category`, or map to None or an empty set, have no category: pairs with them are left out.
    A user with fewer than two categorised items is skipped; NaN when every user is.
    """
    categories = _category_sets(item_category)
    per_user = []
    for top in _top_lists(recommended, k).values():
        sets = [categories[item] for item in top if item in categories]
        if len(sets) < 2:
            continue
        distances = [1.0 - len(a & b) / len(a | b) for n, a in enumerate(sets) for b in sets[n + 1:]]
        per_user.append(float(np.mean(distances)))
    return _mean(per_user)


def novelty(recommended: Mapping[Hashable, Sequence[Hashable]], item_popularity: Mapping[Hashable, int],
            n_users: int, k: int | None = None) -> float:
    """Mean self-information of the recommended items, in bits (Zhou et al. 2010, PNAS 107(10)).

    An item's popularity p_i is the number of the n_users training users who interacted with it; its
    self-information is -log2(p_i / n_users): 0 for an item every user has, log2(n_users) for an item
    one user has. An item no training user has (absent from `item_popularity`, or 0) counts as if one
    user had it, log2(n_users): the largest finite value, not infinity. The figure is the mean over
    users (with a non-empty list) of the mean over the user's list; NaN when no list has an item.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be at least 1, got {n_users}")
    if not isinstance(item_popularity, Mapping):
        raise ValueError(f"item_popularity must map item ids to their number of training users, "
                         f"got {type(item_popularity).__name__}")
    for item, users in item_popularity.items():
        if isinstance(users, bool) or not isinstance(users, (int, np.integer)) or not 0 <= users <= n_users:
            raise ValueError(f"the popularity of item {item!r} is {users!r}; it must be a whole number of "
                             f"training users between 0 and n_users ({n_users})")
    per_user = [float(np.mean([np.log2(n_users / max(int(item_popularity.get(item, 0)), 1)) for item in top]))
                for top in _top_lists(recommended, k).values() if top]
    return _mean(per_user)


def diversity_report(recommended: Mapping[Hashable, Sequence[Hashable]], k: int, catalog_size: int,
                     item_category: Mapping[Hashable, "str | Collection[str] | None"] | None = None,
                     item_popularity: Mapping[Hashable, int] | None = None,
                     n_users: int | None = None) -> dict[str, float]:
    """coverage, gini, intra_list_diversity, novelty and distinct_items of the top k, one dict that
    merges with `ranking_report`'s (whose coverage is the same figure when given the same users).

    Without `item_category` intra-list diversity is NaN; without `item_popularity` and `n_users`
    novelty is NaN (a popularity without n_users is a ValueError).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if (item_popularity is None) != (n_users is None):
        raise ValueError("novelty needs both item_popularity and n_users (the number of training users); "
                         "pass both or neither")
    nan = float("nan")
    return {
        "coverage": catalog_coverage(_top_lists(recommended, k), catalog_size),
        "gini": gini_coefficient(recommended, catalog_size, k),
        "intra_list_diversity": nan if item_category is None else intra_list_diversity(recommended, item_category, k),
        "novelty": nan if item_popularity is None else novelty(recommended, item_popularity, n_users, k),
        "distinct_items": float(distinct_items(recommended, k)),
    }


def ranking_metrics_spark(recs_df: "DataFrame", truth_df: "DataFrame", k: int) -> dict[str, float]:
    """precision/recall/ndcg/map at k from DataFrames, computed in Spark; only one row is collected.

    `recs_df` has user_key, item_id, rank (1 = best; gaps allowed, ties broken by item_id);
    `truth_df` has user_key, item_id (duplicates and null items are ignored). Same conventions as
    the python functions above; also returns `users`, the number of users averaged over.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    truth = truth_df.where(F.col("item_id").isNotNull()).select("user_key", "item_id").distinct()
    n_relevant = truth.groupBy("user_key").agg(F.count(F.lit(1)).alias("n_relevant"))

    # Renumber 1..n per user so that gaps or duplicates in `rank` mean the same as in a python list.
    first_rank = recs_df.groupBy("user_key", "item_id").agg(F.min("rank").alias("rank"))
    by_rank = Window.partitionBy("user_key").orderBy("rank", "item_id")
    top = first_rank.withColumn("pos", F.row_number().over(by_rank)).where(F.col("pos") <= k)

    hits = top.join(truth, ["user_key", "item_id"])
    hits = hits.withColumn("hit_no", F.row_number().over(Window.partitionBy("user_key").orderBy("pos")))
    per_user_hits = hits.groupBy("user_key").agg(
        F.count(F.lit(1)).alias("n_hits"),
        F.sum(1.0 / F.log2(F.col("pos") + 1)).alias("dcg"),
        F.sum(F.col("hit_no") / F.col("pos")).alias("precision_sum"),
    )
    cutoff = F.least(F.lit(k), F.col("n_relevant"))
    ideal_dcg = F.aggregate(F.sequence(F.lit(1), cutoff), F.lit(0.0), lambda acc, i: acc + 1.0 / F.log2(i + 1))
    per_user = n_relevant.join(per_user_hits, "user_key", "left").fillna(
        {"n_hits": 0, "dcg": 0.0, "precision_sum": 0.0}
    ).select(
        (F.col("n_hits") / F.lit(k)).alias("precision"),
        (F.col("n_hits") / F.col("n_relevant")).alias("recall"),
        (F.col("dcg") / ideal_dcg).alias("ndcg"),
        (F.col("precision_sum") / cutoff).alias("map"),
    )
    row = per_user.agg(
        F.avg("precision").alias("precision_at_k"), F.avg("recall").alias("recall_at_k"),
        F.avg("ndcg").alias("ndcg_at_k"), F.avg("map").alias("map_at_k"), F.count(F.lit(1)).alias("users"),
    ).collect()[0]
    nan = float("nan")
    return {
        "precision_at_k": nan if row["precision_at_k"] is None else float(row["precision_at_k"]),
        "recall_at_k": nan if row["recall_at_k"] is None else float(row["recall_at_k"]),
        "ndcg_at_k": nan if row["ndcg_at_k"] is None else float(row["ndcg_at_k"]),
        "map_at_k": nan if row["map_at_k"] is None else float(row["map_at_k"]),
        "users": int(row["users"]),
    }



@dataclass(frozen=True)
class DiversityInputs:
    """What intra-list diversity and novelty need besides the lists, collected once per evaluation:
    item -> categories, item -> number of training users, and the number of training users."""

    item_category: Mapping[Hashable, frozenset[str]]
    item_popularity: Mapping[Hashable, int]
    n_users: int

    def report(self, recommended: Mapping[Hashable, Sequence[Hashable]], k: int, catalog_size: int) -> dict[str, float]:
        """`diversity_report` of `recommended` with these inputs (novelty NaN when there are no training users)."""
        trained = self.n_users > 0
        return diversity_report(recommended, k, catalog_size, self.item_category,
                                self.item_popularity if trained else None, self.n_users if trained else None)


def diversity_inputs_spark(train_df: "DataFrame", items_df: "DataFrame | None" = None) -> DiversityInputs:
    """DiversityInputs from the training events (user_key, item_id) and an item table, collected.

    `items_df` is silver.items-shaped: item_id with `categories` (or only `category`, as an older
    silver.items has); with snapshot_date, an item's newest snapshot counts. The catalogue's
    'unknown' (no category) is no category here. Without `items_df` no item has a category.
    """
    from pyspark.sql import functions as F

    from jobs.common.catalogue import UNKNOWN, with_categories

    interactions = train_df.where(F.col("item_id").isNotNull() & F.col("user_key").isNotNull())
    popularity = {row["item_id"]: int(row["users"]) for row in
                  interactions.groupBy("item_id").agg(F.countDistinct("user_key").alias("users")).collect()}
    n_users = interactions.select("user_key").distinct().count()
    categories: dict[Hashable, frozenset[str]] = {}
    if items_df is not None:
        items = with_categories(items_df).where(F.col("item_id").isNotNull())
        if "snapshot_date" in items.columns:
            items = items.groupBy("item_id").agg(F.max_by("categories", "snapshot_date").alias("categories"))
        for row in items.select("item_id", "categories").collect():
            named = frozenset(c for c in (row["categories"] or ()) if c and c != UNKNOWN)
            if named:
                categories[row["item_id"]] = named
    return DiversityInputs(categories, popularity, n_users)


def ranked_lists_spark(recs_df: "DataFrame", users_df: "DataFrame") -> dict[str, list[str]]:
    """{user_key: items by rank} of the users in `users_df` (user_key), collected: the top-k lists are
    small. Rank order as in `ranking_metrics_spark` (ties by item_id); cut and de-duplicate later."""
    rows = recs_df.join(users_df.select("user_key").distinct(), "user_key", "left_semi").select(
        "user_key", "item_id", "rank").collect()
    ranked: dict[str, list[tuple[int, str]]] = {}
    for row in rows:
        if row["item_id"] is not None:
            ranked.setdefault(row["user_key"], []).append((int(row["rank"]), row["item_id"]))
    return {user: [item for _, item in sorted(pairs)] for user, pairs in ranked.items()}

# --- Reports: the numbers training logs and the gate compares ------------------------------------

def ranking_report(recommended: Mapping[Hashable, Sequence[Hashable]], relevant: Mapping[Hashable, Collection[Hashable]],
                   k: int, catalog_size: int) -> dict[str, float]:
    """precision/recall/ndcg/map at k and catalogue coverage of the top k, one dict.

    The model and every baseline are scored by this function on the same users and truth.
    """
    return {
        "precision_at_k": precision_at_k(recommended, relevant, k),
        "recall_at_k": recall_at_k(recommended, relevant, k),
        "ndcg_at_k": ndcg_at_k(recommended, relevant, k),
        "map_at_k": map_at_k(recommended, relevant, k),
        "coverage": catalog_coverage({u: recommended.get(u, ()) for u in relevant}, catalog_size, k),
        "users": float(sum(1 for items in relevant.values() if items)),
    }


def tag_report(labels: np.ndarray, scores: np.ndarray, top_k: int = 3, threshold: float = 0.5) -> dict[str, float]:
    """Interest tags: micro/macro F1 of each user's top-k tags and of scores >= threshold, AUC, ECE."""
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    if labels.size == 0:
        return {"micro_f1_top3": float("nan"), "macro_f1_top3": float("nan"), "micro_f1": float("nan"),
                "macro_f1": float("nan"), "auc": float("nan"), "ece": float("nan")}
    top = top_k_tags(scores, top_k)
    above = scores >= threshold
    return {
        f"micro_f1_top{top_k}": micro_f1(labels, top), f"macro_f1_top{top_k}": macro_f1(labels, top),
        "micro_f1": micro_f1(labels, above), "macro_f1": macro_f1(labels, above),
        "auc": roc_auc(labels, scores), "ece": expected_calibration_error(labels, scores),
    }


def per_tag_f1(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """F1 of each column (NaN where a tag has neither labels nor predictions)."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    tp = np.sum(labels & predicted, axis=0).astype(float)
    denominator = 2 * tp + np.sum(~labels & predicted, axis=0) + np.sum(labels & ~predicted, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)


def binary_report(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    """AUC and expected calibration error over the rows with weight > 0 (the observable ones)."""
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores).ravel()
    keep = np.ones(len(labels), dtype=bool) if weights is None else np.asarray(weights).ravel() > 0
    if not keep.any():
        return {"auc": float("nan"), "ece": float("nan"), "labelled": 0.0}
    return {"auc": roc_auc(labels[keep], scores[keep]), "ece": expected_calibration_error(labels[keep], scores[keep]),
            "labelled": float(keep.sum())}


def planted_interest_f1(predicted: Mapping[Hashable, Collection[str]], planted: Mapping[Hashable, Collection[str]]) -> dict[str, float]:
    """Micro precision/recall/F1 of predicted tag sets against planted interests, over the planted users."""
    tp = fp = fn = 0
    for user, truth in planted.items():
        guess = set(predicted.get(user, ()))
        truth = set(truth)
        tp += len(guess & truth)
        fp += len(guess - truth)
        fn += len(truth - guess)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
    return {"precision": precision, "recall": recall, "micro_f1": f1, "users": float(len(planted))}


def segment_agreement(predicted: Mapping[Hashable, str], planted: Mapping[Hashable, str],
                      matches: Mapping[str, Collection[str]]) -> float:
    """Share of planted users whose predicted segment is one that `matches[planted segment]` allows."""
    scored = [(predicted[u], s) for u, s in planted.items() if u in predicted]
    if not scored:
        return float("nan")
    return float(np.mean([p in matches.get(s, ()) for p, s in scored]))
