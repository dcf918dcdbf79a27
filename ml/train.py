"""Train: fit the profile model on a time-based split, test it against the baselines and the champion
on the same held-out days, log everything to MLflow, and move `champion` only when it earns it.

The step is `run(spark, cfg, run_date, retrain="auto")`. Spark writes the training snapshot and the
baselines' recommendations; everything after that (fitting, evaluation, the gate) is plain Python
over the snapshot, `train_and_register`, which the tests drive directly. Nothing touches MLflow
until the candidate has been fitted and evaluated, so a bad input leaves the registry as it was.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.common.config import Config
from jobs.common.errors import ConfigError, InputDataError, PortraitError
from jobs.common.step import StepResult
from ml.dataset import (
    ExampleDataset, LossWeights, ModelSpec, Snapshot, SplitPlan, build_spec, chunks_of, churn_events, encode_labels,
    encode_users, label_stats, load_items, neighbour_top_n, numeric_matrix, plan_from_config, read_table,
    snapshot_root, user_numeric, write_snapshot,
)
from ml.evaluate import (
    DiversityInputs, binary_report, ndcg_per_user, per_tag_f1, planted_interest_f1, ranking_report, segment_agreement,
    tag_report, top_k_tags,
)
from ml.segments import PLANTED_TO_SEGMENTS

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

    from ml.registry import GateDecision, GateSettings, Scored
    from ml.score import Scorer

log = logging.getLogger("portrait.train")

RETRAIN_CHOICES = ("auto", "always", "never")
GATE_METRIC = "ndcg_at_k"
INPUT_TABLES = ("silver.events", "silver.items", "silver.users", "gold.user_features", "gold.item_features",
                "gold.user_sequences")
BASELINES = ("popularity", "cooccurrence", "als")


# --- retrain cadence ------------------------------------------------------------------------------

def retrain_needed(cfg: Config, run_date: dt.date, retrain: str) -> tuple[bool, str]:
    """(train now?, why). auto: when there is no champion, it is older than model.retrain_every_days,
    or it was trained on another feature version (windows included); always / never: as they say."""
    from jobs.common.feature_windows import FeatureWindows
    from jobs.features import feature_version
    from ml.registry import champion_run

    if retrain not in RETRAIN_CHOICES:
        raise ConfigError(f"retrain is '{retrain}'; use one of {', '.join(RETRAIN_CHOICES)}")
    version, run = champion_run(cfg)
    if retrain == "always":
        return True, "retrain=always"
    if version is None:
        if retrain == "never":
            raise PortraitError(f"retrain=never for {run_date}, but model {cfg.get('mlflow.registered_model')} has no "
                                "champion to reuse; run with retrain=auto or always first")
        return True, "no champion yet"
    params = run.data.params
    if retrain == "never":
        return False, f"retrain=never: reusing champion version {version.version}"
    current = feature_version(FeatureWindows.from_config(cfg))
    if params.get("feature_version", current) != current:
        return True, (f"champion version {version.version} was trained on feature version "
                      f"{params.get('feature_version')}, the features are now version {current}")
    every = int(cfg.get("model.retrain_every_days", 7))
    trained_for = dt.date.fromisoformat(params["run_date"]) if "run_date" in params else None
    if trained_for is None:
        return True, f"champion version {version.version} records no run date"
    age = (run_date - trained_for).days
    if age >= every:
        return True, f"champion version {version.version} was trained for {trained_for}, {age} days ago (>= {every})"
    return False, (f"champion version {version.version} was trained for {trained_for}, {age} day(s) before "
                   f"{run_date} (< model.retrain_every_days={every}); reusing it")


# --- the held-out days ----------------------------------------------------------------------------

@dataclass
class Holdout:
    """The test as-of date's rows and truth: what every recommender is scored on."""

    as_of: dt.date
    boundary: dt.date                  # the last day whose events may label these rows
    table: "pa.Table"                  # every test example row (features, sequence, labels)
    items: "pa.Table"                  # item features of the test as-of date
    truth: dict[str, set[str]]         # known users with at least one item in the horizon
    catalog_size: int
    # Every user's whole history up to as_of (ml/itemitem.py), for the item-item term; None: not loaded.
    history: dict[str, list[str]] | None = None

    @property
    def users(self) -> list[str]:
        return sorted(self.truth)


def sample_users(keys, limit: int) -> set[str]:
    """A deterministic sample: the `limit` keys with the smallest SHA-1, the same for every recommender."""
    ranked = sorted(keys, key=lambda k: hashlib.sha1(str(k).encode("utf-8")).hexdigest())
    return set(ranked[:limit])


def load_holdout(snapshot: Snapshot, max_users: int, split: str = "test") -> Holdout:
    """The rows of the test (or validation) as-of date; truth = known users' items in its horizon."""
    import pyarrow as pa

    plan = snapshot.plan
    as_of = plan.test_as_of if split == "test" else plan.validation_as_of
    table = read_table(snapshot.files([as_of]))
    if table.num_rows == 0:
        raise InputDataError(f"the training snapshot at {snapshot.root} has no {split} rows for {as_of}")
    item_files = snapshot.files([as_of], "items")
    items = pa.concat_tables([_read_parquet(p) for p in item_files], promote_options="default")
    keys = table.column("user_key").to_pylist()
    positives = table.column("positives").to_pylist()
    known = table.column("known").to_pylist() if "known" in table.column_names else [True] * len(keys)
    truth = {k: set(p) for k, p, seen in zip(keys, positives, known) if p and seen}
    if len(truth) > max_users:
        kept = sample_users(truth, max_users)
        truth = {k: v for k, v in truth.items() if k in kept}
    if not truth:
        raise InputDataError(f"no known user interacted with an item in the {split} days after {as_of}; "
                             "nothing to evaluate on")
    return Holdout(as_of, plan.boundary(split), table, items, truth, items.num_rows)


def _read_parquet(path: str) -> "pa.Table":
    from ml.dataset import _open_parquet

    return _open_parquet(path).read()


def model_recommendations(scorer: "Scorer", holdout: Holdout, k: int, item_vectors=None,
                          scores=None, neighbours=None, item_item=None) -> tuple[dict[str, list[str]], Any]:
    """The scorer's top k for the holdout users, without items they bought by the test date.

    `model_candidates`' lists as user_key -> item ids; the same arguments.
    """
    from ml.retrieval import ranked_lists

    candidates = model_candidates(scorer, holdout, k, item_vectors, scores, neighbours, item_item)
    return ranked_lists(candidates.scores.user_keys, candidates.item_ids, candidates.top), candidates.scores


