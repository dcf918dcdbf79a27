"""Interest tags against what happened next: the published tags, the user's past and the popular tags.

`portrait evaluate` (portrait/evaluate.py) calls `tag_inputs` and `evaluate_tags` after the pipeline ran:

- users: the truth users (held-out interactions, a user the pipeline saw in training) whose held-out
  items have at least one category in the run date's vocabulary (`gold.category_vocab`, through
  `jobs.common.catalogue.tag_of`, so a category past the cap counts as `other` as the profile does);
- truth: the set of tag-level categories of the user's held-out items (MovieLens: the genres of the
  films rated next);
- scorers, each naming at most `k` tags per user (evaluate.tags.k, 3):
  `published`: `publish.user_profile.interest_tags` of the run date, strongest first;
  `history`: the user's own most frequent categories in the training events (ties: the vocabulary's order);
  `popularity`: the categories of the most training events, the same list for everyone;
- figures: precision, recall and F1 over all (user, tag) pairs (micro), the mean per-user F1 (macro), and
  the hit rate (share of users with at least one right tag).

A dataset whose items have no category (Instacart's products come with none) skips this part and says so.
Everything after `tag_inputs` is plain Python over small dicts.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from jobs.common.config import Config

SCORERS = ("published", "history", "popularity")
FIGURES = ("precision", "recall", "f1", "macro_f1", "hit_rate")

Tags = Mapping[str, Sequence[str]]   # user_key -> tags, best first


def top_tags(counts: Mapping[str, int], order: Sequence[str], k: int) -> list[str]:
    """The `k` tags with the most counts; ties in the vocabulary's order (`order`), then by name."""
    position = {tag: i for i, tag in enumerate(order)}
    ranked = sorted((t for t, n in counts.items() if n > 0),
                    key=lambda t: (-counts[t], position.get(t, len(position)), t))
    return ranked[:k]


def score_tags(truth: Mapping[str, set[str]], predicted: Tags, k: int) -> dict[str, float]:
    """FIGURES of one scorer's first `k` tags per user against `truth` (users without a prediction name none).

    micro: hits / tags named (precision), hits / true tags (recall), their harmonic mean (f1);
    macro_f1: the mean of each user's F1 (0 for a user with no hit); hit_rate: users with a hit / users.
    """
    if not truth:
        raise ValueError("no user to score tags on: truth is empty")
    hits = named = true = users_hit = 0
    user_f1 = 0.0
    for user, actual in truth.items():
        guess = list(dict.fromkeys(predicted.get(user, ())))[:k]
        hit = len(actual.intersection(guess))
        hits += hit
        named += len(guess)
        true += len(actual)
        users_hit += hit > 0
        if hit:
            p, r = hit / len(guess), hit / len(actual)
            user_f1 += 2 * p * r / (p + r)
    precision = hits / named if named else 0.0
    recall = hits / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(truth)
    return {"precision": precision, "recall": recall, "f1": f1, "macro_f1": user_f1 / n,
            "hit_rate": users_hit / n, "users": float(n)}


def evaluate_tags(truth: Mapping[str, set[str]], published: Tags, history: Mapping[str, Mapping[str, int]],
                  vocab: Sequence[str], k: int) -> dict[str, dict[str, float]]:
    """{scorer: figures} for the published tags and the two baselines built from `history`
    (user -> {tag: training events}) on the same truth users."""
    total: Counter[str] = Counter()
    for counts in history.values():
        total.update(counts)
    popular = top_tags(total, vocab, k)
    predictions: dict[str, Tags] = {
        "published": published,
        "history": {user: top_tags(history.get(user, {}), vocab, k) for user in truth},
        "popularity": {user: popular for user in truth},
    }
    return {name: score_tags(truth, predictions[name], k) for name in SCORERS}


def table_markdown(results: Mapping[str, Mapping[str, float]], k: int) -> str:
    """One row per scorer."""
    lines = [f"| interest tags (top {k}) | precision | recall | F1 | macro F1 | hit rate | users |",
             "|---|---|---|---|---|---|---|"]
    for name in [s for s in SCORERS if s in results]:
        r = results[name]
        lines.append(f"| {name} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | "
                     f"{r['macro_f1']:.4f} | {r['hit_rate']:.4f} | {int(r['users']):,} |")
    return "\n".join(lines)


