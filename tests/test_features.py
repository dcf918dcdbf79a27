import datetime as dt
import random
import re
from pathlib import Path

import pytest

from jobs.common.errors import ConfigError, InputDataError
from jobs.common.feature_windows import FeatureWindows
from jobs.common.taxonomy import TOP_LEVEL
from jobs.content import sentiment
from jobs.feature_state import (
    MAP_NAMES, FeatureParams, snapshot_for_days, state_columns, transform_full_state, transform_incremental_state,
)
from jobs.features import (
    numeric_features, transform_features_from_state, transform_item_features, transform_social_degree,
    transform_user_features, user_feature_columns,
)

pytestmark = pytest.mark.spark
D = dt.date(2026, 11, 14)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "features.md"
DEFAULT = FeatureWindows()
NUMERIC_FEATURES = numeric_features(DEFAULT)
USER_FEATURE_COLUMNS = user_feature_columns(DEFAULT)
EVENTS = "user_key string, event_type string, item_id string, price double, quantity long, rating long, event_date date"
RICH = ("user_key string, session_id string, event_type string, item_id string, ts timestamp, price double, "
        "quantity long, query string, review_text string, rating long, device string, channel string, "
        "event_date date, landed_date date")
ITEMS = "item_id string, category string, brand string, price double"
USERS = "user_key string, age_band string, gender string, occupation string, city string, signup_date date"
EDGES = "src_key string, dst_key string, edge_type string, event_date date"
ZH_REVIEW, EN_REVIEW = "质量很好，非常满意", "Terrible quality, broke after two days."


def days_before(n: int) -> dt.date:
    return D - dt.timedelta(days=n)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _frames(spark, extra_events=()):
    events = spark.createDataFrame(
        [("a", "view", "i1", 100.0, None, None, D),
         ("a", "purchase", "i1", 100.0, 2, None, days_before(1)),
         ("a", "purchase", "i2", 50.0, 1, None, days_before(10)),
         ("a", "rating", "i2", None, None, 4, days_before(10)),
         ("a", "view", "i3", 300.0, None, None, days_before(95)),  # outside the 90-day window
         *extra_events],
        EVENTS,
    )
    users = spark.createDataFrame([("a", "25-34", "F", "Shanghai"), ("b", "35-44", "M", "Beijing")],
                                  "user_key string, age_band string, gender string, city string")
    items = spark.createDataFrame([("i1", "electronics", 100.0), ("i2", "beauty", 50.0), ("i3", "electronics", 300.0)],
                                  "item_id string, category string, price double")
    return events, users, items


def test_user_features_by_hand(spark):
    """A frame with only the old columns (no landed_date, ts, session...); a purchase dated tomorrow is in it."""
    tomorrow = D + dt.timedelta(days=1)
    events, users, items = _frames(spark, [("a", "purchase", "i3", 300.0, 5, None, tomorrow)])
    rows = {r["user_key"]: r for r in transform_user_features(events, users, items, D, half_life_days=14.0).collect()}
    a = rows["a"]
    assert (a["n_events_7d"], a["n_events_30d"], a["n_views_30d"], a["n_purchases_30d"]) == (2, 4, 1, 2)
    assert (a["active_days_30d"], a["recency_days"], a["n_purchases_90d"]) == (3, 0, 2)
    assert a["monetary_90d"] == 250.0
    assert a["avg_purchase_price_90d"] == 75.0
    assert a["conversion_30d"] == 2.0
    assert a["avg_rating"] == 4.0
    assert a["price_index"] == pytest.approx(1.0)  # bought at each category's (lower) median price
    electronics = 1.0 + 5.0 * 0.5 ** (1 / 14)
    beauty = 5.0 * 0.5 ** (10 / 14) + 1.0 * 0.5 ** (10 / 14)
    affinity = dict(zip(TOP_LEVEL, a["category_affinity"]))
    assert affinity["electronics"] == pytest.approx(electronics / (electronics + beauty))
    assert affinity["beauty"] == pytest.approx(beauty / (electronics + beauty))
    assert sum(affinity.values()) == pytest.approx(1.0)
    assert not [c for c in a.asDict() if c.startswith("affinity_")]  # one array, no column per category

    b = rows["b"]  # a user without events still gets a row, with the documented defaults
    assert (b["n_events_30d"], b["recency_days"], b["price_index"], sum(b["category_affinity"])) == (0, 90, 1.0, 0)
    assert (a["as_of_date"], a["feature_version"]) == (D, "3")

    # Tomorrow's purchase is in none of the figures above, and it does count tomorrow.
    next_day = {r["user_key"]: r for r in transform_user_features(events, users, items, tomorrow).collect()}
    assert (next_day["a"]["n_purchases_1d"], next_day["a"]["n_purchases_90d"]) == (1, 3)


# --- every family on one hand-made user ------------------------------------------------------------


