"""Score: the day's gold rows through the champion model into the staging profile and recommendations.

Users are scored in batches with `models:/portrait-profile@champion`: on the driver when the day is
small, with Spark `mapInArrow` (the model loaded once per partition) when it has more than
`score.distributed_above_users` users. Each user's embedding is matched against the item tower's
embeddings of the day's items (top `recommend.candidates`), then jobs/rerank.py drops consumed
(bought, rated, reviewed: `recommend.consumed_event_types`) and unavailable items, applies the business rules and diversifies. Nothing here is visible to analysts:
jobs/publish.py promotes a staged day only after it passed validation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from jobs.common.audit import write_audit
from jobs.common.config import Config
from jobs.common.delta import read_table, replace_dates
from jobs.common.errors import ConfigError, InputDataError
from jobs.common.step import StepResult, TableCount
from jobs.common.feature_windows import LONG, MEDIUM, FeatureWindows
from ml.itemitem import HISTORY_COLUMN
from ml.segments import SEGMENT_NAMES, segment_names, segment_rule

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from ml.score import Scorer

__all__ = ["SEGMENT_NAMES", "candidate_sources", "consumed_event_types", "run", "score_batch", "transform_consumed",
           "transform_profile"]

TAG_THRESHOLD = 0.5
TAGS_PER_USER = 5
TAG_EVIDENCE_TOP = 3    # an embedding candidate in one of the user's 3 strongest tags is explained by the tag

SCORED_SCHEMA = (
    "user_key string, interest_tags array<struct<tag:string,score:double>>, top_categories array<string>, "
    "model_segment string, model_churn double, user_embedding array<float>, "
    "candidates array<struct<item_id:string,score:double,source:string,evidence:string>>"
)


def transform_profile(features: "DataFrame", scored: "DataFrame", model_version: str,
                      churn_from_model: bool = True, *, windows: FeatureWindows) -> "DataFrame":
    """Readable profile columns from the features and the model's outputs.

    interest_tags, top_categories, segment (`model_segment`) and churn risk (`model_churn`) come
    from the model's heads. Activity, price band and value are transparent rules on the features
    (docs/features.md). Users the model did not score (none, normally) fall back to the segment
    rules; churn risk falls back to 1 - exp(-recency/7) when the champion's churn head was never
    trained (`churn_from_model` False: its 30-day window was not observable in the history). The rules
    read the columns of the medium and long feature windows (`windows`: active_days_30d, n_carts_30d,
    n_purchases_90d and monetary_90d with the default ones).
    """
    from pyspark.sql import functions as F

    f = features.join(scored, "user_key", "left")
    active_days = F.col(windows.name("active_days", MEDIUM))
    activity = (F.when(active_days >= 10, "high")
                .when(active_days >= 3, "medium")
                .when(active_days >= 1, "low").otherwise("inactive"))
    # Null, not made up, without purchases or carts to judge by (docs/features.md).
    bought_or_carted = F.col(windows.name("n_purchases", LONG)) + F.col(windows.name("n_carts", MEDIUM))
    price_band = (F.when(bought_or_carted == 0, F.lit(None).cast("string"))
                  .when(F.col("price_index") < 0.8, "budget")
                  .when(F.col("price_index") > 1.25, "premium").otherwise("mid"))
    rule_churn = F.round(1 - F.exp(-F.col("recency_days") / F.lit(7.0)), 4)
    churn = F.coalesce(F.round("model_churn", 4), rule_churn) if churn_from_model else rule_churn
    segment = F.coalesce(F.col("model_segment"), segment_rule(windows))
    names = F.create_map(*[F.lit(x) for pair in segment_names(windows).items() for x in pair])
    return f.select(
        "user_key", "as_of_date", "age_band", "gender", "city",
        F.coalesce("interest_tags", F.array().cast("array<struct<tag:string,score:double>>")).alias("interest_tags"),
        F.coalesce("top_categories", F.array().cast("array<string>")).alias("top_categories"),
        price_band.alias("price_band"),
        F.round("price_index", 3).alias("consumption_capacity"),
        activity.alias("activity_level"),
        F.when(F.col("avg_rating") > 0, F.round(F.col("avg_rating"), 2)).alias("avg_rating"),
        segment.alias("segment_id"),
        F.try_element_at(names, segment).alias("segment_name"),
        churn.cast("double").alias("churn_risk"),
        F.round(F.col(windows.name("monetary", LONG)), 2).alias("value_score"),
        "user_embedding",
        F.lit(model_version).alias("model_version"),
        "feature_version",
    )


def candidate_sources(candidate_categories: np.ndarray, top_tags: np.ndarray, seq_categories: np.ndarray,
                      seq_items: np.ndarray, candidate_items: np.ndarray | None = None,
                      seq_event_types: np.ndarray | None = None,
                      neighbour_items: np.ndarray | None = None,
                      item_item_items: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(source, evidence) for each candidate (users x candidates), the rule the re-ranker words:

    'seen' when the candidate itself is in the user's sequence (evidence: the event type of the most
    recent step on it; needs `candidate_items` and `seq_event_types`); else 'item_item' when the
    item-item term links it to an item of the user's whole history (evidence: `item_item_items`, that
    item, from ml.itemitem.ItemItem.evidence); else 'neighbour' when the
    neighbour term links it to an item of the sequence (evidence: `neighbour_items`, that item,
    from ml.neighbours.neighbour_evidence); else 'tag' when the candidate's category is one of the
    user's top tags (evidence: the category); else 'similar_item' when the user's sequence holds an
    item of that category (evidence: the most recent one); else 'embedding' (evidence empty).
    Arrays of category/item strings; '' pads.
    """
    users, n = candidate_categories.shape
    source = np.full((users, n), "embedding", dtype=object)
    evidence = np.full((users, n), "", dtype=object)
    if users == 0 or n == 0:
        return source, evidence
    is_tag = (candidate_categories[:, :, None] == top_tags[:, None, :]).any(axis=2) & (candidate_categories != "")
    source[is_tag] = "tag"
    evidence[is_tag] = candidate_categories[is_tag]
    if seq_categories.shape[1]:
        rows, cols, last = _latest_match(candidate_categories, seq_categories, ~is_tag)
        source[rows, cols] = "similar_item"
        evidence[rows, cols] = seq_items[rows, last]
    if neighbour_items is not None:
        linked = neighbour_items != ""
        source[linked] = "neighbour"
        evidence[linked] = neighbour_items[linked]
    if item_item_items is not None:
        linked = item_item_items != ""
        source[linked] = "item_item"
        evidence[linked] = item_item_items[linked]
    if candidate_items is not None and seq_event_types is not None and seq_items.shape[1]:
        rows, cols, last = _latest_match(candidate_items, seq_items)
        source[rows, cols] = "seen"
        if seq_event_types.shape[1]:         # rows without event types keep an empty evidence
            evidence[rows, cols] = seq_event_types[rows, last]
    return source, evidence


