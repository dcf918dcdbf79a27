"""Re-ranking: bought/unavailable items dropped, business rules, MMR diversity, readable reasons, exact ranks."""

import pandas as pd
import pytest

from jobs.common.errors import ConfigError, InputDataError
from jobs.rerank import check_rules, mmr_select, reason, rerank

CANDIDATES = "user_key string, item_id string, score double, source string, evidence string"
ITEMS = "item_id string, category string, brand string, price double, available boolean"
BOUGHT = "user_key string, item_id string"

# Four items of user u1: a and b share a category, a and c share a brand, d shares nothing.
CATALOG = [
    ("a", "sports_outdoors", "Li-Ning", 300.0, True),
    ("b", "sports_outdoors", "Anta", 200.0, True),
    ("c", "books_media", "Li-Ning", 50.0, True),
    ("d", "pets", "Royal Canin", 120.0, True),
    ("gone", "pets", "Royal Canin", 99.0, False),
    ("nulled", "pets", "Royal Canin", 99.0, None),
]
U1 = [
    ("u1", "a", 1.0, "tag", "sports_outdoors"),
    ("u1", "b", 0.9, "embedding", ""),
    ("u1", "c", 0.8, "similar_item", "Li-Ning 跑步鞋"),
    ("u1", "d", 0.5, "embedding", ""),
]


def _group(rows):
    frame = pd.DataFrame(rows, columns=["user_key", "item_id", "score", "source", "evidence"])
    catalog = pd.DataFrame(CATALOG, columns=["item_id", "category", "brand", "price", "available"])
    return frame.merge(catalog[["item_id", "category", "brand"]], on="item_id")


def _ranked(out):
    return [(int(r.rank), r.item_id, r.score) for r in out.itertuples()]


# --- the greedy MMR of one user, without Spark -------------------------------------------------

def test_mmr_diversifies_by_category_and_brand_with_hand_computed_scores():
    # λ=0.5. Pick a: 0.5·1.0 + 0.5 = 1.0. Then a's category makes b similar 1.0, a's brand makes c 0.5:
    # b: 0.45 − 0.5 = −0.05, c: 0.40 − 0.25 = 0.15, d: 0.25 − 0 = 0.25 -> d (0.75), then c (0.65).
    out = mmr_select(_group(U1), k=3, mmr_lambda=0.5)
    assert _ranked(out) == [(1, "a", 1.0), (2, "d", 0.75), (3, "c", 0.65)]


def test_mmr_with_lambda_one_is_pure_relevance_order():
    out = mmr_select(_group(U1), k=4, mmr_lambda=1.0)
    assert _ranked(out) == [(1, "a", 1.0), (2, "b", 0.9), (3, "c", 0.8), (4, "d", 0.5)]


def test_mmr_scores_are_non_increasing_and_in_unit_interval_for_every_lambda():
    for weight in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0):
        scores = mmr_select(_group(U1), k=4, mmr_lambda=weight)["score"].tolist()
        assert scores == sorted(scores, reverse=True), weight
        assert all(0.0 <= s <= 1.0 for s in scores), (weight, scores)


def test_ties_go_to_the_higher_score_then_the_smaller_item_id():
    rows = [("u1", "d", 0.5, "embedding", ""), ("u1", "c", 0.5, "embedding", ""), ("u1", "b", 0.7, "embedding", "")]
    assert [r[1] for r in _ranked(mmr_select(_group(rows), k=3, mmr_lambda=1.0))] == ["b", "c", "d"]
    # the same input in another order gives the same list
    assert _ranked(mmr_select(_group(rows[::-1]), k=3, mmr_lambda=1.0)) == _ranked(
        mmr_select(_group(rows), k=3, mmr_lambda=1.0))


def test_an_item_from_two_sources_appears_once_explained_by_its_best_source():
    rows = [("u1", "a", 0.4, "embedding", ""), ("u1", "a", 0.9, "tag", "sports_outdoors"),
            ("u1", "d", 0.3, "similar_item", "i7")]
    out = mmr_select(_group(rows), k=5, mmr_lambda=1.0)
    assert out["item_id"].tolist() == ["a", "d"]
    assert out["reason"].tolist() == ["matches your interest in 运动户外/sports outdoors",
                                      "similar to an item you viewed (i7)"]
    assert out["score"].tolist() == [1.0, pytest.approx(0.3 / 0.9, abs=1e-6)]


