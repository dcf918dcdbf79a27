"""Candidate retrieval: user embedding . item embedding, top N per user, skipping excluded items.

Scores are exact dot products over the whole catalogue, in blocks of users so memory stays bounded
(users x items floats per block). With the bias trick (the user vector ends in 1, the item vector in
its bias) the dot product is the model's logit of P(item | user) up to the terms of the user's own
history, which `History` adds: the repeat term (the items in the user's sequence), the neighbour
term (items that share users with them, ml/neighbours.py) and the item-item term (EASE over the
user's whole history, ml/itemitem.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ml.dataset import OOV, PAD

if TYPE_CHECKING:
    import scipy.sparse as sp

    from ml.itemitem import ItemItem


@dataclass(frozen=True)
class History:
    """The history terms of a block of users' logits.

    `positions` is each sequence step's item position (-1 for padding and items not in the
    catalogue) and `weights` its learned weight, each (users, steps). Item i of user u gains
    repeat_scale * log(1 + u's weights on i) and, with `neighbours` (items x items similarities),
    neighbour_scale * log(1 + sum of u's weights times the similarity of each step's item to i) and,
    with `item_item`, item_item_scale * the EASE score of i for u's whole history.
    """

    positions: np.ndarray
    weights: np.ndarray
    repeat_scale: float
    neighbours: "sp.csr_matrix | None" = None
    neighbour_scale: float = 0.0
    # The item-item term (ml/itemitem.py): EASE weights, each user's whole history as item positions
    # (not only the sequence's steps), and its scale.
    item_item: "ItemItem | None" = None
    item_histories: Sequence[Sequence[int]] | None = None
    item_item_scale: float = 0.0

    @property
    def uses_neighbours(self) -> bool:
        return self.neighbours is not None and bool(self.neighbour_scale)

    @property
    def uses_item_item(self) -> bool:
        return self.item_item is not None and self.item_histories is not None and bool(self.item_item_scale)

    def logits(self, start: int, stop: int, items: int) -> np.ndarray:
        """(stop - start, items): the terms of users start..stop-1."""
        positions, weights = self.positions[start:stop], self.weights[start:stop]
        out = repeat_term(positions, weights, items, self.repeat_scale)
        if self.uses_neighbours:
            from ml.neighbours import neighbour_term

            out += neighbour_term(positions, weights, self.neighbours, self.neighbour_scale)
        if self.uses_item_item:
            out += self.item_item.term(self.item_histories[start:stop], items, self.item_item_scale)
        return out


def top_items(user_vectors: np.ndarray, item_vectors: np.ndarray, k: int,
              excluded: Sequence[Sequence[int]] | None = None, block: int = 2048,
              history: History | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores), each (users, k): the k best items per user, best first.

    `excluded[u]` lists item positions user u must not get (bought items). `history` adds the
    repeat and neighbour terms of each user's sequence. Ties break by the lower item position, so reruns agree.
    With fewer than k eligible items the rest is -1 / -inf.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    users, items = len(user_vectors), len(item_vectors)
    take = min(k, items)
    indices = np.full((users, k), -1, dtype=np.int64)
    scores = np.full((users, k), -np.inf, dtype=np.float64)
    if users == 0 or items == 0:
        return indices, scores
    item_vectors = np.asarray(item_vectors, dtype=np.float32)
    for start in range(0, users, block):
        stop = min(start + block, users)
        block_scores = np.asarray(user_vectors[start:stop], dtype=np.float32) @ item_vectors.T
        block_scores = block_scores.astype(np.float64)
        if history is not None:
            block_scores += history.logits(start, stop, items)
        if excluded is not None:
            for row, user in enumerate(range(start, stop)):
                if len(excluded[user]):
                    block_scores[row, np.asarray(excluded[user], dtype=np.int64)] = -np.inf
        # argpartition finds the k best cheaply; a stable sort of those k orders them (ties by position).
        part = np.argpartition(-block_scores, take - 1, axis=1)[:, :take] if take < items else \
            np.tile(np.arange(items), (stop - start, 1))
        part_scores = np.take_along_axis(block_scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        best = np.take_along_axis(part, order, axis=1)
        best_scores = np.take_along_axis(part_scores, order, axis=1)
        best = np.where(np.isfinite(best_scores), best, -1)
        indices[start:stop, :take] = best
        scores[start:stop, :take] = best_scores
    return indices, scores


def repeat_term(positions: np.ndarray, weights: np.ndarray, items: int, scale: float = 1.0) -> np.ndarray:
    """(users, items): scale * log(1 + the sum of each user's step weights on each item); steps at -1 count nowhere."""
    positions = np.asarray(positions, dtype=np.int64)
    total = np.zeros((len(positions), items), dtype=np.float64)
    rows, steps = np.nonzero(positions >= 0)
    np.add.at(total, (rows, positions[rows, steps]), np.asarray(weights, dtype=np.float64)[rows, steps])
    return scale * np.log1p(total)


def step_positions(seq_items: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
    """Sequence steps (vocabulary indices) as positions in an item table whose row i has vocabulary
    index item_rows[i]; -1 for padding, items unknown to the model and items not in the table."""
    seq_items = np.asarray(seq_items, dtype=np.int64)
    item_rows = np.asarray(item_rows, dtype=np.int64)
    size = max(int(item_rows.max(initial=-1)), int(seq_items.max(initial=-1)), OOV) + 1
    lookup = np.full(size, -1, dtype=np.int64)
    lookup[item_rows] = np.arange(len(item_rows))
    lookup[[PAD, OOV]] = -1          # padding, and items the model never saw: never an item
    return lookup[seq_items]


def ranked_lists(user_keys: Sequence[str], item_ids: Sequence[str], indices: np.ndarray) -> dict[str, list[str]]:
    """user_key -> recommended item ids in rank order (dropping the -1 fillers)."""
    return {user: [item_ids[i] for i in row if i >= 0] for user, row in zip(user_keys, indices)}


def relative_scores(scores: np.ndarray) -> np.ndarray:
    """Each user's logits scaled to [0, 1] over their candidates: 1 for the best, 0 for the lowest
    (all 1 when they are equal), 0 for fillers.

    The same order as the logits, on a scale the re-ranker can weigh against diversity. (A ratio of
    probabilities, exp(logit - best), is not: with the history terms' scales chosen for ranking, it
    puts every candidate after the first near 0, and diversity alone would order the rest.)
    """
    finite = np.isfinite(scores)
    best = np.max(np.where(finite, scores, -np.inf), axis=1, keepdims=True, initial=-np.inf)
    low = np.min(np.where(finite, scores, np.inf), axis=1, keepdims=True, initial=np.inf)
    span = np.where(np.isfinite(best) & (best > low), best - low, 1.0)
    with np.errstate(invalid="ignore"):
        relative = np.where(finite, (scores - np.where(np.isfinite(low), low, 0.0)) / span, 0.0)
    return np.where(finite & (best == low), 1.0, relative)


def positions(values: Sequence[Sequence[str] | None], index: Mapping[str, int]) -> list[list[int]]:
    """Each list of ids (None for none) as positions in `index`, unknown ids dropped."""
    return [[index[v] for v in (row or ()) if v in index] for row in values]