def _latest_match(candidates: np.ndarray, sequence: np.ndarray, eligible: np.ndarray | None = None):
    """(rows, cols, steps): every candidate [row, col] (where `eligible`) equal to some non-empty step
    of its row's sequence, and the most recent such step (sequences run oldest to newest)."""
    same = (candidates[:, :, None] == sequence[:, None, :]) & (sequence[:, None, :] != "")
    has = same.any(axis=2) if eligible is None else same.any(axis=2) & eligible
    last = sequence.shape[1] - 1 - np.argmax(same[:, :, ::-1], axis=2)
    rows, cols = np.nonzero(has)
    return rows, cols, last[rows, cols]


def _at(values: np.ndarray, top: np.ndarray) -> np.ndarray:
    """values[top] for candidate positions `top` (users x candidates), '' where top is -1."""
    if not len(values):
        return np.full(top.shape, "", dtype=object)
    return np.where(top >= 0, values[np.maximum(top, 0)], "")


def _strings(column, length: int) -> np.ndarray:
    """A list<string> Arrow column as a (rows, length) object array, '' padded, last `length` kept."""
    rows = column.to_pylist()
    out = np.full((len(rows), length), "", dtype=object)
    for r, values in enumerate(rows):
        values = (values or [])[-length:]
        out[r, :len(values)] = values
    return out


CONSUMED_COLUMN = "consumed_item_ids"   # what run() joins in: the items each user consumed (rerank drops them)


def _column_positions(users: "pa.Table", column: str, item_ids) -> list[list[int]] | None:
    """Each row's `column` (a list of item ids) as positions in `item_ids`, unknown ids dropped; None
    without the column. Consumed items (CONSUMED_COLUMN) go to top_items to pass over, so a user who rated
    most of their nearest items still gets a full list of candidates; the history (ml.itemitem.HISTORY_COLUMN)
    feeds the item-item term."""
    from ml.retrieval import positions

    if column not in users.column_names:
        return None
    return positions(users.column(column).to_pylist(), {item: i for i, item in enumerate(item_ids)})