def test_max_per_brand_and_max_per_category_limit_the_list():
    # λ=1 would give a, b, c, d; one Li-Ning item at most removes c after a.
    assert [r[1] for r in _ranked(mmr_select(_group(U1), k=4, mmr_lambda=1.0, max_per_brand=1))] == ["a", "b", "d"]
    assert [r[1] for r in _ranked(mmr_select(_group(U1), k=4, mmr_lambda=1.0, max_per_category=1))] == ["a", "c", "d"]


def test_negative_scores_count_as_zero_relevance():
    rows = [("u1", "a", -0.2, "embedding", ""), ("u1", "d", -0.1, "embedding", "")]
    out = mmr_select(_group(rows), k=2, mmr_lambda=0.5)
    # both have relevance 0: the higher original score (d) first, then a; a is in another category
    assert _ranked(out) == [(1, "d", 0.5), (2, "a", 0.5)]


def test_reasons_read_as_words():
    assert reason("tag", "books_media", "books_media") == "matches your interest in 图书音像/books media"
    assert reason("similar_item", "", "pets") == "similar to an item you viewed"
    assert reason("seen", "add_to_cart", "pets") == "an item you put in your cart recently"
    assert reason("seen", "", "pets") == "an item you looked at recently"
    assert reason("neighbour", "i7", "pets") == "often chosen together with an item you viewed (i7)"
    assert reason("neighbour", "", "pets") == "often chosen together with items you viewed"
    assert reason("embedding", "", "pets") == "fits your taste profile in 宠物用品/pets"
    assert reason("item_item", "m42", "Drama") == "people who chose an item you had (m42) also chose this"
    assert reason("item_item", "", "Drama") == "people with your history also chose this"
    assert reason("tag", "not_a_category", "pets") == "matches your interest in not_a_category"


# --- rules --------------------------------------------------------------------------------------

def test_rules_are_checked():
    assert check_rules({"max_per_brand": 2, "exclude_categories": ["pets"], "min_price": None}) == {
        "max_per_brand": 2, "exclude_categories": ["pets"]}
    with pytest.raises(ConfigError, match="unknown rule.*max_per_brnd"):
        check_rules({"max_per_brnd": 2})
    with pytest.raises(ConfigError, match="max_per_brand must be an integer >= 1"):
        check_rules({"max_per_brand": 0})
    with pytest.raises(ConfigError, match="exclude_categories must be a list"):
        check_rules({"exclude_categories": "pets"})
    with pytest.raises(ConfigError, match="min_price must be a number"):
        check_rules({"min_price": "cheap"})


# --- the Spark function ---------------------------------------------------------------------------

def _frames(spark, candidates, bought=()):
    return (spark.createDataFrame(candidates, CANDIDATES), spark.createDataFrame(list(bought), BOUGHT),
            spark.createDataFrame(CATALOG, ITEMS))


def _collect(df):
    return sorted((r["user_key"], r["rank"], r["item_id"], r["score"], r["reason"]) for r in df.collect())


@pytest.mark.spark
def test_rerank_drops_bought_and_unavailable_items_and_ranks_without_gaps(spark):
    rows = U1 + [("u1", "gone", 0.95, "embedding", ""), ("u1", "nulled", 0.93, "embedding", ""),
                 ("u1", "unknown_item", 0.99, "embedding", ""),
                 ("u2", "b", 0.6, "tag", "sports_outdoors"), ("u2", "d", 0.4, "embedding", "")]
    cands, bought, items = _frames(spark, rows, bought=[("u1", "b"), ("u2", "b"), ("u2", "d")])
    out = rerank(cands, bought, items, k=3, mmr_lambda=0.5)
    assert out.schema.simpleString() == "struct<user_key:string,rank:int,item_id:string,score:double,reason:string>"
    # u1: b bought; gone/nulled unavailable; unknown_item not in the catalogue. a (1.0), then d: 0.25 vs c: 0.15.
    # u2 bought everything it was offered: no rows at all.
    assert _collect(out) == [
        ("u1", 1, "a", 1.0, "matches your interest in 运动户外/sports outdoors"),
        ("u1", 2, "d", 0.75, "fits your taste profile in 宠物用品/pets"),
        ("u1", 3, "c", 0.65, "similar to an item you viewed (Li-Ning 跑步鞋)"),
    ]


