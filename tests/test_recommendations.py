"""Scoring: candidate evidence by hand, the profile columns, and the whole path from gold rows through a
real (small, untrained) model to re-ranked recommendations."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from jobs.common.errors import ConfigError
from jobs.common.feature_windows import FeatureWindows
from jobs.score import candidate_sources

D = dt.date(2026, 11, 14)


def test_candidate_sources_by_hand():
    categories = np.array([["pets", "beauty", "toys", ""]], dtype=object)
    top_tags = np.array([["beauty", "books", "food"]], dtype=object)
    seq_categories = np.array([["pets", "toys", "pets", ""]], dtype=object)
    seq_items = np.array([["i1", "i2", "i3", ""]], dtype=object)
    source, evidence = candidate_sources(categories, top_tags, seq_categories, seq_items)
    assert source.tolist() == [["similar_item", "tag", "similar_item", "embedding"]]
    assert evidence.tolist() == [["i3", "beauty", "i2", ""]]   # i3: the most recent pets item


def test_a_candidate_in_the_users_own_sequence_is_seen_with_its_latest_event_type():
    categories = np.array([["pets", "beauty", "toys"]], dtype=object)
    items = np.array([["i3", "i9", ""]], dtype=object)
    seq_categories = np.array([["pets", "toys", "pets", ""]], dtype=object)
    seq_items = np.array([["i3", "i2", "i3", ""]], dtype=object)
    seq_types = np.array([["view", "click", "add_to_cart", ""]], dtype=object)
    source, evidence = candidate_sources(categories, np.array([["beauty"]], dtype=object), seq_categories, seq_items,
                                         items, seq_types)
    assert source.tolist() == [["seen", "tag", "similar_item"]]
    assert evidence.tolist() == [["add_to_cart", "beauty", "i2"]]


def test_a_neighbour_link_explains_a_candidate_unless_it_was_seen():
    categories = np.array([["pets", "beauty", "toys"]], dtype=object)
    items = np.array([["i3", "i9", "i8"]], dtype=object)
    seq_categories = np.array([["pets", "toys", ""]], dtype=object)
    seq_items = np.array([["i3", "i2", ""]], dtype=object)
    seq_types = np.array([["view", "click", ""]], dtype=object)
    linked = np.array([["i2", "i2", ""]], dtype=object)        # i3 and i9 are neighbours of i2; i8 is not
    source, evidence = candidate_sources(categories, np.array([["beauty"]], dtype=object), seq_categories, seq_items,
                                         items, seq_types, linked)
    assert source.tolist() == [["seen", "neighbour", "similar_item"]]   # the neighbour link beats the tag
    assert evidence.tolist() == [["view", "i2", "i2"]]


def test_an_item_item_link_explains_a_candidate_over_a_neighbour_unless_it_was_seen():
    categories = np.array([["pets", "beauty", "toys", "food"]], dtype=object)
    items = np.array([["i3", "i9", "i8", "i7"]], dtype=object)
    seq_categories = np.array([["pets", "toys", ""]], dtype=object)
    seq_items = np.array([["i3", "i2", ""]], dtype=object)
    seq_types = np.array([["view", "click", ""]], dtype=object)
    neighbours = np.array([["i2", "i2", "", ""]], dtype=object)
    item_item = np.array([["i1", "m5", "", "m6"]], dtype=object)     # from the whole history, not the sequence
    source, evidence = candidate_sources(categories, np.array([["beauty"]], dtype=object), seq_categories, seq_items,
                                         items, seq_types, neighbours, item_item)
    assert source.tolist() == [["seen", "item_item", "similar_item", "item_item"]]
    assert evidence.tolist() == [["view", "m5", "i2", "m6"]]


def test_candidate_sources_without_history_fall_back_to_embedding():
    source, evidence = candidate_sources(np.array([["pets"]], dtype=object), np.array([["beauty"]], dtype=object),
                                         np.zeros((1, 0), dtype=object), np.zeros((1, 0), dtype=object))
    assert (source.tolist(), evidence.tolist()) == ([["embedding"]], [[""]])


FEATURES = ("user_key string, as_of_date date, age_band string, gender string, city string, active_days_30d double, "
            "n_purchases_90d double, n_carts_30d double, price_index double, recency_days double, n_events_30d double, "
            "avg_rating double, monetary_90d double, feature_version string")


@pytest.mark.spark
def test_profile_takes_segment_and_churn_from_the_model(spark):
    from jobs.score import SCORED_SCHEMA, transform_profile

    features = spark.createDataFrame(
        [("a", D, "25-34", "F", "Shanghai", 12.0, 2.0, 1.0, 0.7, 0.0, 40.0, 4.5, 300.0, "2"),
         ("b", D, "35-44", "M", "Beijing", 0.0, 0.0, 0.0, 1.0, 14.0, 0.0, 0.0, 0.0, "2")], FEATURES)
    scored = spark.createDataFrame(
        [("a", [("beauty", 0.9)], ["beauty"], "premium_shopper", 0.25, [0.5, 0.5], [])], SCORED_SCHEMA)
    rows = {r["user_key"]: r for r in transform_profile(features, scored.drop("candidates"), "7",
                                                             windows=FeatureWindows()).collect()}
    a, b = rows["a"], rows["b"]
    assert (a["segment_id"], a["churn_risk"], a["activity_level"], a["price_band"]) == (
        "premium_shopper", 0.25, "high", "budget")
    assert a["segment_name"] == "Premium shopper (buys above category median)"
    assert (a["model_version"], a["feature_version"], a["user_embedding"]) == ("7", "2", [0.5, 0.5])
    # b was not scored: the rules stand in (no activity in 30 days -> dormant; churn 1 - exp(-14/7))
    assert (b["segment_id"], b["churn_risk"], b["interest_tags"]) == ("dormant", pytest.approx(0.8647, abs=1e-4), [])
    assert b["price_band"] is None  # nothing bought or carted: no band, rather than a made-up 'unknown
    untrained = {r["user_key"]: r for r in transform_profile(features, scored.drop("candidates"), "7",
                                                             churn_from_model=False,
                                                             windows=FeatureWindows()).collect()}
    assert untrained["a"]["churn_risk"] == 0.0   # recency 0: the rule, not the untrained head


@pytest.mark.spark
def test_gold_rows_through_the_model_to_reranked_recommendations(spark, tmp_path):
    from pyspark.sql import functions as F

    from jobs.rerank import rerank
    from jobs.score import score_users, transform_profile
    from ml.model import ModelParams, build_models
    from ml.score import Scorer
    from tests.conftest import make_config
    from tests.test_model import tiny_spec

    spec = tiny_spec(numeric_features=["n_events_30d"], log_features=[], sequence_item_features=["price"])
    models = build_models(spec, ModelParams(embedding_dim=8, history_code_dim=4, hidden_units=8,
                                            item_embedding_dim=4, gru_units=4))
    scorer = Scorer(models.profile, models.item, spec, "3")
    users = spark.createDataFrame(
        [("a", 3.0, "F", ["i1", "i2"], ["pets", "beauty"], ["view", "purchase"], [0, 60]),
         ("b", 0.0, "M", None, None, None, None)],
        "user_key string, n_events_30d double, gender string, seq_item_ids array<string>, "
        "seq_categories array<string>, seq_event_types array<string>, seq_gaps array<long>")
    items = pa.table({"item_id": ["i1", "i2", "i3", "i4", "i5"], "category": ["pets", "beauty", "pets", "beauty", "pets"],
                      "brand": ["acme"] * 5, "price": [1.0, 2.0, 3.0, 4.0, 5.0]})
    cfg = make_config(tmp_path, PORTRAIT__RECOMMEND__CANDIDATES="4")
    scored, count = score_users(spark, cfg, scorer, "unused-on-the-driver", users, items)
    rows = {r["user_key"]: r for r in scored.collect()}
    assert count == 2 and set(rows) == {"a", "b"}
    a = rows["a"]
    assert len(a["user_embedding"]) == 8                       # the constant of the bias trick is dropped
    assert [t["tag"] for t in a["interest_tags"]] in (["beauty", "pets"], ["pets", "beauty"])
    assert a["model_segment"] in spec.segments and 0.0 <= a["model_churn"] <= 1.0
    candidates = a["candidates"]
    assert len(candidates) == 4 and candidates[0]["score"] == 1.0
    assert [c["score"] for c in candidates] == sorted((c["score"] for c in candidates), reverse=True)
    assert {c["source"] for c in candidates} <= {"seen", "tag", "similar_item", "embedding"}
    seen = {c["item_id"]: c["evidence"] for c in candidates if c["source"] == "seen"}
    assert seen == {i: t for i, t in (("i1", "view"), ("i2", "purchase")) if i in {c["item_id"] for c in candidates}}
    assert all(c["evidence"] in ("i1", "i2") for c in candidates if c["source"] == "similar_item")
    assert all(c["evidence"] in ("pets", "beauty") for c in candidates if c["source"] == "tag")

    exploded = scored.select("user_key", F.explode("candidates").alias("c")).select(
        "user_key", "c.item_id", "c.score", "c.source", "c.evidence")
    bought = spark.createDataFrame([("a", "i1"), ("a", "i3")], "user_key string, item_id string")
    catalogue = spark.createDataFrame([(r, c, "acme", 1.0, True) for r, c in zip(items.column("item_id").to_pylist(),
                                                                                 items.column("category").to_pylist())],
                                      "item_id string, category string, brand string, price double, available boolean")
    recs = rerank(exploded, bought, catalogue, k=3, mmr_lambda=0.7, rules={}).collect()
    by_user: dict[str, list] = {}
    for r in recs:
        by_user.setdefault(r["user_key"], []).append(r)
    assert sorted(r["rank"] for r in by_user["a"]) == list(range(1, len(by_user["a"]) + 1))
    assert not {r["item_id"] for r in by_user["a"]} & {"i1", "i3"}     # bought items never come back
    assert all(r["reason"] for r in recs) and all(0.0 <= r["score"] <= 1.0 for r in recs)
    assert len(by_user["b"]) == 3


@pytest.mark.spark
def test_candidates_are_drawn_past_the_users_consumed_items(spark, tmp_path):
    """A rater who consumed most of their nearest items still gets a full candidate list (MovieLens: raters
    of 100+ films got 4 and 8 of 10): consumed_item_ids are passed over before the top n are taken."""
    from jobs.score import score_users
    from ml.model import ModelParams, build_models
    from ml.score import Scorer
    from tests.conftest import make_config
    from tests.test_model import tiny_spec

    spec = tiny_spec(numeric_features=["n_events_30d"], log_features=[], sequence_item_features=["price"])
    models = build_models(spec, ModelParams(embedding_dim=8, history_code_dim=4, hidden_units=8,
                                            item_embedding_dim=4, gru_units=4))
    scorer = Scorer(models.profile, models.item, spec, "3")
    schema = ("user_key string, n_events_30d double, gender string, seq_item_ids array<string>, "
              "seq_categories array<string>, seq_event_types array<string>, seq_gaps array<long>")
    rows = [("a", 3.0, "F", ["i1", "i2"], ["pets", "beauty"], ["rating", "rating"], [0, 60]),
            ("b", 0.0, "M", None, None, None, None)]
    items = pa.table({"item_id": [f"i{n}" for n in range(1, 7)], "category": ["pets", "beauty"] * 3,
                      "brand": ["acme"] * 6, "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    cfg = make_config(tmp_path, PORTRAIT__RECOMMEND__CANDIDATES="3")
    plain, _ = score_users(spark, cfg, scorer, "unused", spark.createDataFrame(rows, schema), items)
    nearest = {r["user_key"]: [c["item_id"] for c in r["candidates"]] for r in plain.collect()}

    consumed = [nearest["a"][:2] + ["i9"], None]   # a consumed its two nearest (and an item no longer sold)
    users = spark.createDataFrame([r + (c,) for r, c in zip(rows, consumed)], schema + ", consumed_item_ids array<string>")
    scored, _ = score_users(spark, cfg, scorer, "unused", users, items)
    got = {r["user_key"]: [c["item_id"] for c in r["candidates"]] for r in scored.collect()}
    assert len(got["a"]) == 3 and not set(got["a"]) & set(nearest["a"][:2])
    assert got["a"][0] == nearest["a"][2]           # the next nearest moves up
    assert got["b"] == nearest["b"]                 # nothing consumed: the same list

    everything = spark.createDataFrame([rows[0] + ([f"i{n}" for n in range(1, 6)],)],
                                       schema + ", consumed_item_ids array<string>")
    last, _ = score_users(spark, cfg, scorer, "unused", everything, items)
    assert [c["item_id"] for c in last.collect()[0]["candidates"]] == ["i6"]   # fewer eligible than asked: all of them


@pytest.mark.spark
def test_the_distributed_path_scores_with_the_same_neighbour_term_as_the_driver(spark, tmp_path):
    """score_users over mapInArrow (neighbours by Spark) gives the driver's candidates (neighbours by numpy)."""
    import mlflow.pyfunc

    from jobs.score import score_users
    from ml.model import ModelParams, build_models
    from ml.pyfunc import PortraitProfileModel, save_artifacts
    from ml.score import Scorer
    from tests.conftest import make_config
    from tests.test_model import tiny_spec

    import keras

    keras.utils.set_random_seed(3)
    spec = tiny_spec(numeric_features=["n_events_30d"], log_features=[], item_vocab=["i1", "i2", "i3", "i4", "i5"],
                     neighbour_scale=500.0)      # far above the untrained dot products
    models = build_models(spec, ModelParams(embedding_dim=8, history_code_dim=4, hidden_units=8,
                                            item_embedding_dim=4, gru_units=4))
    model_dir = tmp_path / "model"
    mlflow.pyfunc.save_model(str(model_dir), python_model=PortraitProfileModel(),
                             artifacts=save_artifacts(models, spec, tmp_path / "artifacts"), pip_requirements=[])
    users = spark.createDataFrame(
        [("a", 3.0, "F", ["i1"], ["view"], [0]), ("b", 1.0, "M", ["i1", "i2"], ["view", "purchase"], [0, 60]),
         ("c", 2.0, "F", ["i2", "i3"], ["view", "view"], [0, 5]), ("d", 0.0, "M", ["i4", "i4"], ["view", "view"], [0, 9]),
         ("e", 0.0, "F", None, None, None)],
        "user_key string, n_events_30d double, gender string, seq_item_ids array<string>, "
        "seq_event_types array<string>, seq_gaps array<long>")
    items = pa.table({"item_id": ["i1", "i2", "i3", "i4", "i5"], "category": ["pets", "beauty", "pets", "beauty", "pets"],
                      "brand": ["acme"] * 5, "price": [1.0, 2.0, 3.0, 4.0, 5.0]})
    scorer = Scorer(models.profile, models.item, spec, "1")
    got = {}
    for above in ("100", "0"):            # the driver, then mapInArrow
        cfg = make_config(tmp_path, PORTRAIT__RECOMMEND__CANDIDATES="3", PORTRAIT__SCORE__DISTRIBUTED_ABOVE_USERS=above)
        scored, _ = score_users(spark, cfg, scorer, str(model_dir), users, items)
        got[above] = {r["user_key"]: [(c["item_id"], round(c["score"], 5), c["source"], c["evidence"])
                                      for c in r["candidates"]] for r in scored.collect()}
    assert got["0"] == got["100"]
    # a's only item, i1, shares user b with i2 and nothing else: at this scale i2 comes first, and the
    # neighbour term explains it.
    item, _, source, evidence = got["100"]["a"][0]
    assert (item, source, evidence) == ("i2", "neighbour", "i1")


