"""Score: the day's features through the champion model into the staging profile and recommendations.

Nothing here is visible to analysts: jobs/publish.py promotes a staged day only after it passed validation.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from jobs.common.audit import write_audit
from jobs.common.config import Config
from jobs.common.delta import read_table, replace_dates
from jobs.common.errors import InputDataError
from jobs.common.step import StepResult, TableCount
from jobs.common.taxonomy import TOP_LEVEL
from jobs.features import NUMERIC_FEATURES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

TAG_THRESHOLD = 0.5
TAGS_PER_USER = 5

PROFILE_SCHEMA = (
    "user_key string, interest_tags array<struct<tag:string,score:double>>, top_categories array<string>, "
    "user_embedding array<float>"
)


def transform_profile(features: "DataFrame", scored: "DataFrame", model_version: str) -> "DataFrame":
    """Readable profile columns from features and model scores.

    Activity, price band, segment, churn risk and value score are transparent rules on the features
    until the model grows heads for them; each rule is documented in docs/features.md.
    """
    from pyspark.sql import functions as F

    f = features.join(scored, "user_key", "left")
    activity = (F.when(F.col("active_days_30d") >= 10, "high")
                .when(F.col("active_days_30d") >= 3, "medium")
                .when(F.col("active_days_30d") >= 1, "low").otherwise("inactive"))
    price_band = (F.when(F.col("n_purchases_90d") + F.col("n_carts_30d") == 0, "unknown")
                  .when(F.col("price_index") < 0.8, "budget")
                  .when(F.col("price_index") > 1.25, "premium").otherwise("mid"))
    churn_risk = F.round(1 - F.exp(-F.col("recency_days") / F.lit(7.0)), 4)
    segment = (F.when(F.col("n_events_30d") == 0, "dormant")
               .when(F.col("recency_days") >= 5, "at_risk")
               .when(F.col("n_purchases_90d") == 0, "browser")
               .when(F.col("price_index") < 0.8, "bargain_hunter")
               .when(F.col("price_index") > 1.25, "premium_shopper")
               .otherwise("regular"))
    segment_names = F.create_map(*[F.lit(x) for pair in SEGMENT_NAMES.items() for x in pair])
    return f.select(
        "user_key", "as_of_date", "age_band", "gender", "city",
        F.coalesce("interest_tags", F.array().cast("array<struct<tag:string,score:double>>")).alias("interest_tags"),
        F.coalesce("top_categories", F.array().cast("array<string>")).alias("top_categories"),
        price_band.alias("price_band"),
        F.round("price_index", 3).alias("consumption_capacity"),
        activity.alias("activity_level"),
        F.when(F.col("avg_rating") > 0, F.round(F.col("avg_rating"), 2)).alias("avg_rating"),
        segment.alias("segment_id"),
        F.try_element_at(segment_names, segment).alias("segment_name"),
        churn_risk.alias("churn_risk"),
        F.round(F.col("monetary_90d"), 2).alias("value_score"),
        "user_embedding",
        F.lit(model_version).alias("model_version"),
        "feature_version",
    )


SEGMENT_NAMES = {
    "dormant": "Dormant (no activity in 30 days)",
    "at_risk": "At risk (quiet for 5+ days)",
    "browser": "Browser (active, no purchase in 90 days)",
    "bargain_hunter": "Bargain hunter (buys below category median)",
    "premium_shopper": "Premium shopper (buys above category median)",
    "regular": "Regular shopper",
}


def transform_recommendations(
    profile: "DataFrame", items: "DataFrame", purchased: "DataFrame", k: int, candidate_categories: int
) -> "DataFrame":
    """Top-k popular items from each user's strongest tags, never an item the user already bought.

    Score = tag score x item popularity share within its category; ranks are 1..k without gaps.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    tags = profile.select("user_key", "as_of_date", F.posexplode("interest_tags").alias("tag_rank", "t")).where(
        F.col("tag_rank") < candidate_categories
    ).select("user_key", "as_of_date", F.col("t.tag").alias("category"), F.col("t.score").alias("tag_score"))
    share = items.withColumn(
        "pop_share",
        (F.col("popularity") + 1e-6) / F.sum(F.col("popularity") + 1e-6).over(Window.partitionBy("category")),
    )
    candidates = tags.join(share, "category").join(purchased, ["user_key", "item_id"], "left_anti")
    ranked = candidates.withColumn("score", F.col("tag_score") * F.col("pop_share")).withColumn(
        "rank", F.row_number().over(Window.partitionBy("user_key").orderBy(F.desc("score"), "item_id"))
    ).where(F.col("rank") <= k)
    return ranked.select(
        "user_key", "as_of_date", F.col("rank").cast("int"), "item_id", F.round("score", 6).alias("score"),
        F.format_string("popular in %s, your interest tag (%.2f)", F.col("category"), F.col("tag_score")).alias("reason"),
    )


def scores_frame(spark: "SparkSession", user_keys: list[str], tag_scores, embeddings) -> "DataFrame":
    rows = []
    for key, scores, vector in zip(user_keys, tag_scores, embeddings):
        order = sorted(range(len(TOP_LEVEL)), key=lambda i: (-scores[i], i))
        tags = [(TOP_LEVEL[i], round(float(scores[i]), 4)) for i in order[:TAGS_PER_USER]]
        rows.append((key, tags, [t for t, s in tags if s >= TAG_THRESHOLD] or [tags[0][0]],
                     [float(v) for v in vector]))
    return spark.createDataFrame(rows, PROFILE_SCHEMA)


def run(spark: "SparkSession", cfg: Config, run_date: dt.date) -> StepResult:
    from pyspark.sql import functions as F

    from ml.dataset import feature_matrix
    from ml.score import load_champion, score_matrix

    features = read_table(spark, cfg, "gold.user_features").where(F.col("as_of_date") == F.lit(run_date)).cache()
    local = features.select("user_key", "category_affinity", *NUMERIC_FEATURES).orderBy("user_key").toPandas()
    if local.empty:
        raise InputDataError(f"gold.user_features has no rows for {run_date}; run the features step for that date")
    model, version = load_champion(cfg)
    scores = score_matrix(model, feature_matrix(local), version)
    scored = scores_frame(spark, local["user_key"].tolist(), scores.tag_scores, scores.embeddings)

    result = StepResult("score", run_date)
    profile = transform_profile(features, scored, version).cache()
    written = replace_dates(profile, cfg, "staging.user_profile", [run_date])
    result.tables.append(TableCount("staging.user_profile", written, written))

    items = read_table(spark, cfg, "gold.item_features").where(F.col("as_of_date") == F.lit(run_date))
    horizon = run_date - dt.timedelta(days=int(cfg.get("recommend.exclude_bought_days", 90)))
    purchased = read_table(spark, cfg, "silver.events").where(
        (F.col("event_type") == "purchase") & (F.col("event_date") > F.lit(horizon)) & (F.col("event_date") <= F.lit(run_date))
    ).select("user_key", "item_id").distinct()
    recs = transform_recommendations(profile, items.drop("as_of_date"), purchased,
                                     int(cfg.get("recommend.k")), int(cfg.get("recommend.candidate_categories")))
    recs = recs.withColumn("model_version", F.lit(version))
    written = replace_dates(recs, cfg, "staging.recommendations", [run_date])
    result.tables.append(TableCount("staging.recommendations", written, written))
    profile.unpersist()
    features.unpersist()
    write_audit(spark, cfg, "score", run_date, result.tables)
    result.details["model_version"] = version
    return result
