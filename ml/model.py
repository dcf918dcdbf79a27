"""Keras model factory, backend-agnostic: keras layers and keras.ops only, no raw backend calls.

Two towers and four heads. The user tower reads the dense features (normalised inside the model),
categorical embeddings and the interaction sequence (a GRU with masking, plus an attention pool of
the sequence's item embeddings, which share their table with the item tower). The item tower reads
the item id embedding, category, brand and the numeric item features. Heads: interest tags
(multi-label sigmoid over the shop's categories, ModelSpec.tags), segment (softmax), churn (sigmoid) and the user
embedding, trained with an in-batch sampled softmax against the item tower. docs/model.md has the
picture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ml.dataset import ModelSpec

USER_EMBEDDING = "user_embedding"
ITEM_EMBEDDING = "item_embedding"
TAGS_OUTPUT = "interest_tags"
SEGMENT_OUTPUT = "segment"
CHURN_OUTPUT = "churn"
RETRIEVAL_OUTPUT = "retrieval"
REPEAT_WEIGHTS = "repeat_weights"
PROFILE_OUTPUTS = (TAGS_OUTPUT, SEGMENT_OUTPUT, CHURN_OUTPUT, USER_EMBEDDING)
# A duplicate of the row's own positive elsewhere in the batch is not a negative: its logit is masked.
MASKED_LOGIT = -1e9


@dataclass(frozen=True)
class ModelParams:
    embedding_dim: int = 32          # the published user vector: the taste part plus the history codes
    history_code_dim: int = 0        # fixed random item codes pooled over the sequence; 0 = off
    repeat_term: bool = True         # add the learned repeat term a * log(1 + sum of the item's step weights)
    hidden_units: int = 64
    item_embedding_dim: int = 16     # the item id table of the sequence (and of the item tower, when used)
    item_id_in_item_tower: bool = False
    gru_units: int = 32
    learning_rate: float = 3e-3
    dropout: float = 0.1
    gaussian_noise: float = 0.0      # std of noise added to the normalised features in training; 0 = off
    l2: float = 0.0                  # on the item id table
    loss_weights: dict[str, float] = field(default_factory=lambda: {
        TAGS_OUTPUT: 1.0, SEGMENT_OUTPUT: 0.3, CHURN_OUTPUT: 0.3, RETRIEVAL_OUTPUT: 1.0})

    @property
    def taste_dim(self) -> int:
        return self.embedding_dim - self.history_code_dim

    @classmethod
    def from_config(cls, cfg) -> "ModelParams":
        defaults = cls()
        weights = dict(defaults.loss_weights)
        weights.update({k: float(v) for k, v in (cfg.get("model.loss_weights", {}) or {}).items()})
        params = cls(
            embedding_dim=int(cfg.get("model.embedding_dim", defaults.embedding_dim)),
            history_code_dim=int(cfg.get("model.history_code_dim", defaults.history_code_dim)),
            repeat_term=bool(cfg.get("model.repeat_term", defaults.repeat_term)),
            hidden_units=int(cfg.get("model.hidden_units", defaults.hidden_units)),
            item_embedding_dim=int(cfg.get("model.item_embedding_dim", defaults.item_embedding_dim)),
            item_id_in_item_tower=bool(cfg.get("model.item_id_in_item_tower", defaults.item_id_in_item_tower)),
            gru_units=int(cfg.get("model.gru_units", defaults.gru_units)),
            learning_rate=float(cfg.get("model.learning_rate", defaults.learning_rate)),
            dropout=float(cfg.get("model.dropout", defaults.dropout)),
            gaussian_noise=float(cfg.get("model.gaussian_noise", defaults.gaussian_noise)),
            l2=float(cfg.get("model.l2", defaults.l2)),
            loss_weights=weights,
        )
        if params.taste_dim < 1:
            from jobs.common.errors import ConfigError

            raise ConfigError(f"model.embedding_dim ({params.embedding_dim}) must exceed model.history_code_dim "
                              f"({params.history_code_dim})")
        return params

    def to_params(self) -> dict[str, Any]:
        flat = {k: v for k, v in asdict(self).items() if k != "loss_weights"}
        flat.update({f"loss_weight_{k}": v for k, v in self.loss_weights.items()})
        return flat


def _layers():
    """The custom layers, defined on first use so that importing ml.model stays light."""
    import keras
    from keras import ops

    from ml.dataset import OOV

    if hasattr(_layers, "cache"):
        return _layers.cache

    @keras.saving.register_keras_serializable(package="portrait")
    class SequenceEncoder(keras.layers.Layer):
        """GRU over the steps (masked where the item id is padding) and an attention pool of the
        steps' item vectors; an empty sequence gives zeros for both."""

        def __init__(self, units: int, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.gru = keras.layers.GRU(units, name="gru")
            self.attention = keras.layers.Dense(1, name="attention")

        def build(self, steps_shape, item_vectors_shape, ids_shape):
            self.gru.build(steps_shape)
            self.attention.build(steps_shape)

        def call(self, steps, item_vectors, ids):
            mask = ops.greater(ids, 0)
            state = self.gru(steps, mask=mask)
            present = ops.cast(mask, "float32")
            score = ops.squeeze(ops.cast(self.attention(steps), "float32"), -1) - (1.0 - present) * 1e9
            weight = ops.softmax(score, axis=-1) * present
            weight = weight / (ops.sum(weight, axis=1, keepdims=True) + 1e-6)
            pooled = ops.sum(item_vectors * ops.expand_dims(ops.cast(weight, item_vectors.dtype), -1), axis=1)
            return ops.concatenate([state, ops.cast(pooled, state.dtype)], axis=-1), pooled

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    def step_weights(type_weight, gap_weight, event_types, gaps, present):
        """exp(type_weight[event type] + gap_weight * gap) per sequence step (64 event-type slots), 0
        where `present` is 0: the learned step weight of HistoryPool and RepeatWeights."""
        logit = ops.take(type_weight, ops.clip(event_types, 0, 63)) + gap_weight * ops.cast(gaps, "float32")
        return ops.exp(ops.clip(logit, -10.0, 10.0)) * present

    @keras.saving.register_keras_serializable(package="portrait")
    class HistoryPool(keras.layers.Layer):
        """Sum of the steps' fixed item codes, weighted by a learned weight per event type and gap,
        divided by (total weight + 1) and scaled by a learned factor. Dotted with an item's own code it
        says how much of the history that very item is: a repeat signal that cannot memorise, since
        the codes are random and frozen."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.type_weight = None

        def build(self, codes_shape, event_types_shape, gaps_shape, ids_shape):
            self.type_weight = self.add_weight(shape=(64,), initializer="zeros", name="type_weight")
            self.gap_weight = self.add_weight(shape=(), initializer="zeros", name="gap_weight")
            self.scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(3.0), name="scale")

        def call(self, codes, event_types, gaps, ids):
            present = ops.cast(ops.greater(ids, 0), "float32")
            weight = step_weights(self.type_weight, self.gap_weight, event_types, gaps, present)
            pooled = ops.sum(ops.cast(codes, "float32") * ops.expand_dims(weight, -1), axis=1)
            return self.scale * pooled / (ops.sum(weight, axis=1, keepdims=True) + 1.0)

    @keras.saving.register_keras_serializable(package="portrait")
    class RepeatWeights(keras.layers.Layer):
        """Each sequence step's weight in the repeat term, exp(w[event type] + g * gap), 0 for padding,
        and the term's scale a (returned per row, for RepeatLogits).

        The repeat term of user u and item i is a * log(1 + the sum of the weights of u's steps on i):
        0 for an item u never touched, a * log 2 for one plain step at the start, learned from there (a
        cart may count more than a view, a step after a long pause less). Added to the logit, it
        multiplies P(i | u) by (1 + that sum) ** a. It is exact for every item, unlike a dot product.
        """

        def build(self, event_types_shape, gaps_shape, ids_shape):
            self.type_weight = self.add_weight(shape=(64,), initializer="zeros", name="type_weight")
            self.gap_weight = self.add_weight(shape=(), initializer="zeros", name="gap_weight")
            self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

        def call(self, event_types, gaps, ids):
            known = ops.cast(ops.greater(ids, OOV), "float32")          # padding and unknown items never match
            weights = step_weights(self.type_weight, self.gap_weight, event_types, gaps, known)
            return weights, ops.ones_like(weights[:, :1]) * self.scale

    @keras.saving.register_keras_serializable(package="portrait")
    class RepeatLogits(keras.layers.Layer):
        """repeat[i, j] = a * log(1 + sum over row i's steps on row j's item of their weights): the
        repeat term for every user-item pair of the batch, added to the in-batch logits."""

        def call(self, weights, scale, seq_items, item_ids):
            match = ops.cast(ops.equal(ops.expand_dims(seq_items, -1), ops.reshape(item_ids, (1, 1, -1))), "float32")
            total = ops.sum(match * ops.expand_dims(ops.cast(weights, "float32"), -1), axis=1)
            return ops.cast(scale, "float32") * ops.log1p(total)

    @keras.saving.register_keras_serializable(package="portrait")
    class Square(keras.layers.Layer):
        """x², so a dot product can hold a preferred value (a price position) as well as a trend."""

        def call(self, x):
            return ops.square(x)

    @keras.saving.register_keras_serializable(package="portrait")
    class AppendConstant(keras.layers.Layer):
        """[x, 1]: the user vector's last component meets the item bias in the dot product."""

        def call(self, x):
            return ops.concatenate([x, ops.ones_like(x[:, :1])], axis=-1)

    @keras.saving.register_keras_serializable(package="portrait")
    class InBatchLogits(keras.layers.Layer):
        """logits[i, j] = u_i . v_j - log q(item_j); j's item is masked for row i when it is i's own
        item or when j is another copy of i's row (same group): those are not negatives.

        Subtracting log q (the item's chance to be a batch positive) corrects the popularity bias
        of in-batch negatives, so the scores estimate P(item | user), not the lift over popularity.
        """

        def call(self, users, items, log_q, item_ids, groups):
            logits = ops.matmul(ops.cast(users, "float32"), ops.transpose(ops.cast(items, "float32")))
            logits = logits - ops.expand_dims(ops.cast(log_q, "float32"), 0)
            same_item = ops.equal(ops.expand_dims(item_ids, 1), ops.expand_dims(item_ids, 0))
            same_group = ops.equal(ops.expand_dims(groups, 1), ops.expand_dims(groups, 0))
            diagonal = ops.eye(ops.shape(item_ids)[0], dtype="bool")
            masked = ops.logical_and(ops.logical_or(same_item, same_group), ops.logical_not(diagonal))
            return ops.where(masked, MASKED_LOGIT, logits)

    _layers.cache = {"SequenceEncoder": SequenceEncoder, "AppendConstant": AppendConstant,
                     "InBatchLogits": InBatchLogits, "HistoryPool": HistoryPool, "Square": Square,
                     "RepeatWeights": RepeatWeights, "RepeatLogits": RepeatLogits}
    return _layers.cache


def in_batch_softmax_loss(y_true, logits):
    """Cross-entropy of each row's own item (the diagonal) against the batch; y_true is unused."""
    from keras import ops

    return -ops.diagonal(ops.log_softmax(ops.cast(logits, "float32"), axis=-1))


def weighted_binary_crossentropy(pos_weight: np.ndarray):
    """Binary cross-entropy per row, summed over tags with positives weighted by `pos_weight`."""
    from keras import ops

    weight = np.asarray(pos_weight, dtype="float32")

    def loss(y_true, y_pred):
        p = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1 - 1e-7)
        y = ops.cast(y_true, "float32")
        per_tag = -(weight * y * ops.log(p) + (1 - y) * ops.log(1 - p))
        return ops.mean(per_tag, axis=-1)

    return loss


@dataclass
class ProfileModels:
    """The compiled training graph and the two serving sub-models that share its layers."""

    train: Any
    profile: Any        # user inputs -> interest_tags, segment, churn, user_embedding
    item: Any           # item inputs -> item_embedding


def build_models(spec: "ModelSpec", params: ModelParams, numeric_sample: np.ndarray | None = None,
                 item_numeric_sample: np.ndarray | None = None, tag_pos_weight: np.ndarray | None = None,
                 mixed_precision: bool = False) -> ProfileModels:
    """The two-tower multi-task model for `spec`; the samples adapt the user and item feature scaling.

    Both towers are wide and deep: the vector is a linear map of the (scaled) inputs plus a map of a
    hidden layer, so simple structure (category shares against an item's category, a preferred price
    position against the item's) is there from the first step and the hidden layers add the rest.
    """
    import keras

    layers = _layers()
    n_numeric = len(spec.numeric_features) + len(spec.share_features)
    n_categorical = max(1, len(spec.categorical_features))
    length = spec.sequence_length
    n_items = len(spec.item_vocab) + 2
    n_item_numeric = len(spec.item_numeric_features)
    n_step_numeric = len(spec.sequence_item_features)
    head_dtype = "float32"

    user_numeric = keras.Input((n_numeric,), name="user_numeric")
    user_categorical = keras.Input((n_categorical,), dtype="int32", name="user_categorical")
    seq_item = keras.Input((length,), dtype="int32", name="seq_item")
    seq_item_numeric = keras.Input((length, n_step_numeric), name="seq_item_numeric")
    seq_category = keras.Input((length,), dtype="int32", name="seq_category")
    seq_event_type = keras.Input((length,), dtype="int32", name="seq_event_type")
    seq_gap = keras.Input((length,), name="seq_gap")
    item_id = keras.Input((), dtype="int32", name="item_id")
    item_category = keras.Input((), dtype="int32", name="item_category")
    item_brand = keras.Input((), dtype="int32", name="item_brand")
    item_numeric = keras.Input((n_item_numeric,), name="item_numeric")
    log_q = keras.Input((), name="log_q")
    group = keras.Input((), dtype="int32", name="group")

    regulariser = keras.regularizers.L2(params.l2) if params.l2 else None
    item_table = keras.layers.Embedding(n_items, params.item_embedding_dim, embeddings_regularizer=regulariser,
                                        name="item_id_embedding")
    category_table = keras.layers.Embedding(len(spec.category_vocab) + 2, 8, name="category_embedding")
    event_type_table = keras.layers.Embedding(len(spec.event_type_vocab) + 2, 4, name="event_type_embedding")
    item_scaling = keras.layers.Normalization(name="item_scaling")
    step_scaling = keras.layers.Normalization(name="step_scaling")
    if item_numeric_sample is not None and len(item_numeric_sample):
        item_scaling.adapt(item_numeric_sample)
        columns = [spec.item_numeric_features.index(n) for n in spec.sequence_item_features]
        if columns:
            step_scaling.adapt(item_numeric_sample[:, columns])

    # User tower.
    scaling = keras.layers.Normalization(name="feature_scaling")
    if numeric_sample is not None and len(numeric_sample):
        scaling.adapt(numeric_sample)
    dense = scaling(user_numeric)
    if params.gaussian_noise > 0:
        dense = keras.layers.GaussianNoise(params.gaussian_noise, name="feature_noise")(dense)
    categorical = keras.layers.Flatten(name="categorical_flat")(
        keras.layers.Embedding(spec.categorical_size, 4, name="categorical_embedding")(user_categorical))
    step_parts = [item_table(seq_item), category_table(seq_category), event_type_table(seq_event_type),
                  keras.layers.Reshape((length, 1), name="gap_column")(seq_gap)]
    if n_step_numeric:
        step_parts.append(step_scaling(seq_item_numeric))
    steps = keras.layers.Concatenate(name="sequence_steps")(step_parts)
    sequence, pooled = layers["SequenceEncoder"](params.gru_units, name="sequence_encoder")(steps, steps, seq_item)
    user = keras.layers.Concatenate(name="user_inputs")([dense, categorical, sequence])
    user = keras.layers.Dense(params.hidden_units, activation="relu", name="user_hidden")(user)
    user = keras.layers.Dropout(params.dropout, name="user_dropout")(user)
    taste = keras.layers.Add(name="user_vector")([
        keras.layers.Dense(params.taste_dim, name="user_projection")(user),
        keras.layers.Dense(params.taste_dim, use_bias=False, name="user_wide")(
            keras.layers.Concatenate(name="user_wide_inputs")([dense, pooled]))])
    tags = keras.layers.Dense(len(spec.tags), activation="sigmoid", name=TAGS_OUTPUT, dtype=head_dtype)(user)
    segment = keras.layers.Dense(len(spec.segments), activation="softmax", name=SEGMENT_OUTPUT, dtype=head_dtype)(user)
    churn = keras.layers.Dense(1, activation="sigmoid", name=CHURN_OUTPUT, dtype=head_dtype)(user)

    # Item tower.
    scaled_items = item_scaling(item_numeric)
    item_features = [category_table(item_category),
                     keras.layers.Embedding(len(spec.brand_vocab) + 2, 4, name="brand_embedding")(item_brand),
                     scaled_items, layers["Square"](name="item_numeric_squared")(scaled_items)]
    if params.item_id_in_item_tower:
        item_features.append(item_table(item_id))
    item_inputs = keras.layers.Concatenate(name="item_inputs")(item_features)
    item_hidden = keras.layers.Dense(params.hidden_units, activation="relu", name="item_hidden")(item_inputs)
    item_vector = keras.layers.Add(name="item_vector")([
        keras.layers.Dense(params.taste_dim, name="item_projection")(item_hidden),
        keras.layers.Dense(params.taste_dim, use_bias=False, name="item_wide")(item_inputs)])
    item_bias = keras.layers.Dense(1, name="item_bias")(
        keras.layers.Concatenate(name="item_bias_inputs")([item_inputs, item_hidden]))

    user_parts, item_parts = [taste], [item_vector]
    if params.history_code_dim:
        codes = keras.layers.Embedding(
            n_items, params.history_code_dim, trainable=False, name="history_codes",
            embeddings_initializer=keras.initializers.RandomNormal(stddev=params.history_code_dim ** -0.5, seed=11))
        user_parts.append(layers["HistoryPool"](name="history_pool")(codes(seq_item), seq_event_type, seq_gap, seq_item))
        item_parts.append(codes(item_id))
    user_vector = user_parts[0] if len(user_parts) == 1 else keras.layers.Concatenate(name="user_full")(user_parts)
    user_embedding = layers["AppendConstant"](name=USER_EMBEDDING, dtype=head_dtype)(user_vector)
    item_embedding = keras.layers.Concatenate(name=ITEM_EMBEDDING, dtype=head_dtype)([*item_parts, item_bias])

    profile_outputs = {TAGS_OUTPUT: tags, SEGMENT_OUTPUT: segment, CHURN_OUTPUT: churn, USER_EMBEDDING: user_embedding}
    if params.repeat_term:
        repeat_weights, repeat_scale = layers["RepeatWeights"](name=REPEAT_WEIGHTS, dtype=head_dtype)(
            seq_event_type, seq_gap, seq_item)
        profile_outputs[REPEAT_WEIGHTS] = repeat_weights
        logits = keras.layers.Add(name=RETRIEVAL_OUTPUT, dtype=head_dtype)([
            layers["InBatchLogits"](name="in_batch_logits", dtype=head_dtype)(
                user_embedding, item_embedding, log_q, item_id, group),
            layers["RepeatLogits"](name="repeat_logits", dtype=head_dtype)(repeat_weights, repeat_scale, seq_item,
                                                                             item_id)])
    else:
        logits = layers["InBatchLogits"](name=RETRIEVAL_OUTPUT, dtype=head_dtype)(
            user_embedding, item_embedding, log_q, item_id, group)

    user_inputs = [user_numeric, user_categorical, seq_item, seq_item_numeric, seq_category, seq_event_type, seq_gap]
    item_inputs_list = [item_id, item_category, item_brand, item_numeric]
    train = keras.Model(user_inputs + item_inputs_list + [log_q, group],
                        {TAGS_OUTPUT: tags, SEGMENT_OUTPUT: segment, CHURN_OUTPUT: churn, RETRIEVAL_OUTPUT: logits},
                        name="portrait_profile_training")
    profile = keras.Model(user_inputs, profile_outputs, name="portrait_profile")
    item = keras.Model(item_inputs_list, item_embedding, name="portrait_item_tower")

    pos_weight = np.ones(len(spec.tags), dtype="float32") if tag_pos_weight is None else tag_pos_weight
    optimizer = keras.optimizers.Adam(params.learning_rate)
    if mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    train.compile(
        optimizer=optimizer,
        loss={TAGS_OUTPUT: weighted_binary_crossentropy(pos_weight),
              SEGMENT_OUTPUT: keras.losses.SparseCategoricalCrossentropy(),
              CHURN_OUTPUT: keras.losses.BinaryCrossentropy(),
              RETRIEVAL_OUTPUT: in_batch_softmax_loss},
        loss_weights=dict(params.loss_weights),
    )
    return ProfileModels(train, profile, item)


def repeat_scale(profile) -> float | None:
    """The repeat term's scale a of a profile model, None when it has no repeat term."""
    from keras import ops

    try:
        layer = profile.get_layer(REPEAT_WEIGHTS)
    except ValueError:
        return None
    return float(ops.convert_to_numpy(layer.scale))


def set_repeat_scale(profile, value: float) -> None:
    profile.get_layer(REPEAT_WEIGHTS).scale.assign(float(value))


def custom_objects() -> dict[str, Any]:
    return dict(_layers())
