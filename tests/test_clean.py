"""Clean (bronze -> silver): each defect kind with exact counts, the accounting identity, holds, late
events, reruns. Transforms run on tiny hand-made frames; run() on a tiny hand-made bronze lakehouse."""

import datetime as dt
import json
import re

import pytest

from jobs.clean import (
    HELD_REASONS, MISSING_SESSION_PREFIX, MISSING_VALUE_RULES, REASONS, CleanParams, event_counts,
    parse_timestamp, transform_label_events, transform_remove_outliers, transform_social_edges,
    transform_type_events, transform_user_days,
)
from jobs.common.errors import ConfigError
from jobs.common.privacy import pseudonymise_py
from tests.conftest import TEST_HMAC_KEY, make_config

pytestmark = pytest.mark.spark
KEY = TEST_HMAC_KEY.encode()
D = dt.date(2026, 11, 3)
BRONZE = (
    "event_id string, user_id string, session_id string, event_type string, item_id string, ts string, "
    "price double, quantity long, query string, review_text string, rating double, device string, channel string, "
    "geo string, _raw string, _source_file string, _line long, _ingested_at timestamp, event_date date, "
    "_parse_error string"
)
FIELDS = [part.split()[0] for part in BRONZE.split(", ")]
INGESTED = dt.datetime(2026, 11, 4, 1, 0, 0)


def key_of(user_id):
    return pseudonymise_py(KEY, user_id)


def bronze_row(event_id, line, landed=D, **fields):
    """One landed line as bronze.events holds it: typed fields, the raw JSON, file, line, landing date."""
    event = {"event_id": event_id, "user_id": "u1", "session_id": "s1", "event_type": "view", "item_id": "i1",
             "ts": f"{landed.isoformat()}T10:00:00+08:00", "price": 10.0, "quantity": None, "query": None,
             "review_text": None, "rating": None, "device": "ios", "channel": "organic", "geo": "Shanghai"}
    event.update(fields)
    raw = fields.pop("_raw", None) or json.dumps(event, ensure_ascii=False)
    extra = {"_raw": raw, "_source_file": f"events/event_date={landed}/events-00000.jsonl", "_line": line,
             "_ingested_at": INGESTED, "event_date": landed, "_parse_error": None}
    return tuple({**event, **extra}[f] for f in FIELDS)


def frame(spark, rows):
    return spark.createDataFrame(rows, BRONZE)


def label(spark, rows, known_users=("u1", "u2", "u3"), items=(("i1", 10.0), ("i2", 20.0)), earlier=None,
          params=None, run_date=D):
    users = spark.createDataFrame([(key_of(u),) for u in known_users], "user_key string")
    catalogue = spark.createDataFrame(list(items), "item_id string, price double")
    seen = spark.createDataFrame([(e,) for e in earlier], "event_id string") if earlier else None
    typed = transform_type_events(frame(spark, rows), params)
    return transform_label_events(typed, KEY, run_date, params, earlier_ids=seen, known_users=users,
                                  known_items=catalogue)


def outcomes(labelled):
    """event_id -> outcome; an id landed several times maps to the sorted outcomes of its copies."""
    by_id = {}
    for r in labelled.select("event_id", "_outcome").collect():
        by_id.setdefault(r["event_id"], []).append(r["_outcome"])
    return {e: found[0] if len(found) == 1 else tuple(sorted(found)) for e, found in by_id.items()}


# --------------------------------------------------------------------------------------------------
# Every defect kind, exact counts, and rows_in = rows_out + duplicates + quarantined