def rich_frames(spark, extra_events=(), extra_edges=()):
    """User c: two sessions today, a gap-split morning yesterday, a night 20 days ago, purchases 60 days ago.

    Local time is Asia/Shanghai (UTC+8): 2026-11-14 is a Saturday, 2026-10-26 a Monday.
    """
    s1, s2 = "s1", "s2"
    rows = [
        # D: session s1 09:00-09:40 local (morning), iPhone, organic: the funnel on i1.
        ("c", s1, "view", "i1", utc("2026-11-14T01:00:00"), 100.0, None, None, None, None, "ios", "organic", D, D),
        ("c", s1, "click", "i1", utc("2026-11-14T01:10:00"), 100.0, None, None, None, None, "ios", "organic", D, D),
        ("c", s1, "add_to_cart", "i1", utc("2026-11-14T01:30:00"), 100.0, 1, None, None, None, "ios", "organic", D, D),
        ("c", s1, "purchase", "i1", utc("2026-11-14T01:40:00"), 100.0, 1, None, None, None, "ios", "organic", D, D),
        # D: session s2 20:30 local (evening), a Chinese search for bluetooth headphones, then a view.
        ("c", s2, "search", None, utc("2026-11-14T12:30:00"), None, None, "蓝牙耳机 便宜", None, None, "android", "social", D, D),
        ("c", s2, "view", "i3", utc("2026-11-14T12:35:00"), 300.0, None, None, None, None, "android", "social", D, D),
        # D-1 (UTC), 07:00-07:55 local on Saturday, no session id: 20 minutes apart, then 35 -> two sessions.
        ("c", None, "view", "i2", utc("2026-11-13T23:00:00"), 50.0, None, None, None, None, "web", "push", days_before(1), days_before(1)),
        ("c", None, "view", "i2", utc("2026-11-13T23:20:00"), 50.0, None, None, None, None, "web", "push", days_before(1), days_before(1)),
        ("c", None, "review", "i2", utc("2026-11-13T23:55:00"), None, None, None, ZH_REVIEW, 5, "web", "push", days_before(1), days_before(1)),
        # D-20: 01:00 local on a Monday (night), an English search and an unhappy review, 10 minutes apart.
        ("c", None, "search", None, utc("2026-10-25T17:00:00"), None, None, "running shoes sale", None, None, "mini_program", "email", days_before(20), days_before(20)),
        ("c", None, "review", "i2", utc("2026-10-25T17:10:00"), None, None, None, EN_REVIEW, 1, "mini_program", "email", days_before(20), days_before(20)),
        # D-60: two pairs of Nike shoes at the dear end, and a cart of cheap Anta ones.
        ("c", "s9", "purchase", "i4", utc("2026-09-15T03:00:00"), 300.0, 2, None, None, None, "ios", "organic", days_before(60), days_before(60)),
        ("c", "s9", "add_to_cart", "i6", utc("2026-09-15T03:05:00"), 100.0, 1, None, None, None, "ios", "organic", days_before(60), days_before(60)),
        *extra_events,
    ]
    events = spark.createDataFrame(rows, RICH)
    items = spark.createDataFrame(
        [("i1", "electronics", "Sony", 100.0), ("i5", "electronics", "Anker", 200.0), ("i3", "electronics", "Sony", 300.0),
         ("i2", "beauty", "Proya", 50.0), ("i4", "shoes_bags", "Nike", 300.0), ("i6", "shoes_bags", "Anta", 100.0)], ITEMS)
    users = spark.createDataFrame([("c", "25-34", "F", "teacher", "Hangzhou", dt.date(2026, 10, 1)),
                                   ("d", "45-54", "M", None, "Wuhan", None)], USERS)
    edges = spark.createDataFrame([("c", "a", "share", days_before(3)), ("c", "b", "invite", days_before(2)),
                                   ("a", "c", "share", days_before(1)), ("c", "c", "share", D),
                                   ("c", "e", "share", D + dt.timedelta(days=1)), *extra_edges], EDGES)
    return events, items, users, edges


def rich_features(spark, as_of=D, extra_events=(), extra_edges=()):
    events, items, users, edges = rich_frames(spark, extra_events, extra_edges)
    return transform_user_features(events, users, items, as_of, social=transform_social_degree(edges, as_of))


@pytest.fixture(scope="module")
def rich_frame(spark):
    frame = rich_features(spark)
    return frame.dtypes, {r["user_key"]: r.asDict() for r in frame.collect()}


@pytest.fixture(scope="module")
def rich(rich_frame):
    return rich_frame[1]


def test_counts_and_rates_by_window(rich):
    c = rich["c"]
    assert [c[f"n_events_{w}d"] for w in (1, 7, 30, 90)] == [6, 9, 11, 13]
    assert [c[f"n_views_{w}d"] for w in (1, 7, 30, 90)] == [2, 4, 4, 4]
    assert [c[f"n_searches_{w}d"] for w in (1, 7, 30, 90)] == [1, 1, 2, 2]
    assert [c[f"n_reviews_{w}d"] for w in (1, 7, 30, 90)] == [0, 1, 2, 2]
    assert [c[f"n_carts_{w}d"] for w in (1, 7, 30, 90)] == [1, 1, 1, 2]
    assert [c[f"n_purchases_{w}d"] for w in (1, 7, 30, 90)] == [1, 1, 1, 2]
    assert (c["n_clicks_1d"], c["n_shares_90d"], c["n_cart_removals_90d"], c["n_ratings_90d"]) == (1, 0, 0, 0)
    assert (c["click_rate_1d"], c["cart_rate_1d"], c["conversion_1d"], c["cart_conversion_1d"]) == (0.5, 0.5, 0.5, 1.0)
    assert (c["conversion_90d"], c["cart_conversion_90d"], c["click_rate_7d"]) == (0.5, 1.0, 0.25)
    d = rich["d"]  # rates are 0, not undefined, without a denominator
    assert (d["n_events_90d"], d["conversion_1d"], d["cart_conversion_90d"]) == (0, 0, 0)


