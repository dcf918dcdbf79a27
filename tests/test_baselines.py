import datetime as dt

import pytest

from ml.baselines import (
    als, cooccurrence, ease, ease_weights, evaluate_recommender, item_similarity, popularity, temporal_split,
)

pytestmark = pytest.mark.spark
D = dt.date(2026, 11, 14)
EVENTS = "user_key string, item_id string, event_type string, event_date date"


def events(spark, rows):
    return spark.createDataFrame(rows, EVENTS)


def recs_by_user(recs):
    """{user: [(item, score), ...] in rank order}, checking ranks run 1..n without gaps."""
    out: dict[str, list] = {}
    for row in recs.orderBy("user_key", "rank").collect():
        out.setdefault(row["user_key"], []).append((row["item_id"], pytest.approx(row["score"])))
        assert row["rank"] == len(out[row["user_key"]])
    return out


def test_temporal_split_boundaries(spark):
    day = lambda n: D + dt.timedelta(days=n)  # noqa: E731
    df = events(spark, [
        ("u1", "i0", "view", day(-5)),
        ("u1", "i1", "view", day(0)),       # on the cut-off: train
        ("u1", "i2", "purchase", day(1)),
        ("u1", "i2", "view", day(3)),       # same pair again: one truth row
        ("u1", None, "search", day(2)),     # no item: never truth
        ("u1", "i3", "view", day(7)),       # cut-off + horizon: still truth
        ("u1", "i4", "view", day(8)),       # after the horizon: dropped
        ("u2", "i5", "purchase", day(2)),   # no training history
    ])
    train, truth = temporal_split(df, D, horizon_days=7)
    assert sorted((r["item_id"], r["event_date"]) for r in train.collect()) == [("i0", day(-5)), ("i1", day(0))]
    assert sorted(truth.collect()) == [("u1", "i2"), ("u1", "i3")]
    # Purchases only (i3 was a view), and u2 too once cold-start users are kept.
    _, bought = temporal_split(df, D, 7, truth_event_types=("purchase",), known_users_only=False)
    assert sorted(bought.collect()) == [("u1", "i2"), ("u2", "i5")]
    with pytest.raises(ValueError, match="horizon_days"):
        temporal_split(df, D, 0)


def test_popularity_ranks_by_event_weight_and_skips_purchases(spark):
    train = events(spark, [
        ("u1", "p", "purchase", D),                                        # p: 5
        ("u2", "c", "click", D), ("u3", "c", "click", D),                  # c: 2 + 2 = 4
        ("u1", "v", "view", D), ("u2", "v", "view", D), ("u3", "v", "view", D),  # v: 3
        ("u3", "r", "remove_from_cart", D),                                # r: 0.5
        ("u2", None, "search", D),
    ])
    users = spark.createDataFrame([("u1",), ("u2",), ("u9",)], "user_key string")
    # u1 bought p, so it gets the next two; u9 has no history and still gets the global list.
    assert recs_by_user(popularity(train, users, k=2)) == {
        "u1": [("c", 4.0), ("v", 3.0)], "u2": [("p", 5.0), ("c", 4.0)], "u9": [("p", 5.0), ("c", 4.0)],
    }
    # remove_seen drops every item the user touched: u1 saw p and v, u2 saw c and v.
    assert recs_by_user(popularity(train, users.limit(2), k=2, remove_seen=True)) == {
        "u1": [("c", 4.0), ("r", 0.5)], "u2": [("p", 5.0), ("r", 0.5)],
    }
    with pytest.raises(ValueError, match="k must be"):
        popularity(train, users, k=0)