def dirty_day():
    """Each defect kind in a known number; the comment gives the expected outcome."""
    rows = [
        bronze_row("ok1", 1),                                                   # silver
        bronze_row("ok1", 2),                                                   # duplicate (exact copy)
        bronze_row("ok1", 3, ts=f"{D}T11:00:00+08:00"),                         # duplicate (id copy)
        bronze_row("seen", 4),                                                  # duplicate of an earlier date
        bronze_row("nouser", 5, user_id=None),                                  # missing_user_id
        bronze_row("blankuser", 6, user_id="  "),                               # missing_user_id
        bronze_row("type", 7, event_type="teleport"),                           # unknown_event_type
        bronze_row("badts", 8, ts="31/11/2026 25:00"),                          # bad_timestamp
        bronze_row("future", 9, ts=f"{D + dt.timedelta(days=1)}T01:00:00Z"),    # bad_timestamp (after the day)
        bronze_row("old", 10, ts="2026-10-20T10:00:00Z"),                       # too_late (14 days)
        bronze_row("price", 11, price=-5.0),                                    # price_out_of_range
        bronze_row("pricebig", 12, price=2e6),                                  # price_out_of_range
        bronze_row("qty", 13, event_type="purchase", quantity=0),               # quantity_out_of_range
        bronze_row("rating", 14, event_type="rating", price=None, rating=6.0),  # rating_out_of_range
        bronze_row("norating", 15, event_type="rating", price=None),            # rating_out_of_range (required)
        bronze_row("noitem", 16, item_id=None),                                 # unknown_item (never arrives)
        bronze_row("unkitem", 17, item_id="i404"),                              # held_unknown_item
        bronze_row("unkuser", 18, user_id="u404"),                              # held_unknown_user
        bronze_row("late", 19, ts=f"{D - dt.timedelta(days=2)}T10:00:00Z"),     # silver, in an earlier partition
        bronze_row("wide", 20, event_type="search", item_id=None, price=None, query="ｒｕｎｎｉｎｇ　 ｓｈｏｅｓ"),
    ]
    # bot_rate: 31 events of u2 inside one minute, plus one more of u2 that day in another hour.
    rows += [bronze_row(f"bot{i}", 100 + i, user_id="u2", ts=f"{D}T05:00:{i:02d}Z") for i in range(31)]
    rows.append(bronze_row("bot_other", 200, user_id="u2", ts=f"{D}T09:00:00Z"))
    # impossible_sequence: 6 purchases by u3 in one second (5 are allowed), and one view that stays.
    rows += [bronze_row(f"burst{i}", 300 + i, user_id="u3", event_type="purchase", quantity=1,
                        ts=f"{D}T06:00:00.{i}Z") for i in range(6)]
    rows.append(bronze_row("burst_view", 310, user_id="u3", ts=f"{D}T06:00:00Z"))
    return rows


EXPECTED = {
    "missing_user_id": 2, "unknown_event_type": 1, "bad_timestamp": 2, "too_late": 1, "price_out_of_range": 2,
    "quantity_out_of_range": 1, "rating_out_of_range": 2, "unknown_item": 1, "held_unknown_item": 1,
    "held_unknown_user": 1, "bot_rate": 32, "impossible_sequence": 6,
}


def test_every_defect_kind_gets_its_reason_with_exact_counts_and_the_rows_balance(spark):
    labelled = label(spark, dirty_day(), earlier=["seen"]).cache()
    counts = event_counts(labelled)
    assert counts.quarantined == EXPECTED
    assert (counts.rows_out, counts.duplicates) == (4, 3)  # ok1, late, wide, burst_view; three copies
    assert counts.rows_in == len(dirty_day()) == counts.rows_out + counts.duplicates + counts.quarantined_total
    assert set(counts.quarantined) <= set(REASONS)
    got = outcomes(labelled)
    assert [got[e] for e in ("late", "wide", "burst_view", "seen")] == ["silver"] * 3 + ["duplicate"]
    assert got["ok1"] == ("duplicate", "duplicate", "silver")
    kept = labelled.where("_outcome = 'silver'").select("event_id", "landed_date", "event_date", "query").collect()
    by_id = {r["event_id"]: r for r in kept}
    assert by_id["late"]["event_date"] == D - dt.timedelta(days=2) and by_id["late"]["landed_date"] == D
    assert by_id["wide"]["query"] == "running shoes"
    labelled.unpersist()


def test_the_kept_copy_of_an_event_is_the_first_landed_one(spark):
    rows = [bronze_row("e1", 7, ts=f"{D}T12:00:00Z"), bronze_row("e1", 3, ts=f"{D}T11:00:00Z"),
            bronze_row("e1", 9, landed=D - dt.timedelta(days=1), ts=f"{D - dt.timedelta(days=1)}T23:00:00Z")]
    kept = label(spark, rows).where("_outcome = 'silver'").select("_line", "landed_date").collect()
    assert [tuple(r) for r in kept] == [(9, D - dt.timedelta(days=1))]


def test_a_clean_batch_loses_nothing_and_a_known_user_is_not_held(spark):
    rows = [bronze_row("a", 1), bronze_row("b", 2, user_id="u2")]
    assert outcomes(label(spark, rows)) == {"a": "silver", "b": "silver"}
    # ...but the same batch with u2 unknown holds its event: the check can fail.
    assert outcomes(label(spark, rows, known_users=("u1",)))["b"] == "held_unknown_user"


