import numpy as np
import pytest

from ml.evaluate import (
    accuracy,
    calibration_table,
    catalog_coverage,
    expected_calibration_error,
    macro_f1,
    map_at_k,
    micro_f1,
    ndcg_at_k,
    ndcg_per_user,
    precision_at_k,
    ranking_metrics_spark,
    recall_at_k,
    roc_auc,
    top_k_tags,
)


def test_micro_f1_pools_all_decisions():
    labels = np.array([[1, 0, 1], [0, 1, 0]])
    predicted = np.array([[1, 1, 0], [0, 1, 0]])
    assert micro_f1(labels, predicted) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert micro_f1(labels, np.zeros_like(labels)) == 0.0


def test_roc_auc_by_hand_with_ties():
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.1])) == pytest.approx(0.75)
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(np.array([0, 1]), np.array([0.9, 0.1])) == pytest.approx(0.0)
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_top_k_tags_marks_the_k_best_per_row():
    scores = np.array([[0.1, 0.9, 0.5], [0.7, 0.7, 0.2]])
    assert top_k_tags(scores, 2).astype(int).tolist() == [[0, 1, 1], [1, 1, 0]]
    assert top_k_tags(scores, 0).sum() == 0


def test_accuracy_counts_equal_decisions():
    # 3 of the 4 (user, tag) decisions agree.
    assert accuracy(np.array([[1, 0], [0, 1]]), np.array([[1, 1], [0, 1]])) == pytest.approx(0.75)
    assert np.isnan(accuracy(np.array([]), np.array([])))
    with pytest.raises(ValueError, match="shape"):
        accuracy(np.array([1, 0]), np.array([1, 0, 1]))


def test_macro_f1_skips_columns_nobody_holds_or_predicts():
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    predicted = np.array([[1, 1, 0], [0, 0, 0], [0, 1, 0]])
    # col 0: tp 1, fp 0, fn 1 -> 2/3; col 1: tp 0, fp 2, fn 1 -> 0; col 2: 0/0, skipped.
    # Mean (2/3 + 0) / 2 = 1/3 (counting col 2 as 1 would give 5/9, as 0 would give 2/9).
    assert macro_f1(labels, predicted) == pytest.approx(1 / 3)
    assert macro_f1(labels, labels) == pytest.approx(1.0)
    assert np.isnan(macro_f1(np.zeros((2, 3)), np.zeros((2, 3))))
    with pytest.raises(ValueError, match="shape"):
        macro_f1(labels, predicted[:2])


def test_calibration_table_and_ece_by_hand():
    labels = np.array([0, 1, 1, 0, 1, 0])
    scores = np.array([0.05, 0.15, 0.95, 0.92, 1.0, 0.1])
    table = calibration_table(labels, scores, bins=10)
    assert len(table) == 10 and table["count"].tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 3]
    filled = table[table["count"] > 0]
    # bin 0: {0.05}; bin 1: {0.15, 0.1} (0.1 opens bin 1); bin 9: {0.95, 0.92, 1.0} (1.0 closes the last bin).
    assert filled["mean_score"].tolist() == pytest.approx([0.05, 0.125, 2.87 / 3])
    assert filled["observed_rate"].tolist() == pytest.approx([0.0, 0.5, 2 / 3])
    assert np.isnan(table.loc[5, "mean_score"])
    # ECE = 1/6 * |0 - 0.05| + 2/6 * |0.5 - 0.125| + 3/6 * |2/3 - 0.956667|
    #     = 0.008333 + 0.125 + 0.145 = 0.278333
    expected = 1 / 6 * 0.05 + 2 / 6 * 0.375 + 3 / 6 * abs(2 / 3 - 2.87 / 3)
    assert expected_calibration_error(labels, scores, bins=10) == pytest.approx(expected)
    assert expected == pytest.approx(0.278333, abs=1e-6)
    # A perfectly calibrated 2-bin case: scores 0.25 with rate 1/4, 0.75 with rate 3/4.
    assert expected_calibration_error(np.array([1, 0, 0, 0, 1, 1, 1, 0]),
                                      np.array([0.25] * 4 + [0.75] * 4), bins=2) == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration_table(np.array([1]), np.array([1.2]))


