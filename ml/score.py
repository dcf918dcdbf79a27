"""Score users with the champion model: interest-tag scores and the user embedding."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from jobs.common.config import Config


@dataclass(frozen=True)
class Scores:
    tag_scores: np.ndarray      # users x tags, in TOP_LEVEL order
    embeddings: np.ndarray      # users x embedding_dim
    model_version: str


def load_champion(cfg: Config):
    """Always the `champion` alias: scoring never picks a model by itself."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import mlflow.keras

    from ml.registry import champion_uri, configure_mlflow, require_champion

    configure_mlflow(cfg)
    version, _ = require_champion(cfg)
    return mlflow.keras.load_model(champion_uri(cfg)), version


def score_matrix(model, features: np.ndarray, version: str, batch_size: int = 4096) -> Scores:
    from ml.model import embedding_model

    if len(features) == 0:
        return Scores(np.zeros((0, model.output_shape[-1])), np.zeros((0, 0)), version)
    tags = model.predict(features, batch_size=batch_size, verbose=0)
    vectors = embedding_model(model).predict(features, batch_size=batch_size, verbose=0)
    return Scores(np.asarray(tags, dtype="float64"), np.asarray(vectors, dtype="float32"), version)
