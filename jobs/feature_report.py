"""Feature selection report: how much each feature says about the next days, and which ones to drop.

For run date R, features as of R - horizon (`pipeline.label_horizon_days`) are scored against what the
users did in the following horizon days: the interest labels of the model (top-level categories engaged,
ml/dataset.py `transform_interest_labels`) and a churn label (no event at all). Per feature: Pearson
correlation, chi-square and information gain on quantile bins, and mutual information (scikit-learn).
Near-constant features and the weaker one of each highly correlated pair are flagged `keep = false` with
a reason; thresholds are in `features.report`. The result goes to ops.feature_report (one row per feature
per run date); `selected_features` reads it back.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from jobs.common.audit import write_audit
from jobs.common.config import Config
from jobs.common.delta import read_table, replace_dates, table_exists
from jobs.common.errors import InputDataError
from jobs.common.feature_windows import FeatureWindows
from jobs.common.step import StepResult, TableCount

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("portrait.feature_report")

REPORT_SCHEMA = (
    "run_date date, as_of_date date, feature string, feature_version string, n_users long, missing_share double, "
    "distinct_values long, top_value_share double, std double, pearson_churn double, chi2_churn double, "
    "chi2_p_churn double, info_gain_churn double, mi_churn double, pearson_interest_max double, "
    "info_gain_interest_mean double, mi_interest_mean double, max_abs_corr double, most_correlated_with string, "
    "keep boolean, reason string"
)


@dataclass(frozen=True)
class ReportSettings:
    near_constant_share: float = 0.99   # drop when one value covers at least this share of users
    max_correlation: float = 0.95       # drop the weaker of two features with |Pearson r| at least this
    bins: int = 10                      # quantile bins for chi-square and information gain
    sample_users: int = 50_000          # users scored at most (a deterministic hash sample)
    mi_sample_users: int = 5_000        # users for the (slower) mutual information estimates
    seed: int = 7

    @classmethod
    def from_config(cls, cfg: Config) -> "ReportSettings":
        section = cfg.get("features.report", {}) or {}
        return cls(**{k: type(getattr(cls, k))(v) for k, v in section.items() if k in cls.__dataclass_fields__})


# --- the statistics (plain numpy; tests/test_feature_report.py checks them by hand) ------------------


def quantile_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin index per value: the values themselves when there are few, else quantile bins; NaN gets -1."""
    out = np.full(values.shape, -1, dtype=np.int64)
    known = ~np.isnan(values)
    distinct = np.unique(values[known])
    if distinct.size <= bins:
        out[known] = np.searchsorted(distinct, values[known])
        return out
    edges = np.unique(np.quantile(values[known], np.linspace(0, 1, bins + 1)[1:-1]))
    out[known] = np.searchsorted(edges, values[known], side="right")
    return out


