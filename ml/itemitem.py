"""The item-item term: EASE (Steck 2019) over each user's whole history, added to the model's logits.

The towers score items by features and the user's recent sequence; the repeat and neighbour terms
read only the last `sequence_length` steps. On catalogues where a user's taste is spread over years
of ratings (MovieLens) that leaves most of the evidence unread, and an item-item model over the whole
history beats both (docs/benchmarks.md). This term adds it to the logit at retrieval:

    e * sum over the items j the user interacted with of B[j, i]

with B EASE's closed-form item-item weights, fitted on the day's (user, item) pairs of every user,
and the scale e chosen on the validation days (ml.train.tune_history; 0 = off) and saved in the
ModelSpec. A user's history is every distinct item with a positively weighted event (the baselines'
`weighted_events` rule) in the `model.item_item.history_days` days up to the as-of date, so B and the users'
rows never see the future. B is a dense matrix over the `max_items` items most users touched; the
others get no item-item score (they can still come from the towers).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.common.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa
    import scipy.sparse as sp
    from pyspark.sql import DataFrame

    from jobs.common.config import Config

HISTORY_COLUMN = "history_item_ids"     # the users' rows carry their history under this name


@dataclass(frozen=True)
class ItemItemSettings:
    """model.item_item, checked once."""

    history_days: int
    l2: float
    max_items: int
    min_users: int
    # Fewer users than this in the days after the validation date: the scale is chosen on a split
    # within each user's history instead (ml.train.within_user_holdout).
    validation_min_users: int = 50

    @classmethod
    def from_config(cls, cfg: "Config") -> "ItemItemSettings":
        raw = cfg.get("model.item_item", {}) or {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"model.item_item must be a mapping, got {raw!r}")
        known = ("history_days", "l2", "max_items", "min_users", "validation_min_users")
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"model.item_item has unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")

        def whole(name: str, default: int, least: int) -> int:
            value = raw.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"model.item_item.{name} must be a whole number of at least {least}, got {value!r}")
            return value

        l2 = raw.get("l2", 500.0)
        if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 > 0:
            raise ConfigError(f"model.item_item.l2 must be a positive number, got {l2!r}")
        return cls(whole("history_days", 90, 1), float(l2), whole("max_items", 5000, 1), whole("min_users", 2, 1),
                   whole("validation_min_users", 50, 0))


def history_pairs(events: "DataFrame", as_of: dt.date, days: int) -> "DataFrame":
    """Distinct (user_key, item_id) of the positively weighted events dated in (as_of - days, as_of]
    that had landed by `as_of` (a late event counts from the day it landed: point in time)."""
    from pyspark.sql import functions as F

    from ml.baselines import weighted_events

    start = as_of - dt.timedelta(days=days)
    window = events.where((F.col("event_date") > F.lit(start)) & (F.col("event_date") <= F.lit(as_of))
                          & F.col("item_id").isNotNull())
    if "landed_date" in events.columns:
        window = window.where(F.col("landed_date").isNull() | (F.col("landed_date") <= F.lit(as_of)))
    return weighted_events(window).select("user_key", "item_id").distinct()


def user_histories(pairs: "pa.Table") -> dict[str, list[str]]:
    """user_key -> that user's items (sorted) from an Arrow table of (user_key, item_id) pairs."""
    out: dict[str, list[str]] = {}
    for user, item in zip(pairs.column("user_key").to_pylist(), pairs.column("item_id").to_pylist()):
        out.setdefault(str(user), []).append(str(item))
    return {u: sorted(set(v)) for u, v in out.items()}


@dataclass(frozen=True)
class ItemItem:
    """EASE weights over some positions of an item table: weights[a, b] links columns[a] to columns[b]."""

    weights: np.ndarray          # (kept, kept) float32, zero diagonal
    columns: np.ndarray          # (kept,) positions in the item table, ascending

    @classmethod
    def fit(cls, histories: Sequence[Sequence[int]], items: int, settings: ItemItemSettings) -> "ItemItem":
        """EASE on the users' histories (each a list of item positions < `items`), over the
        `settings.max_items` positions most users have (at least `settings.min_users`; ties: the
        lower position)."""
        import scipy.sparse as sp

        from ml.baselines import ease_weights

        x = _user_matrix(histories, items)
        users_per_item = np.asarray(x.sum(axis=0)).ravel()
        eligible = np.nonzero(users_per_item >= settings.min_users)[0]
        order = np.lexsort((eligible, -users_per_item[eligible]))
        columns = np.sort(eligible[order][:settings.max_items])
        if not len(columns):
            return cls(np.zeros((0, 0), dtype=np.float32), columns.astype(np.int64))
        dense = sp.csc_matrix(x)[:, columns].toarray()
        return cls(ease_weights(dense, settings.l2).astype(np.float32), columns.astype(np.int64))

    def term(self, histories: Sequence[Sequence[int]], items: int, scale: float) -> np.ndarray:
        """(users, items): scale * the EASE score of every item for each user's history; 0 for items
        outside `columns`."""
        out = np.zeros((len(histories), items), dtype=np.float64)
        if not len(self.columns) or not scale or not len(histories):
            return out
        kept = np.full(items, -1, dtype=np.int64)
        kept[self.columns] = np.arange(len(self.columns))
        rows = [[kept[p] for p in h if 0 <= p < items and kept[p] >= 0] for h in histories]
        x = _user_matrix(rows, len(self.columns))
        out[:, self.columns] = scale * np.asarray(x @ self.weights, dtype=np.float64)
        return out

    def evidence(self, histories: Sequence[Sequence[int]], candidates: np.ndarray, items: int) -> np.ndarray:
        """For each candidate (users x n item positions, -1 for none): the position of the item of the
        user's history with the largest positive weight to it (ties: the lower position), or -1 when
        no item of the history links to it. The "because you had X" of a candidate this term brought."""
        candidates = np.asarray(candidates, dtype=np.int64)
        out = np.full(candidates.shape, -1, dtype=np.int64)
        if not len(self.columns):
            return out
        kept = np.full(items, -1, dtype=np.int64)
        kept[self.columns] = np.arange(len(self.columns))
        for user, history in enumerate(histories):
            own = np.unique([p for p in history if 0 <= p < items and kept[p] >= 0]).astype(np.int64)
            wanted = candidates[user]
            column = np.where(wanted >= 0, kept[np.maximum(wanted, 0)], -1)
            valid = np.nonzero(column >= 0)[0]
            if not len(own) or not len(valid):
                continue
            weights = self.weights[np.ix_(kept[own], column[valid])]         # (history items, candidates)
            best = np.argmax(weights, axis=0)                               # the first (lowest position) of ties
            out[user, valid] = np.where(weights[best, np.arange(len(valid))] > 0, own[best], -1)
        return out


def _user_matrix(histories: Sequence[Sequence[int]], items: int) -> "sp.csr_matrix":
    """(users, items) 0/1 CSR matrix: 1 where the user's history holds the position (once however often)."""
    import scipy.sparse as sp

    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.fromiter((p for h in histories for p in h), dtype=np.int64, count=len(rows))
    x = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(histories), items))
    x.data[:] = 1.0
    return x


def describe(item_item: ItemItem | None) -> dict[str, Any]:
    """What to log of a fitted term: how many items it covers."""
    return {"item_item_items": 0 if item_item is None else int(len(item_item.columns))}
