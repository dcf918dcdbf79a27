"""Baseline recommenders (popularity, item co-occurrence, ALS, EASE) and the temporal split that evaluates them alike.

Every recommender takes silver.events-shaped training rows (user_key, item_id, event_type,
event_date), returns top-k rows (user_key, item_id, rank, score) with ranks 1..n per user without
gaps, and by default never recommends an item the user bought in training, the same policy as
jobs.score.transform_recommendations. Ties are broken by item_id so reruns agree.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np

from jobs.features import EVENT_WEIGHTS
from ml.evaluate import ranking_metrics_spark

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

SIMILARITIES = ("jaccard", "lift", "count")


# --- Split and evaluation ----------------------------------------------------------------------

def temporal_split(
    events: "DataFrame", cutoff_date: dt.date, horizon_days: int,
    truth_event_types: tuple[str, ...] | None = None, known_users_only: bool = True,
) -> tuple["DataFrame", "DataFrame"]:
    """Train on events dated on or before the cut-off; truth is what happens in (cutoff, cutoff + horizon].

    Truth is the distinct (user_key, item_id) pairs in the horizon, of any event type carrying an
    item or only of `truth_event_types` (e.g. ("purchase",)). Events after the horizon are dropped.
    With `known_users_only`, truth keeps only users with training events: co-occurrence and ALS
    cannot score anyone else, so cold-start users would only measure the fallback, not the model.
    """
    from pyspark.sql import functions as F

    if horizon_days < 1:
        raise ValueError(f"horizon_days must be at least 1, got {horizon_days}")
    end = cutoff_date + dt.timedelta(days=horizon_days)
    train = events.where(F.col("event_date") <= F.lit(cutoff_date))
    future = events.where(
        (F.col("event_date") > F.lit(cutoff_date)) & (F.col("event_date") <= F.lit(end)) & F.col("item_id").isNotNull()
    )
    if truth_event_types is not None:
        future = future.where(F.col("event_type").isin(*truth_event_types))
    truth = future.select("user_key", "item_id").distinct()
    if known_users_only:
        truth = truth.join(train.select("user_key").distinct(), "user_key", "left_semi")
    return train, truth


def evaluate_recommender(recs: "DataFrame", truth: "DataFrame", k: int, catalog_size: int) -> dict[str, float]:
    """precision/recall/ndcg/map at k (see ml.evaluate for the conventions), plus catalogue coverage:
    the share of `catalog_size` items that appear in some user's top k."""
    from pyspark.sql import functions as F

    if catalog_size < 1:
        raise ValueError(f"catalog_size must be at least 1, got {catalog_size}")
    metrics = ranking_metrics_spark(recs, truth, k)
    shown = recs.where(F.col("rank") <= k).select("item_id").distinct().count()
    return {**metrics, "coverage": shown / catalog_size, "k": k}


# --- Shared pieces -----------------------------------------------------------------------------

def _event_weight() -> "Column":
    from pyspark.sql import functions as F

    weights = F.create_map(*[F.lit(x) for pair in EVENT_WEIGHTS.items() for x in pair])
    return F.coalesce(F.try_element_at(weights, F.col("event_type")), F.lit(0.0)).cast("double")


def weighted_events(train: "DataFrame") -> "DataFrame":
    """Events that say something about an item: an item id and a positive event weight."""
    from pyspark.sql import functions as F

    return train.where(F.col("item_id").isNotNull()).withColumn("weight", _event_weight()).where(F.col("weight") > 0)


def _excluded(train: "DataFrame", exclude_purchased: bool, remove_seen: bool) -> "DataFrame | None":
    """(user_key, item_id) pairs that may not be recommended, or None when nothing is excluded."""
    from pyspark.sql import functions as F

    if remove_seen:
        rows = train.where(F.col("item_id").isNotNull())
    elif exclude_purchased:
        rows = train.where(F.col("item_id").isNotNull() & (F.col("event_type") == "purchase"))
    else:
        return None
    return rows.select("user_key", "item_id").distinct()


