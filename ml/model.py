"""Keras model factory, backend-agnostic: only keras layers and keras.ops, no raw backend calls."""

from __future__ import annotations

from dataclasses import dataclass

USER_EMBEDDING_LAYER = "user_embedding"
TAGS_OUTPUT = "interest_tags"


@dataclass(frozen=True)
class ModelParams:
    n_features: int
    n_tags: int
    hidden_units: int = 64
    embedding_dim: int = 32
    learning_rate: float = 3e-3
    dropout: float = 0.1


def build_profile_model(params: ModelParams, feature_sample=None):
    """Dense user tower over the fused feature vector with an interest-tag head.

    The layer named `user_embedding` is the user vector that scoring publishes; `feature_sample`
    (a float array) adapts the normalisation so the model carries its own scaling into MLflow.
    """
    import keras

    inputs = keras.Input(shape=(params.n_features,), name="features")
    norm = keras.layers.Normalization(name="feature_scaling")
    if feature_sample is not None:
        norm.adapt(feature_sample)
    x = norm(inputs)
    x = keras.layers.Dense(params.hidden_units, activation="relu", name="tower_hidden")(x)
    x = keras.layers.Dropout(params.dropout)(x)
    embedding = keras.layers.Dense(params.embedding_dim, activation="tanh", name=USER_EMBEDDING_LAYER)(x)
    tags = keras.layers.Dense(params.n_tags, activation="sigmoid", name=TAGS_OUTPUT)(embedding)
    model = keras.Model(inputs, tags, name="portrait_profile")
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(multi_label=True, name="auc")],
    )
    return model


def embedding_model(model):
    """The sub-model from features to the user embedding, for retrieval and the published profile."""
    import keras

    return keras.Model(model.inputs, model.get_layer(USER_EMBEDDING_LAYER).output)