def _entropy(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def _contingency(binned: np.ndarray, label: np.ndarray) -> np.ndarray:
    _, rows = np.unique(binned, return_inverse=True)
    _, cols = np.unique(label, return_inverse=True)
    table = np.zeros((rows.max() + 1, cols.max() + 1))
    np.add.at(table, (rows, cols), 1)
    return table


def information_gain(binned: np.ndarray, label: np.ndarray) -> float:
    """H(label) - H(label | bin), in bits."""
    table = _contingency(binned, label)
    n = table.sum()
    conditional = sum(row.sum() / n * _entropy(row) for row in table)
    return max(0.0, _entropy(table.sum(axis=0)) - conditional)


def chi_square(binned: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """Pearson's chi-square test of independence of bin and label (no continuity correction)."""
    from scipy.stats import chi2_contingency

    table = _contingency(binned, label)
    if table.shape[0] < 2 or table.shape[1] < 2:
        return 0.0, 1.0
    result = chi2_contingency(table, correction=False)
    return float(result[0]), float(result[1])


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r, 0 when either side is constant."""
    x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    sx, sy = x.std(), y.std()
    if sx == 0 or sy == 0:
        return 0.0
    return float(((x - x.mean()) * (y - y.mean())).mean() / (sx * sy))


def mutual_information(x: np.ndarray, label: np.ndarray, seed: int) -> float:
    """scikit-learn's k-nearest-neighbour estimate of I(x; label), in nats."""
    from sklearn.feature_selection import mutual_info_classif

    if np.unique(label).size < 2 or np.unique(x).size < 2:
        return 0.0
    return float(mutual_info_classif(x.reshape(-1, 1), label, discrete_features=False, random_state=seed)[0])


def score_features(frame: "pd.DataFrame", features: list[str], interest: np.ndarray, churn: np.ndarray,
                   settings: ReportSettings) -> "pd.DataFrame":
    """One row per feature: metrics, then keep/drop with a reason.

    frame holds the feature columns; interest is users x categories (0/1); churn is 0/1 per user.
    Order of `features` breaks ties: of two equally relevant correlated features the earlier stays.
    """
    import pandas as pd

    n = len(frame)
    rng = np.random.default_rng(settings.seed)
    mi_rows = np.sort(rng.choice(n, size=min(n, settings.mi_sample_users), replace=False)) if n else np.array([], int)
    live_labels = [j for j in range(interest.shape[1]) if 0 < interest[:, j].sum() < n]
    rows = []
    for name in features:
        raw = frame[name].to_numpy(dtype="float64")
        missing = np.isnan(raw)
        x = np.where(missing, 0.0, raw)
        values, counts = np.unique(raw[~missing], return_counts=True)
        top_share = (max(counts.max() if counts.size else 0, missing.sum())) / n if n else 1.0
        binned = quantile_bins(raw, settings.bins)
        chi2, chi2_p = chi_square(binned, churn)
        rows.append({
            "feature": name, "n_users": n, "missing_share": float(missing.mean()) if n else 0.0,
            "distinct_values": int(values.size), "top_value_share": float(top_share), "std": float(x.std()) if n else 0.0,
            "pearson_churn": pearson(x, churn), "chi2_churn": chi2, "chi2_p_churn": chi2_p,
            "info_gain_churn": information_gain(binned, churn),
            "mi_churn": mutual_information(x[mi_rows], churn[mi_rows], settings.seed),
            "pearson_interest_max": max((abs(pearson(x, interest[:, j])) for j in live_labels), default=0.0),
            "info_gain_interest_mean": float(np.mean([information_gain(binned, interest[:, j]) for j in live_labels]))
            if live_labels else 0.0,
            "mi_interest_mean": float(np.mean([mutual_information(x[mi_rows], interest[mi_rows, j], settings.seed)
                                               for j in live_labels])) if live_labels else 0.0,
        })
    report = pd.DataFrame(rows)
    _decide(report, frame, features, settings)
    return report


def _decide(report: "pd.DataFrame", frame: "pd.DataFrame", features: list[str], settings: ReportSettings) -> None:
    """keep / reason: near-constant first, then greedy by relevance against highly correlated ones."""
    matrix = np.nan_to_num(frame[features].to_numpy(dtype="float64"))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(matrix, rowvar=False)) if len(frame) > 1 else np.zeros((len(features),) * 2)
    corr = np.atleast_2d(corr)
    np.fill_diagonal(corr, 0.0)
    strongest = np.abs(corr).argmax(axis=1)
    report["max_abs_corr"] = np.abs(corr).max(axis=1)
    report["most_correlated_with"] = [features[j] if corr[i, j] != 0 else None for i, j in enumerate(strongest)]

    keep = np.ones(len(features), dtype=bool)
    reasons = ["kept"] * len(features)
    for i in range(len(features)):
        if report.at[i, "top_value_share"] >= settings.near_constant_share or report.at[i, "std"] == 0:
            keep[i] = False
            reasons[i] = f"near_constant: one value covers {report.at[i, 'top_value_share']:.3f} of users"
    relevance = report["info_gain_churn"] + report["info_gain_interest_mean"]
    order = sorted((i for i in range(len(features)) if keep[i]), key=lambda i: (-relevance[i], i))
    kept: list[int] = []
    for i in order:
        rival = next((j for j in kept if abs(corr[i, j]) >= settings.max_correlation), None)
        if rival is None:
            kept.append(i)
        else:
            keep[i] = False
            reasons[i] = f"correlated: |r| = {abs(corr[i, rival]):.3f} with {features[rival]}, which says more"
    report["keep"] = keep
    report["reason"] = reasons


# --- the step ------------------------------------------------------------------------------------------


def _features_as_of(spark: "SparkSession", cfg: Config, as_of: dt.date) -> "DataFrame":
    """gold.user_features of as_of when stored with this feature version, else a full recomputation."""
    from pyspark.sql import functions as F

    from jobs.features import build_user_features, feature_version

    version = feature_version(FeatureWindows.from_config(cfg))
    if table_exists(spark, cfg, "gold.user_features"):
        stored = read_table(spark, cfg, "gold.user_features").where(
            (F.col("as_of_date") == F.lit(as_of)) & (F.col("feature_version") == F.lit(version)))
        if stored.limit(1).count():
            return stored
    log.info("gold.user_features has no version-%s rows for %s; recomputing them", version, as_of)
    return build_user_features(spark, cfg, as_of)


def report_frame(spark: "SparkSession", cfg: Config, run_date: dt.date,
                 settings: ReportSettings) -> tuple["pd.DataFrame", dt.date, list[str]]:
    """The scored report for run_date, as pandas, with the as-of date and the features scored."""
    from pyspark.sql import functions as F

    from jobs.features import affinity_name, latest_snapshot, numeric_features
    from ml.dataset import transform_interest_labels, vocab_as_of, with_affinity_columns

    horizon = int(cfg.get("pipeline.label_horizon_days", 7))
    as_of = run_date - dt.timedelta(days=horizon)
    events = read_table(spark, cfg, "silver.events")
    first_day = events.agg(F.min("event_date")).collect()[0][0]
    if first_day is None or first_day > as_of:
        raise InputDataError(
            f"the feature report for {run_date} needs events on or before {as_of} (features) and after it "
            f"(labels), but silver.events starts on {first_day}; load more history or report a later date"
        )
    # One affinity per entry of the as-of date's category vocabulary; the interest labels use the same list.
    vocab = vocab_as_of(spark, cfg, as_of)
    features = list(numeric_features(FeatureWindows.from_config(cfg))) + [affinity_name(c) for c in vocab]
    table = with_affinity_columns(_features_as_of(spark, cfg, as_of), vocab, vocab).select("user_key", *features)
    total = table.count()
    if total > settings.sample_users:  # a hash sample: the same users every run
        share = settings.sample_users / total
        table = table.where((F.abs(F.xxhash64("user_key")) % 1_000_000) < int(share * 1_000_000))
    labels = transform_interest_labels(events, latest_snapshot(spark, cfg, "silver.items", run_date), as_of, run_date,
                                       vocab)
    active = events.where((F.col("event_date") > F.lit(as_of)) & (F.col("event_date") <= F.lit(run_date))).select(
        "user_key").distinct().withColumn("_active", F.lit(1))
    frame = table.join(labels, "user_key", "left").join(active, "user_key", "left").orderBy("user_key").toPandas()
    if frame.empty:
        raise InputDataError(f"gold.user_features has no users as of {as_of}; run the features step for that date")
    # Users without events in the horizon have no label row: no interest, and they churned.
    interest = np.stack([np.zeros(len(vocab)) if v is None else np.asarray(v, dtype="float64") for v in frame["labels"]])
    churn = (frame["_active"].isna()).to_numpy(dtype="int64")
    return score_features(frame, features, interest.astype("int64"), churn, settings), as_of, features


def run(spark: "SparkSession", cfg: Config, run_date: dt.date) -> StepResult:
    from jobs.features import feature_version

    settings = ReportSettings.from_config(cfg)
    report, as_of, features = report_frame(spark, cfg, run_date, settings)
    report.insert(0, "run_date", run_date)
    report.insert(1, "as_of_date", as_of)
    report.insert(3, "feature_version", feature_version(FeatureWindows.from_config(cfg)))
    columns = [c.split()[0] for c in REPORT_SCHEMA.split(", ")]
    records = [tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row)
               for row in report[columns].itertuples(index=False, name=None)]
    frame = spark.createDataFrame(records, REPORT_SCHEMA)
    written = replace_dates(frame, cfg, "ops.feature_report", [run_date])
    result = StepResult("feature_report", run_date, [TableCount("ops.feature_report", written, written)])
    dropped = report.loc[~report["keep"], "feature"].tolist()
    result.details.update({"as_of_date": as_of.isoformat(), "features": len(features), "kept": len(features) - len(dropped),
                           "dropped": dropped, "users": int(report["n_users"].iloc[0]) if len(report) else 0})
    write_audit(spark, cfg, "feature_report", run_date, result.tables)
    return result


def selected_features(spark: "SparkSession", cfg: Config, run_date: dt.date) -> list[str]:
    """The features the newest report on or before run_date keeps, in report order."""
    from pyspark.sql import functions as F

    report = read_table(spark, cfg, "ops.feature_report").where(F.col("run_date") <= F.lit(run_date))
    newest = report.agg(F.max("run_date")).collect()[0][0]
    if newest is None:
        raise InputDataError(f"ops.feature_report has no report on or before {run_date}; run the feature_report step")
    from jobs.features import numeric_features

    # The numeric features in their order, then the affinities (their names vary with the vocabulary) by name.
    order = {name: i for i, name in enumerate(numeric_features(FeatureWindows.from_config(cfg)))}
    kept = [r["feature"] for r in report.where((F.col("run_date") == F.lit(newest)) & F.col("keep")).collect()]
    return sorted(kept, key=lambda name: (order.get(name, len(order)), name))
