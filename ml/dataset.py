"""Training data: a time-based split, point-in-time examples written once as a Parquet snapshot, and a
Keras PyDataset that streams them back row group by row group.

An example is one user on one as-of date t: the user's features and sequence as of t, labelled by
what the user did in (t, t + horizon] (interest tags, the items interacted with), whether they
bought nothing in (t, t + churn_horizon] (masked where that window is not observable yet), and the
segment the rules give them on t + horizon. docs/model.md draws the split.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.common.config import Config
from jobs.common.errors import ConfigError, InputDataError
from jobs.common.feature_windows import FeatureWindows
from jobs.common.taxonomy import TOP_LEVEL
from ml.segments import SEGMENTS

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger("portrait.dataset")

PAD, OOV = 0, 1            # every vocabulary index starts at 2; 0 pads sequences, 1 is "not seen in training"
SPLITS = ("train", "validation", "test")
LABEL_COLUMNS = ("tag_labels", "positives", "churn_label", "churn_until", "segment_label")
USER_INPUTS = ("user_numeric", "user_categorical", "seq_item", "seq_item_numeric", "seq_category", "seq_event_type",
               "seq_gap")
ITEM_INPUTS = ("item_id", "item_category", "item_brand", "item_numeric")
# Gaps enter the GRU as log1p(seconds) / log1p(30 days): 0 for back-to-back events, about 1 for a month.
GAP_SCALE = math.log1p(30 * 86_400)
# A numeric feature whose training sample is non-negative and exceeds this is fed as log1p:
# counts and money are heavy-tailed and one whale should not set the scale.
LOG_ABOVE = 20.0
SNAPSHOT_ROWS_PER_FILE = 4096
# Category affinities are shares; the model also reads log(share + SHARE_FLOOR), so a dot product can
# weigh categories multiplicatively (the log of a mixture weight) as well as additively.
SHARE_FLOOR = 0.02
# Item numbers each sequence step carries (where the item table has them): where in its category's
# price range the item sits and how popular it is, so the sequence says which prices the user looks at.
SEQUENCE_ITEM_FEATURES = ("price_pct_in_category", "popularity")


# --- the time-based split -------------------------------------------------------------------------

@dataclass(frozen=True)
class SplitPlan:
    """Which as-of dates feed which split, and up to which day each split may look for labels.

    With run date D and horizon h: test examples are as of T = D - h (labels in (T, D]); validation
    as of V = T - h (labels in (V, T]); training as of t <= V - h, one every `stride` days. After
    the validation run has chosen the epochs, the model is refit on every as-of date up to V
    (labels up to T), then tested; nothing after T is ever a training label.
    """

    run_date: dt.date
    horizon_days: int
    churn_horizon_days: int
    test_as_of: dt.date
    validation_as_of: dt.date
    train_as_of: tuple[dt.date, ...]
    refit_as_of: tuple[dt.date, ...]

    def boundary(self, split: str) -> dt.date:
        """The last day whose events may label an example of `split`."""
        return {"train": self.validation_as_of, "validation": self.test_as_of, "refit": self.test_as_of,
                "test": self.run_date}[split]

    def as_of_dates(self) -> tuple[dt.date, ...]:
        return tuple(sorted({*self.train_as_of, *self.refit_as_of, self.validation_as_of, self.test_as_of}))

    def segment_dates(self) -> tuple[dt.date, ...]:
        """Feature dates the segment labels need: as_of + horizon for every example date."""
        return tuple(sorted({d + dt.timedelta(days=self.horizon_days) for d in self.as_of_dates()}))

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, dt.date) else [d.isoformat() for d in v] if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}


def plan_split(run_date: dt.date, first_day: dt.date | None, horizon_days: int, churn_horizon_days: int,
               train_dates: int, stride_days: int = 1) -> SplitPlan:
    """The split for a run date given the first day with events; a clear error when history is too short."""
    if horizon_days < 1 or churn_horizon_days < 1:
        raise ConfigError(f"label horizons must be at least 1 day, got {horizon_days} and {churn_horizon_days}")
    if train_dates < 1 or stride_days < 1:
        raise ConfigError(f"model.train_dates and model.train_stride_days must be at least 1, got {train_dates}, {stride_days}")
    h = dt.timedelta(days=horizon_days)
    test_as_of = run_date - h
    validation_as_of = test_as_of - h
    newest_train = validation_as_of - h
    needed = newest_train
    if first_day is None or first_day > needed:
        raise InputDataError(
            f"training for {run_date} with a {horizon_days}-day horizon needs events from {needed} on "
            f"(train as of {newest_train}, validate as of {validation_as_of}, test as of {test_as_of}), but "
            f"silver.events starts on {first_day}; load at least {3 * horizon_days + 1} days "
            f"(collect_days) or lower model.label_horizon_days"
        )
    stride = dt.timedelta(days=stride_days)
    train = tuple(sorted(d for d in (newest_train - k * stride for k in range(train_dates)) if d >= first_day))
    refit = list(train)
    while refit[-1] + stride <= validation_as_of:
        refit.append(refit[-1] + stride)
    return SplitPlan(run_date, horizon_days, churn_horizon_days, test_as_of, validation_as_of, train, tuple(refit))


def rolling_folds(plan: SplitPlan, folds: int) -> list[tuple[tuple[dt.date, ...], dt.date]]:
    """Rolling-origin folds inside the training split: (training dates, validation date) pairs.

    Fold j validates on the j-th newest training date and trains on the dates whose label windows
    end by then (t + horizon <= validation date). A shuffled k-fold would train on the future of its
    validation users, so the time-series form is the only one offered. Folds without training dates
    are dropped.
    """
    h = dt.timedelta(days=plan.horizon_days)
    out = []
    for validation in sorted(plan.train_as_of, reverse=True)[:max(folds, 0)]:
        train = tuple(d for d in plan.train_as_of if d + h <= validation)
        if train:
            out.append((train, validation))
    return out


def churn_events(cfg: Config) -> tuple[str, ...]:
    """model.churn_events, checked: the event types whose absence in the churn window is churn."""
    value = cfg.get("model.churn_events", ["purchase"])
    known = _event_types()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or any(n not in known for n in names):
        raise ConfigError(f"model.churn_events must be a non-empty list of event types ({', '.join(known)}), "
                          f"got {value!r}")
    return tuple(names)


def plan_from_config(cfg: Config, run_date: dt.date, first_day: dt.date | None) -> SplitPlan:
    return plan_split(
        run_date, first_day,
        horizon_days=int(cfg.get("model.label_horizon_days", 3)),
        churn_horizon_days=int(cfg.get("model.churn_horizon_days", 30)),
        train_dates=int(cfg.get("model.train_dates", 5)),
        stride_days=int(cfg.get("model.train_stride_days", 1)),
    )


# --- labels (Spark) -------------------------------------------------------------------------------

def transform_interest_labels(events: "DataFrame", items: "DataFrame", after: dt.date, until: dt.date,
                              tags: Sequence[str] | None = None) -> "DataFrame":
    """user_key -> the tags the user touched in (after, until], as a 0/1 array in `tags` order.

    An item counts toward each of its categories (`categories`, else `category`); a category the tags
    do not name counts as `other` when the tags have it (jobs.common.catalogue.tag_of). Without
    `tags`, the builtin taxonomy's top level.
    """
    from pyspark.sql import functions as F

    from jobs.common.catalogue import tag_of, with_categories

    tags = list(tags) if tags is not None else list(TOP_LEVEL)
    window = events.where((F.col("event_date") > F.lit(after)) & (F.col("event_date") <= F.lit(until)))
    item_tags = with_categories(items).select("item_id", F.explode("categories").alias("_category")).select(
        "item_id", tag_of(F.col("_category"), tags).alias("_tag")).where(F.col("_tag").isNotNull())
    touched = window.join(item_tags, "item_id").groupBy("user_key").agg(F.collect_set("_tag").alias("categories"))
    return touched.select(
        "user_key",
        F.array(*[F.array_contains("categories", c).cast("float") for c in tags]).alias("labels"),
    )


def transform_bought(events: "DataFrame", as_of: dt.date) -> "DataFrame":
    """user_key -> items bought on or before `as_of` (sorted): never recommended, as in the baselines."""
    from pyspark.sql import functions as F

    return events.where((F.col("event_type") == "purchase") & (F.col("event_date") <= F.lit(as_of))
                        & F.col("item_id").isNotNull()).groupBy("user_key").agg(
        F.array_sort(F.collect_set("item_id")).alias("bought"))


def transform_examples(features: "DataFrame", sequences: "DataFrame", events: "DataFrame", items: "DataFrame",
                       future_features: "DataFrame | None", as_of: dt.date, horizon_days: int,
                       churn_horizon_days: int, last_day: dt.date, tags: Sequence[str] | None = None,
                       churn_on: Sequence[str] = ("purchase",), churn_observable: bool = True,
                       *, windows: FeatureWindows) -> "DataFrame":
    """One row per user in `features` (as of `as_of`): features, sequence arrays, labels, bought items.

    - tag_labels: array<float> over `tags` (the model's, ModelSpec.tags; default the builtin top level),
      the categories touched in (as_of, as_of + horizon];
    - positives: the distinct items interacted with in that window, sorted (the retrieval targets);
    - churn_label: 1.0 when the user had no event of a `churn_on` type (model.churn_events, purchase
      by default) in (as_of, as_of + churn_horizon], looking no further than `last_day`; churn_until =
      as_of + churn_horizon. A split may use the label only where churn_until is on or before its own
      boundary (SplitPlan.boundary); elsewhere it is masked. With `churn_observable` False (those
      event types never occur in the data) churn_until is null: the label is masked everywhere;
    - segment_label: index in ml.segments.SEGMENTS of the rules on `future_features` (the features
      of as_of + horizon), -1 where the user has none there;
    - bought: items bought on or before as_of (never recommended, as in the baselines);
    - known: the user has an event on or before as_of (the baselines' evaluation keeps only those).
    Users with no event in the label window carry all-zero tags and no positives.
    """
    from pyspark.sql import functions as F

    from ml.segments import segment_index

    until = as_of + dt.timedelta(days=horizon_days)
    if until > last_day:
        raise ValueError(f"labels of {as_of} need events up to {until}, after the last day {last_day}")
    tags = list(tags) if tags is not None else list(TOP_LEVEL)
    tag_labels = transform_interest_labels(events, items, as_of, until, tags).withColumnRenamed("labels", "tag_labels")
    window = events.where((F.col("event_date") > F.lit(as_of)) & (F.col("event_date") <= F.lit(until))
                          & F.col("item_id").isNotNull())
    positives = window.groupBy("user_key").agg(F.array_sort(F.collect_set("item_id")).alias("positives"))
    churn_until = as_of + dt.timedelta(days=churn_horizon_days)
    buyers = events.where((F.col("event_type").isin(*churn_on)) & (F.col("event_date") > F.lit(as_of))
                          & (F.col("event_date") <= F.lit(min(churn_until, last_day))))
    bought_later = buyers.select("user_key").distinct().withColumn("_bought_later", F.lit(True))
    seen = events.where(F.col("event_date") <= F.lit(as_of)).select("user_key").distinct().withColumn(
        "known", F.lit(True))

    zero_tags = F.array(*[F.lit(0.0).cast("float") for _ in tags])
    seq = sequences.select(
        "user_key", F.col("item_ids").alias("seq_item_ids"), F.col("categories").alias("seq_categories"),
        F.col("event_types").alias("seq_event_types"), F.col("gaps").alias("seq_gaps"))
    out = (features.drop("as_of_date").join(seq, "user_key", "left").join(tag_labels, "user_key", "left")
           .join(positives, "user_key", "left").join(bought_later, "user_key", "left")
           .join(transform_bought(events, as_of), "user_key", "left").join(seen, "user_key", "left"))
    if future_features is not None:
        out = out.join(future_features.select("user_key", segment_index(windows).alias("segment_label")), "user_key", "left")
    else:
        out = out.withColumn("segment_label", F.lit(None).cast("int"))
    labels = ("tag_labels", "positives", "_bought_later", "segment_label", "bought", "known")
    return out.select(
        *[c for c in out.columns if c not in labels],
        F.coalesce("tag_labels", zero_tags).alias("tag_labels"),
        F.coalesce("positives", F.array().cast("array<string>")).alias("positives"),
        F.when(F.col("_bought_later"), 0.0).otherwise(1.0).cast("float").alias("churn_label"),
        (F.lit(churn_until) if churn_observable else F.lit(None).cast("date")).alias("churn_until"),
        F.coalesce("segment_label", F.lit(-1)).cast("int").alias("segment_label"),
        F.coalesce("bought", F.array().cast("array<string>")).alias("bought"),
        F.coalesce("known", F.lit(False)).alias("known"),
        F.lit(as_of).alias("as_of_date"),
    )


# --- reading the gold tables for past dates -------------------------------------------------------

def with_affinity_columns(features: "DataFrame", vocab: Sequence[str] | None = None,
                          tags: Sequence[str] | None = None) -> "DataFrame":
    """+ affinity_<tag> for every tag, from `category_affinity` (an array over `vocab`, the features' date's
    gold.category_vocab) by name: a tag the vocabulary lacks is 0, and `other` (when a tag) sums every
    vocabulary entry the tags do not name. affinity_ columns already there (an older table) are
    replaced. Without `vocab`/`tags`, the builtin taxonomy's top level.
    """
    from pyspark.sql import functions as F

    from jobs.common.catalogue import OTHER

    vocab = list(vocab) if vocab is not None else list(TOP_LEVEL)
    tags = list(tags) if tags is not None else vocab
    if "category_affinity" not in features.columns:
        if all(f"affinity_{t}" in features.columns for t in tags):
            return features
        raise InputDataError("user features have neither affinity_<category> columns nor category_affinity")
    # Columns of an older table (version 2 wrote one per builtin category; newer rows read them as null)
    # are replaced by the values of the array.
    features = features.drop(*[c for c in features.columns if c.startswith("affinity_")])

    def entry(i: int) -> "Column":
        return F.coalesce(F.try_element_at("category_affinity", F.lit(i + 1)), F.lit(0.0))

    def value(tag: str) -> "Column":
        if tag in vocab:
            return entry(vocab.index(tag))
        if tag == OTHER:
            rest = [i for i, v in enumerate(vocab) if v not in tags]
            return sum((entry(i) for i in rest), F.lit(0.0))
        return F.lit(0.0)

    return features.select(*features.columns, *[value(t).cast("double").alias(f"affinity_{t}") for t in tags])


def vocab_as_of(spark: "SparkSession", cfg: Config, as_of: dt.date) -> list[str]:
    """The category vocabulary of `as_of`: gold.category_vocab where the features step wrote it, else
    computed the same way (as build_user_features does for features it recomputes)."""
    from pyspark.sql import functions as F

    from jobs.common.catalogue import read_category_vocab, vocab_list
    from jobs.common.delta import read_table
    from jobs.features import category_vocab, feature_params, latest_snapshot

    try:
        return read_category_vocab(spark, cfg, as_of)
    except InputDataError:  # not written (or empty): computed as the features step would
        events = read_table(spark, cfg, "silver.events")
        items = latest_snapshot(spark, cfg, "silver.items", as_of)
        params = feature_params(cfg)
        return vocab_list(category_vocab(events, items, as_of, params.catalogue, params.windows.longest))


def missing_dates(spark: "SparkSession", cfg: Config, name: str, dates: Sequence[dt.date]) -> list[dt.date]:
    """The dates among `dates` that table `name` has no rows for."""
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table, table_exists

    if not table_exists(spark, cfg, name):
        return sorted(dates)
    present = {r[0] for r in read_table(spark, cfg, name).where(F.col("as_of_date").isin(*dates))
               .select("as_of_date").distinct().collect()}
    return sorted(d for d in dates if d not in present)


def _stale_dates(spark: "SparkSession", cfg: Config, dates: Sequence[dt.date]) -> list[dt.date]:
    """The dates among `dates` whose gold.user_features rows are all of an older feature version."""
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table, table_exists
    from jobs.features import feature_version

    if not table_exists(spark, cfg, "gold.user_features"):
        return []
    version = feature_version(FeatureWindows.from_config(cfg))
    versions = read_table(spark, cfg, "gold.user_features").where(F.col("as_of_date").isin(*dates)).groupBy(
        "as_of_date").agg(F.max(F.col("feature_version") == F.lit(version)).alias("current")).collect()
    return sorted(r["as_of_date"] for r in versions if not r["current"])


def backfill_missing_dates(spark: "SparkSession", cfg: Config, dates: Sequence[dt.date]) -> dict[str, list[dt.date]]:
    """Run the features and sequences steps for the past dates training needs that they never wrote.

    A single run that loads many days (make demo) writes gold for its run date only. Only the dates
    training needs are written, oldest first: a date whose day before has a state continues it
    (incremental), any other is computed from its window in full; walking every day between two
    training dates a stride apart would run the step stride times per date. The dates stay in gold
    for the next runs. `model.backfill_gold: false` recomputes in memory instead.
    """
    if not bool(cfg.get("model.backfill_gold", True)):
        return {}
    import jobs.features
    import jobs.sequences

    done = {}
    # A date stored with an older feature version (its arrays over another list) is written again.
    features = sorted(set(missing_dates(spark, cfg, "gold.user_features", dates)) | set(_stale_dates(spark, cfg, dates)))
    for day in features:
        jobs.features.run(spark, cfg, day)
    if features:
        done["gold.user_features"] = features
    sequences = missing_dates(spark, cfg, "gold.user_sequences", dates)
    for day in sequences:
        jobs.sequences.run(spark, cfg, day)
    if sequences:
        done["gold.user_sequences"] = sequences
    return done


def user_features_as_of(spark: "SparkSession", cfg: Config, as_of: dt.date) -> "DataFrame":
    """gold.user_features of `as_of` where the features step wrote it, else recomputed (point in time).

    category_affinity is over the vocabulary of `as_of` (vocab_as_of); with_affinity_columns names it.
    """
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table, table_exists
    from jobs.features import build_user_features, feature_version

    if table_exists(spark, cfg, "gold.user_features"):
        # Rows of an older feature version have their arrays over another list (the builtin taxonomy),
        # rows of other windows other columns.
        version = feature_version(FeatureWindows.from_config(cfg))
        stored = read_table(spark, cfg, "gold.user_features").where(
            (F.col("as_of_date") == F.lit(as_of)) & (F.col("feature_version") == F.lit(version)))
        if stored.limit(1).count():
            return stored
    return build_user_features(spark, cfg, as_of)


def item_features_as_of(spark: "SparkSession", cfg: Config, as_of: dt.date, events: "DataFrame") -> "DataFrame":
    """gold.item_features of `as_of` where written, else recomputed from silver for that date."""
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table, table_exists
    from jobs.features import latest_snapshot, transform_item_features

    if table_exists(spark, cfg, "gold.item_features"):
        stored = read_table(spark, cfg, "gold.item_features").where(F.col("as_of_date") == F.lit(as_of))
        if stored.limit(1).count():
            return stored
    half_life = float(cfg.get("features.affinity_half_life_days", cfg.get("pipeline.affinity_half_life_days", 14)))
    return transform_item_features(events, latest_snapshot(spark, cfg, "silver.items", as_of), as_of,
                                   half_life_days=half_life)


# --- the snapshot ---------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """Where the examples and items of one training run lie, and how many rows each as-of date has."""

    root: str
    plan: SplitPlan
    rows: dict[str, int] = field(default_factory=dict)          # as_of date -> example rows
    table_versions: dict[str, int | None] = field(default_factory=dict)
    tags: list[str] = field(default_factory=lambda: list(TOP_LEVEL))  # the tag_labels' order
    churn_masked: str = ""                                      # why the churn label is masked everywhere, if it is

    def example_dir(self, as_of: dt.date) -> str:
        return f"{self.root}/examples/as_of_date={as_of.isoformat()}"

    def item_dir(self, as_of: dt.date) -> str:
        return f"{self.root}/items/as_of_date={as_of.isoformat()}"

    def files(self, dates: Iterable[dt.date], kind: str = "examples") -> list[str]:
        paths = []
        for day in sorted(set(dates)):
            folder = self.example_dir(day) if kind == "examples" else self.item_dir(day)
            paths += parquet_files(folder)
        return paths


def parquet_files(folder: str) -> list[str]:
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(_arrow_uri(folder))
    info = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    prefix = folder[: len(folder) - len(path)] if folder.endswith(path) else ""
    return sorted(prefix + i.path for i in info if i.path.endswith(".parquet") and i.size)


def _arrow_uri(path: str) -> str:
    """pyarrow knows s3://, not Hadoop's s3a://; a local path becomes absolute."""
    if path.startswith("s3a://"):
        return "s3://" + path[len("s3a://"):]
    if "://" in path:
        return path
    return str(Path(path).resolve())


def snapshot_root(cfg: Config, run_date: dt.date) -> str:
    return f"{cfg.location('model.snapshot_dir').rstrip('/')}/{run_date.isoformat()}"


def write_snapshot(spark: "SparkSession", cfg: Config, plan: SplitPlan, root: str,
                   users: "DataFrame | None" = None) -> Snapshot:
    """Write every example and item table the run needs as Parquet under `root`, once, with Spark.

    Each as-of date is its own folder (as_of_date=YYYY-MM-DD), files hold at most
    SNAPSHOT_ROWS_PER_FILE rows, so the PyDataset can shuffle row groups without reading a table
    whole. Rewriting a root replaces it. `users` (a user_key frame) limits the examples to a sample.
    """
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table
    from jobs.sequences import sequences_as_of

    backfill_missing_dates(spark, cfg, sorted({*plan.as_of_dates(), *plan.segment_dates()}))
    events = read_table(spark, cfg, "silver.events")
    if "landed_date" in events.columns:
        events = events.where(F.col("landed_date").isNull() | (F.col("landed_date") <= F.lit(plan.run_date)))
    events = events.where(F.col("event_date") <= F.lit(plan.run_date)).cache()
    items = read_table(spark, cfg, "silver.items")
    newest_items = items.where(F.col("snapshot_date") == items.agg(F.max("snapshot_date")).collect()[0][0])

    churn_on = churn_events(cfg)
    # A label about an event the data never holds would call every user churned: mask it instead.
    churn_observable = events.where(F.col("event_type").isin(*churn_on)).limit(1).count() > 0
    if not churn_observable:
        log.warning("no %s event in silver.events up to %s: the churn label is masked (set model.churn_events "
                    "to event types the data has, e.g. [rating])", "/".join(churn_on), plan.run_date)

    features_cache: dict[dt.date, DataFrame] = {}
    # The tag head's vocabulary: the category vocabulary of the newest example date (no later events).
    tags = model_tags(spark, cfg, plan)

    def features(day: dt.date) -> "DataFrame":
        if day not in features_cache:
            features_cache[day] = with_affinity_columns(user_features_as_of(spark, cfg, day),
                                                        vocab_as_of(spark, cfg, day), tags)
        return features_cache[day]

    snapshot = Snapshot(root=root, plan=plan, tags=tags,
                        churn_masked="" if churn_observable else f"no {'/'.join(churn_on)} event in the data")
    writer_options = {"maxRecordsPerFile": str(SNAPSHOT_ROWS_PER_FILE)}
    for as_of in plan.as_of_dates():
        future_day = as_of + dt.timedelta(days=plan.horizon_days)
        examples = transform_examples(
            _only(features(as_of), users), sequences_as_of(spark, cfg, as_of), events, newest_items, features(future_day),
            as_of, plan.horizon_days, plan.churn_horizon_days, plan.run_date, tags, churn_on, churn_observable,
            windows=FeatureWindows.from_config(cfg))
        examples = examples.drop("as_of_date").repartition(max(1, int(spark.conf.get("spark.sql.shuffle.partitions"))), "user_key")
        examples.sortWithinPartitions("user_key").write.mode("overwrite").options(**writer_options).parquet(
            snapshot.example_dir(as_of))
        item_table = item_features_as_of(spark, cfg, as_of, events).drop("as_of_date")
        item_table.coalesce(1).write.mode("overwrite").options(**writer_options).parquet(snapshot.item_dir(as_of))
        snapshot.rows[as_of.isoformat()] = _parquet_rows(snapshot.files([as_of]))
    events.unpersist()
    if not any(snapshot.rows.values()):
        raise InputDataError(f"no user has features on any training date of {plan.run_date}; nothing to train on")
    return snapshot


def model_tags(spark: "SparkSession", cfg: Config, plan: SplitPlan) -> list[str]:
    """The tags a model trained on `plan` predicts: the category vocabulary of its newest example date.

    Without any categorised item (a catalogue of one uncategorised item) the head keeps one tag,
    `other`, that no item reaches: its labels are all 0 and it says nothing, rather than a head of no units.
    """
    from jobs.common.catalogue import OTHER

    tags = vocab_as_of(spark, cfg, max(plan.as_of_dates()))
    if not tags:
        log.warning("no item has a category on %s: the interest-tag head has nothing to learn", max(plan.as_of_dates()))
    return tags or [OTHER]


def _only(frame: "DataFrame", users: "DataFrame | None") -> "DataFrame":
    return frame if users is None else frame.join(users.select("user_key"), "user_key", "left_semi")


def _parquet_rows(paths: Sequence[str]) -> int:
    import pyarrow.parquet as pq

    return sum(_open_parquet(p).metadata.num_rows for p in paths)


def _open_parquet(path: str):
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    try:
        fs, inner = pafs.FileSystem.from_uri(_arrow_uri(path))
        return pq.ParquetFile(fs.open_input_file(inner))
    except Exception as exc:  # truncated, foreign or missing: name the file
        raise InputDataError(f"cannot read training snapshot file {path}: {exc}; "
                             "re-run the train step to rewrite the snapshot") from exc


# --- the model spec: every vocabulary and scaling decision, saved with the model --------------------

@dataclass
class ModelSpec:
    """What turns snapshot rows into model inputs; JSON, logged with the model so scoring encodes alike."""

    numeric_features: list[str]
    log_features: list[str]
    categorical_features: list[str]
    categorical_vocab: dict[str, list[str]]
    item_vocab: list[str]
    category_vocab: list[str]
    event_type_vocab: list[str]
    brand_vocab: list[str]
    item_numeric_features: list[str]
    item_log_features: list[str]
    sequence_length: int
    share_features: list[str] = field(default_factory=list)   # also fed as log(x + SHARE_FLOOR)
    sequence_item_features: list[str] = field(default_factory=list)  # item numbers looked up per sequence step
    tags: list[str] = field(default_factory=lambda: list(TOP_LEVEL))
    segments: list[str] = field(default_factory=lambda: list(SEGMENTS))
    item_log_q: list[float] = field(default_factory=list)     # log sampling probability per item index
    feature_version: str = ""
    horizon_days: int = 3
    churn_horizon_days: int = 30
    churn_trained: bool = False
    # The neighbour term (ml/neighbours.py): its scale, chosen on the validation days (0 = off), and
    # how many neighbours each item keeps.
    neighbour_scale: float = 0.0
    neighbour_top_n: int = 100
    # The item-item term (ml/itemitem.py): its scale, chosen on the validation days (0 = off), and the
    # model.item_item settings it was chosen with, which scoring uses as they are.
    item_item_scale: float = 0.0
    item_item: dict = field(default_factory=dict)
    # The re-ranker's MMR weight chosen on the validation days (ml.train.tune_mmr); None: not tuned.
    mmr_lambda: float | None = None

    def categorical_offsets(self) -> list[int]:
        """Each categorical feature's first index in the one shared embedding table."""
        offsets, start = [], 0
        for name in self.categorical_features:
            offsets.append(start)
            start += len(self.categorical_vocab[name]) + 2
        return offsets

    @property
    def categorical_size(self) -> int:
        return sum(len(self.categorical_vocab[n]) + 2 for n in self.categorical_features) or 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return cls(**json.loads(text))

    def user_columns(self) -> list[str]:
        return list(dict.fromkeys(["user_key", *self.numeric_features, *self.share_features, *self.categorical_features,
                                   "seq_item_ids", "seq_categories", "seq_event_types", "seq_gaps"]))

    def example_columns(self) -> list[str]:
        """What training reads of a snapshot row: the user columns and the labels."""
        return [*self.user_columns(), *LABEL_COLUMNS]


def vocab_index(values: "pa.Array", vocab: Sequence[str]) -> np.ndarray:
    """Vocabulary index of each value: 2.. for known values, OOV (1) for unknown values and nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(values) == 0:
        return np.zeros(0, dtype=np.int32)
    positions = pc.index_in(pc.cast(values, pa.string()), value_set=pa.array(list(vocab), pa.string()))
    return pc.fill_null(pc.add(positions, 2), OOV).to_numpy(zero_copy_only=False).astype(np.int32)


def _list_array(column) -> "pa.ListArray":
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_large_list(column.type):
        column = column.cast(pa.list_(column.type.value_type))
    return column


def pad_lists(column, length: int, encode) -> np.ndarray:
    """The last `length` values of each list, left-aligned and zero-padded: (rows, length).

    `encode` maps the flattened values (a pyarrow array) to a numpy array; null lists are empty.
    """
    import pyarrow.compute as pc

    lists = _list_array(column)
    rows = len(lists)
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = encode(pc.list_flatten(lists))
    out = np.zeros((rows, length), dtype=values.dtype if len(values) else np.float32)
    if not len(values):
        return out
    row = np.repeat(np.arange(rows), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = np.arange(len(values)) - starts[row]
    dropped = np.maximum(lengths - length, 0)
    keep = position >= dropped[row]
    out[row[keep], position[keep] - dropped[row][keep]] = values[keep]
    return out


def numeric_matrix(table: "pa.Table", names: Sequence[str], logged: Iterable[str]) -> np.ndarray:
    """float32 (rows, features) in `names` order; nulls and NaN are 0; `logged` ones are log1p(max(x, 0))."""
    logged = set(logged)
    rows = table.num_rows
    out = np.zeros((rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        if name not in table.column_names:
            raise InputDataError(f"the model needs feature column '{name}', which the input lacks; "
                                 f"the feature set changed since this model was trained (retrain)")
        values = table.column(name).to_numpy(zero_copy_only=False).astype("float64")
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        out[:, j] = np.log1p(np.clip(values, 0, None)) if name in logged else values
    return out


def user_numeric(table: "pa.Table", spec: ModelSpec) -> np.ndarray:
    """The numeric features, then log(share + SHARE_FLOOR) of the share features."""
    numeric = numeric_matrix(table, spec.numeric_features, spec.log_features)
    if not spec.share_features:
        return numeric
    shares = numeric_matrix(table, spec.share_features, [])
    return np.concatenate([numeric, np.log(np.clip(shares, 0, None) + SHARE_FLOOR).astype(np.float32)], axis=1)


def sequence_items(table: "pa.Table", spec: ModelSpec) -> np.ndarray:
    """The last spec.sequence_length steps of each row's seq_item_ids as vocabulary indices (rows, steps)."""
    import pyarrow as pa

    column = table.column("seq_item_ids") if "seq_item_ids" in table.column_names else \
        pa.nulls(table.num_rows, pa.list_(pa.string()))
    return pad_lists(column, spec.sequence_length, lambda v: vocab_index(v, spec.item_vocab))


def encode_users(table: "pa.Table", spec: ModelSpec, items: "ItemTable | None" = None) -> dict[str, np.ndarray]:
    """The user-tower inputs of `table` (snapshot or scoring rows) under `spec`.

    `items` (the item table of the rows' as-of date) supplies each sequence step's item numbers;
    without it they are 0.
    """
    import pyarrow as pa

    n = spec.sequence_length
    categorical = np.zeros((table.num_rows, max(1, len(spec.categorical_features))), dtype=np.int32)
    for j, (name, offset) in enumerate(zip(spec.categorical_features, spec.categorical_offsets())):
        values = table.column(name) if name in table.column_names else pa.nulls(table.num_rows, pa.string())
        categorical[:, j] = offset + vocab_index(values, spec.categorical_vocab[name])

    def seq(name: str, encode, empty_type):
        column = table.column(name) if name in table.column_names else pa.nulls(table.num_rows, pa.list_(empty_type))
        return pad_lists(column, n, encode)

    seq_item = sequence_items(table, spec)
    width = len(spec.sequence_item_features)
    if items is not None and width:
        columns = [spec.item_numeric_features.index(name) for name in spec.sequence_item_features]
        step_numbers = items.numeric[:, columns][seq_item]
    else:
        step_numbers = np.zeros((table.num_rows, n, width), dtype=np.float32)
    return {
        "user_numeric": user_numeric(table, spec),
        "user_categorical": categorical,
        "seq_item": seq_item,
        "seq_item_numeric": step_numbers.astype(np.float32),
        "seq_category": seq("seq_categories", lambda v: vocab_index(v, spec.category_vocab), pa.string()),
        "seq_event_type": seq("seq_event_types", lambda v: vocab_index(v, spec.event_type_vocab), pa.string()),
        "seq_gap": seq("seq_gaps", lambda v: (np.log1p(np.clip(v.to_numpy(zero_copy_only=False).astype("float64"),
                                                               0, None)) / GAP_SCALE).astype(np.float32),
                       pa.int64()),
    }


@dataclass
class ItemTable:
    """Item-tower inputs of one as-of date, one row per item of the vocabulary (index 0 and 1 blank)."""

    item_ids: list[str]          # the items present that day, in `rows` order
    rows: np.ndarray             # their index here: the vocabulary index, or past it for items new since training
    vocab_size: int
    category: np.ndarray         # by vocabulary index
    brand: np.ndarray
    numeric: np.ndarray          # (vocabulary size, item features)
    present: np.ndarray          # bool by vocabulary index: in that day's catalogue

    def inputs(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Item-tower inputs of rows `index`; items new since training share the OOV id embedding."""
        ids = np.where(index >= self.vocab_size, OOV, index).astype(np.int32)
        return {"item_id": ids, "item_category": self.category[index],
                "item_brand": self.brand[index], "item_numeric": self.numeric[index]}


def encode_items(table: "pa.Table", spec: ModelSpec) -> ItemTable:
    """An item-feature table under `spec`; items outside the vocabulary get their own OOV rows appended."""
    ids = [str(x) for x in table.column("item_id").to_pylist()]
    known = vocab_index(table.column("item_id"), spec.item_vocab)
    size = len(spec.item_vocab) + 2
    unknown = np.flatnonzero(known == OOV)
    # New items share the OOV id embedding but keep their own category, brand and numbers.
    index = known.copy()
    index[unknown] = size + np.arange(len(unknown))
    total = size + len(unknown)
    category = np.full(total, OOV, dtype=np.int32)
    brand = np.full(total, OOV, dtype=np.int32)
    numeric = np.zeros((total, len(spec.item_numeric_features)), dtype=np.float32)
    category[index] = vocab_index(table.column("category"), spec.category_vocab)
    if "brand" in table.column_names:
        brand[index] = vocab_index(table.column("brand"), spec.brand_vocab)
    numeric[index] = numeric_matrix(table, spec.item_numeric_features, spec.item_log_features)
    present = np.zeros(total, dtype=bool)
    present[index] = True
    return ItemTable(ids, index, size, category, brand, numeric, present)


# --- reading the snapshot back: chunks are row groups --------------------------------------------

@dataclass(frozen=True)
class Chunk:
    path: str
    row_group: int
    rows: int
    as_of: dt.date


def chunks_of(paths: Sequence[str]) -> list[Chunk]:
    """Every row group of every file, with the as-of date its folder names."""
    out = []
    for path in paths:
        meta = _open_parquet(path).metadata
        as_of = _as_of_from_path(path)
        out += [Chunk(path, g, meta.row_group(g).num_rows, as_of) for g in range(meta.num_row_groups)
                if meta.row_group(g).num_rows]
    return out


def _as_of_from_path(path: str) -> dt.date:
    for part in reversed(path.replace("\\", "/").split("/")):
        if part.startswith("as_of_date="):
            return dt.date.fromisoformat(part[len("as_of_date="):])
    raise InputDataError(f"{path} is not inside an as_of_date=YYYY-MM-DD folder of a training snapshot")


def read_chunk(chunk: Chunk, columns: Sequence[str] | None = None) -> "pa.Table":
    try:
        return _open_parquet(chunk.path).read_row_group(chunk.row_group, columns=list(columns) if columns else None)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise InputDataError(f"cannot read row group {chunk.row_group} of training snapshot file {chunk.path}: {exc}") from exc


def read_table(paths: Sequence[str], columns: Sequence[str] | None = None, max_rows: int | None = None) -> "pa.Table":
    """Concatenate row groups of `paths` (up to `max_rows` rows): for small splits and samples only."""
    import pyarrow as pa

    tables, rows = [], 0
    for chunk in chunks_of(paths):
        if max_rows is not None and rows >= max_rows:
            break
        table = read_chunk(chunk, columns)
        table = table.append_column("as_of_date", pa.array([chunk.as_of] * table.num_rows, pa.date32()))
        tables.append(table)
        rows += table.num_rows
    if not tables:
        return pa.table({})
    table = pa.concat_tables(tables, promote_options="default")
    return table.slice(0, max_rows) if max_rows is not None else table


def load_items(snapshot_files: dict[dt.date, list[str]], spec: "ModelSpec") -> dict[dt.date, ItemTable]:
    import pyarrow as pa

    tables = {}
    for day, files in snapshot_files.items():
        table = pa.concat_tables([_open_parquet(p).read() for p in files], promote_options="default") if files else None
        if table is None or table.num_rows == 0:
            raise InputDataError(f"the training snapshot has no item features for {day}")
        tables[day] = encode_items(table, spec)
    return tables


# --- building the spec from the training split ----------------------------------------------------

def _feature_lists(tags: Sequence[str], windows: FeatureWindows) -> tuple[list[str], list[str]]:
    """(numeric, categorical) user feature names, read from jobs.features at run time; one affinity per tag."""
    import jobs.features as features

    numeric = list(features.numeric_features(windows))
    numeric += [f"affinity_{t}" for t in tags]
    categorical = list(getattr(features, "CATEGORICAL_FEATURES", ("age_band", "gender", "city")))
    return list(dict.fromkeys(numeric)), categorical


def _event_types() -> list[str]:
    try:
        from jobs.clean import EVENT_TYPES
    except ImportError:  # pragma: no cover - clean always defines it
        EVENT_TYPES = ("view", "click", "add_to_cart", "remove_from_cart", "purchase", "search", "review", "rating", "share")
    return list(EVENT_TYPES)


def _is_numeric(field_type) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(field_type) or pa.types.is_floating(field_type) or pa.types.is_decimal(field_type)


def _logged(table: "pa.Table", names: Sequence[str]) -> list[str]:
    logged = []
    for name in names:
        values = np.nan_to_num(table.column(name).to_numpy(zero_copy_only=False).astype("float64"))
        if len(values) and values.min() >= 0 and values.max() > LOG_ABOVE:
            logged.append(name)
    return logged


def _top_values(column, limit: int) -> list[str]:
    import pyarrow.compute as pc

    counts = pc.value_counts(pc.drop_null(pc.cast(column, "string")))
    pairs = sorted(((int(c), str(v)) for v, c in zip(counts.field("values").to_pylist(),
                                                        counts.field("counts").to_pylist())), key=lambda p: (-p[0], p[1]))
    return [v for _, v in pairs[:limit]]


def _item_categories(items: "pa.Table", tags: Sequence[str]) -> list[str]:
    """The item-category vocabulary: the tags, then the items' other categories, most items first (capped)."""
    if "category" not in items.column_names:
        return list(tags)
    others = [c for c in _top_values(items.column("category"), 1000) if c not in tags]
    return list(tags) + others


def neighbour_top_n(cfg: Config) -> int:
    """model.neighbour_top_n, checked: the neighbours each item keeps for the neighbour term."""
    value = cfg.get("model.neighbour_top_n", 100)
    try:
        top_n = int(value)
    except (TypeError, ValueError):
        top_n = 0
    if top_n < 1 or str(top_n) != str(value).strip():
        raise ConfigError(f"model.neighbour_top_n must be a whole number of at least 1, got {value}")
    return top_n


def build_spec(cfg: Config, train_files: Sequence[str], item_files: Sequence[str], plan: SplitPlan,
               feature_version: str = "", tags: Sequence[str] | None = None) -> ModelSpec:
    """Vocabularies and scaling from the training split (a sample for the scaling), never from later days.

    `tags` is the snapshot's tag order (Snapshot.tags, the category vocabulary); default the builtin top level.
    """
    tags = list(tags) if tags is not None else list(TOP_LEVEL)
    import pyarrow as pa
    import pyarrow.compute as pc

    sample = read_table(train_files, max_rows=int(cfg.get("model.spec_sample_rows", 50_000)))
    if sample.num_rows == 0:
        raise InputDataError(f"the training split of {plan.run_date} ({', '.join(map(str, plan.train_as_of))}) has no rows")
    numeric_names, categorical_names = _feature_lists(tags, FeatureWindows.from_config(cfg))
    numeric = [n for n in numeric_names if n in sample.column_names and _is_numeric(sample.schema.field(n).type)]
    if not numeric:
        raise InputDataError(f"the training snapshot has none of the numeric features {numeric_names[:5]}...; "
                             f"columns: {sample.column_names}")
    categorical = [n for n in categorical_names if n in sample.column_names
                   and pa.types.is_string(sample.schema.field(n).type)]
    max_categories = int(cfg.get("model.max_categories", 100))
    items = pa.concat_tables([_open_parquet(p).read() for p in item_files], promote_options="default")
    item_numeric = [f.name for f in items.schema if _is_numeric(f.type) and f.name not in ("as_of_date",)]
    item_vocab = sorted(set(pc.unique(pc.cast(items.column("item_id"), pa.string())).to_pylist()) - {None})
    brands = _top_values(items.column("brand"), int(cfg.get("model.max_brands", 1000))) if "brand" in items.column_names else []
    shares = [n for n in numeric if n.startswith("affinity_")]
    spec = ModelSpec(
        numeric_features=numeric, log_features=_logged(sample, numeric), categorical_features=categorical,
        share_features=shares,
        sequence_item_features=[n for n in SEQUENCE_ITEM_FEATURES if n in item_numeric],
        categorical_vocab={n: _top_values(sample.column(n), max_categories) for n in categorical},
        item_vocab=item_vocab, category_vocab=_item_categories(items, tags), event_type_vocab=_event_types(),
        brand_vocab=brands, tags=tags,
        item_numeric_features=item_numeric, item_log_features=_logged(items, item_numeric),
        sequence_length=int(cfg.get("model.sequence_length", 50)), feature_version=feature_version,
        neighbour_top_n=neighbour_top_n(cfg),
        horizon_days=plan.horizon_days, churn_horizon_days=plan.churn_horizon_days,
    )
    return spec


@dataclass
class LabelStats:
    """Counts over a split's rows: the class weights and the sampling probability of each item."""

    rows: int
    tag_positive_rate: np.ndarray
    segment_counts: np.ndarray
    churn_labelled: int
    churn_positive: int
    examples_with_positives: int
    item_log_q: np.ndarray

    def tag_pos_weight(self, cap: float = 10.0) -> np.ndarray:
        """sqrt(negatives / positives) per tag, capped: rare tags count more without wrecking calibration."""
        rate = np.clip(self.tag_positive_rate, 1e-6, 1 - 1e-6)
        return np.clip(np.sqrt((1 - rate) / rate), 1.0, cap).astype(np.float32)

    def segment_weights(self, cap: float = 5.0) -> np.ndarray:
        """Inverse class frequency, mean 1 over the labelled rows, capped; unseen classes get the cap."""
        counts = self.segment_counts.astype("float64")
        total = counts.sum()
        if total == 0:
            return np.ones_like(counts, dtype=np.float32)
        weights = np.where(counts > 0, total / (len(counts) * np.maximum(counts, 1)), cap)
        return np.clip(weights, 1.0 / cap, cap).astype(np.float32)


def label_stats(chunks: Sequence[Chunk], spec: ModelSpec, boundary: dt.date) -> LabelStats:
    """One streaming pass over the split: label frequencies and log q(item) for the in-batch softmax.

    q(item) is the chance that a batch row's positive is that item when each row draws one of its
    positives uniformly (sum over rows of 1/|positives|), smoothed so no item has q = 0.
    """
    import pyarrow.compute as pc

    n_items = len(spec.item_vocab) + 2
    tag_sum = np.zeros(len(spec.tags))
    segments = np.zeros(len(spec.segments))
    q = np.zeros(n_items)
    rows = churn_labelled = churn_positive = with_pos = 0
    for chunk in chunks:
        table = read_chunk(chunk, ["tag_labels", "positives", "churn_label", "churn_until", "segment_label"])
        rows += table.num_rows
        tag_sum += np.asarray(pc.list_flatten(table.column("tag_labels")).to_numpy(zero_copy_only=False),
                              dtype="float64").reshape(table.num_rows, len(spec.tags)).sum(axis=0)
        seg = table.column("segment_label").to_numpy(zero_copy_only=False)
        segments += np.bincount(seg[seg >= 0], minlength=len(spec.segments))[: len(spec.segments)]
        observable = _observable(table.column("churn_until"), boundary)
        churn_labelled += int(observable.sum())
        churn_positive += int((table.column("churn_label").to_numpy(zero_copy_only=False)[observable] > 0.5).sum())
        positives = _list_array(table.column("positives"))
        lengths = pc.fill_null(pc.list_value_length(positives), 0).to_numpy(zero_copy_only=False)
        with_pos += int((lengths > 0).sum())
        index = vocab_index(pc.list_flatten(positives), spec.item_vocab)
        np.add.at(q, index, np.repeat(1.0 / np.maximum(lengths, 1), lengths))
    q = q + max(q.sum(), 1.0) * 1e-3 / n_items
    return LabelStats(rows, tag_sum / max(rows, 1), segments, churn_labelled, churn_positive, with_pos,
                      np.log(q / q.sum()).astype(np.float32))


def _observable(churn_until, boundary: dt.date) -> np.ndarray:
    values = churn_until.to_numpy(zero_copy_only=False)
    return np.asarray([d is not None and d <= boundary for d in values.tolist()], dtype=bool) \
        if values.dtype == object else (values.astype("datetime64[D]") <= np.datetime64(boundary.isoformat()))


# --- the Keras input pipeline ---------------------------------------------------------------------

@dataclass(frozen=True)
class LossWeights:
    """Per-output sample weighting: class weights for imbalance and the masks of unobservable labels."""

    segment_class: np.ndarray
    churn_boundary: dt.date


def encode_labels(table: "pa.Table", spec: ModelSpec, weights: LossWeights) -> tuple[dict, dict]:
    """(targets, sample weights) per output for the rows of `table`."""
    import pyarrow.compute as pc

    rows = table.num_rows
    tags = np.asarray(pc.list_flatten(table.column("tag_labels")).to_numpy(zero_copy_only=False),
                      dtype=np.float32).reshape(rows, len(spec.tags))
    segment = table.column("segment_label").to_numpy(zero_copy_only=False).astype(np.int32)
    churn = table.column("churn_label").to_numpy(zero_copy_only=False).astype(np.float32)
    observable = _observable(table.column("churn_until"), weights.churn_boundary)
    has_segment = segment >= 0
    targets = {"interest_tags": tags, "segment": np.maximum(segment, 0), "churn": churn[:, None]}
    sample_weights = {
        "interest_tags": np.ones(rows, dtype=np.float32),
        "segment": np.where(has_segment, weights.segment_class[np.maximum(segment, 0)], 0.0).astype(np.float32),
        "churn": observable.astype(np.float32),
    }
    return targets, sample_weights


def ExampleDataset(*args, **kwargs):  # noqa: N802 - reads as the class it builds
    """A `_ExampleDataset` (a keras.utils.PyDataset); Keras is imported on first use, not with this module."""
    return _example_dataset_class()(*args, **kwargs)


def _example_dataset_class():
    if "_ExampleDataset" not in globals():
        import keras

        globals()["_ExampleDataset"] = type("_ExampleDataset", (_ExampleDatasetMixin, keras.utils.PyDataset), {})
    return globals()["_ExampleDataset"]


class _ExampleDatasetMixin:
    """Batches of (inputs, targets, sample weights) streamed from a snapshot's row groups.

    Each epoch visits every row `positives_per_row` times: the row groups in a new random order,
    rows shuffled within each, consecutive batches cut across group edges; at most a few decoded
    groups are held. For the retrieval head each copy of a row draws one of its positives afresh
    every epoch (the copies share a `group`, so one copy's item is never a negative for another);
    rows without one keep a filler item and get weight 0, serving only as other rows' negatives.
    """

    def __init__(self, chunks: Sequence[Chunk], spec: ModelSpec, items: dict[dt.date, ItemTable],
                 batch_size: int, weights: LossWeights, item_log_q: np.ndarray, seed: int = 7,
                 shuffle: bool = True, positives_per_row: int = 1, **kwargs):
        super().__init__(**kwargs)
        if not chunks:
            raise InputDataError("no training rows: the snapshot split is empty")
        if positives_per_row < 1:
            raise ValueError(f"positives_per_row must be at least 1, got {positives_per_row}")
        self.chunks = list(chunks)
        self.spec = spec
        self.items = items
        self.batch_size = int(batch_size)
        self.weights = weights
        self.item_log_q = item_log_q
        self.seed = seed
        self.shuffle = shuffle
        self.copies = int(positives_per_row)
        self.epoch = 0
        self.total_rows = sum(c.rows for c in self.chunks) * self.copies
        self.group_stride = max(c.rows for c in self.chunks) + 1
        self._cache: dict[int, dict] = {}
        self._arrange()

    def _arrange(self) -> None:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.order = rng.permutation(len(self.chunks)) if self.shuffle else np.arange(len(self.chunks))
        sizes = np.array([self.chunks[i].rows * self.copies for i in self.order])
        self.starts = np.concatenate([[0], np.cumsum(sizes)])
        self._cache.clear()

    def __len__(self) -> int:
        return math.ceil(self.total_rows / self.batch_size)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._arrange()

    def _decoded(self, slot: int) -> dict:
        if slot not in self._cache:
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            chunk = self.chunks[self.order[slot]]
            table = read_chunk(chunk, self._columns(chunk))
            # each row `copies` times, each copy drawing its own positive; `group` ties the copies together
            rows = np.tile(np.arange(table.num_rows), self.copies)
            if self.shuffle:
                rows = rows[np.random.default_rng([self.seed, self.epoch, slot]).permutation(len(rows))]
            table = table.take(rows)
            targets, sample_weights = encode_labels(table, self.spec, self.weights)
            self._cache[slot] = {
                "inputs": encode_users(table, self.spec, self.items[chunk.as_of]), "targets": targets,
                "weights": sample_weights, "positives": _list_array(table.column("positives")), "as_of": chunk.as_of,
                "group": (int(self.order[slot]) * self.group_stride + rows).astype(np.int64),
            }
        return self._cache[slot]

    def _columns(self, chunk: Chunk) -> list[str]:
        present = set(_open_parquet(chunk.path).schema_arrow.names)
        return [c for c in self.spec.example_columns() if c in present]

    def __getitem__(self, index: int):
        import pyarrow.compute as pc

        first, last = index * self.batch_size, min((index + 1) * self.batch_size, self.total_rows)
        if first >= last:
            raise IndexError(f"batch {index} is past the end ({len(self)} batches)")
        parts = []
        slot = int(np.searchsorted(self.starts, first, side="right") - 1)
        while first < last:
            data = self._decoded(slot)
            lo, hi = first - self.starts[slot], min(last, self.starts[slot + 1]) - self.starts[slot]
            parts.append((data, int(lo), int(hi)))
            first = self.starts[slot] + hi
            slot += 1

        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        x: dict[str, list] = {}
        y: dict[str, list] = {}
        w: dict[str, list] = {}
        for data, lo, hi in parts:
            for k, v in data["inputs"].items():
                x.setdefault(k, []).append(v[lo:hi])
            for k, v in data["targets"].items():
                y.setdefault(k, []).append(v[lo:hi])
            for k, v in data["weights"].items():
                w.setdefault(k, []).append(v[lo:hi])
            positives = data["positives"].slice(lo, hi - lo)
            lengths = pc.fill_null(pc.list_value_length(positives), 0).to_numpy(zero_copy_only=False)
            flat = vocab_index(pc.list_flatten(positives), self.spec.item_vocab)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            pick = starts + np.floor(rng.random(len(lengths)) * np.maximum(lengths, 1)).astype(np.int64)
            item = np.where(lengths > 0, flat[np.minimum(pick, max(len(flat) - 1, 0))] if len(flat) else OOV, OOV)
            table = self.items[data["as_of"]]
            for k, v in table.inputs(item).items():
                x.setdefault(k, []).append(v)
            x.setdefault("log_q", []).append(self.item_log_q[item])
            x.setdefault("group", []).append(data["group"][lo:hi])
            y.setdefault("retrieval", []).append(np.zeros(len(item), dtype=np.float32))
            w.setdefault("retrieval", []).append((lengths > 0).astype(np.float32))
        join = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
        return join(x), join(y), join(w)
