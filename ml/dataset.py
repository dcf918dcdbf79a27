"""Training data: point-in-time features as of D - horizon, labelled by what users did up to D."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np

from jobs.common.config import Config
from jobs.common.errors import InputDataError
from jobs.common.taxonomy import TOP_LEVEL
from jobs.features import NUMERIC_FEATURES

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

# Counts and money are heavy-tailed; log1p keeps one whale from dominating the scaling.
LOG_FEATURES = frozenset(c for c in NUMERIC_FEATURES if c.startswith("n_") or c in ("monetary_90d", "avg_purchase_price_90d"))
FEATURE_NAMES = tuple(NUMERIC_FEATURES) + tuple(f"affinity_{c}" for c in TOP_LEVEL)


def feature_matrix(features: "pd.DataFrame") -> np.ndarray:
    """The model input, columns in FEATURE_NAMES order, float32."""
    numeric = []
    for name in NUMERIC_FEATURES:
        values = features[name].astype("float64").fillna(0.0).to_numpy()
        numeric.append(np.log1p(np.clip(values, 0, None)) if name in LOG_FEATURES else values)
    affinity = np.stack(features["category_affinity"].map(lambda a: np.asarray(a, dtype="float64")).to_numpy()) \
        if len(features) else np.zeros((0, len(TOP_LEVEL)))
    return np.column_stack([*numeric, affinity]).astype("float32")


def transform_interest_labels(events: "DataFrame", items: "DataFrame", after: dt.date, until: dt.date) -> "DataFrame":
    """user_key -> the top-level categories the user touched in (after, until], as a 0/1 array."""
    from pyspark.sql import functions as F

    window = events.where((F.col("event_date") > F.lit(after)) & (F.col("event_date") <= F.lit(until)))
    touched = window.join(items.select("item_id", "category"), "item_id").groupBy("user_key").agg(
        F.collect_set("category").alias("categories")
    )
    return touched.select(
        "user_key",
        F.array(*[F.array_contains("categories", c).cast("float") for c in TOP_LEVEL]).alias("labels"),
    )


def training_frame(spark: "SparkSession", cfg: Config, run_date: dt.date) -> tuple["pd.DataFrame", dt.date]:
    """Features as of run_date - horizon joined to the labels of the following horizon days."""
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table
    from jobs.features import build_user_features, latest_snapshot

    horizon = int(cfg.get("pipeline.label_horizon_days", 7))
    as_of = run_date - dt.timedelta(days=horizon)
    events = read_table(spark, cfg, "silver.events")
    first_day = events.agg(F.min("event_date")).collect()[0][0]
    if first_day is None or first_day > as_of:
        raise InputDataError(
            f"training for {run_date} needs events on or before {as_of} (features) and after it (labels), "
            f"but silver.events starts on {first_day}; load more history (collect_days > {horizon})"
        )
    features = build_user_features(spark, cfg, as_of)
    labels = transform_interest_labels(events, latest_snapshot(spark, cfg, "silver.items", run_date), as_of, run_date)
    labelled = features.join(labels, "user_key", "inner").orderBy("user_key")
    frame = labelled.toPandas()
    if frame.empty:
        raise InputDataError(
            f"no user has both features as of {as_of} and events in ({as_of}, {run_date}]; nothing to train on"
        )
    return frame, as_of


def split_users(user_keys: "pd.Series", validation_share: float, seed: int) -> np.ndarray:
    """Deterministic user-level split: True = validation. Same users, same split, every run."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(user_keys))
    is_val = np.zeros(len(user_keys), dtype=bool)
    is_val[order[: max(1, int(round(len(user_keys) * validation_share)))]] = True
    return is_val