def test_unknown_master_data_is_quarantined_at_once_when_configured_or_when_the_hold_has_passed(spark):
    rows = [bronze_row("item", 1, item_id="i404"), bronze_row("user", 2, user_id="u404")]
    now = outcomes(label(spark, rows, params=CleanParams(unknown_master="quarantine")))
    assert now == {"item": "unknown_item", "user": "unknown_user"}
    later = outcomes(label(spark, rows, run_date=D + dt.timedelta(days=2)))  # landed 2 days before the run
    assert later == {"item": "unknown_item", "user": "unknown_user"}
    younger = outcomes(label(spark, rows, run_date=D + dt.timedelta(days=1)))
    assert younger == {"item": "held_unknown_item", "user": "held_unknown_user"}


# --------------------------------------------------------------------------------------------------
# Types, time zones, text, missing values


def test_timestamps_become_utc_instants_whatever_their_spelling(spark):
    from pyspark.sql import functions as F

    values = [("2026-11-03T10:00:00+08:00",), ("2026-11-03T02:00:00Z",), ("2019-10-01 00:00:00 UTC",),
              ("1793671200",), ("1793671200000",), ("2026-11-03 10:00:00",), ("2026-11-03T10:00:00.250-05:00",),
              ("not a time",), (None,)]
    df = spark.createDataFrame(values, "ts string")
    utc = [r[0] for r in df.select(parse_timestamp(F.col("ts"))).collect()]
    assert utc == [dt.datetime(2026, 11, 3, 2), dt.datetime(2026, 11, 3, 2), dt.datetime(2019, 10, 1),
                   dt.datetime(2026, 11, 3, 2), dt.datetime(2026, 11, 3, 2), dt.datetime(2026, 11, 3, 10),
                   dt.datetime(2026, 11, 3, 15, 0, 0, 250000), None, None]
    shanghai = df.select(parse_timestamp(F.col("ts"), "Asia/Shanghai")).collect()
    assert shanghai[5][0] == dt.datetime(2026, 11, 3, 2)  # no offset: read in the configured zone
    assert shanghai[0][0] == dt.datetime(2026, 11, 3, 2)  # an explicit offset wins over it


def test_text_is_nfkc_normalised_with_collapsed_whitespace_for_chinese_and_english(spark):
    rows = [bronze_row("a", 1, event_type="search", item_id=None, price=None, query="  降噪\u3000\u3000耳机  "),
            bronze_row("b", 2, event_type="review", price=None, rating=5.0, review_text="Ｇｒｅａｔ  ｓｏｕｎｄ！ 音质１０分"),
            bronze_row("c", 3, event_type="search", item_id=None, price=None, query=" \t ")]
    typed = {r["event_id"]: r for r in transform_type_events(frame(spark, rows)).collect()}
    assert typed["a"]["query"] == "降噪 耳机"
    assert typed["b"]["review_text"] == "Great sound! 音质10分"
    assert typed["c"]["query"] is None  # only whitespace is missing, and query keeps nulls


def _null_row(column, rule):
    event_type = (rule.event_types or ("purchase",))[0]
    fields = {"event_type": event_type, "quantity": 2 if event_type == "purchase" else None,
              "rating": 4 if event_type == "rating" else None, column: None}
    if column == "event_type":
        fields["event_type"] = None
    if event_type not in ("view", "click", "add_to_cart", "purchase") and column != "price":
        fields["price"] = None
    return bronze_row(f"null_{column}", 1, **fields)


@pytest.mark.parametrize("column", [c for c, r in MISSING_VALUE_RULES.items() if r.stage == "clean"])
def test_each_missing_value_rule_is_what_the_code_does(spark, column):
    rule = MISSING_VALUE_RULES[column]
    labelled = label(spark, [_null_row(column, rule)])
    row = labelled.collect()[0]
    if rule.action == "reject":
        assert row["_outcome"] == rule.value
        return
    assert row["_outcome"] == "silver"
    if rule.action == "default":
        assert row[column] == rule.value
    elif rule.action == "keep":
        assert row[column] is None
    elif rule.value == "own_session":
        assert row[column] == MISSING_SESSION_PREFIX + row["event_id"]
    elif rule.value == "item_list_price":
        assert row[column] == 10.0  # i1's list price
    else:
        pytest.fail(f"rule {rule} of {column} has no test")