# Shared by the ranking tests. k = 3.
RECOMMENDED = {"u1": ["a", "b", "c", "d"], "u2": ["e", "a"], "u3": ["x", "y", "z"]}
RELEVANT = {"u1": {"b", "d", "f"}, "u2": {"a"}, "u3": set(), "u4": {"q"}}
# u1: top 3 = a b c, one hit (b) at position 2; |relevant| = 3.
#     precision 1/3, recall 1/3, DCG 1/log2(3) = 0.630930, IDCG = 1 + 1/log2(3) + 1/log2(4) = 2.130930,
#     nDCG 0.296082, AP = (1/2) / min(3, 3) = 1/6.
# u2: only two items (fewer than k), hit a at position 2; |relevant| = 1.
#     precision 1/3 (divides by k), recall 1, nDCG 0.630930 / 1, AP = (1/2) / min(3, 1) = 1/2.
# u3: no relevant item -> skipped. u4: relevant but no list -> all zeros.
# Means over u1, u2, u4:
LOG3 = 1 / np.log2(3)
HAND = {
    "precision_at_k": (1 / 3 + 1 / 3 + 0) / 3,  # 2/9
    "recall_at_k": (1 / 3 + 1 + 0) / 3,  # 4/9
    "ndcg_at_k": (LOG3 / (1 + LOG3 + 0.5) + LOG3 + 0) / 3,  # (0.296082 + 0.630930) / 3 = 0.309004
    "map_at_k": (1 / 6 + 1 / 2 + 0) / 3,  # 2/9
}
RANKING = {"precision_at_k": precision_at_k, "recall_at_k": recall_at_k, "ndcg_at_k": ndcg_at_k, "map_at_k": map_at_k}


def test_ranking_metrics_by_hand():
    for name, metric in RANKING.items():
        assert metric(RECOMMENDED, RELEVANT, 3) == pytest.approx(HAND[name]), name
    assert HAND["ndcg_at_k"] == pytest.approx(0.309004, abs=1e-6)


def test_ndcg_per_user_by_hand_and_its_mean_is_ndcg_at_k():
    per_user = ndcg_per_user(RECOMMENDED, RELEVANT, 3)
    assert list(per_user) == ["u1", "u2", "u4"]          # u3 has nothing relevant: skipped, as in the mean
    assert per_user == pytest.approx({"u1": 0.296082, "u2": 0.630930, "u4": 0.0}, abs=1e-6)
    assert float(np.mean(list(per_user.values()))) == ndcg_at_k(RECOMMENDED, RELEVANT, 3)
    assert ndcg_per_user(RECOMMENDED, {"u3": set()}, 3) == {}
    with pytest.raises(ValueError, match="k must be at least 1"):
        ndcg_per_user(RECOMMENDED, RELEVANT, 0)


def test_ranking_metrics_skip_users_without_relevant_items():
    without_u3 = {u: v for u, v in RELEVANT.items() if u != "u3"}
    for name, metric in RANKING.items():
        assert metric(RECOMMENDED, without_u3, 3) == pytest.approx(HAND[name]), name
        assert np.isnan(metric(RECOMMENDED, {"u3": set()}, 3)), name
    # Dropping u4 (relevant, no list) does change the mean: it counts as a zero.
    assert precision_at_k(RECOMMENDED, {"u1": RELEVANT["u1"], "u2": {"a"}}, 3) == pytest.approx(1 / 3)