def transform_item_tags(items: "DataFrame", vocab: Sequence[str]) -> "DataFrame":
    """(item_id, tag): each item's categories as vocabulary entries (`tag_of`); unknown and uncounted ones dropped."""
    from pyspark.sql import functions as F

    from jobs.common.catalogue import tag_of, with_categories

    exploded = with_categories(items).select("item_id", F.explode("categories").alias("category"))
    return (exploded.select("item_id", tag_of(F.col("category"), vocab).alias("tag"))
            .where(F.col("tag").isNotNull()).distinct())


def tag_inputs(spark: "SparkSession", lake: "Config", heldout: "pd.DataFrame", train: "DataFrame",
               run_date: dt.date) -> tuple[dict[str, set[str]], dict[str, list[str]],
                                           dict[str, dict[str, int]], list[str]] | str:
    """(truth, published, history, vocab) of the run date, or why tags cannot be scored (a sentence).

    `heldout` holds (user_key, item_id) of the held-out interactions; `train` the training events
    (user_key, item_id) the baselines see; only users present in both are scored.
    """
    from pyspark.sql import functions as F

    from jobs.common.catalogue import read_category_vocab
    from jobs.common.delta import read_table, table_exists
    from jobs.common.errors import InputDataError

    for table in ("silver.items", "publish.user_profile"):
        if not table_exists(spark, lake, table):
            return f"{table} is missing under {lake.lakehouse_root}"
    try:
        vocab = read_category_vocab(spark, lake, run_date)
    except InputDataError as exc:
        if table_exists(spark, lake, "gold.category_vocab"):   # the features step ran: no category to tag with
            return f"no item has a category on {run_date} (gold.category_vocab holds no row for it)"
        return str(exc)
    items = read_table(spark, lake, "silver.items").where(F.col("snapshot_date") <= F.lit(run_date))
    newest = items.groupBy("item_id").agg(F.max("snapshot_date").alias("snapshot_date"))
    item_tags = transform_item_tags(items.join(newest, ["item_id", "snapshot_date"]), vocab).cache()
    known_users = train.select("user_key").distinct()
    held = spark.createDataFrame(heldout[["user_key", "item_id"]], "user_key string, item_id string")
    truth_rows = (held.join(known_users, "user_key", "left_semi").join(item_tags, "item_id")
                  .select("user_key", "tag").distinct().collect())
    truth: dict[str, set[str]] = {}
    for row in truth_rows:
        truth.setdefault(row["user_key"], set()).add(row["tag"])
    if not truth:
        return "no held-out item of a training user has a category in the vocabulary"
    history: dict[str, dict[str, int]] = {}
    for row in (train.where(F.col("item_id").isNotNull()).join(item_tags, "item_id")
                .groupBy("user_key", "tag").count().collect()):
        history.setdefault(row["user_key"], {})[row["tag"]] = int(row["count"])
    profiles = (read_table(spark, lake, "publish.user_profile").where(F.col("as_of_date") == F.lit(run_date))
                .select("user_key", "interest_tags").collect())
    published = {row["user_key"]: [t["tag"] for t in sorted(row["interest_tags"] or [], key=lambda t: -t["score"])]
                 for row in profiles}
    return truth, published, history, vocab


def score_published_tags(spark: "SparkSession", lake: "Config", heldout: "pd.DataFrame", train: "DataFrame",
                         run_date: dt.date, k: int) -> dict[str, Any]:
    """{'results', 'facts', 'table'} for the run date, or {'skipped': why}."""
    inputs = tag_inputs(spark, lake, heldout, train, run_date)
    if isinstance(inputs, str):
        return {"skipped": inputs}
    truth, published, history, vocab = inputs
    results = evaluate_tags(truth, published, history, vocab, k)
    facts = {"tag_users": len(truth), "tag_vocabulary": len(vocab),
             "tag_truth_per_user": round(sum(len(t) for t in truth.values()) / len(truth), 3),
             "tag_users_with_published_tags": sum(1 for u in truth if published.get(u))}
    return {"results": results, "facts": facts, "table": table_markdown(results, k)}


__all__ = ["FIGURES", "SCORERS", "evaluate_tags", "score_published_tags", "score_tags", "table_markdown",
           "tag_inputs", "top_tags", "transform_item_tags"]
