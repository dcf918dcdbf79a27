"""The item-item term (ml/itemitem.py): EASE over each user's whole history, added at retrieval."""

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from jobs.common.config import Config
from jobs.common.errors import ConfigError
from ml.itemitem import ItemItem, ItemItemSettings, history_pairs, user_histories
from ml.retrieval import History, positions, top_items

D = dt.date(2026, 11, 14)

# Four users over five item positions; item 3 has one user and item 4 none.
HISTORIES = [[0, 1], [0, 1, 2], [1, 2], [3]]
SETTINGS = ItemItemSettings(history_days=90, l2=1.0, max_items=10, min_users=2)


def test_fit_is_ease_over_the_items_enough_users_touched():
    # Items 0-2 are kept (2, 3 and 2 users); X'X + I = [[3,2,1],[2,4,2],[1,2,3]], det 16, so
    # P = [[8,-4,0],[-4,8,-4],[0,-4,8]] / 16 and B_ij = -P_ij / P_jj: B01 = B10 = B12 = B21 = 0.5, B02 = 0.
    fitted = ItemItem.fit(HISTORIES, 5, SETTINGS)
    assert fitted.columns.tolist() == [0, 1, 2]
    np.testing.assert_allclose(fitted.weights, [[0, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0]], atol=1e-6)


def test_term_scores_the_kept_items_of_each_history():
    fitted = ItemItem.fit(HISTORIES, 5, SETTINGS)
    term = fitted.term([[0], [0, 2], [3], []], 5, 2.0)
    np.testing.assert_allclose(term, [
        [0, 1, 0, 0, 0],          # 2 x B[0] = [0, 1, 0]
        [0, 2, 0, 0, 0],          # 2 x (B[0] + B[2]) = [0, 2, 0]
        [0, 0, 0, 0, 0],          # item 3 is not modelled: no evidence
        [0, 0, 0, 0, 0],
    ])
    assert not fitted.term([[0]], 5, 0.0).any()


def test_max_items_keeps_the_most_touched_items_ties_by_position():
    fitted = ItemItem.fit(HISTORIES, 5, ItemItemSettings(90, 1.0, max_items=2, min_users=1))
    assert fitted.columns.tolist() == [0, 1]            # 1 (3 users), then 0 before 2 (2 users each)
    empty = ItemItem.fit([[3], [4]], 5, ItemItemSettings(90, 1.0, 10, min_users=2))
    assert empty.columns.tolist() == [] and not empty.term([[3]], 5, 1.0).any()


def test_the_item_item_term_reorders_retrieval():
    # Without the term the towers rank item 4 first for both users; with it, user 0 (who had item 0)
    # gets item 1, and user 1 (no history) keeps the towers' order.
    users = np.array([[1.0], [1.0]], dtype=np.float32)
    items = np.array([[0.0], [0.1], [0.0], [0.0], [0.5]], dtype=np.float32)
    fitted = ItemItem.fit(HISTORIES, 5, SETTINGS)
    empty = np.zeros((2, 0))
    history = History(empty.astype(np.int64), empty, 0.0, item_item=fitted, item_histories=[[0], []],
                      item_item_scale=1.0)
    top, scores = top_items(users, items, 2, history=history)
    assert top.tolist() == [[1, 4], [4, 1]]
    np.testing.assert_allclose(scores, [[0.6, 0.5], [0.5, 0.1]], rtol=1e-6)
    off = History(empty.astype(np.int64), empty, 0.0, item_item=fitted, item_histories=[[0], []], item_item_scale=0.0)
    assert top_items(users, items, 2, history=off)[0].tolist() == [[4, 1], [4, 1]]


def test_evidence_names_the_history_item_that_links_most():
    # B (test above): 0-1 and 1-2 linked by 0.5, 0-2 not at all. User 0 had items 0 and 2: candidate 1
    # is linked to both equally (the lower position, 0, is named); candidate 2 has no positive link from
    # item 0 and is its own history item (B22 = 0): none. User 1 had item 3 (not modelled): nothing.
    fitted = ItemItem.fit(HISTORIES, 5, SETTINGS)
    got = fitted.evidence([[2, 0], [3]], np.array([[1, 2, -1, 4], [1, 0, 2, -1]]), 5)
    assert got.tolist() == [[0, -1, -1, -1], [-1, -1, -1, -1]]
    assert fitted.evidence([[1]], np.array([[0, 2]]), 5).tolist() == [[1, 1]]


def test_positions_and_histories_drop_unknown_items():
    assert positions([["a", "zz", "c"], None, []], {"a": 0, "c": 2}) == [[0, 2], [], []]
    import pyarrow as pa

    pairs = pa.table({"user_key": ["u2", "u1", "u2", "u2"], "item_id": ["b", "a", "a", "b"]})
    assert user_histories(pairs) == {"u1": ["a"], "u2": ["a", "b"]}