def test_rfm_activity_and_sessions(rich):
    c = rich["c"]
    assert (c["recency_days"], c["purchase_recency_days"]) == (0, 0)
    assert (c["active_days_7d"], c["active_days_30d"], c["active_days_90d"]) == (2, 3, 4)
    assert c["monetary_90d"] == 100.0 + 300.0 * 2
    assert c["avg_purchase_price_90d"] == 200.0
    # Sessions: s1, s2 today; the 35-minute gap splits yesterday in two; one 10-minute session 20 days ago.
    assert (c["n_sessions_7d"], c["n_sessions_30d"]) == (4, 5)
    assert c["avg_session_events_30d"] == pytest.approx(11 / 5)
    assert c["avg_session_minutes_30d"] == pytest.approx((40 + 5 + 20 + 0 + 10) / 5)
    d = rich["d"]
    assert (d["recency_days"], d["purchase_recency_days"], d["n_sessions_30d"], d["avg_session_minutes_30d"]) == (90, 90, 0, 0)


def test_day_parts_weekdays_devices_and_channels(rich):
    c = rich["c"]  # 11 events in 30 days
    assert (c["night_share_30d"], c["morning_share_30d"], c["afternoon_share_30d"], c["evening_share_30d"]) == \
        pytest.approx((2 / 11, 7 / 11, 0.0, 2 / 11))
    assert c["weekend_share_30d"] == pytest.approx(9 / 11)
    assert [c[f"device_{d}_share_30d"] for d in ("ios", "android", "web", "mini_program")] == \
        pytest.approx([4 / 11, 2 / 11, 3 / 11, 2 / 11])
    assert [c[f"channel_{x}_share_30d"] for x in ("organic", "search_ads", "social", "email", "push")] == \
        pytest.approx([4 / 11, 0.0, 2 / 11, 2 / 11, 3 / 11])
    assert rich["d"]["weekend_share_30d"] == 0.0


def test_price_band_and_consumption_capacity(rich):
    c = rich["c"]
    # Carts and purchases: i1 twice at 100 (electronics lower median 200, rank 0), i4 at 300 (shoes median 100,
    # rank 1), i6 at 100 (shoes median 100, rank 0).
    assert c["price_index"] == pytest.approx((0.5 + 0.5 + 3.0 + 1.0) / 4)
    assert c["price_percentile_90d"] == pytest.approx(1 / 4)
    assert c["price_band"] == "budget"
    d = rich["d"]
    assert (d["price_index"], d["price_percentile_90d"], d["price_band"]) == (1.0, 0.5, None)


def test_category_and_brand_affinity_decay(rich):
    c = rich["c"]
    h = 0.5 ** (1 / 14)  # one day of decay with a 14-day half-life
    electronics = 1 + 2 + 3 + 5 + 1 + 1  # the funnel on i1, the view of i3, the search's intent
    beauty = (1 + 1 + 2) * h + 2 * h ** 20
    shoes = 1 * h ** 20 + (5 + 3) * h ** 60  # the English search's intent, the Nike purchase and the Anta cart
    total = electronics + beauty + shoes
    affinity = dict(zip(TOP_LEVEL, c["category_affinity"]))  # no vocabulary given: the builtin top level
    assert affinity["electronics"] == pytest.approx(electronics / total)
    assert affinity["beauty"] == pytest.approx(beauty / total)
    assert affinity["shoes_bags"] == pytest.approx(shoes / total)
    assert sum(affinity.values()) == pytest.approx(1.0)
    brands = {"Sony": 1 + 2 + 3 + 5 + 1, "Proya": 4 * h + 2 * h ** 20, "Nike": 5 * h ** 60, "Anta": 3 * h ** 60}
    brand_total = sum(brands.values())
    assert [b["brand"] for b in c["top_brands"]] == ["Sony", "Proya", "Nike", "Anta"]
    assert [b["score"] for b in c["top_brands"]] == pytest.approx([v / brand_total for v in brands.values()])
    assert (rich["d"]["top_brands"], sum(rich["d"]["category_affinity"])) == ([], 0)


