"""A synthetic training snapshot with planted structure, written straight to Parquet (no Spark).

Used by the training tests (a tiny, learnable snapshot in seconds) and by benchmarks/bench_train.py
(100k to 1M users) to exercise the real model and input pipeline. Each user has two interest
categories and a price position; their sequence and next-days items come from those categories near
that position, so a model that learns beats one that does not. The layout is exactly what
ml.dataset.write_snapshot writes; everything is vectorised, a day at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from jobs.common.taxonomy import TOP_LEVEL
from ml.dataset import SNAPSHOT_ROWS_PER_FILE, Snapshot, plan_split

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")
NEIGHBOURS = 5          # an interaction picks one of the 5 items of the category closest to the user's price


def _lists(flat: np.ndarray, lengths: np.ndarray, value_type):
    import pyarrow as pa

    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, value_type))


def synthetic_snapshot(root: Path, users: int, items: int = 500, run_date: dt.date = dt.date(2026, 11, 14),
                       horizon_days: int = 2, train_dates: int = 2, sequence_length: int = 20, seed: int = 7,
                       rows_per_file: int = SNAPSHOT_ROWS_PER_FILE, dates: Iterable[dt.date] | None = None) -> Snapshot:
    """Write examples and items for the plan's as-of dates (or just `dates`) under `root`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    plan = plan_split(run_date, run_date - dt.timedelta(days=4 * horizon_days + train_dates), horizon_days, 30,
                      train_dates)
    rng = np.random.default_rng(seed)
    n_cat = len(TOP_LEVEL)
    item_cat = np.concatenate([np.arange(min(items, n_cat)), rng.integers(0, n_cat, max(0, items - n_cat))])
    item_pos = rng.random(items)
    item_ids = np.array([f"i{j:06d}" for j in range(items)], dtype=object)
    # Items of each category sorted by position, laid end to end: category c is sorted[start[c]:start[c+1]].
    order = np.lexsort((item_pos, item_cat))
    start = np.searchsorted(item_cat[order], np.arange(n_cat + 1))
    interests = rng.integers(0, n_cat, (users, 2))
    target = rng.random(users)
    user_keys = pa.array([f"u{j:08d}" for j in range(users)], pa.string())
    categories = np.array(TOP_LEVEL, dtype=object)

    def draw(count: np.ndarray) -> np.ndarray:
        """count[u] items per user, flat in user order: an interest category, then a near item."""
        owner = np.repeat(np.arange(users), count)
        cat = interests[owner, rng.integers(0, 2, len(owner))]
        lo, hi = start[cat], start[cat + 1]
        size = np.maximum(hi - lo, 1)
        # position of the user's target within the category, then one of the neighbours around it
        within = np.clip(np.round(target[owner] * (size - 1)).astype(np.int64)
                         + rng.integers(-(NEIGHBOURS // 2), NEIGHBOURS // 2 + 1, len(owner)), 0, size - 1)
        picked = np.where(hi > lo, order[np.minimum(lo + within, len(order) - 1)], rng.integers(0, items, len(owner)))
        return picked.astype(np.int64)

    snapshot = Snapshot(root=str(root), plan=plan)
    for as_of in (sorted(set(dates)) if dates is not None else plan.as_of_dates()):
        seq_len = rng.integers(0, sequence_length + 1, users)
        history = draw(seq_len)
        future_len = rng.integers(0, 6, users)
        future = draw(future_len)
        owner_h = np.repeat(np.arange(users), seq_len)
        owner_f = np.repeat(np.arange(users), future_len)
        affinity = np.zeros((users, n_cat))
        np.add.at(affinity, (owner_h, item_cat[history]), 1.0)
        affinity = affinity / np.maximum(affinity.sum(axis=1, keepdims=True), 1.0)
        tags = np.zeros((users, n_cat), dtype=np.float32)
        tags[owner_f, item_cat[future]] = 1.0
        # positives: distinct future items per user, sorted
        pairs = np.unique(np.stack([owner_f, future], axis=1), axis=0) if len(future) else np.zeros((0, 2), np.int64)
        pos_len = np.bincount(pairs[:, 0], minlength=users)
        first = np.concatenate([[0], np.cumsum(seq_len)[:-1]])
        has = seq_len > 0
        columns = {
            "user_key": user_keys,
            "gender": pa.array(np.array(["F", "M", "U"], dtype=object)[rng.integers(0, 3, users)], pa.string()),
            "n_events_30d": pa.array(seq_len * 3.0), "n_purchases_90d": pa.array(rng.poisson(1.0, users).astype(float)),
            "recency_days": pa.array(rng.integers(0, 30, users).astype(float)),
            "price_index": pa.array(0.5 + target),
            **{f"affinity_{c}": pa.array(affinity[:, j]) for j, c in enumerate(TOP_LEVEL)},
            "seq_item_ids": _lists(item_ids[history], seq_len, pa.string()),
            "seq_categories": _lists(categories[item_cat[history]], seq_len, pa.string()),
            "seq_event_types": _lists(np.array(EVENT_TYPES, dtype=object)[rng.integers(0, 4, len(history))], seq_len,
                                      pa.string()),
            "seq_gaps": _lists(rng.integers(0, 86_400, len(history)), seq_len, pa.int64()),
            "tag_labels": pa.FixedSizeListArray.from_arrays(pa.array(tags.ravel(), pa.float32()), n_cat).cast(
                pa.list_(pa.float32())),
            "positives": _lists(item_ids[pairs[:, 1]], pos_len, pa.string()),
            "churn_label": pa.array((seq_len < 3).astype(np.float32)),
            "churn_until": pa.array(np.full(users, np.datetime64(as_of + dt.timedelta(days=30), "D"))),
            "segment_label": pa.array(np.minimum(seq_len // 4, 5).astype(np.int32)),
            "bought": _lists(item_ids[history[first[has]]], has.astype(np.int64), pa.string()),
            "known": pa.array(has),
        }
        folder = Path(snapshot.example_dir(as_of))
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.table(columns)
        for part, begin in enumerate(range(0, users, rows_per_file)):
            pq.write_table(table.slice(begin, rows_per_file), folder / f"part-{part:05d}.parquet",
                           row_group_size=rows_per_file)
        snapshot.rows[as_of.isoformat()] = users
        item_folder = Path(snapshot.item_dir(as_of))
        item_folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "item_id": pa.array(item_ids, pa.string()),
            "category": pa.array(categories[item_cat], pa.string()),
            "brand": pa.array([f"brand{c % 7}" for c in range(items)], pa.string()),
            "price": pa.array(10 + 90 * item_pos),
            "popularity": pa.array(rng.gamma(1.0, 3.0, items)),
            "price_pct_in_category": pa.array(item_pos),
        }), item_folder / "part-00000.parquet")
    snapshot.table_versions = {"synthetic": 0}
    return snapshot
