"""The neighbour term: item similarity from sequences, by hand; the Spark computation agrees."""

import math

import numpy as np
import pytest

from ml.neighbours import item_neighbours, neighbour_term, spark_item_neighbours
from ml.retrieval import History, top_items

# Four users' sequence steps as item positions (-1 = padding or unknown): user sets
# {0, 1}, {0, 2}, {0, 1, 2} and {3}; item counts n = 3, 2, 2, 1.
POSITIONS = np.array([[0, 1, 1, -1], [0, 2, -1, -1], [1, 2, 0, -1], [3, -1, -1, -1]])
COS_01 = 2 / math.sqrt(3 * 2)      # users 0 and 2 have items 0 and 1
COS_02 = 2 / math.sqrt(3 * 2)      # users 1 and 2
COS_12 = 1 / math.sqrt(2 * 2)      # user 2


def test_item_neighbours_is_the_cosine_of_the_user_sets_without_the_diagonal():
    s = item_neighbours(POSITIONS, 5, top_n=10).toarray()
    expected = np.zeros((5, 5))
    expected[0, 1] = expected[1, 0] = COS_01
    expected[0, 2] = expected[2, 0] = COS_02
    expected[1, 2] = expected[2, 1] = COS_12
    assert s == pytest.approx(expected)      # a repeated step (user 0's item 1) counts the user once


def test_item_neighbours_keeps_the_top_n_per_item_and_breaks_ties_by_position():
    s = item_neighbours(POSITIONS, 4, top_n=1).toarray()
    assert [np.flatnonzero(row).tolist() for row in s] == [[1], [0], [0], []]    # 0's tie: 1 and 2 -> 1
    assert s[0, 1] == pytest.approx(COS_01) and s[2, 0] == pytest.approx(COS_02)


def test_item_neighbours_rejects_a_top_n_below_one():
    with pytest.raises(ValueError, match="top_n must be at least 1, got 0"):
        item_neighbours(POSITIONS, 4, top_n=0)


def test_neighbour_term_by_hand():
    s = item_neighbours(POSITIONS, 4, top_n=10)
    term = neighbour_term(np.array([[1, 2, -1]]), np.array([[2.0, 1.0, 9.0]]), s, scale=3.0)
    sums = [2 * COS_01 + COS_02, COS_12, 2 * COS_12, 0.0]      # 2 * s[1, i] + 1 * s[2, i]
    assert term[0].tolist() == pytest.approx([3 * math.log1p(x) for x in sums])


def test_top_items_ranks_a_neighbour_above_an_unrelated_item_only_with_the_term():
    users = np.array([[1.0, 0.0]], dtype="float32")
    items = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.1, 0.0]], dtype="float32")
    s = item_neighbours(POSITIONS, 4, top_n=10)
    plain = History(np.array([[1, -1]]), np.array([[1.0, 0.0]]), 0.0)
    assert top_items(users, items, 2, history=plain)[0].tolist() == [[3, 0]]
    with_term = History(np.array([[1, -1]]), np.array([[1.0, 0.0]]), 0.0, s, 1.0)
    index, scores = top_items(users, items, 2, history=with_term)
    assert index.tolist() == [[0, 2]]                 # item 1's neighbours: 0 (0.82) before 2 (0.5)
    assert scores[0].tolist() == pytest.approx([math.log1p(COS_01), math.log1p(COS_12)])


def test_spark_item_neighbours_matches_the_numpy_computation(spark):
    # The same four user sets by item id, with an item the model does not know ('zz', never counted)
    # and a sequence longer than the 4 steps kept (its oldest step, 'd', is dropped).
    rows = [("u0", ["a", "b", "b"]), ("u1", ["a", "zz", "c"]), ("u2", ["d", "b", "c", "a", "a"]),
            ("u3", ["d"]), ("u4", []), ("u5", None)]
    users = spark.createDataFrame(rows, "user_key string, seq_item_ids array<string>")
    item_ids = ["a", "b", "c", "d", "e", "zz"]
    known = ["a", "b", "c", "d", "e"]
    for top_n in (1, 10):
        got = spark_item_neighbours(users, item_ids, known, 4, top_n).toarray()
        assert got == pytest.approx(item_neighbours(POSITIONS, 6, top_n).toarray())


def test_neighbour_evidence_names_the_sequence_item_that_adds_most():
    from ml.neighbours import neighbour_evidence

    s = item_neighbours(POSITIONS, 5, top_n=10)
    # user 0 took item 1 (weight 1) and item 2 (weights 2 + 1 = 3); user 1 took item 3 only
    positions = np.array([[1, 2, 2], [3, -1, -1]])
    weights = np.array([[1.0, 2.0, 1.0], [1.0, 9.0, 9.0]])
    candidates = np.array([[0, 4, 2, -1], [0, 1, 2, 3]])
    evidence = neighbour_evidence(positions, weights, s, candidates, block=1)
    # item 0: 1 * COS_01 (0.82) from item 1 against 3 * COS_02 (2.45) from item 2 -> item 2;
    # item 2 from item 1 (1 * 0.5); item 4 has no neighbour; user 1's item 3 has none at all
    assert evidence.tolist() == [[2, -1, 1, -1], [-1, -1, -1, -1]]
    assert neighbour_evidence(positions, weights, s, candidates).tolist() == evidence.tolist()   # one block
    # weight 0 adds nothing, so it explains nothing
    assert neighbour_evidence(positions, np.zeros((2, 3)), s, candidates).tolist() == [[-1] * 4, [-1] * 4]
