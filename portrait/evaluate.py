"""`portrait evaluate`: score what the pipeline publishes on a public dataset against interactions it never saw.

1. split: the dataset's interactions (portrait.datasets) are split by a protocol of ml/splits.py before
   anything lands; only the training part is written to the evaluation's own landing zone, and the
   held-out part goes to heldout.parquet with the user ids already pseudonymised (no raw id leaves the
   dataset reader, none is ever un-hashed);
2. pipeline: `portrait run` (every step of the DAG in order, validations included) in a subprocess whose
   lakehouse, landing zone and MLflow store live under the evaluation's work folder, with the dataset's
   config on top of the profile (PORTRAIT_DATASET) and the evaluate.pipeline_overrides settings;
3. score: publish.recommendations of the run date (read as Delta), and the baselines of ml/baselines.py
   trained on the run's silver.events (the training part as the model saw it), all scored by one scorer
   (ml.baselines.evaluate_recommender) against the same truth, and the truth users' top-k lists by
   ml.evaluate.diversity_report (coverage, Gini, intra-list diversity, novelty, distinct items);
4. interest tags (portrait/tag_eval.py): the published interest_tags of the run date, the user's own most
   frequent categories and the most popular ones, against the categories of the user's held-out items
   (precision, recall, F1, hit rate of the top evaluate.tags.k); skipped when no item has a category;
5. churn (temporal protocol, portrait/churn_eval.py): publish.user_profile.churn_risk of the run date,
   BG/NBD (lifetimes) and recency against "no model.churn_events event in the model.churn_horizon_days
   after the run date", AUC, ECE and a reliability plot; the held-out days must cover the horizon (on a
   one-item dataset such as CDNOW the temporal window is widened to it: there, churn is the point);
6. report: the table printed, logged to an MLflow run (experiment evaluate.experiment) in the caller's
   store, and written to the work folder as JSON and Markdown.

A dataset whose interactions name one item (CDNOW) skips the recommendation scoring: every list would
be that item, so the table says "skipped" and why.

Truth is the held-out (user, item) pairs of users the pipeline saw in training, less the pairs the user
already has in training (those are excluded from every list, so no recommender could score them).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from jobs.common.config import Config, load_config
from jobs.common.errors import ConfigError, PortraitError
from ml.splits import PROTOCOLS, SplitParams, keep_masks, split
from portrait.churn_eval import churn_skip_reason

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

RECOMMENDERS = ("model", "popularity", "cooccurrence", "als", "ease")
METRICS = ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k")
DIVERSITY = ("coverage", "gini", "intra_list_diversity", "novelty", "distinct_items")   # ml.evaluate.diversity_report
ENV_DATASET = "PORTRAIT_DATASET"
HELDOUT_FILE = "heldout.parquet"
STEP_LINE = re.compile(r"^(\w+) \(([\d.]+)s\): (.*)$")


class EvaluationError(PortraitError):
    """The evaluation could not finish: names the stage, the dataset and what to do."""


@dataclass(frozen=True)
class EvaluateParams:
    """evaluate.* of the profile, typed once."""

    split: SplitParams
    k: int
    work_dir: str
    experiment: str
    ease_l2: float
    ease_max_items: int | None
    als_rank: int
    als_max_iter: int
    pipeline_timeout_minutes: int
    tags_k: int = 3
    pipeline_overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tags_k < 1:
            raise ConfigError(f"evaluate.tags.k must be at least 1 (tags each scorer names), got {self.tags_k}")

    @classmethod
    def from_config(cls, cfg: Config) -> "EvaluateParams":
        max_items = cfg.get("evaluate.ease.max_items")
        return cls(split=SplitParams.from_config(cfg), k=int(cfg.get("recommend.k")),
                   work_dir=cfg.location("evaluate.work_dir"), experiment=str(cfg.get("evaluate.experiment")),
                   ease_l2=float(cfg.get("evaluate.ease.l2")),
                   ease_max_items=None if max_items is None else int(max_items),
                   als_rank=int(cfg.get("evaluate.als.rank")), als_max_iter=int(cfg.get("evaluate.als.max_iter")),
                   pipeline_timeout_minutes=int(cfg.get("evaluate.pipeline_timeout_minutes")),
                   tags_k=int(cfg.get("evaluate.tags.k")),
                   pipeline_overrides=dict(cfg.get("evaluate.pipeline_overrides") or {}))


# --- 1. split --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prepared:
    landing: Path
    heldout: Path
    description: str
    interactions: int
    held_out: int
    users: int
    first_day: dt.date            # the UTC days of the first and last training interaction:
    last_day: dt.date             # the pipeline runs for last_day and (re)loads every day from first_day


def _override_env(overrides: Mapping[str, Any], prefix: str = "PORTRAIT") -> dict[str, str]:
    """{"model": {"baselines": []}} -> {"PORTRAIT__MODEL__BASELINES": "[]"} (values as YAML flow); Spark
    option names under spark.conf keep their case, as jobs.common.config reads them."""
    import yaml

    env: dict[str, str] = {}
    for key, value in overrides.items():
        name = f"{prefix}__{str(key) if prefix == 'PORTRAIT__SPARK__CONF' else str(key).upper()}"
        if isinstance(value, Mapping) and value:
            env.update(_override_env(value, name))
        else:
            env[name] = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()
    return env


def work_environment(work: Path, dataset: str | None, overrides: Mapping[str, Any]) -> dict[str, str]:
    """Settings that put every location of the evaluation's pipeline run under `work`, with the dataset's
    conf/datasets/<name>.yaml on top of the profile (None: a dataset that lands in the profile's layout)."""
    env = {
        "PORTRAIT__LAKEHOUSE_ROOT": str(work / "lakehouse"),
        "PORTRAIT__LANDING_ZONE": str(work / "landing"),
        "PORTRAIT__GROUND_TRUTH_DIR": str(work / "ground_truth"),
        "PORTRAIT__MLFLOW__TRACKING_URI": f"sqlite:///{work / 'mlruns' / 'mlflow.db'}",
        "PORTRAIT__MLFLOW__ARTIFACT_ROOT": str(work / "mlruns" / "artifacts"),
        "PORTRAIT__MODEL__SNAPSHOT_DIR": str(work / "training"),
        "PORTRAIT__QUALITY__DOCS_DIR": str(work / "quality_docs"),
    }
    if dataset:
        env[ENV_DATASET] = dataset
    env.update(_override_env(overrides))
    return env


def heldout_frame(interactions: "pd.DataFrame", held_out: "pd.Series", key: bytes) -> "pd.DataFrame":
    """The held-out rows with user ids pseudonymised exactly as clean does (HMAC-SHA256 of the id as text)."""
    import pandas as pd

    from jobs.common.privacy import pseudonymise_py

    rows = interactions[held_out & interactions["item_id"].notna() & interactions["user_id"].notna()]
    return pd.DataFrame({
        "user_key": [pseudonymise_py(key, str(u)) for u in rows["user_id"]],
        "item_id": rows["item_id"].astype(str).to_numpy(),
        "ts": pd.to_datetime(rows["ts"], utc=True).to_numpy(),
        "source": rows["source"].astype(str).to_numpy(), "row": rows["row"].astype("int64").to_numpy(),
    })


def prepare(datasets: ModuleType, name: str, protocol: str, params: EvaluateParams, work: Path,
            key: bytes, land: bool = True) -> Prepared:
    """Split, land the training part under work/landing, write the held-out part to work/heldout.parquet.

    Only rows with a user, an item and a time are interactions to split; the others always land.
    `land=False` only repeats the (deterministic) split, for rescoring a finished run.
    """
    everything = datasets.interactions(name)
    interactions = everything[everything["user_id"].notna() & everything["item_id"].notna() & everything["ts"].notna()]
    if interactions.empty:
        raise EvaluationError(f"dataset {name} has no interaction with a user, an item and a time to split")
    held_out, description = split(interactions, protocol, params.split)
    if not held_out.any():
        raise EvaluationError(f"evaluate {name} --protocol {protocol}: the split holds nothing out ({description}); "
                              "the dataset has too few interactions per user or days for it")
    landing, heldout_path = work / "landing", work / HELDOUT_FILE
    if land:
        sizes = {source: len(table) for source, table in datasets.raw_tables(name).items()}
        if landing.exists():
            shutil.rmtree(landing)
        datasets.write_landing(name, landing, keep_masks(interactions, held_out, sizes))
        heldout_frame(interactions, held_out, key).to_parquet(heldout_path, index=False)
    import pandas as pd

    days = pd.to_datetime(interactions.loc[~held_out, "ts"], utc=True).dt.date
    return Prepared(landing, heldout_path, description, int(len(interactions)), int(held_out.sum()),
                    int(interactions["user_id"].nunique()), min(days), max(days))


# --- 2. pipeline -----------------------------------------------------------------------------------

def run_pipeline(work: Path, env: Mapping[str, str], run_date: dt.date, collect_days: int,
                 timeout_minutes: int) -> dict[str, float]:
    """`portrait run --date D --collect-days N` in a subprocess; {step label: seconds} from its output.

    Its whole output goes to work/pipeline.log; a failure raises with the log's last lines.
    """
    log_path = work / "pipeline.log"
    command = [sys.executable, "-m", "portrait.cli", "run", "--date", run_date.isoformat(),
               "--collect-days", str(collect_days)]
    with log_path.open("w", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        try:
            done = subprocess.run(command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout_minutes * 60)
        except subprocess.TimeoutExpired:
            raise EvaluationError(f"the pipeline run for {run_date} took more than {timeout_minutes} minutes "
                                  f"(evaluate.pipeline_timeout_minutes); its log is {log_path}") from None
    seconds = step_seconds(log_path)
    if done.returncode != 0:
        tail = " | ".join(log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-6:])
        raise EvaluationError(f"the pipeline run for {run_date} (collect_days {collect_days}) failed with exit "
                              f"code {done.returncode} after steps {', '.join(seconds) or 'none'}; "
                              f"log {log_path}; last lines: {tail}")
    return seconds


def step_seconds(log_path: Path) -> dict[str, float]:
    """{step: seconds} from `portrait run`'s lines "step (12.3s): ..." (validate, validate#2, ...)."""
    seconds: dict[str, float] = {}
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = STEP_LINE.match(line.strip())
        if match:
            label = match.group(1)
            n = sum(1 for s in seconds if s == label or s.startswith(label + "#"))
            seconds[label if n == 0 else f"{label}#{n + 1}"] = float(match.group(2))
    return seconds


# --- 3. score --------------------------------------------------------------------------------------

def truth_pairs(heldout: "DataFrame", train: "DataFrame") -> "DataFrame":
    """Held-out (user_key, item_id) pairs of users with training events, less pairs already in training."""
    from pyspark.sql import functions as F

    seen = train.where(F.col("item_id").isNotNull()).select("user_key", "item_id").distinct()
    return (heldout.select("user_key", "item_id").distinct()
            .join(train.select("user_key").distinct(), "user_key", "left_semi")
            .join(seen, ["user_key", "item_id"], "left_anti"))


def seen_share(recs: "DataFrame", train: "DataFrame", k: int) -> float:
    """Share of the top-k rows that name an item the user already has in training (should be 0)."""
    from pyspark.sql import functions as F

    top = recs.where(F.col("rank") <= k).select("user_key", "item_id")
    total = top.count()
    if not total:
        return float("nan")
    seen = train.where(F.col("item_id").isNotNull()).select("user_key", "item_id").distinct()
    return top.join(seen, ["user_key", "item_id"], "left_semi").count() / total


def recommenders(params: EvaluateParams) -> dict[str, Callable[["DataFrame", "DataFrame"], "DataFrame"]]:
    """name -> f(train, users) -> top-k rows; every baseline leaves out the user's training items."""
    from ml import baselines

    k = params.k
    return {
        "popularity": lambda train, users: baselines.popularity(train, users, k, remove_seen=True),
        "cooccurrence": lambda train, users: baselines.cooccurrence(train, k, remove_seen=True),
        "als": lambda train, users: baselines.als(train, k, rank=params.als_rank, max_iter=params.als_max_iter,
                                                  remove_seen=True),
        "ease": lambda train, users: baselines.ease(train, k, l2=params.ease_l2, max_items=params.ease_max_items,
                                                    remove_seen=True),
    }


def training_events(interactions: "pd.DataFrame", held_out: "pd.Series", key: bytes, lake: Config) -> "pd.DataFrame":
    """silver.events-shaped rows (user_key, item_id, event_type, event_date) of the training interactions,
    for --baselines-only: the event type is the source's constant in collect.sources (else purchase)."""
    import pandas as pd

    rows = heldout_frame(interactions, ~held_out, key)
    types = {s: str(lake.get(f"collect.sources.{s}.constants.event_type", "purchase")) for s in rows["source"].unique()}
    return pd.DataFrame({"user_key": rows["user_key"], "item_id": rows["item_id"],
                         "event_type": rows["source"].map(types), "event_date": pd.to_datetime(rows["ts"]).dt.date})


def score(spark: "SparkSession", lake: Config, heldout_path: Path, run_date: dt.date,
          params: EvaluateParams, train_rows: "pd.DataFrame | None" = None
          ) -> tuple[dict[str, dict[str, float]], dict[str, Any], dict[str, Any]]:
    """({recommender: metrics}, facts about the truth, tags) for the published lists and every baseline.

    tags: portrait.tag_eval's figures of the published interest tags and their two baselines on the
    held-out items' categories ({'skipped': why} with `train_rows` or when no item has a category).

    Accuracy (METRICS) comes from the scorer over all truth users; the diversity figures (DIVERSITY)
    from the same users' top-k lists, with item categories from silver.items (newest snapshot up to
    the run date) and popularity from the training events. With `train_rows` (--baselines-only) the
    baselines train on those rows, there is no model row, and no item has a category (no silver.items).
    """
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table, table_exists
    from ml.baselines import evaluate_recommender
    from ml.evaluate import diversity_inputs_spark, ranked_lists_spark

    if train_rows is None:
        for table in ("silver.events", "publish.recommendations"):
            if not table_exists(spark, lake, table):
                raise EvaluationError(f"{table} is missing under {lake.lakehouse_root}: "
                                      "the pipeline run did not write it")
        train = read_table(spark, lake, "silver.events").where(F.col("event_date") <= F.lit(run_date)).select(
            "user_key", "item_id", "event_type", "event_date").cache()
    else:
        train = spark.createDataFrame(train_rows, "user_key string, item_id string, event_type string, "
                                      "event_date date").cache()
    import pandas as pd

    # Through pandas: Spark refuses the nanosecond timestamps pandas writes, and only the pairs matter here.
    heldout_rows = pd.read_parquet(heldout_path, columns=["user_key", "item_id"])
    heldout = spark.createDataFrame(heldout_rows, "user_key string, item_id string")
    truth = truth_pairs(heldout, train).cache()
    users = truth.select("user_key").distinct()
    catalog_size = train.where(F.col("item_id").isNotNull()).select("item_id").distinct().count()
    published = (read_table(spark, lake, "publish.recommendations").where(F.col("as_of_date") == F.lit(run_date))
                 if train_rows is None else spark.createDataFrame([], "user_key string, item_id string, rank int"))
    facts = {
        "run_date": run_date.isoformat(), "train_events": train.count(), "catalog_items": catalog_size,
        "heldout_rows": heldout.count(), "truth_pairs": truth.count(), "truth_users": users.count(),
        "published_users": published.select("user_key").distinct().count(),
        "truth_users_with_a_list": published.join(users, "user_key", "left_semi").select("user_key").distinct().count(),
        "heldout_users_unknown_to_training": heldout.select("user_key").distinct()
        .join(train.select("user_key").distinct(), "user_key", "left_anti").count(),
    }
    if facts["truth_pairs"] == 0:
        raise EvaluationError("no held-out pair belongs to a user the pipeline saw in training: check that "
                              "the dataset's user ids reach silver.events unchanged (pseudonymised with the same key)")
    results: dict[str, dict[str, float]] = {}
    lists = {} if train_rows is not None else {"model": published.select("user_key", "item_id", "rank")}
    for name, recommend in recommenders(params).items():
        started = time.monotonic()
        lists[name] = recommend(train, users).cache()
        lists[name].count()
        results[name] = {"seconds": round(time.monotonic() - started, 1)}
    names = [r for r in RECOMMENDERS if r in lists]
    top = {name: ranked_lists_spark(lists[name], users) for name in names}
    items = (read_table(spark, lake, "silver.items").where(F.col("snapshot_date") <= F.lit(run_date))
             if train_rows is None and table_exists(spark, lake, "silver.items") else None)
    diversity = diversity_inputs_spark(train, items)
    # Coverage and Gini count over the training items and any item a list names beyond them, the same
    # catalogue for every row (a model may list an item nobody had in training).
    listed = {item for by_user in top.values() for ranked in by_user.values()
              for item in list(dict.fromkeys(ranked))[:params.k]}
    outside = listed - set(diversity.item_popularity)
    catalogue = catalog_size + len(outside)
    facts.update({"catalog_items_listed_outside_training": len(outside), "train_users": diversity.n_users,
                  "items_with_a_category": len(diversity.item_category)})
    for name in names:
        metrics = evaluate_recommender(lists[name], truth, params.k, catalog_size)
        results[name] = {**{m: float(metrics[m]) for m in METRICS},
                         **diversity.report(top[name], params.k, catalogue), "users": float(metrics["users"]),
                         "seen_share": seen_share(lists[name], train, params.k), **results.get(name, {})}
    if train_rows is None:
        from portrait.tag_eval import score_published_tags

        tags = score_published_tags(spark, lake, heldout_rows, train, run_date, params.tags_k)
    else:
        tags = {"skipped": "--baselines-only: no published profile"}
    return results, facts, tags


# --- 4. report -------------------------------------------------------------------------------------

def _figure(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def table_markdown(results: Mapping[str, Mapping[str, float]], k: int) -> str:
    """The accuracy and diversity of every recommender, one row each (n/a: nothing to measure)."""
    header = (f"| recommender | P@{k} | R@{k} | nDCG@{k} | MAP@{k} | coverage | Gini | ILD | novelty (bits) | "
              f"distinct items | seen in top {k} | users | fit+predict (s) |\n" + "|---" * 13 + "|")
    lines = [header]
    for name in [r for r in RECOMMENDERS if r in results]:
        r = results[name]
        seconds = r.get("seconds")
        distinct = r.get("distinct_items")
        lines.append(f"| {name} | {r['precision_at_k']:.4f} | {r['recall_at_k']:.4f} | {r['ndcg_at_k']:.4f} | "
                     f"{r['map_at_k']:.4f} | {_figure(r.get('coverage'))} | {_figure(r.get('gini'))} | "
                     f"{_figure(r.get('intra_list_diversity'))} | {_figure(r.get('novelty'), 2)} | "
                     f"{'n/a' if distinct is None else f'{int(distinct):,}'} | {r['seen_share']:.4f} | "
                     f"{int(r['users']):,} | {'pipeline' if seconds is None else f'{seconds:.1f}'} |")
    return "\n".join(lines)


def churn_events(interactions: "pd.DataFrame", key: bytes, lake: Config, event_types: tuple[str, ...]) -> "pd.DataFrame":
    """(user_key, event_date) of every interaction whose source's event type is a churn event, both sides of
    the cut-off (churn_eval reads the training days and labels with the days after)."""
    import pandas as pd

    everything = pd.Series(True, index=interactions.index)
    rows = training_events(interactions, ~everything, key, lake)
    return rows.loc[rows["event_type"].isin(event_types), ["user_key", "event_date"]].reset_index(drop=True)


def score_churn(spark: "SparkSession | None", lake: Config, interactions: "pd.DataFrame", key: bytes,
                run_date: dt.date, out_dir: Path) -> dict[str, Any]:
    """portrait.churn_eval.evaluate_churn at the run date (the last training day), with the published
    churn_risk of that day when `spark` is given (None: --baselines-only, BG/NBD and recency only)."""
    import pandas as pd

    from portrait.churn_eval import ChurnParams, evaluate_churn, published_churn_risk

    churn = ChurnParams.from_config(lake)
    events = churn_events(interactions, key, lake, churn.churn_events)
    published = None if spark is None else published_churn_risk(spark, lake, run_date)
    last_day = max(pd.to_datetime(interactions["ts"], utc=True).dt.date)
    return evaluate_churn(events, run_date, churn, out_dir, published=published, last_day=last_day)


def model_quality(work_env: Mapping[str, str]) -> dict[str, float]:
    """Tag, segment and churn figures the pipeline's training run logged on its own held-out days
    (labels the data itself gives: categories engaged next, purchases in the churn horizon)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=work_env["PORTRAIT__MLFLOW__TRACKING_URI"])
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    if not runs:
        return {}
    latest = max(runs, key=lambda r: r.info.start_time or 0)
    wanted = ("tag", "segment", "churn", "f1", "auc", "ece")
    return {name: float(value) for name, value in sorted(latest.data.metrics.items())
            if name.startswith("test_") and any(w in name for w in wanted)}


def log_to_mlflow(cfg: Config, experiment: str, dataset: str, protocol: str, record: Mapping[str, Any],
                  files: list[Path]) -> str:
    """One run in the caller's MLflow store: params, every figure as a metric, the table as artifacts."""
    import mlflow

    uri = cfg.mlflow_tracking_uri
    if cfg.mlflow_sqlite_path is not None:
        cfg.mlflow_sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        root = cfg.location("mlflow.artifact_root")
        mlflow.create_experiment(experiment, artifact_location=root if "://" in root else Path(root).as_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"{dataset}-{protocol}") as run:
        mlflow.set_tags({"dataset": dataset, "protocol": protocol,
                         **{f"{part}_skipped": why for part, why in record.get("skipped", {}).items() if why}})
        mlflow.log_params({"dataset": dataset, "protocol": protocol, "split": record["split"],
                           "k": record["k"], "run_date": record["facts"]["run_date"],
                           "collect_days": record["collect_days"]})
        metrics = {f"{name}_{m}": v for name, r in record["results"].items() for m, v in r.items()}
        metrics.update({f"facts_{k}": float(v) for k, v in record["facts"].items() if isinstance(v, (int, float))})
        metrics.update({f"step_seconds_{k.replace('#', '_')}": v for k, v in record["step_seconds"].items()})
        metrics.update({f"pipeline_{k}": v for k, v in record["model_quality"].items()})
        churn = record.get("churn") or {}
        metrics.update({f"churn_{name}_{m}": v for name, r in churn.get("results", {}).items() for m, v in r.items()})
        metrics.update({k: float(v) for k, v in churn.get("facts", {}).items() if isinstance(v, (int, float))})
        tags = record.get("tags") or {}
        metrics.update({f"tags_{name}_{m}": v for name, r in tags.get("results", {}).items() for m, v in r.items()})
        metrics.update({k: float(v) for k, v in tags.get("facts", {}).items() if isinstance(v, (int, float))})
        metrics["wall_seconds"] = record["wall_seconds"]
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})   # NaN is not a metric
        for path in files:
            mlflow.log_artifact(str(path))
        return run.info.run_id