def test_a_default_applies_only_to_the_event_types_of_its_rule(spark):
    rows = [bronze_row("view", 1, quantity=None), bronze_row("cart", 2, event_type="add_to_cart", quantity=None)]
    got = {r["event_id"]: r["quantity"] for r in label(spark, rows).collect()}
    assert got == {"view": None, "cart": 1}


def test_ranges_come_from_the_config(spark):
    rows = [bronze_row("p", 1, price=500.0)]
    assert outcomes(label(spark, rows)) == {"p": "silver"}
    tight = CleanParams(price_range=(0.0, 100.0))
    assert outcomes(label(spark, rows, params=tight)) == {"p": "price_out_of_range"}


def test_bad_clean_settings_are_named(tmp_path):
    with pytest.raises(ConfigError, match="clean.unknown_master is 'wait'"):
        CleanParams(unknown_master="wait")
    with pytest.raises(ConfigError, match="clean.outliers.action"):
        CleanParams.from_config(make_config(tmp_path, PORTRAIT__CLEAN__OUTLIERS__ACTION="drop"))
    with pytest.raises(ConfigError, match="clean.ranges.price: min 10.0 is above max 1.0"):
        CleanParams(price_range=(10.0, 1.0))


def _rating_range(tmp_path, **settings):
    """CleanParams of the profile with clean.ranges.rating replaced by `settings`."""
    from jobs.common.config import Config

    cfg = make_config(tmp_path)
    data = dict(cfg.data)
    data["clean"] = {**data["clean"], "ranges": {**data["clean"]["ranges"], "rating": settings}}
    return CleanParams.from_config(Config(cfg.profile, cfg.root, data))


def test_the_rating_range_and_step_come_from_the_config_as_numbers(tmp_path):
    assert (CleanParams.from_config(make_config(tmp_path)).rating_range, CleanParams().rating_step) == ((1.0, 5.0), None)
    movielens = CleanParams.from_config(make_config(tmp_path, PORTRAIT_DATASET="movielens-latest-small"))
    assert (movielens.rating_range, movielens.rating_step) == ((0.5, 5.0), 0.5)
    assert _rating_range(tmp_path, min="0.5", max=10, step=0.5).rating_range == (0.5, 10.0)