def test_content_sentiment_keywords_and_search_intent(rich):
    c = rich["c"]
    assert c["review_sentiment_90d"] == pytest.approx((sentiment(ZH_REVIEW) + sentiment(EN_REVIEW)) / 2)
    assert c["negative_review_share_90d"] == 0.5  # the English review is negative, the Chinese one is not
    # All keywords are seen once, so the ranking falls back to the order of the words.
    assert c["search_keywords"] == ["running", "sale", "shoes", "便宜", "耳机", "蓝牙"]
    assert c["review_keywords"] == ["broke", "days", "quality", "terrible", "满意", "质量"]
    intent = dict(zip(TOP_LEVEL, c["search_intent"]))
    assert (intent["electronics"], intent["shoes_bags"], sum(intent.values())) == (0.5, 0.5, 1.0)
    assert c["top_search_intent"] == "electronics"  # a tie goes to the first name
    d = rich["d"]
    assert (d["review_sentiment_90d"], d["search_keywords"], d["top_search_intent"], sum(d["search_intent"])) == \
        (0.5, [], None, 0)


def test_demographics_tenure_and_social_degree(rich):
    c, d = rich["c"], rich["d"]
    assert (c["age_band"], c["gender"], c["occupation"], c["city"]) == ("25-34", "F", "teacher", "Hangzhou")
    assert d["occupation"] == "unknown"
    assert (c["tenure_days"], d["tenure_days"]) == (44, 0)
    # a and b, each counted once whatever the direction; the self-loop and tomorrow's edge do not count.
    assert (c["social_degree"], d["social_degree"]) == (2, 0)


def test_every_column_is_typed_and_in_order(rich_frame):
    dtypes, _ = rich_frame
    assert tuple(name for name, _ in dtypes) == USER_FEATURE_COLUMNS
    types = dict(dtypes)
    assert all(types[name] == "double" for name in NUMERIC_FEATURES)
    assert types["top_brands"] == "array<struct<brand:string,score:double>>"
    assert len(NUMERIC_FEATURES) == len(set(NUMERIC_FEATURES))


def test_bad_inputs_fail_with_a_clear_message(spark):
    events, users, items = _frames(spark)
    with pytest.raises(InputDataError, match="lack column.*user_key"):
        transform_user_features(events.drop("user_key"), users, items, D)
    with pytest.raises(InputDataError, match="items .* lack column.*category"):
        transform_user_features(events, users, items.drop("category"), D).collect()
    with pytest.raises(ValueError, match="half-life"):
        FeatureParams(half_life_days=0)


# --- point in time ----------------------------------------------------------------------------------


def test_a_later_event_changes_no_feature_of_the_day(spark, rich):
    later = [
        # Dated tomorrow.
        ("c", "s5", "purchase", "i3", utc("2026-11-15T02:00:00"), 300.0, 5, None, None, None, "ios", "organic",
         D + dt.timedelta(days=1), D + dt.timedelta(days=1)),
        # Dated two days ago but landed tomorrow: unknown at the end of D.
        ("c", "s6", "purchase", "i5", utc("2026-11-12T02:00:00"), 200.0, 1, None, None, None, "ios", "organic",
         days_before(2), D + dt.timedelta(days=1)),
        # A user who appears only tomorrow.
        ("d", "s7", "view", "i1", utc("2026-11-15T03:00:00"), 100.0, None, None, None, None, "web", "push",
         D + dt.timedelta(days=1), D + dt.timedelta(days=1)),
    ]
    edges = [("d", "a", "share", D + dt.timedelta(days=1))]
    after = {r["user_key"]: r.asDict() for r in rich_features(spark, D, later, edges).collect()}
    assert after == rich
    # ...and the same events do count for the next day, so the check above can fail.
    next_day = {r["user_key"]: r for r in rich_features(spark, D + dt.timedelta(days=1), later, edges).collect()}
    assert (next_day["c"]["n_purchases_1d"], next_day["c"]["n_purchases_7d"]) == (1, 3)
    assert (next_day["d"]["n_events_1d"], next_day["d"]["social_degree"]) == (1, 1)


def test_each_day_sees_the_item_snapshot_of_that_day():
    snapshots = [dt.date(2026, 11, 5), dt.date(2026, 11, 1), dt.date(2026, 11, 10)]
    chosen = snapshot_for_days(snapshots, [dt.date(2026, 10, 30), dt.date(2026, 11, 5), dt.date(2026, 11, 9)])
    assert chosen == {dt.date(2026, 10, 30): dt.date(2026, 11, 1),  # before the first load: the oldest
                      dt.date(2026, 11, 5): dt.date(2026, 11, 5), dt.date(2026, 11, 9): dt.date(2026, 11, 5)}
    with pytest.raises(InputDataError, match="silver.items has no snapshot"):
        snapshot_for_days([], [D])


# --- incremental equals full ------------------------------------------------------------------------

START = dt.date(2026, 11, 10)
CHAIN = 2  # incremental days after START