@dataclass(frozen=True)
class Candidates:
    """The top n of each holdout user, as ml.retrieval.top_items gives them."""

    scores: Any                        # the users' Scores (user_keys: row order of top and logits)
    item_ids: list[str]                # top's positions are positions in this list
    top: np.ndarray                    # (users, n) item positions, best first, -1 fillers
    logits: np.ndarray                 # (users, n) their logits, -inf for fillers


def model_candidates(scorer: "Scorer", holdout: Holdout, n: int, item_vectors=None,
                     scores=None, neighbours=None, item_item=None) -> Candidates:
    """The scorer's top n for the holdout users, without items they bought by the test date.

    `item_vectors` is scorer.items(holdout.items), `scores` the Scores of the holdout users (as
    this function returns them), `neighbours` the day's item similarity (Scorer.neighbours of
    every holdout row, not only the evaluated users) and `item_item` the day's item-item weights
    (`holdout_item_item`) when the caller already has them. The item-item term needs holdout.history.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from ml.retrieval import positions, top_items

    mask = pc.is_in(holdout.table.column("user_key"), value_set=pa.array(holdout.users, pa.string()))
    rows = holdout.table.filter(mask)
    items, vectors = item_vectors or scorer.items(holdout.items)      # vectors[i] belongs to items.item_ids[i]
    if scores is None:
        scores = scorer.score(rows, items)
    if neighbours is None:
        neighbours = scorer.neighbours(holdout.table, items)
    index = {item_id: pos for pos, item_id in enumerate(items.item_ids)}
    histories = None
    if holdout.history is not None:
        histories = positions([holdout.history.get(u) for u in scores.user_keys], index)
        if item_item is None and scores.item_item_scale:
            item_item = holdout_item_item(scorer, holdout, items)
    bought = rows.column("bought").to_pylist() if "bought" in rows.column_names else [[]] * rows.num_rows
    top, logits = top_items(scores.embeddings, vectors, n, positions([b or [] for b in bought], index),
                            history=scores.history(items, neighbours, item_item, histories))
    return Candidates(scores, list(items.item_ids), top, logits)


def holdout_item_item(scorer: "Scorer", holdout: Holdout, items, settings=None):
    """ml.itemitem.ItemItem of every user's history in holdout.history, positions as in `items` (the
    holdout's ItemTable), under `settings` (default: the scorer's spec); None without a history."""
    if holdout.history is None:
        return None
    from ml.itemitem import ItemItem, ItemItemSettings
    from ml.retrieval import positions

    index = {item_id: pos for pos, item_id in enumerate(items.item_ids)}
    settings = settings or ItemItemSettings(**scorer.spec.item_item)
    return ItemItem.fit(positions(list(holdout.history.values()), index), len(items.item_ids), settings)


def holdout_diversity(recs: dict[str, list[str]], holdout: Holdout, k: int,
                      diversity: DiversityInputs | None) -> dict[str, float]:
    """Gini, intra-list diversity, novelty and distinct items of the holdout users' top k
    (ml.evaluate.diversity_report; coverage stays ranking_report's). The catalogue is the test date's
    items and any item a list names beyond them. Without `diversity` (no Spark inputs) intra-list
    diversity and novelty are NaN, which MLflow does not log."""
    lists = {u: recs.get(u, []) for u in holdout.truth}
    catalogue = len(set(holdout.items.column("item_id").to_pylist()).union(*lists.values()))
    report = (diversity or DiversityInputs({}, {}, 0)).report(lists, k, catalogue)
    return {m: v for m, v in report.items() if m != "coverage"}


def evaluate_candidate(scorer: "Scorer", holdout: Holdout, k: int,
                       diversity: DiversityInputs | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Ranking and diversity metrics on the holdout users, plus tags, churn and segment metrics on the test rows."""
    item_vectors = scorer.items(holdout.items)
    recs, _ = model_recommendations(scorer, holdout, k, item_vectors)
    metrics = ranking_report(recs, holdout.truth, k, holdout.catalog_size)
    metrics.update(holdout_diversity(recs, holdout, k, diversity))
    scores = scorer.score(holdout.table, item_vectors[0])
    targets, weights = encode_labels(holdout.table, scorer.spec,
                                     LossWeights(np.ones(len(scorer.spec.segments), np.float32), holdout.boundary))
    churn_observable = weights["churn"] > 0
    active = targets["interest_tags"].sum(axis=1) > 0
    tags = tag_report(targets["interest_tags"][active], scores.tag_scores[active])
    churn = binary_report(targets["churn"].ravel(), scores.churn, churn_observable)
    segment = targets["segment"]
    has_segment = holdout.table.column("segment_label").to_numpy(zero_copy_only=False) >= 0
    segment_accuracy = float(np.mean(scores.segment_probs[has_segment].argmax(axis=1) == segment[has_segment])) \
        if has_segment.any() else float("nan")
    metrics.update({f"tag_{k2}": v for k2, v in tags.items()})
    metrics.update({"churn_auc": churn["auc"], "churn_ece": churn["ece"], "churn_labelled": churn["labelled"],
                    "segment_accuracy": segment_accuracy})
    detail = {"recs": recs, "scores": scores, "tag_labels": targets["interest_tags"], "active": active,
              "churn_labels": targets["churn"].ravel(), "churn_observable": churn_observable}
    return metrics, detail


def ground_truth_report(cfg: Config, scores, spec: ModelSpec, table: "pa.Table") -> dict[str, float]:
    """On generated data only: planted interests vs the model's top-3 tags and vs the features' top-3
    affinities, and planted segments vs the segment head. Empty when there is no ground truth."""
    path = Path(cfg.ground_truth_dir) / "users.parquet"
    if not path.is_file():
        return {}
    import pyarrow.parquet as pq

    from jobs.common.privacy import load_hmac_key, pseudonymise_py

    planted = pq.read_table(path, columns=["user_id", "segment", "interests"]).to_pylist()
    key = load_hmac_key(cfg)
    by_key = {pseudonymise_py(key, row["user_id"]): row for row in planted}
    keys = scores.user_keys
    in_truth = [k in by_key for k in keys]
    if not any(in_truth):
        return {}
    top = top_k_tags(scores.tag_scores, 3)
    predicted = {k: {spec.tags[j] for j in np.flatnonzero(row)} for k, row, ok in zip(keys, top, in_truth) if ok}
    planted_interests = {k: set(by_key[k]["interests"]) for k, ok in zip(keys, in_truth) if ok}
    affinity_names = [f"affinity_{t}" for t in spec.tags]
    report = {f"gt_tag_{k}": v for k, v in planted_interest_f1(predicted, planted_interests).items()}
    if all(n in table.column_names for n in affinity_names):
        affinity = numeric_matrix(table, affinity_names, [])
        by_affinity = top_k_tags(affinity, 3)
        guessed = {k: {spec.tags[j] for j in np.flatnonzero(row)} for k, row, ok in zip(keys, by_affinity, in_truth) if ok}
        report.update({f"gt_affinity_{k}": v for k, v in planted_interest_f1(guessed, planted_interests).items()
                       if k == "micro_f1"})
    segments = {k: spec.segments[int(i)] for k, i, ok in zip(keys, scores.segment_probs.argmax(axis=1), in_truth) if ok}
    report["gt_segment_agreement"] = segment_agreement(
        segments, {k: by_key[k]["segment"] for k in segments}, PLANTED_TO_SEGMENTS)
    return report


# --- fitting --------------------------------------------------------------------------------------

@dataclass
class FitResult:
    models: Any
    history: dict[str, list[float]]
    best_epoch: int
    stats: Any


class RetrievalValidation:
    """Per-epoch validation: recall and nDCG at k of the user tower against the item tower."""

    def __new__(cls, *args, **kwargs):
        import keras

        class _Callback(keras.callbacks.Callback):
            def __init__(self, validation: "Holdout", spec: ModelSpec, k: int, models):
                super().__init__()
                self.validation, self.spec, self.k, self.models = validation, spec, k, models

            def on_epoch_end(self, epoch, logs=None):
                from ml.score import Scorer

                scorer = Scorer(self.models.profile, self.models.item, self.spec)
                recs, _ = model_recommendations(scorer, self.validation, self.k)
                report = ranking_report(recs, self.validation.truth, self.k, self.validation.catalog_size)
                if logs is not None:
                    logs["val_recall_at_k"] = report["recall_at_k"]
                    logs["val_ndcg_at_k"] = report["ndcg_at_k"]

        return _Callback(*args, **kwargs)


# Multipliers of the learned repeat-term scale tried on the validation days after fitting: training
# ranks each positive against a batch of items, serving against the whole catalogue, and the best
# weight of "items seen before" against the embedding differs between the two.
# 0 switches the term off: on rating data a rated film is not watched again.
REPEAT_MULTIPLIERS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
# Scales of the neighbour term tried on the validation days (ml/neighbours.py); 0 leaves it out.
NEIGHBOUR_SCALES = (0.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
# Scales of the item-item term (ml/itemitem.py), against logits of a few units; 0 leaves it out, the
# largest lets EASE order the list and the towers break its ties.
ITEM_ITEM_SCALES = (0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0)


@dataclass(frozen=True)
class HistoryTuning:
    repeat_multiplier: float
    neighbour_scale: float
    ndcg: dict[tuple[float, float], float]       # validation nDCG@k per (repeat multiplier, neighbour scale) tried
    item_item_scale: float = 0.0
    item_item_ndcg: dict[float, float] = field(default_factory=dict)   # per item-item scale, at the chosen pair
    item_item_on: str = ""             # which validation chose it: "next days (N users)" or "within user (N users)"
    target: Holdout | None = None      # that validation (tune_mmr re-ranks on it too)


def _nearest_one(multiplier: float) -> float:
    """The tie-break of the repeat multipliers: larger for a multiplier nearer 1; 0 (off) comes last."""
    return -abs(math.log(multiplier)) if multiplier > 0 else -math.inf


def tune_history(models, spec: ModelSpec, validation: Holdout, k: int, neighbours: bool = True,
                 item_item=None) -> HistoryTuning:
    """Choose the repeat term's multiplier, the neighbour term's scale and the item-item term's scale
    by validation nDCG@k.

    Three rounds, each keeping the other value fixed: the multipliers with no neighbour term, then
    the neighbour scales (when `neighbours`), then the multipliers again. Ties go to the smaller
    neighbour scale, then to the multiplier nearest 1. Then, with `item_item` (model.item_item
    settings as an ml.itemitem.ItemItemSettings) and validation.history, the item-item scales with that
    pair fixed (ties: the smaller scale). Sets the model's repeat scale to the learned one times the
    multiplier, spec.neighbour_scale, spec.item_item_scale and spec.item_item. A model without the repeat
    term keeps no repeat or neighbour term, but can still get the item-item term.
    """
    from ml.model import repeat_scale, set_repeat_scale
    from ml.score import Scorer, sequence_neighbours

    learned = repeat_scale(models.profile)
    spec.item_item_scale, spec.item_item = 0.0, {}
    scorer = Scorer(models.profile, models.item, spec)
    item_vectors = scorer.items(validation.items)
    if learned is None:
        spec.neighbour_scale = 0.0
        neighbours = False
    similarity = sequence_neighbours(validation.table, item_vectors[0], spec) if neighbours else None
    _, scores = model_recommendations(scorer, validation, k, item_vectors, neighbours=similarity)   # the towers run once
    ndcg: dict[tuple[float, float], float] = {}

    def best() -> tuple[float, float]:
        return max(ndcg, key=lambda mn: (ndcg[mn], -mn[1], _nearest_one(mn[0])))

    def measure(trial_scores, weights=None) -> float:
        recs, _ = model_recommendations(scorer, validation, k, item_vectors, trial_scores, similarity, weights)
        return ranking_report(recs, validation.truth, k, validation.catalog_size)["ndcg_at_k"]

    def trial(multiplier: float, scale: float) -> None:
        if (multiplier, scale) not in ndcg:
            ndcg[(multiplier, scale)] = measure(replace(scores, repeat_scale=(learned or 0.0) * multiplier,
                                                        neighbour_scale=scale))

    if learned is None:
        ndcg[(1.0, 0.0)] = measure(scores)
    else:
        for multiplier in REPEAT_MULTIPLIERS:
            trial(multiplier, 0.0)
        if neighbours:
            for scale in NEIGHBOUR_SCALES:
                trial(best()[0], scale)
            for multiplier in REPEAT_MULTIPLIERS:
                trial(multiplier, best()[1])
    multiplier, scale = best()
    if learned is not None:
        set_repeat_scale(models.profile, learned * multiplier)
        spec.neighbour_scale = scale
    item_item_ndcg: dict[float, float] = {}
    item_item_on = ""
    if item_item is not None and validation.history is not None:
        from dataclasses import asdict

        target = validation
        if len(validation.truth) < item_item.validation_min_users:
            target = within_user_holdout(validation)
        item_item_on = f"{'next days' if target is validation else 'within user'} ({len(target.truth)} users)"
        weights = holdout_item_item(scorer, target, item_vectors[0], item_item)
        target_similarity = similarity if target is validation or similarity is None else \
            sequence_neighbours(target.table, item_vectors[0], spec)
        # the towers once more on the target's rows; the repeat and neighbour values chosen above apply
        _, chosen = model_recommendations(scorer, target, k, item_vectors, neighbours=target_similarity)

        def measure_item_item(e: float) -> float:
            recs, _ = model_recommendations(scorer, target, k, item_vectors, replace(chosen, item_item_scale=e),
                                            target_similarity, weights)
            return ranking_report(recs, target.truth, k, target.catalog_size)["ndcg_at_k"]

        item_item_ndcg = {e: measure_item_item(e) for e in ITEM_ITEM_SCALES}
        spec.item_item_scale = max(item_item_ndcg, key=lambda e: (item_item_ndcg[e], -e))
        spec.item_item = asdict(item_item) if spec.item_item_scale else {}
    return HistoryTuning(multiplier, scale, ndcg, spec.item_item_scale, item_item_ndcg, item_item_on,
                         target if item_item_on else None)


def within_user_holdout(validation: Holdout, share: float = 0.25, min_items: int = 4) -> Holdout:
    """The validation as-of date split within each user, for data where too few users come back in the
    days after it (MovieLens: 9 of 671): of every user with at least `min_items` items in
    validation.history, floor(share x n) items (the smallest SHA-1 of "user|item", fixed) become the
    truth; the rest stay the history and are excluded from the lists, as consumed items are; the hidden
    items leave the rows' sequences (seq_* columns, step by step) and the bought lists, so that no term
    sees them and no list excludes them."""
    import pyarrow as pa

    hidden: dict[str, set[str]] = {}
    kept: dict[str, list[str]] = {}
    for user, items in (validation.history or {}).items():
        n = int(math.floor(share * len(items))) if len(items) >= min_items else 0
        order = sorted(items, key=lambda i: hashlib.sha1(f"{user}|{i}".encode("utf-8")).hexdigest())
        hidden[user] = set(order[:n])
        kept[user] = sorted(order[n:])
    table = validation.table
    keys = [str(k) for k in table.column("user_key").to_pylist()]
    steps = table.column("seq_item_ids").to_pylist() if "seq_item_ids" in table.column_names else [None] * len(keys)
    keep = [[j for j, item in enumerate(seq or []) if item not in hidden.get(user, ())] for user, seq in zip(keys, steps)]
    for name in ("seq_item_ids", "seq_categories", "seq_event_types", "seq_gaps"):
        if name in table.column_names:
            values = table.column(name).to_pylist()
            column = pa.array([None if v is None else [v[j] for j in idx] for v, idx in zip(values, keep)],
                              table.schema.field(name).type)
            table = table.set_column(table.schema.get_field_index(name), name, column)
    # A hidden item leaves the bought list too: on purchase data (Instacart) every history item was bought,
    # and a list that excludes the truth scores 0 whatever the terms (every scale tied at 0 before).
    bought = table.column("bought").to_pylist() if "bought" in table.column_names else [None] * len(keys)
    excluded = pa.array([sorted((set(b or []) - hidden.get(u, set())) | set(kept.get(u, [])))
                         for u, b in zip(keys, bought)], pa.list_(pa.string()))
    if "bought" in table.column_names:
        table = table.set_column(table.schema.get_field_index("bought"), "bought", excluded)
    else:
        table = table.append_column("bought", excluded)
    present = set(keys)
    truth = {u: h for u, h in hidden.items() if h and u in present}
    return replace(validation, table=table, truth=truth, history=kept)


# The re-ranker's MMR weights tried on the validation days (jobs/rerank.py; 1 = relevance only).
MMR_LAMBDAS = (1.0, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5)


@dataclass(frozen=True)
class MmrTuning:
    mmr_lambda: float
    ndcg: dict[float, float]           # validation nDCG@k of the re-ranked lists per weight tried
    users: int                         # validation users the lists were re-ranked for


def choose_mmr_lambda(ndcg: dict[float, float], tolerance: float) -> float:
    """The smallest weight whose nDCG is at least (1 - tolerance) x the nDCG of weight 1 (which must be there)."""
    if 1.0 not in ndcg:
        raise ValueError(f"the relevance-only weight 1.0 is the reference and must be tried; tried {sorted(ndcg)}")
    floor = (1.0 - tolerance) * ndcg[1.0]
    return min(w for w, value in ndcg.items() if value >= floor or w == 1.0)


def tune_mmr(scorer: "Scorer", validation: Holdout, k: int, n_candidates: int, tolerance: float,
             rules: dict[str, Any], max_users: int = 2000) -> MmrTuning:
    """The most diversifying MMR weight (the smallest of MMR_LAMBDAS) whose validation nDCG@k stays
    within `tolerance` (a share, 0.02 = 2%) of the list re-ranked for relevance only (weight 1).

    Each user's top `n_candidates` go through jobs.rerank.mmr_select with the business `rules`, as
    `score` re-ranks them, for at most `max_users` validation users (a fixed hash sample). Sets
    scorer.spec.mmr_lambda, which `score` uses when recommend.mmr_lambda is `auto`.
    """
    import pandas as pd

    from jobs.rerank import mmr_select
    from ml.retrieval import relative_scores

    if not 0.0 <= tolerance < 1.0:
        raise ConfigError(f"recommend.mmr_tolerance must be a share in [0, 1), got {tolerance!r}")
    sampled = sample_users(validation.truth, max_users)
    validation = replace(validation, truth={u: v for u, v in validation.truth.items() if u in sampled})
    found = model_candidates(scorer, validation, n_candidates)
    relative = relative_scores(found.logits)
    columns = set(validation.items.column_names)
    lookup = {name: dict(zip(validation.items.column("item_id").to_pylist(),
                             (str(v) if v is not None else "" for v in validation.items.column(name).to_pylist())))
              if name in columns else {} for name in ("category", "brand")}
    groups = []
    for row, user in enumerate(found.scores.user_keys):
        valid = found.top[row] >= 0
        ids = [found.item_ids[i] for i in found.top[row][valid]]
        groups.append(pd.DataFrame({
            "user_key": user, "item_id": ids, "score": relative[row][valid], "source": "embedding", "evidence": "",
            "category": [lookup["category"].get(i, "") for i in ids],
            "brand": [lookup["brand"].get(i, "") for i in ids]}))
    ndcg = {}
    for weight in MMR_LAMBDAS:
        lists = {}
        for group in groups:
            if len(group):
                picked = mmr_select(group, k, weight, rules.get("max_per_brand"), rules.get("max_per_category"))
                lists[group.at[0, "user_key"]] = picked["item_id"].tolist()
        ndcg[weight] = ranking_report(lists, validation.truth, k, validation.catalog_size)["ndcg_at_k"]
    chosen = choose_mmr_lambda(ndcg, tolerance)
    scorer.spec.mmr_lambda = chosen
    return MmrTuning(chosen, ndcg, len(groups))


def _numeric_sample(files, spec: ModelSpec, rows: int) -> np.ndarray:
    table = read_table(files, columns=[*spec.numeric_features, *spec.share_features], max_rows=rows)
    return user_numeric(table, spec)


def fit(cfg: Config, spec: ModelSpec, snapshot: Snapshot, items, dates, boundary: dt.date, epochs: int,
        device, validation: Holdout | None = None, k: int = 10) -> FitResult:
    """Build a fresh model and fit it on the examples of `dates`; with `validation`, stop early on
    validation nDCG@k and keep the best epoch's weights."""
    import keras

    from ml.model import ModelParams, build_models

    params = ModelParams.from_config(cfg)
    seed = int(cfg.get("model.seed", 7))
    keras.utils.set_random_seed(seed)
    files = snapshot.files(dates)
    chunks = chunks_of(files)
    if not chunks:
        raise InputDataError(f"the training snapshot has no rows for as-of dates {', '.join(map(str, dates))}")
    stats = label_stats(chunks, spec, boundary)
    if stats.examples_with_positives == 0:
        raise InputDataError(f"no training example as of {', '.join(map(str, dates))} has an item in its label window; "
                             "the events after those dates are missing")
    spec.item_log_q = stats.item_log_q.tolist()
    spec.churn_trained = stats.churn_labelled > 0
    item_sample = np.concatenate([t.numeric[t.rows] for t in items.values()]) if items else None
    with device.scope():
        models = build_models(spec, params, _numeric_sample(files, spec, 20_000), item_sample,
                              stats.tag_pos_weight(), device.mixed_precision)
    data = ExampleDataset(chunks, spec, items, int(cfg.get("model.batch_size", 256)),
                          LossWeights(stats.segment_weights(), boundary), stats.item_log_q, seed=seed,
                          positives_per_row=int(cfg.get("model.positives_per_row", 1)))
    callbacks: list = [keras.callbacks.TerminateOnNaN()]
    if validation is not None:
        callbacks.append(RetrievalValidation(validation, spec, k, models))
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_ndcg_at_k", mode="max", patience=int(cfg.get("model.patience", 2)), restore_best_weights=True))
    history = models.train.fit(data, epochs=epochs, callbacks=callbacks, verbose=0).history
    losses = history.get("loss", [])
    if not losses or not all(math.isfinite(v) for v in losses):
        raise PortraitError(f"training diverged (loss {losses[-1] if losses else 'missing'}); "
                            "lower model.learning_rate or check the features for extreme values")
    best = int(np.nanargmax(history["val_ndcg_at_k"])) + 1 if validation is not None else len(losses)
    return FitResult(models, {k2: [float(v) for v in vals] for k2, vals in history.items()}, best, stats)


def cross_validate(cfg: Config, spec: ModelSpec, snapshot: Snapshot, items, device, k: int,
                   epochs: int) -> dict[str, float]:
    """Optional (`model.cv_folds` >= 2): rolling-origin folds inside the training split, each fitted
    and validated like the selection run; returns the mean and spread of validation nDCG/recall."""
    from ml.dataset import rolling_folds

    folds = rolling_folds(snapshot.plan, int(cfg.get("model.cv_folds", 0) or 0))
    if len(folds) < 2:
        return {}
    ndcg, recall = [], []
    for train_dates, validation_date in folds:
        plan = replace(snapshot.plan, validation_as_of=validation_date)
        fold = Snapshot(snapshot.root, plan, snapshot.rows, snapshot.table_versions, snapshot.tags)
        validation = load_holdout(fold, int(cfg.get("model.eval_max_users", 50_000)), split="validation")
        validation.boundary = validation_date + dt.timedelta(days=plan.horizon_days)
        result = fit(cfg, spec, fold, items, train_dates, validation_date, epochs, device, validation, k)
        ndcg.append(max(result.history["val_ndcg_at_k"]))
        recall.append(result.history["val_recall_at_k"][int(np.argmax(result.history["val_ndcg_at_k"]))])
    return {"cv_folds": float(len(folds)), "cv_ndcg_at_k_mean": float(np.mean(ndcg)),
            "cv_ndcg_at_k_std": float(np.std(ndcg)), "cv_recall_at_k_mean": float(np.mean(recall)),
            "cv_recall_at_k_std": float(np.std(recall))}


# --- the whole candidate: fit, test, compare, log, register ---------------------------------------

@dataclass
class TrainOutcome:
    run_id: str
    version: str
    alias: str
    reason: str
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    champion_metrics: dict[str, float] | None
    plan: SplitPlan
    details: dict[str, Any] = field(default_factory=dict)


def train_and_register(cfg: Config, snapshot: Snapshot, holdout: Holdout,
                       baseline_recs: dict[str, dict[str, list[str]]], run_date: dt.date,
                       extra_params: dict[str, Any] | None = None,
                       diversity: DiversityInputs | None = None,
                       histories: dict[dt.date, dict[str, list[str]]] | None = None) -> TrainOutcome:
    """Fit, tune, evaluate on `holdout`, gate and register a candidate.

    `histories` holds every user's whole history at the validation and test as-of dates
    (`user_histories_at`); without them the item-item term is neither tuned nor used.
    """
    import mlflow

    from jobs.common.feature_windows import FeatureWindows
    from jobs.features import feature_version
    from ml.devices import detect
    from ml.model import ModelParams
    from ml.registry import GateSettings, Scored, configure_mlflow
    from ml.score import Scorer

    plan = snapshot.plan
    version_of_features = feature_version(FeatureWindows.from_config(cfg))
    gate = GateSettings.from_config(cfg)                  # a bad setting fails before the fitting, not after
    k = int(cfg.get("recommend.k", 10))
    device = detect(cfg)
    device.apply_precision()
    spec = build_spec(cfg, snapshot.files(plan.train_as_of), snapshot.files(plan.as_of_dates(), "items"), plan,
                      version_of_features, snapshot.tags)
    items = load_items({d: snapshot.files([d], "items") for d in plan.as_of_dates()}, spec)
    validation = load_holdout(snapshot, int(cfg.get("model.eval_max_users", 50_000)), split="validation")
    item_item = None
    if histories is not None and plan.validation_as_of in histories:
        from ml.itemitem import ItemItemSettings

        validation = replace(validation, history=histories[plan.validation_as_of])
        item_item = ItemItemSettings.from_config(cfg)
    max_epochs = cfg.integer("model.epochs", 8)
    cross_validation = cross_validate(cfg, spec, snapshot, items, device, k, max_epochs)
    selection = fit(cfg, spec, snapshot, items, plan.train_as_of, plan.boundary("train"), max_epochs, device,
                    validation, k)
    tuning = tune_history(selection.models, spec, validation, k, bool(cfg.get("model.neighbour_term", True)),
                          item_item)
    from jobs.rerank import check_rules

    # on the validation that chose the item-item scale: the days after the date, or the split within users
    mmr = tune_mmr(Scorer(selection.models.profile, selection.models.item, spec), tuning.target or validation, k,
                   cfg.integer("recommend.candidates"), cfg.number("recommend.mmr_tolerance"),
                   check_rules(cfg.get("recommend.rules", {}) or {}))
    final = selection
    if bool(cfg.get("model.refit", True)):
        from ml.model import repeat_scale, set_repeat_scale

        final = fit(cfg, spec, snapshot, items, plan.refit_as_of, plan.boundary("refit"), selection.best_epoch, device)
        learned = repeat_scale(final.models.profile)
        if learned is not None:
            set_repeat_scale(final.models.profile, learned * tuning.repeat_multiplier)
    scorer = Scorer(final.models.profile, final.models.item, spec)
    metrics, detail = evaluate_candidate(scorer, holdout, k, diversity)
    ground_truth = ground_truth_report(cfg, detail["scores"], spec, holdout.table)
    baselines = {name: {**ranking_report(recs, holdout.truth, k, holdout.catalog_size),
                        **holdout_diversity(recs, holdout, k, diversity)} for name, recs in baseline_recs.items()}

    configure_mlflow(cfg)
    candidate = Scored(metrics, ndcg_per_user(detail["recs"], holdout.truth, k))
    decision, champion_metrics = _gate_decision(cfg, gate, holdout, k, candidate, baselines, baseline_recs)

    with mlflow.start_run(run_name=f"profile-{run_date}") as active:
        params = {**ModelParams.from_config(cfg).to_params(), **_flat_params(cfg), "run_date": run_date.isoformat(), "feature_version": version_of_features,
                  "device": device.describe(), "k": k, "best_epoch": selection.best_epoch,
                  "train_rows": selection.stats.rows, "refit_rows": final.stats.rows,
                  "holdout_users": len(holdout.truth), "churn_trained": spec.churn_trained,
                  "churn_masked": getattr(snapshot, "churn_masked", "") or "no",
                  "repeat_scale_multiplier": tuning.repeat_multiplier, "neighbour_scale": tuning.neighbour_scale,
                  "model.gate_bootstrap.samples": gate.samples, "model.gate_bootstrap.confidence": gate.confidence,
                  "model.gate_bootstrap.seed": gate.seed,
                  "item_item_scale": tuning.item_item_scale,
                  "item_item_validation": tuning.item_item_on or "none", "mmr_lambda": mmr.mmr_lambda,
                  "mmr_tuning_users": mmr.users,
                  **{f"split.{key}": (",".join(v) if isinstance(v, list) else v) for key, v in plan.to_dict().items()},
                  **{f"data_version.{t}": v for t, v in snapshot.table_versions.items()},
                  **(extra_params or {})}
        mlflow.log_params({k2: str(v)[:500] for k2, v in params.items()})
        for name, values in selection.history.items():
            for epoch, value in enumerate(values):
                mlflow.log_metric(name, value, step=epoch)
        if final is not selection:
            for name, values in final.history.items():
                for epoch, value in enumerate(values):
                    mlflow.log_metric(f"refit_{name}", value, step=epoch)
        clean = lambda d: {k2: float(v) for k2, v in d.items() if v is not None and math.isfinite(float(v))}  # noqa: E731
        mlflow.log_metrics(clean({f"test_{m}": v for m, v in metrics.items()}))
        mlflow.log_metrics(clean(ground_truth))
        mlflow.log_metrics(clean(cross_validation))
        mlflow.log_metrics(clean({f"val_ndcg_at_k_repeat_x{m:g}_neighbour_{c:g}": v
                                  for (m, c), v in tuning.ndcg.items()}))
        mlflow.log_metrics(clean({f"val_ndcg_at_k_itemitem_{e:g}": v for e, v in tuning.item_item_ndcg.items()}))
        mlflow.log_metrics(clean({f"val_ndcg_at_k_mmr_{w:g}": v for w, v in mmr.ndcg.items()}))
        for name, values in baselines.items():
            mlflow.log_metrics(clean({f"baseline_{name}_{m}": v for m, v in values.items()}))
        if champion_metrics:
            mlflow.log_metrics(clean({f"champion_{m}": v for m, v in champion_metrics.items()}))
        for interval in decision.intervals:
            mlflow.log_metrics(clean({f"gate_diff_{interval.other}": interval.difference,
                                      f"gate_diff_{interval.other}_low": interval.low,
                                      f"gate_diff_{interval.other}_high": interval.high}))
        with tempfile.TemporaryDirectory() as folder:
            _log_plots(Path(folder), selection, final, detail, spec)
            info = _log_model(Path(folder), final.models, spec, holdout, cfg)
        version = str(info.registered_model_version)
        from ml.registry import apply_gate

        apply_gate(cfg, version, decision)
        mlflow.set_tags({"gate_alias": decision.alias, "gate_reason": decision.reason, "model_version": version})
        run_id = active.info.run_id
    return TrainOutcome(run_id, version, decision.alias, decision.reason, metrics, baselines, champion_metrics, plan,
                        {"ground_truth": ground_truth, "best_epoch": selection.best_epoch})


def _gate_decision(cfg: Config, gate: "GateSettings", holdout: Holdout, k: int, candidate: "Scored",
                   baselines: dict[str, dict[str, float]], baseline_recs: dict[str, dict[str, list[str]]]
                   ) -> tuple["GateDecision", dict[str, float] | None]:
    """(the gate's decision, the champion's metrics or None): the champion scores this very holdout, and
    every recommender's nDCG per holdout user goes to the gate for its bootstrap intervals."""
    from ml.registry import Scored, champion_run, decide
    from ml.score import load_scorer

    champion_metrics, champion, note = None, None, ""
    version_row, _ = champion_run(cfg)
    if version_row is not None:
        try:
            champion_metrics, champion_detail = evaluate_candidate(
                load_scorer(f"models:/{cfg.get('mlflow.registered_model')}/{version_row.version}", version_row.version),
                holdout, k)
            champion = Scored(champion_metrics, ndcg_per_user(champion_detail["recs"], holdout.truth, k))
        except Exception as exc:  # an incompatible champion (other features) cannot be compared
            note = f"champion version {version_row.version} could not score this holdout ({type(exc).__name__}: {exc})"
            log.warning("%s", note)
    others = {name: Scored(report, ndcg_per_user(baseline_recs[name], holdout.truth, k))
              for name, report in baselines.items()}
    return decide(candidate, champion, others, gate, GATE_METRIC, champion_note=note), champion_metrics


def _flat_params(cfg: Config) -> dict[str, Any]:
    model = cfg.get("model", {}) or {}
    return {f"model.{k}": v for k, v in model.items() if not isinstance(v, dict)}


def _pip_requirements() -> list[str]:
    """Explicit requirements: MLflow's inference of them costs ~20 s per log."""
    import importlib.metadata as md

    reqs = [f"{p}=={md.version(p)}" for p in ("keras", "mlflow", "numpy", "pandas", "pyarrow")]
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    reqs.append(f"tensorflow-cpu=={md.version('tensorflow-cpu')}" if backend == "tensorflow" else
                f"{backend}=={md.version(backend)}")
    return reqs


def _log_model(folder: Path, models, spec: ModelSpec, holdout: Holdout, cfg: Config):
    import mlflow
    from mlflow.models import infer_signature

    from ml.pyfunc import PortraitProfileModel, save_artifacts

    # The requirements are explicit; copying the project's uv.lock into every model adds nothing.
    os.environ.setdefault("MLFLOW_LOG_UV_FILES", "false")
    artifacts = save_artifacts(models, spec, folder / "model", holdout.items)
    example = holdout.table.select([c for c in spec.user_columns() if c in holdout.table.column_names]).slice(0, 3)
    example = example.to_pandas()
    example["user_key"] = [f"example-user-{i}" for i in range(len(example))]
    from ml.dataset import encode_items

    wrapper = PortraitProfileModel()
    wrapper.profile, wrapper.item, wrapper.spec = models.profile, models.item, spec
    wrapper.items = encode_items(holdout.items, spec)
    signature = infer_signature(example, wrapper.predict(None, example))
    return mlflow.pyfunc.log_model(
        name="model", python_model=PortraitProfileModel(), artifacts=artifacts, signature=signature,
        input_example=example, pip_requirements=_pip_requirements(),
        registered_model_name=str(cfg.get("mlflow.registered_model")),
    )


def _log_plots(folder: Path, selection: FitResult, final: FitResult, detail: dict, spec: ModelSpec) -> None:
    """Training curves, per-tag F1 and calibration as PNG artifacts (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    from ml.evaluate import calibration_table

    plots = folder / "plots"
    plots.mkdir()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("loss", "interest_tags_loss", "retrieval_loss", "segment_loss", "churn_loss"):
        if name in selection.history:
            left.plot(range(1, len(selection.history[name]) + 1), selection.history[name], label=name)
    left.set_xlabel("epoch"), left.set_title("training losses (selection run)"), left.legend(fontsize=7)
    for name in ("val_recall_at_k", "val_ndcg_at_k"):
        if name in selection.history:
            right.plot(range(1, len(selection.history[name]) + 1), selection.history[name], marker="o", label=name)
    right.axvline(selection.best_epoch, color="grey", linestyle=":", label="best epoch")
    right.set_xlabel("epoch"), right.set_title("validation retrieval"), right.legend(fontsize=7)
    fig.tight_layout(), fig.savefig(plots / "training_curves.png", dpi=110), plt.close(fig)

    active = detail["active"]
    f1 = per_tag_f1(detail["tag_labels"][active], top_k_tags(detail["scores"].tag_scores[active], 3))
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.bar(range(len(spec.tags)), np.nan_to_num(f1))
    ax.set_xticks(range(len(spec.tags)), spec.tags, rotation=70, fontsize=7)
    ax.set_ylabel("F1 (top-3 tags)"), ax.set_title("per-tag F1 on the held-out days")
    fig.tight_layout(), fig.savefig(plots / "per_tag_f1.png", dpi=110), plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    curves = [("interest tags", detail["tag_labels"][active], detail["scores"].tag_scores[active])]
    if detail["churn_observable"].any():
        curves.append(("churn", detail["churn_labels"][detail["churn_observable"]],
                       detail["scores"].churn[detail["churn_observable"]]))
    for label, y, p in curves:
        table = calibration_table(y, np.clip(p, 0, 1), bins=10)
        filled = table[table["count"] > 0]
        ax.plot(filled["mean_score"], filled["observed_rate"], marker="o", label=label)
    ax.set_xlabel("predicted"), ax.set_ylabel("observed"), ax.set_title("calibration (held-out days)"), ax.legend()
    fig.tight_layout(), fig.savefig(plots / "calibration.png", dpi=110), plt.close(fig)
    mlflow.log_artifacts(str(plots), artifact_path="plots")
    (folder / "spec.json").write_text(spec.to_json(), encoding="utf-8")
    mlflow.log_artifact(str(folder / "spec.json"))


# --- the Spark side ---------------------------------------------------------------------------------

def input_versions(spark: "SparkSession", cfg: Config) -> dict[str, int | None]:
    """The Delta version of every input table: which data this model saw."""
    from jobs.common.delta import table_version

    return {name: table_version(spark, cfg, name) for name in INPUT_TABLES}


def baseline_recommendations(spark: "SparkSession", cfg: Config, plan: SplitPlan, users: list[str],
                             k: int) -> dict[str, dict[str, list[str]]]:
    """Each configured baseline's top k for `users`, trained on the events up to the test as-of date."""
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table as read_delta
    from ml import baselines

    names = [str(n) for n in (cfg.get("model.baselines", list(BASELINES)) or [])]
    unknown = sorted(set(names) - set(BASELINES))
    if unknown:
        raise ConfigError(f"model.baselines has unknown names {unknown}; known: {', '.join(BASELINES)}")
    events = read_delta(spark, cfg, "silver.events").where(F.col("event_date") <= F.lit(plan.run_date))
    if "landed_date" in events.columns:
        events = events.where(F.col("landed_date").isNull() | (F.col("landed_date") <= F.lit(plan.run_date)))
    train, _ = baselines.temporal_split(events, plan.test_as_of, plan.horizon_days)
    train = train.cache()
    user_frame = spark.createDataFrame([(u,) for u in users], "user_key string")
    out = {}
    for name in names:
        if name == "popularity":
            recs = baselines.popularity(train, user_frame, k)
        elif name == "cooccurrence":
            recs = baselines.cooccurrence(train, k)
        else:
            recs = baselines.als(train, k, seed=int(cfg.get("model.seed", 7)), num_blocks=2)
        rows = recs.join(user_frame, "user_key", "left_semi").select("user_key", "item_id", "rank").collect()
        lists: dict[str, list[tuple[int, str]]] = {}
        for row in rows:
            lists.setdefault(row["user_key"], []).append((int(row["rank"]), row["item_id"]))
        out[name] = {u: [i for _, i in sorted(v)] for u, v in lists.items()}
    train.unpersist()
    return out


def diversity_inputs(spark: "SparkSession", cfg: Config, plan: SplitPlan) -> DiversityInputs:
    """Item categories (silver.items up to the run date) and popularity among the users of the events up
    to the test as-of date (what every recommender could see), for the holdout's diversity figures."""
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table as read_delta
    from ml.evaluate import diversity_inputs_spark

    events = read_delta(spark, cfg, "silver.events").where(F.col("event_date") <= F.lit(plan.test_as_of))
    if "landed_date" in events.columns:
        events = events.where(F.col("landed_date").isNull() | (F.col("landed_date") <= F.lit(plan.run_date)))
    items = read_delta(spark, cfg, "silver.items").where(F.col("snapshot_date") <= F.lit(plan.run_date))
    return diversity_inputs_spark(events, items)


def user_histories_at(spark: "SparkSession", cfg: Config,
                      dates: tuple[dt.date, ...]) -> dict[dt.date, dict[str, list[str]]]:
    """Every user's whole history (ml.itemitem.history_pairs over model.item_item.history_days) at each date."""
    from jobs.common.delta import read_table as read_delta
    from ml.itemitem import ItemItemSettings, history_pairs, user_histories

    days = ItemItemSettings.from_config(cfg).history_days
    events = read_delta(spark, cfg, "silver.events")
    return {d: user_histories(history_pairs(events, d, days).toArrow()) for d in dict.fromkeys(dates)}


def _sample_users(spark: "SparkSession", cfg: Config, run_date: dt.date, limit: int):
    """`limit` users chosen by hash (the same ones every run), as a one-column DataFrame."""
    from pyspark.sql import functions as F

    from jobs.features import latest_snapshot

    users = latest_snapshot(spark, cfg, "silver.users", run_date).select("user_key").distinct()
    return users.orderBy(F.sha1(F.col("user_key")), "user_key").limit(limit)


def preflight(cfg: Config, run_date: dt.date) -> None:
    """Before Spark starts: the MLflow tracking store answers, or one line in seconds (not minutes of retries)."""
    from ml.registry import check_tracking_store

    check_tracking_store(cfg)


def run(spark: "SparkSession", cfg: Config, run_date: dt.date, retrain: str = "auto",
        sample_users: int | None = None) -> StepResult:
    """Train, evaluate and gate a candidate for `run_date`, unless the cadence says to reuse the champion."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table as read_delta
    from ml.registry import configure_mlflow, require_champion

    retrain = str(retrain or "auto").lower()
    configure_mlflow(cfg)
    result = StepResult("train", run_date)
    needed, why = retrain_needed(cfg, run_date, retrain)
    if not needed:
        version, run_id = require_champion(cfg)
        result.details.update({"retrained": False, "reason": why, "model_version": version, "run_id": run_id,
                               "alias": "champion"})
        log.info("train %s: %s", run_date, why)
        return result

    neighbour_top_n(cfg)                     # a bad setting fails now, not after the snapshot
    churn_events(cfg)
    first_day = read_delta(spark, cfg, "silver.events").agg(F.min("event_date")).collect()[0][0]
    plan = plan_from_config(cfg, run_date, first_day)
    limit = int(sample_users or 0)
    users = _sample_users(spark, cfg, run_date, limit) if limit > 0 else None
    snapshot = write_snapshot(spark, cfg, plan, snapshot_root(cfg, run_date), users=users)
    snapshot.table_versions = input_versions(spark, cfg)
    k = int(cfg.get("recommend.k", 10))
    holdout = load_holdout(snapshot, int(cfg.get("model.eval_max_users", 50_000)))
    histories = user_histories_at(spark, cfg, (plan.validation_as_of, plan.test_as_of)) \
        if bool(cfg.get("model.item_item_term", True)) else None
    if histories is not None:
        holdout = replace(holdout, history=histories[plan.test_as_of])
    baseline_recs = baseline_recommendations(spark, cfg, plan, holdout.users, k)
    outcome = train_and_register(cfg, snapshot, holdout, baseline_recs, run_date,
                                 {"retrain": retrain, "retrain_reason": why, "sample_users": limit or ""},
                                 diversity_inputs(spark, cfg, plan), histories)
    result.details.update({
        "retrained": True, "reason": why, "run_id": outcome.run_id, "model_version": outcome.version,
        "alias": outcome.alias, "gate_reason": outcome.reason,
        "test_recall_at_k": outcome.metrics["recall_at_k"], "test_ndcg_at_k": outcome.metrics["ndcg_at_k"],
        "baselines": {n: {"recall_at_k": b["recall_at_k"], "ndcg_at_k": b["ndcg_at_k"]}
                      for n, b in outcome.baselines.items()},
    })
    return result