def recommendations_skip_reason(interactions: "pd.DataFrame") -> str | None:
    """Why recommendations cannot be scored on these interactions (None: they can): with one item
    every list is that item, and nothing is left to recommend to a user who has it."""
    items = interactions["item_id"].nunique()
    if items < 2:
        return f"recommendations skipped: the interactions name {items} item (nothing to rank)"
    return None


def report_markdown(record: Mapping[str, Any], k: int) -> str:
    """The recommendation table, the churn table and the interest-tag table (each, or why it was skipped)."""
    skipped = record.get("skipped", {})
    parts = [skipped["recommendations"] if skipped.get("recommendations") else table_markdown(record["results"], k)]
    churn = record.get("churn") or {}
    if churn:
        parts.append(churn["table"])
    elif skipped.get("churn"):
        parts.append(f"churn not scored: {skipped['churn']}")
    tags = record.get("tags") or {}
    if tags:
        parts.append(tags["table"])
    elif skipped.get("tags"):
        parts.append(f"interest tags not scored: {skipped['tags']}")
    return "\n\n".join(parts)


def evaluate(name: str, protocol: str, cfg: Config | None = None, datasets: ModuleType | None = None,
             echo: Callable[[str], None] = print, rescore: bool = False,
             baselines_only: bool = False) -> dict[str, Any]:
    """The whole evaluation of one dataset and protocol; returns the record it wrote and logged.

    `rescore` scores a finished run again (its lakehouse, heldout.parquet and pipeline.log in the work
    folder) without landing or running the pipeline: for new baselines or settings of the scorer.
    `baselines_only` lands nothing and runs no pipeline: the baselines train on the training
    interactions as the dataset gives them (no cleaning), and the table has no model row.
    """
    started = time.monotonic()
    cfg = cfg or load_config()
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; protocols are: {', '.join(PROTOCOLS)}")
    if datasets is None:
        import portrait.datasets as datasets  # noqa: PLW0127  (engineer A's dataset API)
    known = list(datasets.dataset_names())
    if name not in known:
        raise ConfigError(f"unknown dataset {name!r}; datasets are: {', '.join(known)}")
    params = EvaluateParams.from_config(cfg)
    variant = protocol + ("-leave-last-out" if protocol == "temporal" and params.split.leave_last_out else "") + (
        "-baselines-only" if baselines_only else "")
    work = Path(params.work_dir) / f"{name}-{variant}"
    if rescore and not (work / HELDOUT_FILE).is_file():
        raise EvaluationError(f"--rescore needs a finished evaluation in {work}; run without --rescore first")
    if not rescore:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
    from jobs.common.config import available_datasets

    env = work_environment(work, name if name in available_datasets(cfg.root) else None, params.pipeline_overrides)
    lake = load_config(environ={**os.environ, **env})

    from jobs.common.privacy import load_hmac_key

    t0 = time.monotonic()
    key = load_hmac_key(lake)
    everything = datasets.interactions(name)
    usable = everything[everything["user_id"].notna() & everything["item_id"].notna() & everything["ts"].notna()]
    skipped = {"recommendations": recommendations_skip_reason(usable), "churn": None}
    horizon = int(lake.get("model.churn_horizon_days"))
    if (skipped["recommendations"] and protocol == "temporal" and not params.split.leave_last_out
            and params.split.test_days < horizon):
        # One item: churn is all there is to score, so the held-out window is the churn horizon.
        echo(f"{name}: {skipped['recommendations']}; the temporal window is widened from evaluate.test_days "
             f"{params.split.test_days} to the churn horizon {horizon} (model.churn_horizon_days)")
        params = replace(params, split=replace(params.split, test_days=horizon))
    skipped["churn"] = churn_skip_reason(protocol, params.split.leave_last_out, params.split.test_days, horizon)
    prepared = prepare(datasets, name, protocol, params, work, key, land=not rescore and not baselines_only)
    train_rows = None
    if baselines_only:
        held_out, _ = split(usable, protocol, params.split)
        heldout_frame(usable, held_out, key).to_parquet(prepared.heldout, index=False)
        train_rows = training_events(usable, held_out, key, lake)
    first, last = prepared.first_day, prepared.last_day
    collect_days = (last - first).days + 1
    split_seconds = round(time.monotonic() - t0, 1)
    echo(f"{name}: {prepared.description}; {prepared.held_out:,} of {prepared.interactions:,} interactions held out; "
         f"training days {first}..{last} ({collect_days}) landed in {split_seconds}s")
    if baselines_only:
        steps = {}
    elif rescore:
        steps = step_seconds(work / "pipeline.log")
    else:
        echo(f"pipeline: portrait run --date {last} --collect-days {collect_days} (log {work / 'pipeline.log'})")
        steps = run_pipeline(work, env, last, collect_days, params.pipeline_timeout_minutes)
    echo("pipeline steps (s): " + ", ".join(f"{k} {v:g}" for k, v in steps.items()))

    spark = None
    if not skipped["recommendations"] or not baselines_only:
        from jobs.common.spark import build_spark

        spark = build_spark(lake, app_suffix="evaluate")
    t0 = time.monotonic()
    tags: dict[str, Any] = {}
    if skipped["recommendations"]:
        results, facts = {}, {"run_date": last.isoformat()}
    else:
        results, facts, tags = score(spark, lake, prepared.heldout, last, params, train_rows)
    skipped["tags"] = tags.get("skipped") or ("scored with the recommendations, which were skipped"
                                              if skipped["recommendations"] else None)
    score_seconds = round(time.monotonic() - t0, 1)
    churn: dict[str, Any] = {}
    if not skipped["churn"]:
        t0 = time.monotonic()
        churn = score_churn(None if baselines_only else spark, lake, usable, key, last, work)
        score_seconds = round(score_seconds + time.monotonic() - t0, 1)
    record = {
        "dataset": name, "protocol": variant, "split": prepared.description, "k": params.k,
        "collect_days": collect_days, "facts": {**facts, "interactions": prepared.interactions,
                                                "held_out": prepared.held_out, "users": prepared.users},
        "results": results, "skipped": skipped,
        "churn": {k: churn[k] for k in ("results", "facts", "table")} if churn else {},
        "tags": {k: tags[k] for k in ("results", "facts", "table")} if tags.get("results") else {},
        "step_seconds": {"split_and_land": split_seconds, **steps, "score_and_baselines": score_seconds},
        "model_quality": {} if baselines_only else model_quality(env),
        "wall_seconds": round(time.monotonic() - started, 1),
        "command": f"portrait evaluate --dataset {name} --protocol {protocol}",
        "pipeline_overrides": dict(params.pipeline_overrides),
    }
    table = report_markdown(record, params.k)
    (work / "evaluation.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    (work / "evaluation.md").write_text(table + "\n", encoding="utf-8")
    record["mlflow_run_id"] = log_to_mlflow(cfg, params.experiment, name, variant, record,
                                            [work / "evaluation.json", work / "evaluation.md",
                                             *churn.get("files", [])])
    echo(table)
    if not skipped["recommendations"]:
        echo(f"truth: {facts['truth_pairs']:,} pairs of {facts['truth_users']:,} users "
             f"({facts['truth_users_with_a_list']:,} with a published list); "
             f"catalogue {facts['catalog_items']:,} items")
    if churn:
        f = churn["facts"]
        echo(f"churn: {f['churn_users_known']:,} users with a purchase by {f['churn_cutoff']}, labelled on "
             f"({f['churn_cutoff']}, {f['churn_window_end']}]; BG/NBD r {f['bgnbd_r']:.3f} alpha "
             f"{f['bgnbd_alpha']:.2f} a {f['bgnbd_a']:.3f} b {f['bgnbd_b']:.3f}; plot {work / 'churn_calibration.png'}")
    if record["model_quality"]:
        echo("pipeline's own test figures: " + ", ".join(f"{k} {v:.4f}" for k, v in record["model_quality"].items()))
    echo(f"wall time {record['wall_seconds']:.0f}s; MLflow run {record['mlflow_run_id']} "
         f"(experiment {params.experiment}); {work / 'evaluation.json'}")
    return record


__all__ = ["DIVERSITY", "EvaluateParams", "EvaluationError", "churn_events", "evaluate", "heldout_frame",
           "prepare", "recommendations_skip_reason", "report_markdown", "score", "score_churn", "step_seconds",
           "table_markdown", "truth_pairs", "work_environment"]
