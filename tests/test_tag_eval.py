"""portrait.tag_eval: the published interest tags against the categories of the held-out items."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from portrait.evaluate import report_markdown
from portrait.tag_eval import (evaluate_tags, score_published_tags, score_tags, table_markdown, top_tags,
                               transform_item_tags)
from tests.conftest import make_config

DAY = dt.date(2016, 10, 16)
TRUTH = {"u1": {"a", "b"}, "u2": {"c"}, "u3": {"a"}}
HISTORY = {"u1": {"a": 5, "b": 1}, "u2": {"c": 2, "a": 2}, "u3": {"b": 3}}
VOCAB = ["a", "b", "c", "d"]


def test_top_tags_rank_by_count_then_by_the_vocabulary_order_and_skip_zero_counts():
    assert top_tags({"c": 2, "a": 2, "b": 5, "d": 0}, VOCAB, 3) == ["b", "a", "c"]
    assert top_tags({"zz": 1, "a": 1}, VOCAB, 5) == ["a", "zz"]   # a tag outside the vocabulary comes last
    assert top_tags({}, VOCAB, 3) == []


def test_score_tags_counts_hits_over_tags_named_and_true_tags_and_users_without_tags_score_zero():
    got = score_tags(TRUTH, {"u1": ["a", "c", "d", "b"], "u2": ["b"]}, k=3)   # u1's 4th tag is past k
    # u1: 1 hit of 3 named, 2 true (F1 0.4); u2: 0 of 1; u3: no tags. 1 hit, 4 named, 4 true.
    assert got == pytest.approx({"precision": 0.25, "recall": 0.25, "f1": 0.25, "macro_f1": 0.4 / 3,
                                 "hit_rate": 1 / 3, "users": 3.0})


def test_score_tags_refuses_an_empty_truth_and_the_evaluation_a_tag_count_below_one(tmp_path):
    from jobs.common.errors import ConfigError
    from portrait.evaluate import EvaluateParams

    with pytest.raises(ValueError, match="truth is empty"):
        score_tags({}, {"u1": ["a"]}, k=3)
    assert EvaluateParams.from_config(make_config(tmp_path)).tags_k == 3
    with pytest.raises(ConfigError, match="evaluate.tags.k must be at least 1 .*got 0"):
        EvaluateParams.from_config(make_config(tmp_path, PORTRAIT__EVALUATE__TAGS__K="0"))


def test_evaluate_tags_scores_the_published_tags_the_users_history_and_the_popular_tags_on_the_same_users():
    got = evaluate_tags(TRUTH, {"u1": ["a", "c"], "u2": ["b"]}, HISTORY, VOCAB, k=2)
    # history: u1 [a, b] (2 hits), u2 [a, c] (a ties c: vocabulary order; 1 hit), u3 [b] (0): 3 of 5 named, 4 true
    assert got["history"] == pytest.approx({"precision": 0.6, "recall": 0.75, "f1": 2 * 0.6 * 0.75 / 1.35,
                                            "macro_f1": (1 + 2 / 3) / 3, "hit_rate": 2 / 3, "users": 3.0})
    # popularity: a 7, b 4, c 2 events in all -> [a, b] for everyone: u1 2 hits, u2 0, u3 1
    assert got["popularity"] == pytest.approx({"precision": 0.5, "recall": 0.75, "f1": 0.6,
                                               "macro_f1": (1 + 2 / 3) / 3, "hit_rate": 2 / 3, "users": 3.0})
    assert got["published"] == pytest.approx({"precision": 1 / 3, "recall": 0.25, "f1": 2 / 7,
                                              "macro_f1": 0.5 / 3, "hit_rate": 1 / 3, "users": 3.0})


def test_the_table_has_one_row_per_scorer_and_the_report_says_why_tags_were_skipped():
    results = evaluate_tags(TRUTH, {"u1": ["a"]}, HISTORY, VOCAB, k=2)
    table = table_markdown(results, 2)
    assert table.splitlines()[0].startswith("| interest tags (top 2) | precision |")
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == ["| published", "| history", "| popularity"]
    record = {"results": {}, "skipped": {"recommendations": "recommendations skipped: one item",
                                         "tags": "no item has a category on 2016-10-16"}}
    assert report_markdown(record, 10).splitlines() == [
        "recommendations skipped: one item", "", "interest tags not scored: no item has a category on 2016-10-16"]


@pytest.mark.spark
def test_item_tags_map_categories_through_the_vocabulary_and_drop_unknown_ones(spark):
    items = spark.createDataFrame([("i1", ["drama", "comedy"]), ("i2", ["unknown"]), ("i3", ["western"])],
                                  "item_id string, categories array<string>")
    with_other = {(r["item_id"], r["tag"]) for r in transform_item_tags(items, ["drama", "comedy", "other"]).collect()}
    assert with_other == {("i1", "drama"), ("i1", "comedy"), ("i3", "other")}
    without_other = {(r["item_id"], r["tag"]) for r in transform_item_tags(items, ["drama"]).collect()}
    assert without_other == {("i1", "drama")}


@pytest.mark.spark
def test_published_tags_are_scored_from_the_lakehouse_of_the_run_date(spark, tmp_path):
    from jobs.common.delta import replace_dates

    lake = make_config(tmp_path)
    day_before = DAY - dt.timedelta(days=1)
    items = spark.createDataFrame(
        [("m1", ["drama"], DAY), ("m2", ["comedy"], DAY), ("m3", ["horror"], DAY),
         ("m2", ["drama"], day_before)],              # an older snapshot of m2: the newest one counts
        "item_id string, categories array<string>, snapshot_date date")
    replace_dates(items, lake, "silver.items", [DAY, day_before])
    vocab = spark.createDataFrame([("drama", 0, DAY), ("comedy", 1, DAY)],
                                  "category string, position int, as_of_date date")
    replace_dates(vocab, lake, "gold.category_vocab", [DAY])
    profiles = spark.createDataFrame(
        [("k1", [("comedy", 0.9), ("drama", 0.7)], DAY), ("k2", [("drama", 0.8)], DAY),
         ("k1", [("drama", 0.9)], day_before)],       # another day's profile is not read
        "user_key string, interest_tags array<struct<tag:string,score:double>>, as_of_date date")
    replace_dates(profiles, lake, "publish.user_profile", [DAY, day_before])
    train = spark.createDataFrame([("k1", "m1"), ("k1", "m1"), ("k2", "m2"), ("k9", "m1")],
                                  "user_key string, item_id string")
    heldout = pd.DataFrame({"user_key": ["k1", "k2", "k2", "k3"], "item_id": ["m2", "m1", "m3", "m1"]})
    got = score_published_tags(spark, lake, heldout, train, DAY, k=1)
    # truth: k1 {comedy}, k2 {drama} (m3's horror is outside the vocabulary); k3 never trained: not scored
    assert got["facts"] == {"tag_users": 2, "tag_vocabulary": 2, "tag_truth_per_user": 1.0,
                            "tag_users_with_published_tags": 2}
    assert got["results"]["published"]["precision"] == 1.0       # k1 comedy, k2 drama: both right
    assert got["results"]["history"]["precision"] == 0.0         # k1 drama (m1), k2 comedy (m2): both wrong
    assert got["results"]["popularity"]["hit_rate"] == 0.5       # drama (3 events) for both: k2 right
    later = DAY + dt.timedelta(days=1)       # a date the features step wrote no vocabulary for
    assert score_published_tags(spark, lake, heldout, train, later, k=1) == {
        "skipped": f"no item has a category on {later} (gold.category_vocab holds no row for it)"}
    empty = make_config(tmp_path / "other")
    assert score_published_tags(spark, empty, heldout, train, DAY, k=1) == {
        "skipped": f"silver.items is missing under {empty.lakehouse_root}"}
