"""Offline-evaluation splits of a dataset's interactions: which rows train (land) and which are held out.

Every split takes the interactions frame of portrait.datasets (source, row, user_id, item_id, ts in
UTC; `row` numbers the rows of the source's raw table) and returns a boolean Series `held_out` on the
same index. It is deterministic: the same frame and seed give the same rows, whatever the frame's
order, because the random split orders each user's rows by a keyed hash of (seed, source, row), not by
a random stream that depends on the order the rows come in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

PROTOCOLS = ("random", "temporal")
INTERACTION_COLUMNS = ("source", "row", "user_id", "item_id", "ts")


@dataclass(frozen=True)
class SplitParams:
    """evaluate.* settings of the profile (conf/local.yaml), typed once."""

    seed: int
    test_share: float             # random: share of each user's interactions held out
    test_days: int                # temporal: days after the cut-off that are held out
    leave_last_out: bool          # temporal: instead, each user's last interaction is held out

    def __post_init__(self) -> None:
        if not 0.0 < self.test_share < 1.0:
            raise ValueError(f"evaluate.test_share must lie strictly between 0 and 1, got {self.test_share}")
        if self.test_days < 1:
            raise ValueError(f"evaluate.test_days must be at least 1, got {self.test_days}")

    @classmethod
    def from_config(cls, cfg) -> "SplitParams":
        return cls(seed=int(cfg.get("evaluate.seed")), test_share=float(cfg.get("evaluate.test_share")),
                   test_days=int(cfg.get("evaluate.test_days")),
                   leave_last_out=bool(cfg.get("evaluate.leave_last_out")))


def _check(interactions: "pd.DataFrame") -> None:
    missing = [c for c in INTERACTION_COLUMNS if c not in interactions.columns]
    if missing:
        raise ValueError(f"interactions lack column(s) {', '.join(missing)}; "
                         f"they need {', '.join(INTERACTION_COLUMNS)}")
    if interactions.duplicated(["source", "row"]).any():
        first = interactions[interactions.duplicated(["source", "row"])].iloc[0]
        raise ValueError(f"interactions name source {first['source']!r} row {first['row']} twice; "
                         "each raw row may appear once")


def random_split(interactions: "pd.DataFrame", seed: int, test_share: float) -> "pd.Series":
    """Per-user stratified random split: floor(test_share x n) of each user's n interactions are held out
    (so a user with fewer than 1 / test_share interactions keeps them all for training), the ones whose
    keyed hash sha256(seed:source:row) is smallest."""
    import numpy as np
    import pandas as pd

    _check(interactions)
    if not 0.0 < test_share < 1.0:
        raise ValueError(f"test_share must lie strictly between 0 and 1, got {test_share}")
    key = [int.from_bytes(hashlib.sha256(f"{seed}:{s}:{r}".encode()).digest()[:8], "big")
           for s, r in zip(interactions["source"], interactions["row"])]
    frame = pd.DataFrame({"user": interactions["user_id"].astype(str), "key": key}, index=interactions.index)
    order = frame.sort_values(["user", "key"], kind="mergesort")
    position = order.groupby("user", sort=False).cumcount()
    n_test = np.floor(order.groupby("user", sort=False)["key"].transform("size") * test_share)
    return (position < n_test).reindex(interactions.index).rename("held_out")


def temporal_split(interactions: "pd.DataFrame", test_days: int) -> tuple["pd.Series", dt.date]:
    """Train on interactions dated (UTC) on or before the cut-off, hold out the `test_days` days after it;
    the cut-off is the last day of the data less `test_days`. Returns (held_out, cut-off)."""
    import pandas as pd

    _check(interactions)
    if test_days < 1:
        raise ValueError(f"test_days must be at least 1, got {test_days}")
    if interactions.empty:
        raise ValueError("interactions are empty: nothing to split")
    days = pd.to_datetime(interactions["ts"], utc=True).dt.date
    cutoff = max(days) - dt.timedelta(days=test_days)
    return (days > cutoff).rename("held_out"), cutoff


def leave_last_out(interactions: "pd.DataFrame") -> "pd.Series":
    """Each user's latest interaction (by ts, then source and row) is held out, for users with two or more."""
    import pandas as pd

    _check(interactions)
    frame = pd.DataFrame({"user": interactions["user_id"].astype(str),
                          "ts": pd.to_datetime(interactions["ts"], utc=True),
                          "source": interactions["source"], "row": interactions["row"]}, index=interactions.index)
    order = frame.sort_values(["user", "ts", "source", "row"], kind="mergesort")
    from_end = order.groupby("user", sort=False).cumcount(ascending=False)
    size = order.groupby("user", sort=False)["ts"].transform("size")
    return ((from_end == 0) & (size >= 2)).reindex(interactions.index).rename("held_out")


def split(interactions: "pd.DataFrame", protocol: str, params: SplitParams) -> tuple["pd.Series", str]:
    """held_out for a protocol, and one line that says what was held out."""
    if protocol == "random":
        return (random_split(interactions, params.seed, params.test_share),
                f"random: per user floor({params.test_share:g} x n) interactions held out, seed {params.seed}")
    if protocol == "temporal":
        if params.leave_last_out:
            return leave_last_out(interactions), "temporal: each user's last interaction held out"
        held_out, cutoff = temporal_split(interactions, params.test_days)
        return held_out, f"temporal: train to {cutoff}, test the {params.test_days} days after"
    raise ValueError(f"unknown protocol {protocol!r}; protocols are: {', '.join(PROTOCOLS)}")


def keep_masks(interactions: "pd.DataFrame", held_out: "pd.Series", table_sizes: dict[str, int]) -> dict:
    """{source: numpy bool array over the rows of its raw table}: False for held-out rows, True otherwise
    (rows that are no interaction, such as a rating without an item, always land)."""
    import numpy as np

    masks = {}
    for source, size in table_sizes.items():
        mask = np.ones(size, dtype=bool)
        rows = interactions.loc[held_out & (interactions["source"] == source), "row"].to_numpy()
        if len(rows) and (rows.min() < 0 or rows.max() >= size):
            raise ValueError(f"interactions of source {source!r} name row {int(rows.max())}, "
                             f"but its raw table has {size} rows")
        mask[rows] = False
        masks[source] = mask
    unknown = sorted(set(interactions["source"]) - set(table_sizes))
    if unknown:
        raise ValueError(f"interactions name source(s) {', '.join(map(str, unknown))} that have no raw table")
    return masks
