import datetime as dt
import json

import pytest

from jobs.clean import transform_dedupe, transform_items, transform_type_events, transform_users
from jobs.collect import transform_parse_events

pytestmark = pytest.mark.spark
D = dt.date(2026, 11, 3)


def _event(**fields):
    base = {"event_id": "e1", "user_id": "u1", "session_id": "s1", "event_type": "view", "item_id": "i1",
            "ts": "2026-11-03T10:00:00+08:00", "price": 9.5, "quantity": None, "query": None, "review_text": None,
            "rating": None, "device": "ios", "channel": "organic", "geo": "Shanghai"}
    base.update(fields)
    return json.dumps(base, ensure_ascii=False)


def test_parse_types_good_lines_and_names_the_reason_for_bad_ones(spark):
    lines = spark.createDataFrame(
        [(_event(), "f.jsonl"), ('{"event_id": "e2", "price": ', "f.jsonl"), (_event(event_id=None), "f.jsonl"),
         ("[1, 2]", "f.jsonl")],
        "_raw string, _source_file string",
    )
    rows = transform_parse_events(lines, D).orderBy("_raw").collect()
    by_raw = {r["_raw"]: r for r in rows}
    good = by_raw[_event()]
    assert (good["event_id"], good["price"], good["event_date"], good["_parse_error"]) == ("e1", 9.5, D, None)
    assert by_raw['{"event_id": "e2", "price": ']["_parse_error"] == "unparseable_json"
    assert by_raw[_event(event_id=None)]["_parse_error"] == "missing_event_id"
    assert by_raw["[1, 2]"]["_parse_error"] == "unparseable_json"


def test_type_events_converts_offsets_to_utc_and_rejects_with_reasons(spark):
    df = spark.createDataFrame(
        [("e1", "u1", "view", "i1", "2026-11-03T10:00:00+08:00", 1.0, None),
         ("e2", "u1", "teleport", "i1", "2026-11-03T10:00:00+08:00", 1.0, None),
         ("e3", "u1", "view", "i1", "not a time", 1.0, None),
         ("e4", None, "view", "i1", "2026-11-03T10:00:00Z", 1.0, None),
         ("e5", "u1", "purchase", "i1", "2026-11-03T01:00:00-05:00", -3.0, 1),
         ("e6", "u1", "purchase", "i1", "2026-11-03T01:00:00-05:00", 3.0, 0)],
        "event_id string, user_id string, event_type string, item_id string, ts string, price double, quantity long",
    )
    rows = {r["event_id"]: r for r in transform_type_events(df).collect()}
    assert rows["e1"]["ts"] == dt.datetime(2026, 11, 3, 2, 0, 0)  # session time zone is UTC
    assert rows["e1"]["_reject_reason"] is None
    assert [rows[e]["_reject_reason"] for e in ("e2", "e3", "e4", "e5", "e6")] == [
        "unknown_event_type", "bad_timestamp", "missing_user_id", "price_out_of_range", "quantity_out_of_range"]


def test_dedupe_keeps_the_first_ingested_copy(spark):
    df = spark.createDataFrame(
        [("e1", 2, "b.jsonl", "x"), ("e1", 1, "a.jsonl", "y"), ("e2", 1, "a.jsonl", "z"), ("e1", 1, "a.jsonl", "w")],
        "event_id string, _ingested_at int, _source_file string, _raw string",
    )
    assert sorted(tuple(r) for r in transform_dedupe(df).collect()) == [("e1", 1, "a.jsonl", "w"), ("e2", 1, "a.jsonl", "z")]


def test_users_lose_direct_identifiers_and_get_age_bands(spark):
    df = spark.createDataFrame(
        [("u1", "张三", "z@x.cn", "13800000000", 17, "f", None, " Shanghai ", "2025-01-02", D),
         ("u2", "Li Si", "l@x.cn", "13900000000", 34, "M", "engineer", "Beijing", "2025-03-04", D),
         ("u3", "Wang", None, None, None, None, "teacher", None, None, D)],
        "user_id string, name string, email string, phone string, age long, gender string, occupation string, "
        "city string, signup_date string, snapshot_date date",
    )
    out = transform_users(df, b"k" * 32)
    assert set(out.columns) == {"user_key", "age_band", "gender", "occupation", "city", "signup_date", "snapshot_date"}
    rows = sorted((r["age_band"], r["gender"], r["occupation"], r["city"]) for r in out.collect())
    assert rows == [("25-34", "M", "engineer", "Beijing"), ("<18", "F", "unknown", "Shanghai"),
                    ("unknown", "U", "teacher", "unknown")]


def test_items_map_to_the_taxonomy_top_level(spark):
    df = spark.createDataFrame(
        [("i1", " Phone X ", "Electronics > Phones", "Acme", 10.0, D), ("i2", "Thing", "martian_goods>rocks", None, 1.0, D)],
        "item_id string, title string, category_path string, brand string, price double, snapshot_date date",
    )
    rows = {r["item_id"]: r for r in transform_items(df).collect()}
    assert (rows["i1"]["category"], rows["i1"]["category_path"], rows["i1"]["title"]) == (
        "electronics", "electronics>phones", "Phone X")
    assert (rows["i2"]["category"], rows["i2"]["brand"]) == ("unknown", None)  # a missing brand stays missing