def random_history(seed: int = 11):
    """About 100 days of events for 4 users ending at START + CHAIN, with late landings and no session ids."""
    rng = random.Random(seed)
    items = [f"i{i}" for i in range(1, 7)]
    rows, serial = [], 0
    first = START - dt.timedelta(days=97)
    for day_number in range((START + dt.timedelta(days=CHAIN) - first).days + 1):
        day = first + dt.timedelta(days=day_number)
        for user in ("u1", "u2", "u3", "u4"):
            for _ in range(rng.choice([0, 1, 1, 2, 3])):
                serial += 1
                kind = rng.choice(["view", "view", "click", "add_to_cart", "purchase", "search", "review", "rating", "share"])
                ts = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=rng.randrange(0, 24 * 60))
                late = rng.choice([0, 0, 0, 0, 1, 2, 3])  # some events land one to three days late
                rows.append((
                    user, rng.choice([None, f"s{serial % 5}"]), kind,
                    None if kind == "search" else rng.choice(items), ts,
                    round(rng.uniform(10, 500), 2) if kind in ("view", "click", "add_to_cart", "purchase") else None,
                    rng.randint(1, 3) if kind in ("add_to_cart", "purchase") else None,
                    rng.choice(["蓝牙耳机", "running shoes", "口红 便宜"]) if kind == "search" else None,
                    rng.choice([ZH_REVIEW, EN_REVIEW]) if kind == "review" else None,
                    rng.randint(1, 5) if kind in ("review", "rating") else None,
                    rng.choice(["ios", "web"]), rng.choice(["organic", "push"]), day, day + dt.timedelta(days=late),
                ))
    return rows


def _state_rows(frame):
    return {r["user_key"]: r.asDict() for r in frame.collect()}


def _assert_states_equal(incremental, full, day, windows=DEFAULT):
    assert set(incremental) == set(full), f"users differ on {day}"
    for user, want in full.items():
        got = incremental[user]
        for name in state_columns(windows):
            assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-9), f"{name} of {user} on {day}"
        assert (got["last_event_date"], got["last_purchase_date"]) == (want["last_event_date"], want["last_purchase_date"])
        for name in MAP_NAMES:
            assert set(got[name]) == set(want[name]), f"keys of {name} of {user} on {day}"
            for key, value in want[name].items():
                assert got[name][key] == pytest.approx(value, rel=1e-9), f"{name}[{key}] of {user} on {day}"


def test_incremental_equals_full_over_several_days(spark):
    events = spark.createDataFrame(random_history(), RICH).cache()
    # Two snapshots: prices change on 2026-11-11, so the days on either side see different price positions.
    items = spark.createDataFrame(
        [(f"i{i}", cat, brand, price, snap)
         for snap, factor in ((dt.date(2026, 8, 1), 1.0), (dt.date(2026, 11, 11), 3.0))
         for i, cat, brand, price in ((1, "electronics", "Sony", 100.0), (2, "electronics", "Anker", 200.0 * factor),
                                      (3, "beauty", "Proya", 50.0), (4, "beauty", "Dior", 80.0),
                                      (5, "shoes_bags", "Nike", 300.0), (6, "pets", "Petkit", 60.0))],
        ITEMS + ", snapshot_date date")
    params = FeatureParams(half_life_days=7.0)
    state = transform_full_state(events, items, START, params).cache()
    for offset in range(1, CHAIN + 1):
        day = START + dt.timedelta(days=offset)
        previous = state
        incremental = transform_incremental_state(events, items, state, day, params).cache()
        full = transform_full_state(events, items, day, params)
        full_rows = _state_rows(full)
        _assert_states_equal(_state_rows(incremental), full_rows, day)
        state = incremental
    # The chain did meet what it must handle: late landings and days leaving every window.
    last = START + dt.timedelta(days=CHAIN)
    late = events.where((events.landed_date > events.event_date) & (events.landed_date > START) & (events.landed_date <= last))
    assert late.count() > 0
    assert events.where(events.event_date == last - dt.timedelta(days=90)).count() > 0

    # The comparison can fail: continuing a state that lost u1's history gives other totals for u1 only.
    tampered = _state_rows(transform_incremental_state(
        events, items, previous.where("user_key <> 'u1'"), last, params))
    assert tampered["u2"]["n_events__90"] == full_rows["u2"]["n_events__90"]
    assert tampered.get("u1", {}).get("n_events__90", 0) < full_rows["u1"]["n_events__90"]


# --- configured windows ---------------------------------------------------------------------------------

WINDOWED = EVENTS + ", landed_date date"