@pytest.mark.parametrize(("settings", "message"), [
    ({"min": "five", "max": 5}, "clean.ranges.rating.min is 'five'; write a number"),
    ({"min": 1, "max": None}, "clean.ranges.rating.max is None; write a number"),
    ({"min": 1, "max": ".inf"}, "clean.ranges.rating.max is '.inf'; write a number"),
    ({"min": 5, "max": 1}, "clean.ranges.rating: min 5.0 is above max 1.0"),
    ({"min": 1, "max": 5, "step": 0}, "clean.ranges.rating.step must be above 0, got 0.0"),
    ({"min": 1, "max": 5, "step": 0.3}, "clean.ranges.rating: max 5.0 is not min 1.0 plus whole steps of 0.3"),
    ({"min": 1, "max": 5, "steps": 0.5}, "clean.ranges.rating takes max, min, step, got"),
])
def test_a_bad_rating_range_is_named_with_what_to_write(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _rating_range(tmp_path, **settings)


def test_a_bad_quantity_range_is_named_too(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("clean.ranges.quantity.max is 9.5; write a whole number")):
        CleanParams.from_config(make_config(tmp_path, PORTRAIT__CLEAN__RANGES__QUANTITY__MAX="9.5"))


RATED = [("half", 3.5), ("whole", 4.0), ("lowest_half", 0.5), ("off_scale", 3.7), ("nan", float("nan")),
         ("none", None)]


def test_ratings_are_numbers_in_the_configured_range(spark):
    """3.5 stays 3.5; 0.5 is out of the default 1..5 and in a 0.5..5 range; NaN and a missing rating
    (what collect makes of `abc`) are out of range on a rating event."""
    rows = [bronze_row(name, n, event_type="rating", price=None, rating=value)
            for n, (name, value) in enumerate(RATED, start=1)]
    default = label(spark, rows)
    assert outcomes(default) == {"half": "silver", "whole": "silver", "lowest_half": "rating_out_of_range",
                                 "off_scale": "silver", "nan": "rating_out_of_range", "none": "rating_out_of_range"}
    kept = {r["event_id"]: r["rating"] for r in default.where("_outcome = 'silver'").collect()}
    assert kept == {"half": 3.5, "whole": 4.0, "off_scale": 3.7}
    half_stars = label(spark, rows, params=CleanParams(rating_range=(0.5, 5.0)))
    assert {e: o for e, o in outcomes(half_stars).items() if o == "silver"} == {
        "half": "silver", "whole": "silver", "lowest_half": "silver", "off_scale": "silver"}


def test_a_rating_step_quarantines_values_off_the_scale(spark):
    rows = [bronze_row(name, n, event_type="rating", price=None, rating=value)
            for n, (name, value) in enumerate(RATED, start=1)]
    rows.append(bronze_row("view", 9, rating=2.25))  # a rating on any event type is held to the scale
    got = outcomes(label(spark, rows, params=CleanParams(rating_range=(0.5, 5.0), rating_step=0.5)))
    assert got == {"half": "silver", "whole": "silver", "lowest_half": "silver", "off_scale": "rating_off_scale",
                   "nan": "rating_out_of_range", "none": "rating_out_of_range", "view": "rating_off_scale"}
    tenths = label(spark, [bronze_row("t", 1, event_type="rating", price=None, rating=0.3)],
                   params=CleanParams(rating_range=(0.1, 1.0), rating_step=0.1))
    assert outcomes(tenths) == {"t": "silver"}  # 0.3 is 0.1 + 2 steps, though (0.3 - 0.1) / 0.1 is not exactly 2


# --------------------------------------------------------------------------------------------------
# Rate rules and the outlier detector


def test_bot_rate_needs_more_than_the_limit_in_one_minute(spark):
    thirty = [bronze_row(f"a{i}", i, user_id="u2", ts=f"{D}T05:00:{i:02d}Z") for i in range(30)]
    assert set(outcomes(label(spark, thirty)).values()) == {"silver"}
    spread = [bronze_row(f"b{i}", i, user_id="u2", ts=f"{D}T05:{i // 20:02d}:{i % 20:02d}Z") for i in range(40)]
    assert set(outcomes(label(spark, spread)).values()) == {"silver"}  # 40 events, but 20 a minute
    other_day = bronze_row("yesterday", 99, landed=D, user_id="u2", ts=f"{D - dt.timedelta(days=1)}T05:00:00Z")
    got = outcomes(label(spark, [*thirty, bronze_row("a30", 30, user_id="u2", ts=f"{D}T05:00:59Z"), other_day]))
    assert sum(v == "bot_rate" for v in got.values()) == 31 and got["yesterday"] == "silver"


def test_robust_z_scores_flag_by_hand_and_remove_when_configured(spark):
    from pyspark.sql import functions as F

    # 20 users with 2..21 events on one landing day, and one with 100: over the 21 users the median is 12
    # and the median absolute deviation 5, so z = (100 - 12) / (1.4826 * 5).
    rows = [(key_of(f"u{n}"), "view", 1.0, None) for n in range(2, 22) for _ in range(n)]
    rows += [(key_of("heavy"), "view", 1.0, None)] * 100
    events = spark.createDataFrame(rows, "user_key string, event_type string, price double, quantity long").select(
        "*", F.lit(D).alias("landed_date"), F.lit("silver").alias("_outcome"), F.lit("landed").alias("_origin"))
    days = transform_user_days(events, CleanParams(outlier_z=5.0, outlier_min_users=20)).cache()
    heavy = days.where(F.col("user_key") == key_of("heavy")).collect()[0]
    assert heavy["z_events"] == pytest.approx(round((100 - 12) / (1.4826 * 5), 3))
    assert heavy["is_outlier"] and heavy["outlier_reason"] == "events z=11.9"
    assert days.where("is_outlier").count() == 1
    assert days.where(F.col("z_purchases").isNotNull()).count() == 0  # nobody bought: not scored
    removed = transform_remove_outliers(events, days)
    assert removed.where("_outcome = 'outlier'").count() == 100
    # Fewer active users than min_users: no scores, no flag.
    assert transform_user_days(events, CleanParams(outlier_min_users=22)).where("is_outlier").count() == 0
    days.unpersist()


def test_social_edges_are_pseudonymised_and_checked(spark):
    schema = "src_user_id string, dst_user_id string, edge_type string, ts string, _raw string, _line long, event_date date"
    edges = spark.createDataFrame([
        ("u1", "u2", "follow", f"{D}T01:00:00Z", "l1", 1, D),
        ("u1", "u2", "follow", f"{D}T01:00:00Z", "l2", 2, D),      # duplicate
        ("u1", "u3", "Share-To", f"{D}T02:00:00Z", "l3", 3, D),
        ("u1", None, "follow", f"{D}T03:00:00Z", "l4", 4, D),      # missing_user_id
        ("u2", "u3", "like", f"{D}T03:00:00Z", "l5", 5, D),        # unknown_event_type
        ("u2", "u3", "follow", "yesterday", "l6", 6, D),           # bad_timestamp
    ], schema)
    got = {r["_line"]: r for r in transform_social_edges(edges, KEY).collect()}
    assert [got[n]["_outcome"] for n in range(1, 7)] == [
        "silver", "duplicate", "silver", "missing_user_id", "unknown_event_type", "bad_timestamp"]
    assert (got[3]["src_key"], got[3]["dst_key"], got[3]["edge_type"]) == (key_of("u1"), key_of("u3"), "share_to")


# --------------------------------------------------------------------------------------------------
# run(): holds and releases, late events, idempotent reruns, the audit


D1, D2, D3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)
USERS = "user_id string, name string, email string, phone string, age long, gender string, occupation string, " \
        "city string, signup_date string, snapshot_date date"