@pytest.mark.spark
def test_consumed_items_of_every_configured_type_never_come_back(spark, tmp_path):
    """Rated and reviewed items are consumed like bought ones (recommend.consumed_event_types): the
    re-ranked lists never repeat them; views, other users' ratings and events outside the window do not count."""
    from jobs.rerank import rerank
    from jobs.score import consumed_event_types, transform_consumed
    from tests.conftest import make_config

    day = lambda n: D + dt.timedelta(days=n)  # noqa: E731
    events = spark.createDataFrame([
        ("u1", "i1", "rating", day(0)), ("u1", "i2", "review", day(-3)), ("u1", "i3", "purchase", day(-89)),
        ("u1", "i4", "view", day(0)),          # a view is not consumption
        ("u1", "i5", "rating", day(-90)),      # on the look-back's edge: outside (after, through]
        ("u1", "i6", "rating", day(1)),        # after the run date
        ("u2", "i4", "rating", day(0)),        # someone else's rating
        ("u2", None, "rating", day(0)),
    ], "user_key string, item_id string, event_type string, event_date date")
    cfg = make_config(tmp_path)
    assert consumed_event_types(cfg) == ("purchase", "rating", "review")
    consumed = transform_consumed(events, consumed_event_types(cfg), day(-90), D)
    assert sorted(consumed.collect()) == [("u1", "i1"), ("u1", "i2"), ("u1", "i3"), ("u2", "i4")]
    assert sorted(transform_consumed(events, ("purchase",), day(-90), D).collect()) == [("u1", "i3")]
    assert transform_consumed(events, (), day(-90), D).count() == 0

    candidates = spark.createDataFrame(
        [(u, f"i{n}", 1.0 - n / 10, "embedding", "") for u in ("u1", "u2") for n in range(1, 7)],
        "user_key string, item_id string, score double, source string, evidence string")
    catalogue = spark.createDataFrame([(f"i{n}", f"c{n}", "", 1.0, True) for n in range(1, 7)],
                                      "item_id string, category string, brand string, price double, available boolean")
    lists: dict[str, list[str]] = {}
    for r in rerank(candidates, consumed, catalogue, k=6, mmr_lambda=1.0).orderBy("user_key", "rank").collect():
        lists.setdefault(r["user_key"], []).append(r["item_id"])
    assert lists == {"u1": ["i4", "i5", "i6"], "u2": ["i1", "i2", "i3", "i5", "i6"]}

    typo = make_config(tmp_path, PORTRAIT__RECOMMEND__CONSUMED_EVENT_TYPES="[purchase, ratings]")
    with pytest.raises(ConfigError, match="consumed_event_types has unknown event type.*ratings"):
        consumed_event_types(typo)
    with pytest.raises(ConfigError, match="must be a list"):
        consumed_event_types(make_config(tmp_path, PORTRAIT__RECOMMEND__CONSUMED_EVENT_TYPES="purchase"))


@pytest.mark.spark
def test_score_refuses_gold_features_of_other_windows_by_name(spark, tmp_path):
    from jobs.common.errors import InputDataError
    from jobs.score import _check_feature_version
    from tests.conftest import make_config

    features = spark.createDataFrame([("a", "3"), ("b", "3")], "user_key string, feature_version string")
    _check_feature_version(features, make_config(tmp_path), D)          # the default windows: version 3
    other = make_config(tmp_path, PORTRAIT__FEATURES__WINDOWS="[7, 30, 365]")
    with pytest.raises(InputDataError, match=rf"gold.user_features of {D} has feature version 3, but the settings "
                                             r"\(features.windows\) give 3\+windows=.*run the features step"):
        _check_feature_version(features, other, D)