def test_custom_windows_count_each_event_in_the_windows_it_falls_in(spark):
    """Windows [2, 5]: an event `age` days before the date counts in a w-day window when age < w."""
    windows = FeatureWindows.parse([5, 2])
    tomorrow = D + dt.timedelta(days=1)

    def event(user, kind, age, landed_age=None, price=None):
        day = D - dt.timedelta(days=age)
        return (user, kind, "i1", price, None, None, day, D - dt.timedelta(days=age if landed_age is None else landed_age))

    events = spark.createDataFrame([
        event("u1", "view", 0),
        event("u1", "purchase", 1, price=10.0),
        event("u1", "view", 2),              # on the 2-day window's edge: outside it, inside the 5-day one
        event("u1", "add_to_cart", 4),
        event("u1", "view", 5),              # on the 5-day window's edge: outside every window
        event("u1", "purchase", 1, landed_age=-1, price=30.0),  # dated D-1, landed tomorrow: unknown at D
        event("u1", "view", -1),             # tomorrow
        event("u2", "view", 5),              # only on the edge: no state, the defaults
    ], WINDOWED)
    users = spark.createDataFrame([("u1", "25-34", "F", "x", "Hangzhou", None), ("u2", "35-44", "M", "y", "Wuhan", None)],
                                  USERS)
    items = spark.createDataFrame([("i1", "electronics", "Sony", 10.0)], ITEMS)
    params = FeatureParams(windows=windows)
    frame = transform_user_features(events, users, items, D, params=params)
    assert tuple(frame.columns) == user_feature_columns(windows)
    assert not {"n_events_7d", "n_events_30d", "monetary_90d"} & set(frame.columns)
    rows = {r["user_key"]: r for r in frame.collect()}
    u1, u2 = rows["u1"], rows["u2"]
    assert (u1["n_events_2d"], u1["n_events_5d"], u1["n_views_2d"], u1["n_views_5d"]) == (2, 4, 1, 2)
    assert (u1["n_purchases_2d"], u1["n_purchases_5d"], u1["n_carts_2d"], u1["n_carts_5d"]) == (1, 1, 0, 1)
    assert (u1["active_days_2d"], u1["active_days_5d"], u1["recency_days"], u1["purchase_recency_days"]) == (2, 4, 0, 1)
    assert (u1["conversion_2d"], u1["conversion_5d"], u1["cart_rate_5d"], u1["monetary_5d"]) == (1.0, 0.5, 0.5, 10.0)
    assert u1["feature_version"] == "3+windows=2/5"
    # Idle in every window: zeros, and recency capped at the longest window.
    assert (u2["n_events_5d"], u2["recency_days"], u2["purchase_recency_days"], u2["price_index"]) == (0, 5, 5, 1.0)

    # A day later the edges move: D-1 leaves the 2-day window, D-4 the 5-day one; the late purchase now counts.
    later = {r["user_key"]: r for r in transform_user_features(events, users, items, tomorrow, params=params).collect()}
    assert (later["u1"]["n_events_2d"], later["u1"]["n_events_5d"], later["u1"]["n_purchases_5d"]) == (2, 5, 2)
    assert later["u1"]["monetary_5d"] == 40.0


def test_the_windows_are_part_of_the_state_fingerprint():
    default = FeatureParams().fingerprint()
    assert "windows" not in default  # states written before the setting existed are continued
    assert FeatureParams(windows=FeatureWindows((2, 5))).fingerprint() == default + ";windows=2/5"


def test_incremental_equals_full_with_custom_windows(spark):
    """Windows 1, 3, 5 and 12 days over three incremental days: late landings and days leaving each window."""
    windows = FeatureWindows((1, 3, 5, 12))
    first, chain = START - dt.timedelta(days=1), 3
    events = spark.createDataFrame(random_history(), RICH).cache()
    items = spark.createDataFrame(
        [(f"i{i}", cat, brand, price) for i, cat, brand, price in (
            (1, "electronics", "Sony", 100.0), (2, "electronics", "Anker", 200.0), (3, "beauty", "Proya", 50.0),
            (4, "beauty", "Dior", 80.0), (5, "shoes_bags", "Nike", 300.0), (6, "pets", "Petkit", 60.0))], ITEMS)
    params = FeatureParams(half_life_days=3.0, windows=windows)
    # Checkpointed as the step's Delta write would: a state's plan holds the previous one twice.
    state = transform_full_state(events, items, first, params).localCheckpoint()
    assert set(state.columns) >= {"n_events__12", "active__3", "active__5", "n_sessions__3", "spend__12"}
    assert not {"n_events__90", "n_events__30"} & set(state.columns)
    for offset in range(1, chain + 1):
        day = first + dt.timedelta(days=offset)
        incremental = transform_incremental_state(events, items, state, day, params).localCheckpoint()
        full = _state_rows(transform_full_state(events, items, day, params))
        _assert_states_equal(_state_rows(incremental), full, day, windows)
        state = incremental
    last = first + dt.timedelta(days=chain)
    late = events.where((events.landed_date > events.event_date) & (events.landed_date > first) & (events.landed_date <= last))
    assert late.count() > 0
    assert events.where(events.event_date == last - dt.timedelta(days=12)).count() > 0


# --- the step on a lakehouse --------------------------------------------------------------------------


def _write_silver(spark, cfg, events, items, users):
    from pyspark.sql import functions as F

    from jobs.common.delta import replace_dates

    if "event_id" not in events.columns:  # silver always has one; the hand-made frames leave it out
        events = events.withColumn("event_id", F.concat_ws("|", "user_key", "ts", "event_type", "item_id"))
    replace_dates(events, cfg, "silver.events", [r[0] for r in events.select("event_date").distinct().collect()])
    replace_dates(items.withColumn("snapshot_date", F.lit(days_before(60))), cfg, "silver.items", [days_before(60)])
    replace_dates(users.withColumn("snapshot_date", F.lit(days_before(1))), cfg, "silver.users", [days_before(1)])