def score_batch(scorer: "Scorer", users: "pa.Table", item_table, item_categories: np.ndarray,
                item_vectors: np.ndarray, n_candidates: int, neighbours=None, item_item=None) -> "pa.Table":
    """Model outputs and embedding candidates for one batch of gold rows, as an Arrow table (SCORED_SCHEMA).

    `item_table`, `item_categories` and `item_vectors` describe the day's items (Scorer.items), row i
    of each being item_table.item_ids[i]; `neighbours` is the day's item similarity for the
    neighbour term and `item_item` the day's EASE weights for the item-item term (both from all of
    the day's users, not only this batch), None without them. The item-item term reads each row's
    history from its `history_item_ids` column (ml.itemitem.HISTORY_COLUMN).
    """
    import pyarrow as pa

    from ml.retrieval import relative_scores, top_items

    item_ids = item_table.item_ids
    scores = scorer.score(users, item_table)
    spec = scorer.spec
    dim = scores.embeddings.shape[1] - 1          # the last component is the constant 1 of the bias trick
    order = np.argsort(-scores.tag_scores, axis=1, kind="stable")
    history = scores.history(item_table, neighbours, item_item, _column_positions(users, HISTORY_COLUMN, item_ids))
    top, raw = top_items(scores.embeddings, item_vectors, n_candidates, history=history,
                         excluded=_column_positions(users, CONSUMED_COLUMN, item_ids))
    relative = relative_scores(raw)
    tags = np.asarray(spec.tags, dtype=object)
    item_array = np.asarray(item_ids, dtype=object)
    candidate_categories = _at(np.asarray(item_categories, dtype=object), top)
    candidate_items = _at(item_array, top)
    seq_categories, seq_items, seq_event_types = (
        _strings(users.column(name), spec.sequence_length) if name in users.column_names
        else np.zeros((users.num_rows, 0), dtype=object)
        for name in ("seq_categories", "seq_item_ids", "seq_event_types"))
    linked = None
    if history is not None and history.uses_neighbours:
        from ml.neighbours import neighbour_evidence

        linked = _at(item_array, neighbour_evidence(history.positions, history.weights, history.neighbours, top))
    item_item_linked = None
    if history is not None and history.uses_item_item:
        item_item_linked = _at(item_array, history.item_item.evidence(history.item_histories, top, len(item_ids)))
    source, evidence = candidate_sources(candidate_categories, tags[order[:, :TAG_EVIDENCE_TOP]],
                                         seq_categories, seq_items, candidate_items, seq_event_types, linked,
                                         item_item_linked)
    rows: dict[str, list] = {k: [] for k in ("user_key", "interest_tags", "top_categories", "model_segment",
                                             "model_churn", "user_embedding", "candidates")}
    for u, key in enumerate(scores.user_keys):
        picked = [(str(tags[j]), round(float(scores.tag_scores[u, j]), 4)) for j in order[u, :TAGS_PER_USER]]
        rows["user_key"].append(key)
        rows["interest_tags"].append([{"tag": t, "score": s} for t, s in picked])
        rows["top_categories"].append([t for t, s in picked if s >= TAG_THRESHOLD] or [picked[0][0]])
        rows["model_segment"].append(spec.segments[int(np.argmax(scores.segment_probs[u]))])
        rows["model_churn"].append(float(np.clip(scores.churn[u], 0.0, 1.0)))
        rows["user_embedding"].append(scores.embeddings[u, :dim].astype(np.float32).tolist())
        valid = top[u] >= 0
        rows["candidates"].append([
            {"item_id": item_array[i], "score": float(s), "source": src, "evidence": ev}
            for i, s, src, ev in zip(top[u][valid], relative[u][valid], source[u][valid], evidence[u][valid])])
    return pa.Table.from_pydict(rows, schema=scored_arrow_schema())


def scored_arrow_schema() -> "pa.Schema":
    import pyarrow as pa

    return pa.schema([
        ("user_key", pa.string()),
        ("interest_tags", pa.list_(pa.struct([("tag", pa.string()), ("score", pa.float64())]))),
        ("top_categories", pa.list_(pa.string())),
        ("model_segment", pa.string()),
        ("model_churn", pa.float64()),
        ("user_embedding", pa.list_(pa.float32())),
        ("candidates", pa.list_(pa.struct([("item_id", pa.string()), ("score", pa.float64()),
                                           ("source", pa.string()), ("evidence", pa.string())]))),
    ])


