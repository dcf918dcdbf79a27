"""Train: fit the profile model on point-in-time features, log it to MLflow, register it behind the gate."""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING

import numpy as np

from jobs.common.config import Config
from jobs.common.step import StepResult
from jobs.common.taxonomy import TOP_LEVEL
from ml.dataset import FEATURE_NAMES, feature_matrix, split_users, training_frame
from ml.evaluate import micro_f1, roc_auc, top_k_tags

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

GATE_METRIC = "val_tag_auc"
TOP_K_TAGS = 3


def _pip_requirements() -> list[str]:
    """Explicit requirements: MLflow's inference of them costs ~20 s per log."""
    import importlib.metadata as md

    reqs = [f"keras=={md.version('keras')}", f"mlflow=={md.version('mlflow')}", f"numpy=={md.version('numpy')}"]
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "tensorflow":
        reqs.append(f"tensorflow-cpu=={md.version('tensorflow-cpu')}")
    return reqs


def evaluate_tags(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {
        "tag_auc": roc_auc(labels, scores),
        "tag_micro_f1_top3": micro_f1(labels, top_k_tags(scores, TOP_K_TAGS)),
    }


def run(spark: "SparkSession", cfg: Config, run_date: dt.date) -> StepResult:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import mlflow
    from mlflow.models import infer_signature

    from ml.model import ModelParams, build_profile_model
    from ml.registry import apply_gate, configure_mlflow, current_champion_metric, decide, model_name

    frame, as_of = training_frame(spark, cfg, run_date)
    x = feature_matrix(frame)
    y = np.stack(frame["labels"].map(lambda a: np.asarray(a, dtype="float32")).to_numpy())
    seed = int(cfg.get("model.seed", 7))
    is_val = split_users(frame["user_key"], float(cfg.get("model.validation_share", 0.2)), seed)

    keras.utils.set_random_seed(seed)
    params = ModelParams(
        n_features=x.shape[1], n_tags=len(TOP_LEVEL),
        hidden_units=int(cfg.get("model.hidden_units")), embedding_dim=int(cfg.get("model.embedding_dim")),
        learning_rate=float(cfg.get("model.learning_rate")),
    )
    model = build_profile_model(params, feature_sample=x[~is_val])

    configure_mlflow(cfg)
    with mlflow.start_run(run_name=f"profile-{run_date}") as active:
        mlflow.log_params({**params.__dict__, "epochs": cfg.get("model.epochs"), "batch_size": cfg.get("model.batch_size"),
                           "seed": seed, "features_as_of": as_of.isoformat(), "run_date": run_date.isoformat(),
                           "train_users": int((~is_val).sum()), "validation_users": int(is_val.sum())})
        history = model.fit(
            x[~is_val], y[~is_val], validation_data=(x[is_val], y[is_val]),
            epochs=int(cfg.get("model.epochs")), batch_size=int(cfg.get("model.batch_size")), verbose=0,
        )
        for epoch in range(len(history.history["loss"])):
            mlflow.log_metrics({k: float(v[epoch]) for k, v in history.history.items()}, step=epoch)

        val_scores = model.predict(x[is_val], verbose=0)
        metrics = {f"val_{k}": v for k, v in evaluate_tags(y[is_val], val_scores).items()}
        # Reference: the user's current category affinity taken as next week's interest.
        affinity = x[is_val][:, len(FEATURE_NAMES) - len(TOP_LEVEL):]
        metrics.update({f"baseline_affinity_{k}": v for k, v in evaluate_tags(y[is_val], affinity).items()})
        mlflow.log_metrics(metrics)

        info = mlflow.keras.log_model(
            model, name="model", signature=infer_signature(x[:5], val_scores[:5]),
            pip_requirements=_pip_requirements(), registered_model_name=model_name(cfg),
        )
        version = str(info.registered_model_version)
        decision = decide(metrics[GATE_METRIC], current_champion_metric(cfg, GATE_METRIC),
                          float(cfg.get("model.gate_margin", 0.0)), GATE_METRIC)
        apply_gate(cfg, version, decision)
        mlflow.set_tags({"gate_alias": decision.alias, "gate_reason": decision.reason})
        run_id = active.info.run_id

    result = StepResult("train", run_date)
    result.details.update({"run_id": run_id, "model_version": version, "alias": decision.alias,
                           "gate_reason": decision.reason, "metrics": metrics, "examples": int(len(frame))})
    return result