def _most_excluded(excluded: "DataFrame | None") -> int:
    """Largest number of excluded items of any one user: how many extra candidates to fetch."""
    from pyspark.sql import functions as F

    if excluded is None:
        return 0
    row = excluded.groupBy("user_key").count().agg(F.max("count")).collect()[0]
    return int(row[0] or 0)


def _top_k(candidates: "DataFrame", k: int, excluded: "DataFrame | None") -> "DataFrame":
    """Drop excluded pairs, then keep each user's k best by score (item_id breaks ties)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if excluded is not None:
        candidates = candidates.join(excluded, ["user_key", "item_id"], "left_anti")
    order = Window.partitionBy("user_key").orderBy(F.desc("score"), "item_id")
    return candidates.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= k).select(
        "user_key", "item_id", F.col("rank").cast("int"), F.col("score").cast("double")
    )


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


# --- Recommenders ------------------------------------------------------------------------------

def item_popularity(train: "DataFrame") -> "DataFrame":
    """(item_id, score): the sum of event weights (jobs.features.EVENT_WEIGHTS) per item."""
    from pyspark.sql import functions as F

    return weighted_events(train).groupBy("item_id").agg(F.sum("weight").alias("score"))


def popularity(
    train: "DataFrame", users: "DataFrame", k: int, exclude_purchased: bool = True, remove_seen: bool = False
) -> "DataFrame":
    """The same most-interacted items for every user in `users` (a frame with user_key), minus exclusions.

    Only the k + (largest exclusion list) most popular items are crossed with the users, so every
    user still gets k items where the catalogue allows, without a users x catalogue product.
    """
    from pyspark.sql import functions as F

    _check_k(k)
    excluded = _excluded(train, exclude_purchased, remove_seen)
    n_candidates = k + _most_excluded(excluded)
    top_items = item_popularity(train).orderBy(F.desc("score"), "item_id").limit(n_candidates)
    candidates = users.select("user_key").distinct().crossJoin(F.broadcast(top_items))
    return _top_k(candidates, k, excluded)


def user_affinity(train: "DataFrame", half_life_days: float | None = 30.0, as_of: dt.date | None = None) -> "DataFrame":
    """(user_key, item_id, affinity): event weights decayed by 0.5 ** (age_days / half_life_days).

    Age counts from `as_of`, by default the newest training date; `half_life_days=None` turns decay off.
    """
    from pyspark.sql import functions as F

    weighted = weighted_events(train)
    if half_life_days is not None:
        if half_life_days <= 0:
            raise ValueError(f"half_life_days must be positive or None, got {half_life_days}")
        if as_of is None:
            as_of = train.agg(F.max("event_date")).collect()[0][0]
        age = F.datediff(F.lit(as_of), F.col("event_date"))
        decay = F.pow(F.lit(0.5), age / F.lit(float(half_life_days)))
        weighted = weighted.withColumn("weight", F.col("weight") * decay)
    return weighted.groupBy("user_key", "item_id").agg(F.sum("weight").alias("affinity"))


def item_similarity(train: "DataFrame", similarity: str = "jaccard", min_cooccurrence: int = 1) -> "DataFrame":
    """(item_i, item_j, cooccurrence, similarity) for every pair of items some user touched both of.

    cooccurrence(i, j) counts distinct users; the diagonal holds each item's user count. jaccard =
    c_ij / (c_ii + c_jj - c_ij); lift = c_ij / (c_ii * c_jj); count = c_ij. Pairs seen by fewer
    than `min_cooccurrence` users are dropped (SAR's threshold).
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    return pair_similarity(weighted_events(train).select("user_key", "item_id").distinct(), similarity, min_cooccurrence)


def pair_similarity(pairs: "DataFrame", similarity: str, min_cooccurrence: int = 1) -> "DataFrame":
    """item_similarity of distinct (user_key, item_id) rows; `similarity` may also be cosine,
    c_ij / sqrt(c_ii * c_jj) (ml/neighbours.py's)."""
    from pyspark.sql import functions as F

    counts = pairs.alias("a").join(pairs.alias("b"), "user_key").groupBy(
        F.col("a.item_id").alias("item_i"), F.col("b.item_id").alias("item_j")
    ).agg(F.count(F.lit(1)).alias("cooccurrence"))
    users_per_item = pairs.groupBy(F.col("item_id").alias("item_i")).agg(F.count(F.lit(1)).alias("n_i"))
    with_n = counts.where(F.col("cooccurrence") >= min_cooccurrence).join(users_per_item, "item_i").join(
        users_per_item.select(F.col("item_i").alias("item_j"), F.col("n_i").alias("n_j")), "item_j"
    )
    c, n_i, n_j = (F.col(name).cast("double") for name in ("cooccurrence", "n_i", "n_j"))
    score = {"jaccard": c / (n_i + n_j - c), "lift": c / (n_i * n_j), "count": c,
             "cosine": c / F.sqrt(n_i * n_j)}[similarity]
    return with_n.select("item_i", "item_j", F.col("cooccurrence").cast("long"), score.alias("similarity"))


def cooccurrence(
    train: "DataFrame", k: int, similarity: str = "jaccard", half_life_days: float | None = 30.0,
    as_of: dt.date | None = None, min_cooccurrence: int = 1, remove_seen: bool = False, exclude_purchased: bool = True,
) -> "DataFrame":
    """SAR-like item-to-item recommender: score(u, j) = sum_i affinity(u, i) * similarity(i, j).

    Unlike SAR, seen items stay eligible by default (only purchases are excluded, as in publish);
    pass remove_seen=True for SAR's behaviour. Only users with training events get rows.
    """
    from pyspark.sql import functions as F

    _check_k(k)
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    affinity = user_affinity(train, half_life_days, as_of)
    sim = item_similarity(train, similarity, min_cooccurrence)
    candidates = affinity.join(sim, affinity["item_id"] == sim["item_i"]).groupBy(
        "user_key", F.col("item_j").alias("item_id")
    ).agg(F.sum(F.col("affinity") * F.col("similarity")).alias("score"))
    return _top_k(candidates, k, _excluded(train, exclude_purchased, remove_seen))


def als(
    train: "DataFrame", k: int, rank: int = 16, max_iter: int = 10, reg: float = 0.1, alpha: float = 10.0,
    seed: int = 7, remove_seen: bool = False, exclude_purchased: bool = True, num_blocks: int | None = None,
) -> "DataFrame":
    """Implicit-feedback ALS (Spark MLlib, implicitPrefs=True) on summed event weights as confidence.

    Ids are indexed alphabetically (StringIndexer, alphabetAsc) so a fixed seed gives the same
    factors on every run; k + (largest exclusion list) items are fetched per user so exclusions
    still leave k. Scores are ALS's predicted preferences (roughly 0..1). `num_blocks` sets both
    user and item blocks (MLlib's default, 10, when None); tiny inputs run faster with 1.
    """
    from pyspark.ml.feature import StringIndexer
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    _check_k(k)
    ratings = weighted_events(train).groupBy("user_key", "item_id").agg(F.sum("weight").alias("confidence"))
    indexer = StringIndexer(
        inputCols=["user_key", "item_id"], outputCols=["user_idx", "item_idx"], stringOrderType="alphabetAsc"
    )
    indexed = indexer.fit(ratings).transform(ratings).select(
        "user_key", "item_id", F.col("user_idx").cast("int"), F.col("item_idx").cast("int"), "confidence"
    )
    estimator = ALS(
        rank=rank, maxIter=max_iter, regParam=reg, alpha=alpha, seed=seed, implicitPrefs=True,
        userCol="user_idx", itemCol="item_idx", ratingCol="confidence",
    )
    if num_blocks is not None:
        estimator = estimator.setNumBlocks(num_blocks)
    model = estimator.fit(indexed)
    excluded = _excluded(train, exclude_purchased, remove_seen)
    raw = model.recommendForAllUsers(k + _most_excluded(excluded)).select(
        "user_idx", F.explode("recommendations").alias("r")
    ).select("user_idx", F.col("r.item_idx").alias("item_idx"), F.col("r.rating").alias("score"))
    users = indexed.select("user_key", "user_idx").distinct()
    items = indexed.select("item_id", "item_idx").distinct()
    candidates = raw.join(users, "user_idx").join(items, "item_idx").select("user_key", "item_id", "score")
    return _top_k(candidates, k, excluded)


def ease_weights(interactions: np.ndarray, l2: float) -> np.ndarray:
    """EASE's item-item matrix (Steck 2019) from a 0/1 users x items matrix, closed form:
    P = (XᵀX + λI)⁻¹, B = I - P·diag(1/diag(P)), so B_ij = -P_ij / P_jj off the diagonal and B_jj = 0."""
    if not l2 > 0:
        raise ValueError(f"the EASE L2 weight (lambda) must be positive, got {l2}")
    x = np.asarray(interactions, dtype=np.float64)
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def ease(
    train: "DataFrame", k: int, l2: float = 500.0, max_items: int | None = 10_000, remove_seen: bool = False,
    exclude_purchased: bool = True, batch_users: int = 1024,
) -> "DataFrame":
    """EASE (embarrassingly shallow autoencoder): score(u, j) = sum_i x_ui * B_ij, x the user's 0/1
    interactions (any positively weighted event), B from `ease_weights`. Fitted on the driver with
    numpy: a dense items x items inverse, so only the `max_items` items most users touched are
    modelled (None: all); the rest are never recommended. Only users with training events get rows.
    """
    import pandas as pd
    from pyspark.sql import functions as F

    _check_k(k)
    pairs = weighted_events(train).select("user_key", "item_id").distinct().toPandas()
    excluded = _excluded(train, exclude_purchased, remove_seen)
    spark = train.sparkSession
    schema = "user_key string, item_id string, rank int, score double"
    if pairs.empty:
        return spark.createDataFrame([], schema)
    users_per_item = pairs.groupby("item_id").size().reset_index(name="n")
    kept = users_per_item.sort_values(["n", "item_id"], ascending=[False, True], kind="mergesort")["item_id"]
    kept = kept.to_numpy()[:max_items] if max_items else kept.to_numpy()
    items = np.sort(kept)
    item_index = pd.Series(np.arange(len(items)), index=items)
    users = np.sort(pairs["user_key"].unique())
    user_index = pd.Series(np.arange(len(users)), index=users)
    pairs = pairs[pairs["item_id"].isin(item_index.index)]
    x = np.zeros((len(users), len(items)), dtype=np.float64)
    x[user_index[pairs["user_key"]].to_numpy(), item_index[pairs["item_id"]].to_numpy()] = 1.0
    weights = ease_weights(x, l2)
    blocked = np.zeros_like(x, dtype=bool)
    if excluded is not None:
        ex = excluded.toPandas()
        ex = ex[ex["item_id"].isin(item_index.index) & ex["user_key"].isin(user_index.index)]
        blocked[user_index[ex["user_key"]].to_numpy(), item_index[ex["item_id"]].to_numpy()] = True
    n_top = min(k, len(items))
    rows = []
    for start in range(0, len(users), batch_users):
        # Rounded so that float noise of the inverse does not decide ties that item_id should break.
        scores = np.round(x[start:start + batch_users] @ weights, 9)
        scores[blocked[start:start + batch_users]] = -np.inf
        # Best score first, then the smaller item_id (items are sorted: a stable sort keeps column order).
        order = np.argsort(-scores, axis=1, kind="stable")[:, :n_top]
        for row, user in enumerate(users[start:start + batch_users]):
            picked = [(j, scores[row, j]) for j in order[row] if np.isfinite(scores[row, j])]
            rows += [(user, items[j], rank, float(s)) for rank, (j, s) in enumerate(picked, start=1)]
    out = pd.DataFrame(rows, columns=["user_key", "item_id", "rank", "score"])
    return spark.createDataFrame(out, schema).select("user_key", "item_id", F.col("rank").cast("int"), "score")
