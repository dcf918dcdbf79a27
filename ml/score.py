"""Score users with the profile model: tags, segment, churn risk and the user embedding; item embeddings.

`Scorer` holds the two Keras towers and the ModelSpec of one registered version. It takes Arrow
tables (gold rows) and encodes them exactly as training did. `load_champion` always resolves
`models:/portrait-profile@champion`; scoring never picks a model by itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from jobs.common.config import Config
from jobs.common.errors import ConfigError
from ml.dataset import ItemTable, ModelSpec, encode_items, encode_users
from ml.model import CHURN_OUTPUT, REPEAT_WEIGHTS, SEGMENT_OUTPUT, TAGS_OUTPUT, USER_EMBEDDING, repeat_scale

if TYPE_CHECKING:
    import pyarrow as pa
    import scipy.sparse as sp
    from pyspark.sql import DataFrame

    from collections.abc import Sequence

    from ml.itemitem import ItemItem
    from ml.retrieval import History


@dataclass(frozen=True)
class Scores:
    user_keys: list[str]
    tag_scores: np.ndarray      # users x tags, in spec.tags order
    segment_probs: np.ndarray   # users x segments, in spec.segments order
    churn: np.ndarray           # users
    embeddings: np.ndarray      # users x (embedding_dim + 1)
    model_version: str
    # The repeat term's inputs (models trained with model.repeat_term): each sequence step's item
    # (vocabulary index) and weight, users x steps; None for models without it.
    seq_items: np.ndarray | None = field(default=None, repr=False)
    repeat_weights: np.ndarray | None = field(default=None, repr=False)
    repeat_scale: float = 1.0
    neighbour_scale: float = 0.0
    item_item_scale: float = 0.0

    def history(self, items: ItemTable, neighbours=None, item_item=None,
                item_histories=None) -> "History | None":
        """ml.retrieval.top_items' `history` against `items` (row i = items.item_ids[i]), or None.

        `neighbours` is the day's item similarity (Scorer.neighbours); without it, no neighbour term.
        `item_item` is the day's ml.itemitem.ItemItem and `item_histories` each user's history as
        positions in `items` (ml.retrieval.positions), in the order of `user_keys`; without them
        (or with a scale of 0), no item-item term.
        """
        from ml.retrieval import History, step_positions

        with_item_item = item_item is not None and item_histories is not None and bool(self.item_item_scale)
        if self.repeat_weights is None:
            if not with_item_item:
                return None
            none = np.zeros((len(self.user_keys), 0))
            return History(none.astype(np.int64), none, 0.0, item_item=item_item, item_histories=item_histories,
                           item_item_scale=self.item_item_scale)
        return History(step_positions(self.seq_items, items.rows), self.repeat_weights, self.repeat_scale,
                       neighbours, self.neighbour_scale, item_item if with_item_item else None,
                       item_histories, self.item_item_scale)


class Scorer:
    def __init__(self, profile, item, spec: ModelSpec, version: str = ""):
        self.profile = profile
        self.item = item
        self.spec = spec
        self.version = version

    def score(self, table: "pa.Table", items: ItemTable | None = None, batch_size: int = 4096) -> Scores:
        """Every row of `table` (user features + sequence columns) through the user tower, in batches.

        `items` is the item table of the rows' date (`Scorer.items`): the sequence steps read their
        item numbers from it.
        """
        keys = [str(k) for k in table.column("user_key").to_pylist()] if "user_key" in table.column_names else []
        scale = repeat_scale(self.profile)
        repeat = scale is not None
        names = (TAGS_OUTPUT, SEGMENT_OUTPUT, CHURN_OUTPUT, USER_EMBEDDING) + ((REPEAT_WEIGHTS,) if repeat else ())
        parts = {name: [] for name in (*names, *(("seq_item",) if repeat else ()))}
        for start in range(0, table.num_rows, batch_size):
            inputs = encode_users(table.slice(start, batch_size), self.spec, items)
            out = self.profile.predict_on_batch(inputs)
            for name in names:
                parts[name].append(np.asarray(out[name], dtype=np.float32))
            if repeat:
                parts["seq_item"].append(np.asarray(inputs["seq_item"], dtype=np.int32))
        length = self.spec.sequence_length
        dims = {TAGS_OUTPUT: len(self.spec.tags), SEGMENT_OUTPUT: len(self.spec.segments), CHURN_OUTPUT: 1,
                USER_EMBEDDING: int(self.profile.get_layer(USER_EMBEDDING).output.shape[-1]),
                REPEAT_WEIGHTS: length, "seq_item": length}
        stacked = {n: np.concatenate(v) if v else np.zeros((0, dims[n]), np.float32) for n, v in parts.items()}
        return Scores(keys, stacked[TAGS_OUTPUT], stacked[SEGMENT_OUTPUT], stacked[CHURN_OUTPUT].reshape(-1),
                      stacked[USER_EMBEDDING], self.version,
                      seq_items=stacked["seq_item"] if repeat else None,
                      repeat_weights=stacked[REPEAT_WEIGHTS] if repeat else None, repeat_scale=scale if repeat else 1.0,
                      neighbour_scale=self.spec.neighbour_scale if repeat else 0.0,
                      item_item_scale=float(getattr(self.spec, "item_item_scale", 0.0)))

    @property
    def uses_neighbours(self) -> bool:
        """Whether this model adds the neighbour term (it needs the repeat term's step weights)."""
        return bool(self.spec.neighbour_scale) and repeat_scale(self.profile) is not None

    def neighbours(self, table: "pa.Table", items: ItemTable) -> "sp.csr_matrix | None":
        """The item similarity of the neighbour term from every row's sequence in `table` (all of the
        day's users), positions as in `items`; None for a model without the term."""
        return sequence_neighbours(table, items, self.spec) if self.uses_neighbours else None

    def spark_neighbours(self, users: "DataFrame", items: ItemTable) -> "sp.csr_matrix | None":
        """`neighbours` computed by Spark from a DataFrame of the day's rows, for days too large for the
        driver (ml.neighbours.spark_item_neighbours); None for a model without the term."""
        if not self.uses_neighbours:
            return None
        from ml.neighbours import spark_item_neighbours

        spec = self.spec
        return spark_item_neighbours(users, items.item_ids, spec.item_vocab, spec.sequence_length,
                                     spec.neighbour_top_n)

    @property
    def uses_item_item(self) -> bool:
        """Whether this model adds the item-item term (ml/itemitem.py)."""
        return bool(self.spec.item_item_scale)

    def item_item(self, histories: "Sequence[Sequence[int]]", items: ItemTable) -> "ItemItem | None":
        """The day's item-item weights from every user's history (positions in `items`), under the
        settings the model was tuned with; None for a model without the term."""
        if not self.uses_item_item:
            return None
        from ml.itemitem import ItemItem, ItemItemSettings

        return ItemItem.fit(histories, len(items.rows), ItemItemSettings(**self.spec.item_item))

    def items(self, table: "pa.Table") -> tuple[ItemTable, np.ndarray]:
        """The item table of one date under this model's spec and its item embeddings (one per item row)."""
        items = encode_items(table, self.spec)
        vectors = np.zeros((len(items.rows), int(self.item.output.shape[-1])), dtype=np.float32)
        for start in range(0, len(items.rows), 8192):
            index = items.rows[start:start + 8192]
            vectors[start:start + len(index)] = np.asarray(self.item.predict_on_batch(items.inputs(index)))
        return items, vectors


def sequence_neighbours(table: "pa.Table", items: ItemTable, spec: ModelSpec) -> "sp.csr_matrix":
    """ml.neighbours.item_neighbours of the sequences in `table`, encoded as the model encodes them."""
    from ml.dataset import sequence_items
    from ml.neighbours import item_neighbours
    from ml.retrieval import step_positions

    return item_neighbours(step_positions(sequence_items(table, spec), items.rows), len(items.rows),
                           spec.neighbour_top_n)


def load_champion(cfg: Config) -> Scorer:
    """The `champion` alias of the registered model, as a Scorer."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from ml.registry import champion_uri, configure_mlflow, require_champion

    configure_mlflow(cfg)
    version, _ = require_champion(cfg)
    return load_scorer(champion_uri(cfg), version)


def apply_overrides(scorer: Scorer, cfg: Config) -> Scorer:
    """model.item_item_scale: `auto` keeps the scale the model's training chose on its validation days;
    a number replaces it for this scoring (with the profile's model.item_item settings when the model
    has none). For data whose validation days cannot decide (docs/benchmarks.md: MovieLens)."""
    value = cfg.get("model.item_item_scale", "auto")
    if value == "auto":
        return scorer
    scale = cfg.number("model.item_item_scale")
    if scale < 0:
        raise ConfigError(f"model.item_item_scale must be auto or a number >= 0, got {value!r}")
    from dataclasses import asdict

    from ml.itemitem import ItemItemSettings

    scorer.spec.item_item_scale = scale
    if not scorer.spec.item_item:
        scorer.spec.item_item = asdict(ItemItemSettings.from_config(cfg))
    return scorer


def load_scorer(model_uri: str, version: str = "") -> Scorer:
    import mlflow.pyfunc

    wrapper = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    return Scorer(wrapper.profile, wrapper.item, wrapper.spec, version)
