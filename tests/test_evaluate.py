import numpy as np
import pytest

from ml.evaluate import (
    accuracy,
    calibration_table,
    DiversityInputs,
    catalog_coverage,
    distinct_items,
    diversity_inputs_spark,
    diversity_report,
    expected_calibration_error,
    gini_coefficient,
    intra_list_diversity,
    macro_f1,
    map_at_k,
    micro_f1,
    ndcg_at_k,
    ndcg_per_user,
    novelty,
    precision_at_k,
    ranking_metrics_spark,
    ranking_report,
    ranked_lists_spark,
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



def test_gini_of_recommendation_counts_by_hand():
    # Counts a 3, b 2, c 1, and the catalogue's d, e 0: sorted 0, 0, 1, 2, 3 (n 5, total 6);
    # sum (2i - n - 1) c_(i) = 0*1 + 2*2 + 4*3 = 16, G = 16 / (5 * 6) = 8/15
    # (mean absolute difference: ordered pairs sum to 32, 32 / (2 * 25 * 6/5) = 8/15).
    recs = {"u1": ["a", "b"], "u2": ["a", "c"], "u3": ["a", "b"]}
    assert gini_coefficient(recs, 5) == pytest.approx(8 / 15)
    assert gini_coefficient({"u1": ["a", "b"], "u2": ["c", "d"]}, 4) == pytest.approx(0.0)   # all equal
    assert gini_coefficient({"u1": ["a"], "u2": ["a"]}, 4) == pytest.approx(3 / 4)           # (n - 1) / n
    # Cut to k = 1, then de-duplicated: counts a 1 and one catalogue item 0 -> (-1*0 + 1*1) / (2 * 1) = 1/2.
    assert gini_coefficient({"u1": ["a", "a", "c"]}, 2, k=1) == pytest.approx(0.5)
    assert np.isnan(gini_coefficient({"u1": [], "u2": []}, 3))


def test_gini_rejects_bad_input():
    with pytest.raises(ValueError, match="catalogue has only 2"):
        gini_coefficient({"u1": ["a", "b", "c"]}, 2)          # three items shown, a catalogue of two
    with pytest.raises(ValueError, match="catalog_size"):
        gini_coefficient({"u1": ["a"]}, 0)
    with pytest.raises(ValueError, match="k must be"):
        gini_coefficient({"u1": ["a"]}, 3, k=0)
    with pytest.raises(ValueError, match="map each user"):
        gini_coefficient([["a", "b"]], 3)
    with pytest.raises(ValueError, match="user 'u1'"):
        gini_coefficient({"u1": "ab"}, 3)                       # a string is not a list of items


def test_distinct_items_after_the_cut_to_k():
    recs = {"u1": ["a", "b", "c"], "u2": ["b", "a", "d"]}
    assert distinct_items(recs) == 4
    assert distinct_items(recs, k=1) == 2                      # a, b
    assert distinct_items({}) == 0


CATEGORIES = {"a": "drama", "b": "drama", "c": "comedy", "d": {"drama", "thriller"}, "e": {"drama"},
              "n": None, "z": set()}


def test_intra_list_diversity_by_hand():
    # u1: a-b same (0), a-c and b-c differ (1, 1) -> 2/3.
    # u2: d-e {drama, thriller} vs {drama}: 1 - 1/2 = 1/2.
    # u3: x is not in the mapping, n has None and z an empty set: one categorised item, skipped.
    recs = {"u1": ["a", "b", "c"], "u2": ["d", "e"], "u3": ["a", "x", "n", "z"]}
    assert intra_list_diversity(recs, CATEGORIES) == pytest.approx((2 / 3 + 1 / 2) / 2)
    # Drama|Thriller against Drama|Comedy: 1 - 1/3.
    assert intra_list_diversity({"u": ["p", "q"]}, {"p": ["drama", "thriller"], "q": ("drama", "comedy")}) \
        == pytest.approx(2 / 3)
    # k = 2 keeps a, b (same category) for u1 and d, e for u2: (0 + 1/2) / 2.
    assert intra_list_diversity(recs, CATEGORIES, k=2) == pytest.approx(0.25)
    # A repeated item counts once: a, c -> 1.
    assert intra_list_diversity({"u1": ["a", "a", "c"]}, CATEGORIES) == pytest.approx(1.0)
    assert np.isnan(intra_list_diversity({"u1": ["x", "y"], "u2": ["a"]}, CATEGORIES))  # nothing to pair


def test_intra_list_diversity_rejects_bad_categories():
    with pytest.raises(ValueError, match="item 'a'"):
        intra_list_diversity({"u1": ["a", "b"]}, {"a": 5, "b": "drama"})
    with pytest.raises(ValueError, match="item 'a'"):
        intra_list_diversity({"u1": ["a", "b"]}, {"a": ["drama", 3], "b": "drama"})
    with pytest.raises(ValueError, match="item_category must map"):
        intra_list_diversity({"u1": ["a", "b"]}, ["drama", "comedy"])


def test_novelty_by_hand():
    # 8 training users; a is had by 8, b by 4, c by 1, d by 0 and e is unknown to training.
    # u1: -log2(8/8) = 0, -log2(4/8) = 1 -> 1/2; u2: -log2(1/8) = 3, e as if one user had it: 3 -> 3;
    # u3 has an empty list and is skipped: (1/2 + 3) / 2 = 1.75.
    popularity = {"a": 8, "b": 4, "c": 1, "d": 0}
    recs = {"u1": ["a", "b"], "u2": ["c", "e"], "u3": []}
    assert novelty(recs, popularity, 8) == pytest.approx(1.75)
    assert novelty({"u1": ["d"]}, popularity, 8) == pytest.approx(3.0)     # 0 users counts as 1
    assert novelty(recs, popularity, 8, k=1) == pytest.approx((0 + 3) / 2)
    assert np.isnan(novelty({"u1": []}, popularity, 8))


def test_novelty_rejects_bad_popularity():
    with pytest.raises(ValueError, match="item 'a'.*between 0 and n_users \\(8\\)"):
        novelty({"u1": ["a"]}, {"a": 9}, 8)
    for bad in (-1, 2.5, True, None):
        with pytest.raises(ValueError, match="item 'a'"):
            novelty({"u1": ["a"]}, {"a": bad}, 8)
    with pytest.raises(ValueError, match="n_users"):
        novelty({"u1": ["a"]}, {"a": 0}, 0)


def test_diversity_report_merges_with_the_ranking_report():
    recs = {"u1": ["a", "b", "c"], "u2": ["d", "e", "a"]}
    popularity = {"a": 4, "b": 2, "c": 1, "d": 1, "e": 4}
    got = diversity_report(recs, 2, 10, CATEGORIES, popularity, 4)
    # Top 2: u1 a, b; u2 d, e. Coverage 4/10; counts 1, 1, 1, 1 and six 0: sorted sum (2i - 11) c_(i)
    # over i = 7..10 is 3 + 5 + 7 + 9 = 24, G = 24 / (10 * 4) = 0.6; ILD (0 + 1/2) / 2;
    # novelty u1 (log2 1 + log2 2) / 2 = 1/2, u2 (log2 4 + log2 1) / 2 = 1 -> 3/4.
    assert got == pytest.approx({"coverage": 0.4, "gini": 0.6, "intra_list_diversity": 0.25, "novelty": 0.75,
                                 "distinct_items": 4.0})
    ranking = ranking_report(recs, {"u1": {"c"}, "u2": {"d"}}, 2, 10)
    assert ranking["coverage"] == got["coverage"]
    bare = diversity_report(recs, 2, 10)
    assert np.isnan(bare["intra_list_diversity"]) and np.isnan(bare["novelty"]) and bare["gini"] == pytest.approx(0.6)
    as_sets = {k: frozenset([v] if isinstance(v, str) else v) for k, v in CATEGORIES.items() if v}
    inputs = DiversityInputs(as_sets, popularity, 4)
    assert inputs.report(recs, 2, 10) == pytest.approx(got)
    assert np.isnan(DiversityInputs({}, {}, 0).report(recs, 2, 10)["novelty"])
    with pytest.raises(ValueError, match="both item_popularity and n_users"):
        diversity_report(recs, 2, 10, item_popularity=popularity)
    with pytest.raises(ValueError, match="k must be"):
        diversity_report(recs, 0, 10)


@pytest.mark.spark
def test_diversity_inputs_and_lists_from_spark(spark):
    import datetime as dt

    train = spark.createDataFrame([("u1", "a"), ("u1", "a"), ("u2", "a"), ("u2", "b"), ("u3", None)],
                                  "user_key string, item_id string")
    d1, d2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
    items = spark.createDataFrame(
        [("a", ["drama", "thriller"], d1), ("a", ["comedy"], d2), ("b", ["unknown"], d1),
         ("c", ["drama", "unknown"], d1), (None, ["drama"], d1)],
        "item_id string, categories array<string>, snapshot_date date")
    got = diversity_inputs_spark(train, items)
    # a: its newest snapshot; b: 'unknown' is no category; u3 has no item, so 2 training users.
    assert got == DiversityInputs({"a": frozenset({"comedy"}), "c": frozenset({"drama"})}, {"a": 2, "b": 1}, 2)
    older = spark.createDataFrame([("a", "drama"), ("b", None)], "item_id string, category string")
    assert diversity_inputs_spark(train, older).item_category == {"a": frozenset({"drama"})}
    assert diversity_inputs_spark(train).item_category == {}

    recs = spark.createDataFrame([("u1", "b", 2), ("u1", "a", 1), ("u1", "c", 1), ("u2", "c", 1), ("u9", "a", 1)],
                                 "user_key string, item_id string, rank int")
    users = spark.createDataFrame([("u1",), ("u2",), ("u2",)], "user_key string")
    assert ranked_lists_spark(recs, users) == {"u1": ["a", "c", "b"], "u2": ["c"]}

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