ITEMS = "item_id string, title string, category_path string, brand string, price double, snapshot_date date"
EDGES = "src_user_id string, dst_user_id string, edge_type string, ts string, _raw string, _source_file string, " \
        "_line long, _ingested_at timestamp, event_date date, _parse_error string"


def _landed(day, rows):
    return [bronze_row(event_id, line, landed=day, **fields) for event_id, line, fields in rows]


def _bronze_lake(spark, cfg):
    """Three landing days; i2 reaches the item master only on D2, i3 and u9 never do."""
    from jobs.common.delta import replace_dates

    events = {
        D1: _landed(D1, [("e1", 1, {}), ("e1", 2, {}), ("e2", 3, {"item_id": "i2"}),
                         ("e3", 4, {"user_id": "u2", "item_id": "i3", "event_type": "click"}),
                         ("e4", 5, {"user_id": "u9"})]),
        D2: _landed(D2, [("e1", 1, {"ts": f"{D1}T10:00:00+08:00"}),                 # landed again a day later
                         ("e6", 2, {"ts": f"{D1}T23:00:00Z"}),                      # late: belongs to D1
                         ("e7", 3, {"user_id": "u2", "event_type": "purchase", "price": None}),
                         ("e8", 4, {"ts": "2026-10-20T10:00:00Z"})]),               # too late
        D3: _landed(D3, [("e9", 1, {})]),
    }
    broken = bronze_row("x", 9, landed=D1, _raw="{broken")
    events[D1].append(broken[:-1] + ("unparseable_json",))  # collect's problem, not clean's
    for day, rows in events.items():
        replace_dates(frame(spark, rows), cfg, "bronze.events", [day])
        users = [(u, "名字", f"{u}@example.com", "13800000000", 30, "F", "teacher", "上海", "2025-01-01", day)
                 for u in ("u1", "u2")]
        replace_dates(spark.createDataFrame(users, USERS), cfg, "bronze.users", [day])
        items = [("i1", "Ｐｈｏｎｅ", "phones>smartphones", "Acme", 10.0, day)]
        if day >= D2:
            items.append(("i2", "Bag", "shoes_bags>handbags", None, 20.0, day))
        replace_dates(spark.createDataFrame(items, ITEMS), cfg, "bronze.items", [day])
    edges = [("u1", "u2", "follow", f"{D1}T08:00:00Z", 1), ("u1", "u2", "follow", f"{D1}T08:00:00Z", 2),
             ("u2", None, "share_to", f"{D1}T09:00:00Z", 3)]
    rows = [(src, dst, kind, ts, json.dumps([src, dst, kind, ts]), f"social_edges/event_date={D1}/e.jsonl", line,
             INGESTED, D1, None) for src, dst, kind, ts, line in edges]
    replace_dates(spark.createDataFrame(rows, EDGES), cfg, "bronze.social_edges", [D1])


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    from jobs.clean import run

    cfg = make_config(tmp_path_factory.mktemp("clean_lake"))
    _bronze_lake(spark, cfg)
    results = {day: run(spark, cfg, day) for day in (D1, D2, D3)}
    return cfg, results


