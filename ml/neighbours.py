"""The neighbour term: items that share users with the items of a user's own sequence.

The repeat term (ml.model.RepeatWeights) scores the very items a user touched; the towers score items
by features. Neither can say "people who take item A also take item B", which on e-commerce data is
a strong signal. The neighbour term adds it to the logit at retrieval:

    c * log(1 + sum over the user's steps s of w_s * sim(item_s, i))

with w_s the model's learned step weights (the repeat term's) and sim the cosine similarity of two
items' user sets on the scoring day: |U_a & U_b| / sqrt(|U_a| |U_b|), where U_a is the set of users
with item a among the last `spec.sequence_length` steps of their gold.user_sequences row. Each item
keeps its `top_n` most similar items (ties: the lower item position); an item is never its own
neighbour. The similarity is computed from the day's sequences, like the item tower reads the day's
item features, so it is as fresh as the data and never sees the future. The scale c is chosen on the
validation days (ml.train.tune_history) and saved in the ModelSpec; c = 0 turns the term off.

`item_neighbours` computes it from sequence positions (training, evaluation, small scoring days);
`spark_item_neighbours` computes the same matrix with Spark when the day is too large for the driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp
    from pyspark.sql import DataFrame


def item_neighbours(positions: np.ndarray, items: int, top_n: int) -> "sp.csr_matrix":
    """(items, items) cosine similarity of the items' user sets, top `top_n` per row, no diagonal.

    `positions` is (users, steps): each step's item position, -1 for padding and unknown items. A
    user counts once per item however often the item recurs.
    """
    import scipy.sparse as sp

    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    positions = np.asarray(positions, dtype=np.int64)
    rows, steps = np.nonzero(positions >= 0)
    users = sp.csr_matrix((np.ones(len(rows)), (rows, positions[rows, steps])), shape=(len(positions), items))
    users.data[:] = 1.0                      # duplicates were summed: one per (user, item)
    counts = (users.T @ users).tocoo()
    n = np.asarray(users.sum(axis=0)).ravel()
    off = counts.row != counts.col
    return _top_n(counts.row[off], counts.col[off], counts.data[off] / np.sqrt(n[counts.row[off]] * n[counts.col[off]]),
                  items, top_n)


def _top_n(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, items: int, top_n: int) -> "sp.csr_matrix":
    """The (rows, cols, values) triples as a CSR matrix keeping each row's top_n values (ties: lower col)."""
    import scipy.sparse as sp

    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    starts = np.searchsorted(rows, rows, side="left")
    keep = np.arange(len(rows)) - starts < top_n
    return sp.csr_matrix((values[keep], (rows[keep], cols[keep])), shape=(items, items))


def neighbour_term(positions: np.ndarray, weights: np.ndarray, neighbours: "sp.csr_matrix",
                   scale: float) -> np.ndarray:
    """(users, items): scale * log(1 + sum over steps of weight * neighbours[step item, item])."""
    import scipy.sparse as sp

    positions = np.asarray(positions, dtype=np.int64)
    items = neighbours.shape[0]
    rows, steps = np.nonzero(positions >= 0)
    steps_by_item = sp.csr_matrix((np.asarray(weights, dtype=np.float64)[rows, steps], (rows, positions[rows, steps])),
                                  shape=(len(positions), items))
    return scale * np.log1p((steps_by_item @ neighbours).toarray())


def spark_item_neighbours(users: "DataFrame", item_ids: Sequence[str], known: Sequence[str], steps: int,
                          top_n: int) -> "sp.csr_matrix":
    """`item_neighbours` of a DataFrame of gold rows (user_key, seq_item_ids), computed by Spark.

    Positions are those of `item_ids` (the day's item table); only items in `known` (the model's
    vocabulary) count, as only they get a position from the model's encoding of the sequences.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from ml.baselines import pair_similarity

    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    spark = users.sparkSession
    known_set = set(known)
    index = spark.createDataFrame([(item, pos) for pos, item in enumerate(item_ids) if item in known_set],
                                  "item_id string, pos int")
    last = F.expr(f"slice(seq_item_ids, greatest(size(seq_item_ids) - {int(steps)} + 1, 1), {int(steps)})")
    pairs = (users.where(F.size("seq_item_ids") > 0)
             .select("user_key", F.explode(F.array_distinct(last)).alias("item_id"))
             .join(F.broadcast(index), "item_id").select("user_key", F.col("pos").alias("item_id")))
    similarity = pair_similarity(pairs, "cosine").where(F.col("item_i") != F.col("item_j"))
    rank = F.row_number().over(Window.partitionBy("item_i").orderBy(F.desc("similarity"), F.asc("item_j")))
    kept = similarity.withColumn("r", rank).where(F.col("r") <= top_n).toArrow()
    i, j, values = (kept.column(name).to_numpy() for name in ("item_i", "item_j", "similarity"))
    return _top_n(i.astype(np.int64), j.astype(np.int64), values.astype(np.float64), len(item_ids), top_n)


def neighbour_evidence(positions: np.ndarray, weights: np.ndarray, neighbours: "sp.csr_matrix",
                       candidates: np.ndarray, block: int = 512) -> np.ndarray:
    """For each candidate (users x candidates, item positions, -1 for none): the position of the user's
    sequence item that adds most to its neighbour term (weight x similarity, summed over the steps on
    that item; ties: the lower position), or -1 when no item of the sequence adds anything.

    This is the "because you took X" behind a candidate the neighbour term brought in.
    """
    positions = np.asarray(positions, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    candidates = np.asarray(candidates, dtype=np.int64)
    items = neighbours.shape[0]
    out = np.full(candidates.shape, -1, dtype=np.int64)
    indptr, indices, data = neighbours.indptr, neighbours.indices.astype(np.int64), neighbours.data
    for start in range(0, len(positions), block):
        pos, w, cand = positions[start:start + block], weights[start:start + block], candidates[start:start + block]
        rows, steps = np.nonzero(pos >= 0)
        # the user's weight on each distinct item of the sequence
        keys, inverse = np.unique(rows * items + pos[rows, steps], return_inverse=True)
        item_weight = np.bincount(inverse, weights=w[rows, steps], minlength=len(keys))
        user, item = keys // items, keys % items
        # every (user, sequence item, neighbour) with its contribution weight x similarity
        counts = indptr[item + 1] - indptr[item]
        which = np.repeat(np.arange(len(keys)), counts)
        offset = np.arange(len(which)) - np.repeat(np.cumsum(counts) - counts, counts)
        entry = indptr[item][which] + offset
        pair = user[which] * items + indices[entry]
        contribution = item_weight[which] * data[entry]
        keep = contribution > 0                  # a step of weight 0 (padding) explains nothing
        pair, contribution, source = pair[keep], contribution[keep], item[which][keep]
        # the best sequence item per (user, neighbour): sort by pair, contribution desc, item asc
        order = np.lexsort((source, -contribution, pair))
        pair, best_item = pair[order], source[order]
        first = np.ones(len(pair), dtype=bool)
        first[1:] = pair[1:] != pair[:-1]
        pair, best_item = pair[first], best_item[first]
        # look every candidate up
        local = np.arange(len(cand))[:, None] * items + np.maximum(cand, 0)
        found = np.searchsorted(pair, local)
        hit = (found < len(pair)) & (cand >= 0)
        hit[hit] = pair[found[hit]] == local[hit]
        out[start:start + block][hit] = best_item[found[hit]]
    return out
