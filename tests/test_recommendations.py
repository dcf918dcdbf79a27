import datetime as dt

import pytest

from jobs.score import transform_recommendations

pytestmark = pytest.mark.spark
D = dt.date(2026, 11, 14)


def test_recommendations_rank_by_tag_and_popularity_and_skip_bought_items(spark):
    profile = spark.createDataFrame(
        [("a", D, [("electronics", 0.9), ("beauty", 0.6), ("pets", 0.5)])],
        "user_key string, as_of_date date, interest_tags array<struct<tag:string,score:double>>",
    )
    items = spark.createDataFrame(
        [("i1", "electronics", 3.0), ("i3", "electronics", 1.0), ("i2", "beauty", 1.0), ("i9", "pets", 9.0)],
        "item_id string, category string, popularity double",
    )
    purchased = spark.createDataFrame([("a", "i1")], "user_key string, item_id string")
    rows = transform_recommendations(profile, items, purchased, k=2, candidate_categories=2).orderBy("rank").collect()
    # i1 was bought; pets is the third tag and only two candidate categories are used.
    assert [(r["rank"], r["item_id"]) for r in rows] == [(1, "i2"), (2, "i3")]
    assert rows[0]["score"] == pytest.approx(0.6, abs=1e-5)
    assert rows[1]["score"] == pytest.approx(0.9 * (1 + 1e-6) / (4 + 2e-6), abs=1e-6)
    assert rows[0]["reason"] == "popular in beauty, your interest tag (0.60)"


def test_recommendations_are_empty_when_every_candidate_was_bought(spark):
    profile = spark.createDataFrame([("a", D, [("beauty", 0.6)])],
                                    "user_key string, as_of_date date, interest_tags array<struct<tag:string,score:double>>")
    items = spark.createDataFrame([("i2", "beauty", 1.0)], "item_id string, category string, popularity double")
    purchased = spark.createDataFrame([("a", "i2")], "user_key string, item_id string")
    assert transform_recommendations(profile, items, purchased, k=5, candidate_categories=3).count() == 0