# u1 bought A and viewed B, u2 viewed A and B, u3 viewed A and C, u4 bought A a week before the others.
# Users per item: A 4, B 2, C 1; pairs: AB 2, AC 1, BC 0.
# jaccard: AB = 2 / (4 + 2 - 2) = 0.5, AC = 1 / (4 + 1 - 1) = 0.25, diagonal 1.
# lift: AB = 2 / (4 * 2) = 0.25, AC = 1 / (4 * 1) = 0.25, AA = 4 / 16, BB = 2 / 4, CC = 1.
def co_bought(spark):
    week_ago = D - dt.timedelta(days=7)
    return events(spark, [
        ("u1", "A", "purchase", D), ("u1", "B", "view", D),
        ("u2", "A", "view", D), ("u2", "B", "view", D),
        ("u3", "A", "view", D), ("u3", "C", "view", D),
        ("u4", "A", "purchase", week_ago),
    ])


def test_item_similarity_jaccard_and_lift_by_hand(spark):
    train = co_bought(spark)
    jaccard = {(r["item_i"], r["item_j"]): (r["cooccurrence"], r["similarity"])
               for r in item_similarity(train).collect()}
    assert jaccard == {
        ("A", "A"): (4, 1.0), ("B", "B"): (2, 1.0), ("C", "C"): (1, 1.0),
        ("A", "B"): (2, 0.5), ("B", "A"): (2, 0.5), ("A", "C"): (1, 0.25), ("C", "A"): (1, 0.25),
    }
    lift = {(r["item_i"], r["item_j"]): r["similarity"]
            for r in item_similarity(train, "lift", min_cooccurrence=2).collect()}
    # min_cooccurrence=2 drops AC and C's diagonal.
    assert lift == {("A", "A"): 0.25, ("B", "B"): 0.5, ("A", "B"): 0.25, ("B", "A"): 0.25}
    with pytest.raises(ValueError, match="similarity"):
        item_similarity(train, "cosine")


def test_cooccurrence_recommends_what_others_bought_with_the_same_item(spark):
    train = co_bought(spark)
    # Affinity = weight * 0.5 ** (age / 7), age from the newest date D: u4's purchase is worth 5 * 0.5.
    # score(u, j) = sum_i affinity(u, i) * jaccard(i, j):
    #   u1 (A 5, B 1): B = 5 * 0.5 + 1 = 3.5, C = 5 * 0.25 = 1.25 (A bought: excluded)
    #   u2 (A 1, B 1): A = 1 + 0.5 = 1.5, B = 0.5 + 1 = 1.5 (tie -> item_id), C = 0.25
    #   u3 (A 1, C 1): A = 1 + 0.25 = 1.25, C = 0.25 + 1 = 1.25, B = 0.5
    #   u4 (A 2.5):    B = 2.5 * 0.5 = 1.25, C = 2.5 * 0.25 = 0.625 (A bought: excluded)
    assert recs_by_user(cooccurrence(train, k=2, half_life_days=7)) == {
        "u1": [("B", 3.5), ("C", 1.25)], "u2": [("A", 1.5), ("B", 1.5)],
        "u3": [("A", 1.25), ("C", 1.25)], "u4": [("B", 1.25), ("C", 0.625)],
    }
    # remove_seen leaves only unseen items, even when that is fewer than k.
    assert recs_by_user(cooccurrence(train, k=2, half_life_days=7, as_of=D, remove_seen=True)) == {
        "u1": [("C", 1.25)], "u2": [("C", 0.25)], "u3": [("B", 0.5)], "u4": [("B", 1.25), ("C", 0.625)],
    }
    with pytest.raises(ValueError, match="similarity"):
        cooccurrence(train, k=2, similarity="cosine")


def test_als_recommends_the_missing_item_of_the_users_block(spark):
    # Two blocks: b-users touch items a1..a3, c-users touch z1..z3. b1 and c1 bought two of their
    # block's items (so those are excluded) and never touched the third.
    rows = [(f"{user}{n}", f"{item}{m}", "view", D)
            for user, item in (("b", "a"), ("c", "z")) for n in (2, 3, 4) for m in (1, 2, 3)]
    rows += [("b1", "a1", "purchase", D), ("b1", "a2", "purchase", D),
             ("c1", "z1", "purchase", D), ("c1", "z2", "purchase", D)]
    recs = als(events(spark, rows), k=1, rank=4, max_iter=5, seed=7, num_blocks=1)
    top = {r["user_key"]: r["item_id"] for r in recs.where("user_key in ('b1', 'c1')").collect()}
    assert top == {"b1": "a3", "c1": "z3"}