@pytest.mark.parametrize("setting, message", [
    ({"l2": 0}, "l2 must be a positive number"),
    ({"max_items": 0}, "max_items must be a whole number of at least 1"),
    ({"history_days": "90"}, "history_days must be a whole number"),
    ({"window": 3}, "unknown key(s) window"),
])
def test_settings_name_the_bad_key(setting, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ItemItemSettings.from_config(Config("test", Path("."), {"model": {"item_item": setting}}))


def test_settings_defaults():
    assert ItemItemSettings.from_config(Config("test", Path("."), {"model": {}})) == ItemItemSettings(90, 500.0, 5000, 2, 50)


@pytest.mark.spark
def test_history_pairs_are_point_in_time(spark):
    day = lambda n: D + dt.timedelta(days=n)  # noqa: E731
    events = spark.createDataFrame([
        ("u1", "a", "view", day(0), day(0)),
        ("u1", "a", "purchase", day(-1), day(-1)),        # the same pair twice: once
        ("u1", "b", "view", day(-3), day(-3)),            # on the window's first day: outside (as_of - 3, as_of]
        ("u1", "c", "rating", day(-2), day(1)),           # landed after as_of: not known yet
        ("u2", "d", "view", day(1), day(1)),              # after as_of
        ("u2", None, "search", day(0), day(0)),           # no item
        ("u2", "e", "unknown_type", day(0), day(0)),      # no positive weight
        ("u2", "f", "add_to_cart", day(-2), None),        # no landed date: counts
    ], "user_key string, item_id string, event_type string, event_date date, landed_date date")
    got = sorted(tuple(r) for r in history_pairs(events, D, 3).collect())
    assert got == [("u1", "a"), ("u2", "f")]


def test_a_configured_scale_overrides_the_tuned_one_when_scoring():
    from types import SimpleNamespace

    from ml.score import apply_overrides

    def scorer():
        return SimpleNamespace(spec=SimpleNamespace(item_item_scale=0.0, item_item={}))

    def cfg(**model):
        return Config("test", Path("."), {"model": model})

    kept = apply_overrides(scorer(), cfg(item_item_scale="auto"))
    assert (kept.spec.item_item_scale, kept.spec.item_item) == (0.0, {})
    forced = apply_overrides(scorer(), cfg(item_item_scale=256, item_item={"history_days": 30}))
    assert forced.spec.item_item_scale == 256.0
    assert forced.spec.item_item == {"history_days": 30, "l2": 500.0, "max_items": 5000, "min_users": 2,
                                     "validation_min_users": 50}
    with pytest.raises(ConfigError, match="model.item_item_scale must be auto or a number >= 0, got -1"):
        apply_overrides(scorer(), cfg(item_item_scale=-1))
    with pytest.raises(ConfigError, match="model.item_item_scale is 'often'"):
        apply_overrides(scorer(), cfg(item_item_scale="often"))


def test_within_user_holdout_hides_a_fixed_share_of_each_history_everywhere():
    import hashlib

    import pyarrow as pa

    from ml.train import Holdout, within_user_holdout

    items = [f"i{n}" for n in range(8)]
    table = pa.table({
        "user_key": ["u1", "u2"],
        "seq_item_ids": [items, ["i0", "i1"]],
        "seq_gaps": [[float(n) for n in range(8)], [0.0, 1.0]],
        "bought": [["x9", *items], None],      # purchase data: the whole history was bought
    })
    validation = Holdout(D, D, table, pa.table({"item_id": items}), {"u1": {"i7"}}, 8,
                         history={"u1": items, "u2": ["i0", "i1"], "u3": items[:4]})
    split = within_user_holdout(validation)
    # u1: floor(0.25 x 8) = 2 items, those of the smallest SHA-1 of "u1|item"; u2 has fewer than 4 items;
    # u3 has 4 items (one hidden) but no row, so no truth.
    hidden = sorted(items, key=lambda i: hashlib.sha1(f"u1|{i}".encode()).hexdigest())[:2]
    assert split.truth == {"u1": set(hidden)}
    assert split.history["u1"] == sorted(set(items) - set(hidden)) and split.history["u2"] == ["i0", "i1"]
    assert len(split.history["u3"]) == 3
    seq = split.table.column("seq_item_ids").to_pylist()
    assert seq[0] == [i for i in items if i not in hidden] and seq[1] == ["i0", "i1"]
    assert split.table.column("seq_gaps").to_pylist()[0] == [float(items.index(i)) for i in seq[0]]
    # the kept history is excluded from the lists, as consumed items are, besides what was bought; the
    # hidden items are not, though bought: they are the truth
    assert split.table.column("bought").to_pylist() == [sorted({"x9", *split.history["u1"]}), ["i0", "i1"]]