def test_features_step_falls_back_then_continues_and_reruns(spark, tmp_path, rich):
    from jobs import features
    from jobs.common.delta import read_table
    from tests.conftest import make_config

    cfg = make_config(tmp_path)
    events, items, users, _ = rich_frames(spark)
    _write_silver(spark, cfg, events, items, users)

    first = features.run(spark, cfg, days_before(1))
    assert (first.details["mode"], first.details["requested_mode"]) == ("full", "incremental")
    assert "does not exist yet" in first.details["fallback_reason"]
    second = features.run(spark, cfg, D)
    assert second.details["mode"] == "incremental" and "fallback_reason" not in second.details

    stored = {r["user_key"]: r.asDict() for r in
              read_table(spark, cfg, "gold.user_features").where(f"as_of_date = DATE'{D}'").collect()}
    assert set(stored) == {"c", "d"}
    for name in NUMERIC_FEATURES:  # continued from yesterday = recomputed from scratch (the rich fixture)
        want = 0.0 if name == "social_degree" else rich["c"][name]  # no silver.social_edges in this lake
        assert stored["c"][name] == pytest.approx(want, rel=1e-9, abs=1e-12), name
    assert [b["brand"] for b in stored["c"]["top_brands"]] == [b["brand"] for b in rich["c"]["top_brands"]]
    assert [b["score"] for b in stored["c"]["top_brands"]] == pytest.approx([b["score"] for b in rich["c"]["top_brands"]])
    assert stored["c"]["search_keywords"] == rich["c"]["search_keywords"]
    audit = read_table(spark, cfg, "ops.run_audit").where(f"step = 'features' AND run_date = DATE'{D}'").collect()
    assert {r["table_name"] for r in audit} == {"gold.user_feature_state", "gold.user_features", "gold.item_features",
                                                "gold.category_vocab", "gold.user_sequences"}
    assert all(r["balanced"] for r in audit)
    # The day's vocabulary: categories by the window's events on their items (i1 x4 + i3; i2 x4; i4, i6).
    vocab = read_table(spark, cfg, "gold.category_vocab").where(f"as_of_date = DATE'{D}'")
    assert sorted((r["position"], r["category"], r["n_items"], r["n_events"]) for r in vocab.collect()) == [
        (0, "electronics", 3, 5), (1, "beauty", 1, 4), (2, "shoes_bags", 2, 2)]
    sequences = read_table(spark, cfg, "gold.user_sequences").where(f"as_of_date = DATE'{D}'")
    # d is in the user master only: features for everyone, a sequence only for users with interactions.
    assert [r["user_key"] for r in sequences.select("user_key").collect()] == ["c"]

    # Other settings: yesterday's state is not continued; the rerun replaces the day instead of adding to it.
    other = make_config(tmp_path, PORTRAIT__FEATURES__AFFINITY_HALF_LIFE_DAYS="7")
    third = features.run(spark, other, D)
    assert third.details["mode"] == "full" and "other settings" in third.details["fallback_reason"]
    assert read_table(spark, cfg, "gold.user_features").where(f"as_of_date = DATE'{D}'").count() == 2
    assert read_table(spark, cfg, "gold.user_feature_state").where(f"as_of_date = DATE'{D}'").count() == 1  # d is idle
    with pytest.raises(ConfigError, match="mode 'sometimes' is unknown"):
        features.run(spark, cfg, D, mode="sometimes")


# --- generated data: do the strongest affinities find the planted interests? --------------------------


def test_strongest_affinities_match_planted_interests(spark, tmp_path):
    import pandas as pd
    from pyspark.sql import functions as F

    from jobs.common.taxonomy import top_level_of
    from jobs.generate import generate

    start, days = dt.date(2026, 11, 1), 10
    generate(tmp_path / "landing", tmp_path / "truth", users=120, days=days, seed=7, start_date=start)
    raw = pd.concat(pd.read_json(f, lines=True, dtype=False) for f in sorted((tmp_path / "landing" / "events").glob("*/*.jsonl")))
    raw["ts"] = pd.to_datetime(raw["ts"], utc=True).dt.tz_localize(None)
    raw["event_date"] = raw["ts"].dt.date
    columns = raw.rename(columns={"user_id": "user_key"})[
        ["user_key", "session_id", "event_type", "item_id", "ts", "price", "query", "review_text", "event_date"]]
    rows = [tuple(v.to_pydatetime() if isinstance(v, pd.Timestamp) else v for v in row)
            for row in columns.astype(object).where(columns.notna(), None).itertuples(index=False)]
    events = spark.createDataFrame(
        rows,
        "user_key string, session_id string, event_type string, item_id string, ts timestamp, price double, "
        "query string, review_text string, event_date date")
    items_raw = pd.read_json(tmp_path / "landing" / "items" / "items.jsonl", lines=True)
    items = spark.createDataFrame([(r.item_id, top_level_of(r.category_path), r.brand, float(r.price))
                                   for r in items_raw.itertuples()], ITEMS)
    users = spark.createDataFrame([(u,) for u in raw["user_id"].unique().tolist()], "user_key string")
    last = start + dt.timedelta(days=days - 1)
    features = transform_user_features(events, users, items, last).select(
        "user_key", "n_events_90d", *[F.col("category_affinity")[i].alias(f"affinity_{c}")
                                      for i, c in enumerate(TOP_LEVEL)]).toPandas()

    truth = pd.read_parquet(tmp_path / "truth" / "users.parquet").set_index("user_id")
    active = features[features["n_events_90d"] >= 20]
    top = active[[f"affinity_{c}" for c in TOP_LEVEL]].to_numpy().argmax(axis=1)
    strongest = [TOP_LEVEL[i] for i in top]
    planted = [list(truth.loc[u, "interests"]) for u in active["user_key"]]
    in_interests = sum(s in p for s, p in zip(strongest, planted)) / len(active)
    first_interest = sum(s == p[0] for s, p in zip(strongest, planted)) / len(active)
    print(f"strongest affinity among planted interests: {in_interests:.3f}; = first interest: {first_interest:.3f}; "
          f"users: {len(active)}")
    assert len(active) >= 60
    assert in_interests >= 0.9
    assert first_interest >= 0.6


