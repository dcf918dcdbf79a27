import datetime as dt

import pytest

from jobs.common.taxonomy import TOP_LEVEL
from jobs.features import transform_item_features, transform_user_features

pytestmark = pytest.mark.spark
D = dt.date(2026, 11, 14)
EVENTS = "user_key string, event_type string, item_id string, price double, quantity long, rating long, event_date date"


def _frames(spark, extra_events=()):
    events = spark.createDataFrame(
        [("a", "view", "i1", 100.0, None, None, D),
         ("a", "purchase", "i1", 100.0, 2, None, D - dt.timedelta(days=1)),
         ("a", "purchase", "i2", 50.0, 1, None, D - dt.timedelta(days=10)),
         ("a", "rating", "i2", None, None, 4, D - dt.timedelta(days=10)),
         ("a", "view", "i3", 300.0, None, None, D - dt.timedelta(days=95)),  # outside the 90-day window
         *extra_events],
        EVENTS,
    )
    users = spark.createDataFrame([("a", "25-34", "F", "Shanghai"), ("b", "35-44", "M", "Beijing")],
                                  "user_key string, age_band string, gender string, city string")
    items = spark.createDataFrame([("i1", "electronics", 100.0), ("i2", "beauty", 50.0), ("i3", "electronics", 300.0)],
                                  "item_id string, category string, price double")
    return events, users, items


def test_user_features_by_hand(spark):
    events, users, items = _frames(spark)
    rows = {r["user_key"]: r for r in transform_user_features(events, users, items, D, half_life_days=14.0).collect()}
    a = rows["a"]
    assert (a["n_events_7d"], a["n_events_30d"], a["n_views_30d"], a["n_purchases_30d"]) == (2, 4, 1, 2)
    assert (a["active_days_30d"], a["recency_days"], a["n_purchases_90d"]) == (3, 0, 2)
    assert a["monetary_90d"] == 250.0
    assert a["avg_purchase_price_90d"] == 75.0
    assert a["conversion_30d"] == 2.0
    assert a["avg_rating"] == 4.0
    assert a["price_index"] == pytest.approx(1.0)  # bought at each category's median price
    electronics = 1.0 + 5.0 * 0.5 ** (1 / 14)
    beauty = 5.0 * 0.5 ** (10 / 14) + 1.0 * 0.5 ** (10 / 14)
    affinity = dict(zip(TOP_LEVEL, a["category_affinity"]))
    assert affinity["electronics"] == pytest.approx(electronics / (electronics + beauty))
    assert affinity["beauty"] == pytest.approx(beauty / (electronics + beauty))
    assert sum(affinity.values()) == pytest.approx(1.0)

    b = rows["b"]  # a user without events still gets a row, with the documented defaults
    assert (b["n_events_30d"], b["recency_days"], b["price_index"], sum(b["category_affinity"])) == (0, 90, 1.0, 0)
    assert (a["as_of_date"], a["feature_version"]) == (D, "1")


def test_a_later_event_changes_no_feature_of_the_day(spark):
    events, users, items = _frames(spark)
    later = [("a", "purchase", "i3", 300.0, 5, None, D + dt.timedelta(days=1))]
    with_later, _, _ = _frames(spark, later)
    before = sorted(tuple(r) for r in transform_user_features(events, users, items, D).collect())
    after = sorted(tuple(r) for r in transform_user_features(with_later, users, items, D).collect())
    assert before == after
    # ...and the same event does count for the next day, so the check above can fail.
    next_day = {r["user_key"]: r for r in transform_user_features(with_later, users, items, D + dt.timedelta(days=1)).collect()}
    assert next_day["a"]["n_purchases_90d"] == 3


def test_item_features_popularity_conversion_and_price_rank(spark):
    events, _, _ = _frames(spark)
    items = spark.createDataFrame(
        [("i1", "electronics", "A", 100.0), ("i2", "beauty", "B", 50.0), ("i3", "electronics", "C", 300.0)],
        "item_id string, category string, brand string, price double",
    )
    rows = {r["item_id"]: r for r in transform_item_features(events, items, D, half_life_days=14.0).collect()}
    assert (rows["i1"]["views_30d"], rows["i1"]["purchases_30d"], rows["i1"]["conversion_30d"]) == (1, 1, 1.0)
    assert rows["i1"]["popularity"] == pytest.approx(1.0 + 0.5 ** (1 / 14))
    assert (rows["i3"]["views_30d"], rows["i3"]["popularity"]) == (0, 0.0)  # its view is 95 days old
    assert (rows["i1"]["price_pct_in_category"], rows["i3"]["price_pct_in_category"]) == (0.0, 1.0)