def _events_table(spark, cfg, name="silver.events"):
    from jobs.common.delta import read_table

    return read_table(spark, cfg, name)


def test_run_accounts_for_every_row_of_each_landing_day(lake):
    _, results = lake
    counts = {day: next(t for t in r.tables if t.table == "silver.events") for day, r in results.items()}
    # D1: e1 kept, its copy a duplicate; e2 and e3 wait for their items, e4 for its user.
    assert (counts[D1].rows_in, counts[D1].rows_out, counts[D1].duplicates) == (5, 1, 1)
    assert counts[D1].quarantined == {"held_unknown_item": 2, "held_unknown_user": 1}
    # D2: four landed rows, plus e2 released because i2 arrived; e3 and e4 still wait (not counted).
    assert (counts[D2].rows_in, counts[D2].rows_out, counts[D2].duplicates) == (5, 3, 1)
    assert counts[D2].quarantined == {"too_late": 1}
    assert results[D2].details["released"] == 1 and results[D2].details["still_held"] == 2
    # D3: e9, and the hold of e3 and e4 has run out.
    assert (counts[D3].rows_in, counts[D3].rows_out, counts[D3].duplicates) == (3, 1, 0)
    assert counts[D3].quarantined == {"unknown_item": 1, "unknown_user": 1}
    for result in results.values():
        for table in result.tables:
            assert table.rows_in == table.rows_out + table.duplicates + table.quarantined_total, table


def test_run_puts_late_and_released_events_in_their_own_partitions(spark, lake):
    cfg, _ = lake
    rows = {r["event_id"]: (r["event_date"], r["landed_date"], r["price"], r["quantity"])
            for r in _events_table(spark, cfg).collect()}
    assert rows == {
        "e1": (D1, D1, 10.0, None), "e2": (D1, D1, 10.0, None), "e6": (D1, D2, 10.0, None),
        "e7": (D2, D2, 10.0, 1), "e9": (D3, D3, 10.0, None),
    }


def test_run_keeps_quarantine_and_hold_in_step_with_the_audit(spark, lake):
    from pyspark.sql import functions as F

    cfg, _ = lake
    quarantine = _events_table(spark, cfg, "bronze.quarantine").where("step = 'clean'")
    got = sorted((r["event_date"], r["reason"], r["_line"]) for r in quarantine.collect())
    assert got == [(D1, "missing_user_id", 3), (D1, "unknown_item", 4), (D1, "unknown_user", 5), (D2, "too_late", 4)]
    held = _events_table(spark, cfg, "silver.held_events").select("event_id", "status", "resolved_on", "hold_reason")
    assert sorted(tuple(r) for r in held.collect()) == [
        ("e2", "released", D2, "held_unknown_item"), ("e3", "expired", D3, "held_unknown_item"),
        ("e4", "expired", D3, "held_unknown_user")]
    audit = _events_table(spark, cfg, "ops.run_audit").where(F.col("step") == "clean")
    assert audit.where("NOT balanced").count() == 0
    assert set(HELD_REASONS) <= set(REASONS)


def test_rerunning_a_date_changes_nothing(spark, lake):
    from jobs.clean import run

    cfg, results = lake
    tables = ("silver.events", "bronze.quarantine", "silver.held_events", "silver.users", "silver.items",
              "silver.user_flags", "silver.user_contacts", "silver.social_edges")

    def snapshot():
        return {t: sorted(map(str, _events_table(spark, cfg, t).drop("_ingested_at").collect())) for t in tables}

    before = snapshot()
    again = run(spark, cfg, D2)
    assert again.tables == results[D2].tables
    assert snapshot() == before


def test_run_writes_no_raw_identity_and_generalised_users(spark, lake):
    cfg, _ = lake
    users = {r["user_key"]: r for r in _events_table(spark, cfg, "silver.users").where(f"snapshot_date = '{D3}'").collect()}
    assert set(users) == {key_of("u1"), key_of("u2")}
    assert (users[key_of("u1")]["city"], users[key_of("u1")]["age_band"]) == ("Shanghai", "25-34")
    contacts = _events_table(spark, cfg, "silver.user_contacts").where(f"snapshot_date = '{D3}'").collect()
    assert {c["user_key"] for c in contacts} == set(users)
    assert all(c["email_key"] != "u1@example.com" and len(c["phone_key"]) == 64 for c in contacts)
    items = {r["item_id"]: r for r in _events_table(spark, cfg, "silver.items").where(f"snapshot_date = '{D3}'").collect()}
    assert (items["i1"]["title"], items["i1"]["category"], items["i2"]["brand"]) == ("Phone", "phones", None)