def test_half_star_ratings_average_as_they_are(spark):
    """silver.events.rating is a double: 3.5 and 4.0 average to 3.75 for the user and for the item."""
    events = spark.createDataFrame(
        [("a", "rating", "i2", None, None, 3.5, days_before(2)), ("a", "rating", "i2", None, None, 4.0, days_before(1)),
         ("a", "view", "i2", 50.0, None, None, D)],
        EVENTS.replace("rating long", "rating double"))
    users = spark.createDataFrame([("a", "25-34", "F", "Shanghai")], "user_key string, age_band string, gender string, city string")
    items = spark.createDataFrame([("i2", "beauty", 50.0)], "item_id string, category string, price double")
    user = transform_user_features(events, users, items, D, half_life_days=14.0).collect()[0]
    assert user["avg_rating"] == 3.75
    item = transform_item_features(events, items, D, half_life_days=14.0).collect()[0]
    assert item["avg_rating_30d"] == 3.75


# --- items ------------------------------------------------------------------------------------------


def test_item_features_popularity_conversion_and_price_rank(spark):
    events, _, _ = _frames(spark)
    items = spark.createDataFrame(
        [("i1", "electronics", "A", 100.0, "Sony 无线降噪耳机", "electronics>headphones"),
         ("i2", "beauty", "B", 50.0, "Proya hydrating serum", "beauty>skincare"),
         ("i3", "electronics", "C", 300.0, None, "electronics>cameras"),
         ("i9", "electronics", None, None, None, "electronics")],  # no price: no position, and i1/i3 keep theirs
        "item_id string, category string, brand string, price double, title string, category_path string",
    )
    rows = {r["item_id"]: r for r in transform_item_features(events, items, D, half_life_days=14.0).collect()}
    assert (rows["i9"]["price"], rows["i9"]["price_pct_in_category"]) == (None, None)
    i1 = rows["i1"]
    assert (i1["views_30d"], i1["purchases_30d"], i1["conversion_30d"]) == (1, 1, 1.0)
    assert (i1["views_1d"], i1["purchases_1d"], i1["n_events_7d"], i1["conversion_1d"]) == (1, 0, 2, 0.0)
    assert i1["popularity"] == pytest.approx(1.0 + 0.5 ** (1 / 14))
    assert (rows["i2"]["n_events_30d"], rows["i2"]["avg_rating_30d"]) == (2, 4.0)
    assert (rows["i3"]["views_30d"], rows["i3"]["popularity"], rows["i3"]["avg_rating_30d"]) == (0, 0.0, None)
    assert (i1["price_pct_in_category"], rows["i3"]["price_pct_in_category"]) == (0.0, 1.0)
    assert i1["title_tokens"] == ["sony", "无线", "降噪", "耳机"]
    assert rows["i2"]["title_tokens"] == ["proya", "hydrating", "serum"]
    assert (rows["i3"]["title_tokens"], i1["category_path"], i1["feature_version"]) == ([], "electronics>headphones", "3")


# --- the documentation covers every column ----------------------------------------------------------


def _expand(pattern: str) -> list[str]:
    """`n_{views,clicks}_{1,7}d` -> the four names it stands for."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    return [name for option in match.group(1).split(",")
            for name in _expand(pattern[:match.start()] + option.strip() + pattern[match.end():])]


def documented_columns(section: str) -> set[str]:
    text = DOCS.read_text(encoding="utf-8")
    body = text.split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in body.splitlines():
        if line.startswith("| `"):
            for pattern in re.findall(r"`([^`]+)`", line.split("|")[1]):
                names.update(_expand(pattern))
    return names


def test_every_user_feature_column_is_documented():
    documented = documented_columns("gold.user_features")
    assert set(USER_FEATURE_COLUMNS) - documented == set()
    assert documented - set(USER_FEATURE_COLUMNS) == set(), "the page documents columns that do not exist"


def test_every_item_feature_column_is_documented(spark):
    events, _, items = _frames(spark)
    columns = transform_item_features(events, items.withColumn("brand", items["category"]), D).columns
    documented = documented_columns("gold.item_features")
    assert set(columns) - documented == set()
    assert documented - set(columns) == set()


def test_the_docs_check_finds_an_undocumented_column():
    assert _expand("n_{views,clicks}_{1,7}d") == ["n_views_1d", "n_views_7d", "n_clicks_1d", "n_clicks_7d"]
    assert "not_a_feature" not in documented_columns("gold.user_features")