@pytest.mark.spark
def test_rerank_gives_fewer_rows_when_fewer_candidates_than_k(spark):
    cands, bought, items = _frames(spark, [("u3", "c", 0.2, "embedding", ""), ("u3", "a", 0.4, "embedding", "")])
    assert [(u, r, i) for u, r, i, _, _ in _collect(rerank(cands, bought, items, k=10, mmr_lambda=0.7))] == [
        ("u3", 1, "a"), ("u3", 2, "c")]


@pytest.mark.spark
def test_rerank_returns_nothing_when_everything_was_bought(spark):
    cands, bought, items = _frames(spark, U1, bought=[("u1", i) for i in "abcd"])
    assert rerank(cands, bought, items, k=3, mmr_lambda=0.5).count() == 0


@pytest.mark.spark
def test_rerank_applies_category_and_price_rules(spark):
    cands, bought, items = _frames(spark, U1)
    out = rerank(cands, bought, items, k=4, mmr_lambda=1.0,
                 rules={"exclude_categories": ["pets"], "min_price": 100, "max_per_brand": None})
    # pets (d) excluded, c costs 50 < 100: a and b remain, b's relevance 0.9
    assert [(r, i, s) for _, r, i, s, _ in _collect(out)] == [(1, "a", 1.0), (2, "b", 0.9)]


@pytest.mark.spark
def test_rerank_refuses_bad_settings_and_inputs(spark):
    cands, bought, items = _frames(spark, U1)
    with pytest.raises(ConfigError, match="mmr_lambda must be a number in"):
        rerank(cands, bought, items, k=3, mmr_lambda=1.5)
    with pytest.raises(ConfigError, match="recommend.k must be an integer"):
        rerank(cands, bought, items, k=0, mmr_lambda=0.5)
    with pytest.raises(InputDataError, match="items lacks column.*available"):
        rerank(cands, bought, items.drop("available"), k=3, mmr_lambda=0.5)
    odd = spark.createDataFrame([("u1", "a", 1.0, "popular", "")], CANDIDATES)
    with pytest.raises(InputDataError, match="unknown source.*popular"):
        rerank(odd, bought, items, k=3, mmr_lambda=0.5)


def test_settings_come_from_the_profile(cfg):
    from jobs.rerank import settings

    assert settings(cfg) == {"k": 10, "mmr_lambda": 0.7, "rules": {
        "max_per_brand": 3, "max_per_category": None, "exclude_categories": [], "min_price": None, "max_price": None}}


# --- the MMR weight: a setting, or the one training chose ----------------------------------------

def test_mmr_lambda_auto_takes_the_models_weight_and_a_number_overrides_it(tmp_path):
    from jobs.rerank import UNTUNED_MMR_LAMBDA, settings
    from tests.conftest import make_config

    auto = make_config(tmp_path, PORTRAIT__RECOMMEND__MMR_LAMBDA="auto")
    assert settings(auto, 0.9)["mmr_lambda"] == 0.9
    assert settings(auto, None)["mmr_lambda"] == UNTUNED_MMR_LAMBDA == 0.7
    fixed = make_config(tmp_path, PORTRAIT__RECOMMEND__MMR_LAMBDA="0.5")
    assert settings(fixed, 0.9)["mmr_lambda"] == 0.5


def test_a_bad_mmr_lambda_is_refused_by_name(spark):
    from jobs.common.errors import ConfigError
    from jobs.rerank import rerank

    empty = spark.createDataFrame([], "user_key string, item_id string")
    with pytest.raises(ConfigError, match="recommend.mmr_lambda must be a number in \\[0, 1\\] or auto, got 'sometimes'"):
        rerank(empty, empty, empty, k=3, mmr_lambda="sometimes")


def test_the_mmr_weight_is_the_most_diverse_within_the_tolerance():
    from ml.train import choose_mmr_lambda

    ndcg = {1.0: 0.40, 0.9: 0.396, 0.8: 0.393, 0.7: 0.30}
    assert choose_mmr_lambda(ndcg, 0.02) == 0.8        # 0.393 >= 0.98 x 0.40 = 0.392; 0.30 is not
    assert choose_mmr_lambda(ndcg, 0.005) == 1.0       # 0.396 < 0.995 x 0.40 = 0.398: only the reference
    assert choose_mmr_lambda({1.0: 0.2, 0.5: 0.25}, 0.0) == 0.5     # diversity that helps is taken
    assert choose_mmr_lambda({1.0: 0.0, 0.5: 0.0}, 0.02) == 0.5     # nothing to lose
    with pytest.raises(ValueError, match="weight 1.0 is the reference"):
        choose_mmr_lambda({0.5: 0.3}, 0.02)