def test_docs_list_exactly_the_missing_value_rules_of_the_code():
    from tests.conftest import REPO

    text = (REPO / "docs" / "cleaning.md").read_text(encoding="utf-8")
    table = text.split("<!-- missing-values: start -->")[1].split("<!-- missing-values: end -->")[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table.strip().splitlines()[2:]]
    documented = {row[0]: tuple(row[1:]) for row in rows}
    in_code = {column: (rule.action, "" if rule.value is None else str(rule.value),
                        "all" if rule.event_types is None else ", ".join(rule.event_types), rule.note)
               for column, rule in MISSING_VALUE_RULES.items()}
    assert documented == in_code


def test_run_cleans_social_edges_of_its_landing_dates(spark, lake):
    cfg, results = lake
    edges = [(r["src_key"], r["dst_key"], r["edge_type"], r["event_date"], r["landed_date"])
             for r in _events_table(spark, cfg, "silver.social_edges").collect()]
    assert edges == [(key_of("u1"), key_of("u2"), "follow", D1, D1)]
    audit = next(t for t in results[D1].tables if t.table == "silver.social_edges")
    assert (audit.rows_in, audit.rows_out, audit.duplicates, audit.quarantined) == (3, 1, 1, {"missing_user_id": 1})


def test_an_older_silver_events_without_landed_date_is_named_before_anything_is_written(spark, tmp_path):
    from jobs.clean import run
    from jobs.common.delta import replace_dates, table_exists
    from jobs.common.errors import InputDataError

    cfg = make_config(tmp_path)
    old = spark.createDataFrame([("e1", key_of("u1"), D)], "event_id string, user_key string, event_date date")
    replace_dates(old, cfg, "silver.events", [D])
    with pytest.raises(InputDataError, match="silver.events at .* has no landed_date column"):
        run(spark, cfg, D)
    assert not table_exists(spark, cfg, "silver.users")


def test_a_megabyte_in_each_text_column_is_cut_to_its_cap_and_counted(spark):
    import time

    from jobs.clean import DEFAULT_MAX_TEXT_CHARS, transform_items, truncated_counts

    mega = "好评 great " * 104_858  # ~1 MB of UTF-8, 943k characters
    rows = [bronze_row("r", 1, event_type="review", price=None, rating=5.0, review_text=mega),
            bronze_row("q", 2, event_type="search", item_id=None, price=None, query=mega),
            bronze_row("s", 3, event_type="search", item_id=None, price=None, query="short")]
    params = CleanParams(max_text_chars={"query": 10, "review_text": 25, "title": 7, "brand": 3})
    started = time.monotonic()
    typed = {r["event_id"]: r for r in transform_type_events(frame(spark, rows), params).collect()}
    assert typed["r"]["review_text"] == "好评 great 好评 great 好评 grea"  # 25 characters
    assert (typed["q"]["query"], typed["s"]["query"]) == ("好评 great 好", "short")
    assert truncated_counts(frame(spark, rows), params.max_text_chars) == {"query": 1, "review_text": 1}
    items = spark.createDataFrame([("i1", mega, "electronics>phones", mega, 1.0, D)],
                                  "item_id string, title string, category_path string, brand string, "
                                  "price double, snapshot_date date")
    item = transform_items(items, max_text_chars=params.max_text_chars).collect()[0]
    assert (item["title"], item["brand"]) == ("好评 grea", "好评")  # the brand's "好评 " cut, then trimmed
    assert truncated_counts(items, params.max_text_chars) == {"title": 1, "brand": 1}
    assert time.monotonic() - started < 60
    assert CleanParams().max_text_chars == DEFAULT_MAX_TEXT_CHARS


@pytest.mark.parametrize(("caps", "message"), [({"review_text": 0}, "clean.max_text_chars.review_text is 0"),
                                               ({"body": 5}, r"clean.max_text_chars names \['body'\]")])
def test_bad_text_caps_are_named(caps, message):
    with pytest.raises(ConfigError, match=message):
        CleanParams(max_text_chars=caps)