def test_evaluate_recommender_by_hand(spark):
    recs = spark.createDataFrame(
        [("u1", "a", 1, 0.9), ("u1", "b", 2, 0.8), ("u1", "c", 3, 0.7), ("u2", "d", 1, 0.9), ("u2", "a", 2, 0.5)],
        "user_key string, item_id string, rank int, score double",
    )
    truth = spark.createDataFrame([("u1", "b"), ("u2", "d"), ("u2", "e"), ("u3", "a")],
                                  "user_key string, item_id string")
    # k = 2. u1: [a, b], hit at 2 of 1 relevant: P 1/2, R 1, nDCG 1/log2(3) = 0.630930, AP (1/2)/1.
    # u2: [d, a], hit at 1 of 2 relevant: P 1/2, R 1/2, nDCG 1 / (1 + 0.630930) = 0.613147, AP (1/1)/2.
    # u3: no list -> 0. Means over 3 users. Coverage: a, b, d in some top 2 -> 3 of 10 (c is rank 3).
    got = evaluate_recommender(recs, truth, k=2, catalog_size=10)
    assert got == pytest.approx({
        "precision_at_k": 1 / 3, "recall_at_k": 0.5, "ndcg_at_k": (0.630930 + 0.613147) / 3, "map_at_k": 1 / 3,
        "coverage": 0.3, "users": 3, "k": 2,
    }, abs=1e-6)
    with pytest.raises(ValueError, match="catalog_size"):
        evaluate_recommender(recs, truth, k=2, catalog_size=0)
    with pytest.raises(ValueError, match="k must be"):
        evaluate_recommender(recs, truth, k=0, catalog_size=10)


# EASE on X = [[1,1,0],[0,1,1],[1,1,1]], lambda 1: XᵀX + I = [[3,2,1],[2,4,2],[1,2,3]], determinant 16,
# its inverse by cofactors P = [[8,-4,0],[-4,8,-4],[0,-4,8]] / 16, and B_ij = -P_ij / P_jj:
EASE_B = [[0.0, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.0]]


def test_ease_weights_by_hand():
    x = [[1, 1, 0], [0, 1, 1], [1, 1, 1]]
    assert ease_weights(x, 1.0).tolist() == [pytest.approx(row) for row in EASE_B]
    with pytest.raises(ValueError, match="lambda"):
        ease_weights(x, 0.0)


def test_ease_scores_unseen_items_by_hand(spark):
    train = events(spark, [
        ("u0", "a", "view", D), ("u0", "b", "purchase", D),
        ("u1", "b", "view", D), ("u1", "c", "view", D),
        ("u2", "a", "view", D), ("u2", "b", "view", D), ("u2", "c", "rating", D),
        ("u2", None, "search", D),
    ])
    # score(u, j) = sum_i x_ui B_ij. u0 (a, b): a 0.5, b 0.5, c 0.5 -> b bought: excluded.
    # u1 (b, c): a 0.5, b 0.5, c 0.5. u2 (a, b, c): a 0.5, b 1.0, c 0.5. Ties go to the smaller item_id.
    assert recs_by_user(ease(train, k=2, l2=1.0)) == {
        "u0": [("a", 0.5), ("c", 0.5)], "u1": [("a", 0.5), ("b", 0.5)], "u2": [("b", 1.0), ("a", 0.5)],
    }
    # remove_seen leaves u0 only c, u1 only a, and u2 nothing at all.
    assert recs_by_user(ease(train, k=2, l2=1.0, remove_seen=True)) == {"u0": [("c", 0.5)], "u1": [("a", 0.5)]}
    # max_items keeps the items most users touched (b: 3 users, then a and c: 2 each, a by id).
    assert recs_by_user(ease(train, k=2, l2=1.0, max_items=2, remove_seen=True)) == {"u1": [("a", 0.5)]}
    with pytest.raises(ValueError, match="k must be"):
        ease(train, k=0)