def test_ranking_metrics_with_k_beyond_the_list():
    # u2 alone, k = 10 > 2 items: precision 1/10 (missing places are misses), recall 1,
    # nDCG 0.630930 / IDCG over min(10, 1) = 1 place, AP = (1/2) / min(10, 1).
    only_u2 = {"u2": {"a"}}
    assert precision_at_k(RECOMMENDED, only_u2, 10) == pytest.approx(0.1)
    assert recall_at_k(RECOMMENDED, only_u2, 10) == pytest.approx(1.0)
    assert ndcg_at_k(RECOMMENDED, only_u2, 10) == pytest.approx(LOG3)
    assert map_at_k(RECOMMENDED, only_u2, 10) == pytest.approx(0.5)


def test_perfect_top_k_scores_one_even_with_more_relevant_items_than_k():
    # 4 relevant, k = 2, both places hit: IDCG and AP normalise over min(k, 4) = 2 places.
    recs, truth = {"u": ["a", "b", "z"]}, {"u": {"a", "b", "c", "d"}}
    assert ndcg_at_k(recs, truth, 2) == pytest.approx(1.0)
    assert map_at_k(recs, truth, 2) == pytest.approx(1.0)
    assert precision_at_k(recs, truth, 2) == pytest.approx(1.0)
    assert recall_at_k(recs, truth, 2) == pytest.approx(0.5)
    # A duplicate counts once: [a, a, b] is read as [a, b]. Wrong order halves AP: hits at 2 and 3
    # -> (1/2 + 2/3) / 2 = 7/12.
    assert precision_at_k({"u": ["a", "a", "b"]}, {"u": {"b"}}, 2) == pytest.approx(0.5)
    assert map_at_k({"u": ["z", "a", "b"]}, truth, 3) == pytest.approx((1 / 2 + 2 / 3) / 3)
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k(recs, truth, 0)


def test_catalog_coverage_counts_distinct_items_shown():
    recs = {"u1": ["a", "b", "c"], "u2": ["b", "d"]}
    assert catalog_coverage(recs, 10) == pytest.approx(0.4)  # {a, b, c, d} of 10
    assert catalog_coverage(recs, 10, k=1) == pytest.approx(0.2)  # {a, b}
    with pytest.raises(ValueError):
        catalog_coverage(recs, 0)


def _frames(spark, recommended, relevant):
    recs = [(u, item, rank) for u, items in recommended.items() for rank, item in enumerate(items, start=1)]
    truth = [(u, item) for u, items in relevant.items() for item in items]
    return (spark.createDataFrame(recs, "user_key string, item_id string, rank int"),
            spark.createDataFrame(truth, "user_key string, item_id string"))


@pytest.mark.spark
def test_ranking_metrics_spark_match_the_python_ones(spark):
    # Random lists (some shorter than k, some empty, some users without truth) plus the hand case.
    rng = np.random.default_rng(3)
    items = [f"i{n}" for n in range(12)]
    recommended = {f"r{u}": list(rng.choice(items, size=rng.integers(0, 8), replace=False)) for u in range(25)}
    relevant = {f"r{u}": set(rng.choice(items, size=rng.integers(0, 5), replace=False)) for u in range(30)}
    recommended.update(RECOMMENDED)
    relevant.update(RELEVANT)
    recs_df, truth_df = _frames(spark, recommended, relevant)
    # A gap in the ranks and a duplicate row read the same as the python list without them.
    recs_df = recs_df.union(spark.createDataFrame([("u1", "a", 9), ("g", "a", 2), ("g", "b", 5)], recs_df.schema))
    recommended["g"] = ["a", "b"]
    relevant["g"] = {"b"}
    truth_df = truth_df.union(spark.createDataFrame([("g", "b"), ("g", "b"), ("g", None)], truth_df.schema))
    got = ranking_metrics_spark(recs_df, truth_df, 3)
    assert got["users"] == sum(1 for v in relevant.values() if v)
    for name, metric in RANKING.items():
        assert got[name] == pytest.approx(metric(recommended, relevant, 3)), name