def _partition_scorer(model_uri: str, version: str, item_table, item_categories: np.ndarray,
                      item_vectors: np.ndarray, n_candidates: int, batch_rows: int, neighbours=None,
                      item_item=None):
    """The mapInArrow function: loads the model once per partition (on the executor), then scores."""

    def score_partition(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        import os

        import pyarrow as pa

        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        from ml.score import load_scorer

        scorer = load_scorer(model_uri, version)
        for batch in batches:
            table = pa.Table.from_batches([batch])
            for start in range(0, table.num_rows, batch_rows):
                yield from score_batch(scorer, table.slice(start, batch_rows), item_table, item_categories,
                                       item_vectors, n_candidates, neighbours, item_item).to_batches()

    return score_partition


def _item_item(scorer: "Scorer", users: "pa.Table", item_table):
    """The day's item-item weights from every user's history (the rows' history_item_ids of `users`,
    all of the day's rows), on the driver; None for a model without the term."""
    histories = _column_positions(users, HISTORY_COLUMN, item_table.item_ids) if scorer.uses_item_item else None
    return None if histories is None else scorer.item_item(histories, item_table)


def score_users(spark: "SparkSession", cfg: Config, scorer: "Scorer", model_uri: str, users: "DataFrame",
                items: "pa.Table") -> tuple["DataFrame", int]:
    """Scored rows (SCORED_SCHEMA) for every row of `users`; distributed when there are many."""
    item_table, vectors = scorer.items(items)
    # vectors[i] and categories[i] belong to item_table.item_ids[i], the order of `items`
    categories = np.asarray([str(c) for c in items.column("category").to_pylist()], dtype=object)
    n_candidates = int(cfg.get("recommend.candidates", 100))
    batch_rows = int(cfg.get("score.batch_users", 4096))
    count = users.count()
    if count > int(cfg.get("score.distributed_above_users", 200_000)):
        # only the history column comes to the driver, for the item-item weights
        item_item = _item_item(scorer, users.select(HISTORY_COLUMN).toArrow(), item_table) \
            if scorer.uses_item_item and HISTORY_COLUMN in users.columns else None
        scorer_fn = _partition_scorer(model_uri, scorer.version, item_table, categories, vectors, n_candidates,
                                      batch_rows, scorer.spark_neighbours(users, item_table), item_item)
        return users.mapInArrow(scorer_fn, SCORED_SCHEMA), count
    tables = []
    arrow = users.toArrow()
    neighbours = scorer.neighbours(arrow, item_table)
    item_item = _item_item(scorer, arrow, item_table)
    for start in range(0, arrow.num_rows, batch_rows):
        tables.append(score_batch(scorer, arrow.slice(start, batch_rows), item_table, categories, vectors,
                                  n_candidates, neighbours, item_item))
    import pyarrow as pa

    scored = pa.concat_tables(tables) if tables else scored_arrow_schema().empty_table()
    return spark.createDataFrame(scored), count


def user_rows(spark: "SparkSession", cfg: Config, run_date: dt.date, tags: list[str] | None = None) -> "DataFrame":
    """gold.user_features of the day with the day's sequence arrays (seq_* columns).

    affinity_<tag> for each of the model's `tags` (ModelSpec.tags), by name from the day's vocabulary.
    """
    from pyspark.sql import functions as F

    from jobs.sequences import sequences_as_of
    from ml.dataset import vocab_as_of, with_affinity_columns

    features = read_table(spark, cfg, "gold.user_features").where(F.col("as_of_date") == F.lit(run_date))
    sequences = sequences_as_of(spark, cfg, run_date).select(
        "user_key", F.col("item_ids").alias("seq_item_ids"), F.col("categories").alias("seq_categories"),
        F.col("event_types").alias("seq_event_types"), F.col("gaps").alias("seq_gaps"))
    vocab = vocab_as_of(spark, cfg, run_date)
    return with_affinity_columns(features, vocab, tags if tags is not None else vocab).join(sequences, "user_key", "left")


def consumed_event_types(cfg: Config) -> tuple[str, ...]:
    """recommend.consumed_event_types: the event types after which an item counts as had (bought,
    rated, reviewed) and is never recommended to that user again; a clear error for a typo."""
    from jobs.feature_state import EVENT_TYPES

    types = cfg.get("recommend.consumed_event_types")
    if isinstance(types, str) or not isinstance(types, (list, tuple)):
        raise ConfigError(f"recommend.consumed_event_types must be a list of event types, got {types!r}")
    unknown = sorted(set(map(str, types)) - set(EVENT_TYPES))
    if unknown:
        raise ConfigError(f"recommend.consumed_event_types has unknown event type(s) {', '.join(unknown)}; "
                          f"event types are: {', '.join(EVENT_TYPES)}")
    return tuple(sorted(set(map(str, types))))


def transform_consumed(events: "DataFrame", event_types: tuple[str, ...], after: dt.date,
                       through: dt.date) -> "DataFrame":
    """Distinct (user_key, item_id) pairs with an event of `event_types` dated in (after, through]."""
    from pyspark.sql import functions as F

    if not event_types:
        return events.sparkSession.createDataFrame([], "user_key string, item_id string")
    return events.where(
        F.col("event_type").isin(*event_types) & F.col("item_id").isNotNull()
        & (F.col("event_date") > F.lit(after)) & (F.col("event_date") <= F.lit(through))
    ).select("user_key", "item_id").distinct()


def _check_feature_version(features: "DataFrame", cfg: Config, run_date: dt.date) -> None:
    """Gold features of other windows have other columns: say so, instead of a missing-column error."""
    from jobs.common.feature_windows import FeatureWindows
    from jobs.features import feature_version

    wanted = feature_version(FeatureWindows.from_config(cfg))
    found = sorted({r["feature_version"] for r in features.select("feature_version").distinct().collect()})
    if found != [wanted]:
        raise InputDataError(
            f"gold.user_features of {run_date} has feature version {', '.join(found)}, but the settings "
            f"(features.windows) give {wanted}; run the features step for {run_date} again")


def preflight(cfg: Config, run_date: dt.date) -> None:
    """Before Spark starts: the MLflow tracking store answers, or one line in seconds (not minutes of retries)."""
    from ml.registry import check_tracking_store

    check_tracking_store(cfg)


def run(spark: "SparkSession", cfg: Config, run_date: dt.date) -> StepResult:
    from pyspark.sql import functions as F

    from jobs.rerank import rerank, settings
    from ml.registry import champion_uri
    from ml.score import apply_overrides, load_champion

    features = read_table(spark, cfg, "gold.user_features").where(F.col("as_of_date") == F.lit(run_date))
    if not features.limit(1).count():
        raise InputDataError(f"gold.user_features has no rows for {run_date}; run the features step for that date")
    _check_feature_version(features, cfg, run_date)
    item_features = read_table(spark, cfg, "gold.item_features").where(F.col("as_of_date") == F.lit(run_date))
    items = item_features.drop("as_of_date").toArrow()
    if items.num_rows == 0:
        raise InputDataError(f"gold.item_features has no rows for {run_date}; run the features step for that date")
    scorer = apply_overrides(load_champion(cfg), cfg)
    version = scorer.version
    look_back = run_date - dt.timedelta(days=int(cfg.get("recommend.exclude_bought_days")))
    consumed = transform_consumed(read_table(spark, cfg, "silver.events"), consumed_event_types(cfg),
                                  look_back, run_date).cache()
    # Candidates are drawn past the consumed items, so that the re-ranker's exclusion leaves k of them.
    users = user_rows(spark, cfg, run_date, scorer.spec.tags).join(
        consumed.groupBy("user_key").agg(F.sort_array(F.collect_set("item_id")).alias(CONSUMED_COLUMN)),
        "user_key", "left")
    if scorer.uses_item_item:          # each user's whole history for the item-item term (ml/itemitem.py)
        from ml.itemitem import ItemItemSettings, history_pairs

        days = ItemItemSettings(**scorer.spec.item_item).history_days
        users = users.join(history_pairs(read_table(spark, cfg, "silver.events"), run_date, days)
                           .groupBy("user_key").agg(F.sort_array(F.collect_set("item_id")).alias(HISTORY_COLUMN)),
                           "user_key", "left")
    scored, users_in = score_users(spark, cfg, scorer, champion_uri(cfg), users, items)
    scored = scored.cache()

    result = StepResult("score", run_date)
    profile = transform_profile(features, scored.drop("candidates"), version, scorer.spec.churn_trained,
                                windows=FeatureWindows.from_config(cfg))
    written = replace_dates(profile, cfg, "staging.user_profile", [run_date])
    result.tables.append(TableCount("staging.user_profile", users_in, written))

    candidates = scored.select("user_key", F.explode("candidates").alias("c")).select(
        "user_key", "c.item_id", "c.score", "c.source", "c.evidence")
    available = F.col("available") if "available" in item_features.columns else F.lit(True)
    catalogue = item_features.select("item_id", "category", "brand", "price", available.alias("available"))
    recs = rerank(candidates, consumed, catalogue, **settings(cfg, scorer.spec.mmr_lambda))
    recs = recs.select("user_key", F.lit(run_date).alias("as_of_date"), "rank", "item_id", "score", "reason",
                       F.lit(version).alias("model_version"))
    written = replace_dates(recs, cfg, "staging.recommendations", [run_date])
    result.tables.append(TableCount("staging.recommendations", written, written))
    scored.unpersist()
    consumed.unpersist()
    write_audit(spark, cfg, "score", run_date, result.tables)
    result.details.update({"model_version": version, "users": users_in})
    return result

