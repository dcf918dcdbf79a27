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


# --------------------------------------------------------------------------------------------------
# Hostile input (issue 22): what used to pass silently


def test_a_line_with_raw_control_characters_is_quarantined_as_such(spark):
    control = _event(event_id="c1", query="a\x01b")  # json.dumps escapes it; this line does not
    raw_control = control.replace("\\u0001", "\x01")
    nul = _event(event_id="c2").replace('"ios"', '"io\x00s"')
    lines = spark.createDataFrame([(raw_control, "f.jsonl"), (nul, "f.jsonl"), (control, "f.jsonl")],
                                  "_raw string, _source_file string")
    rows = {r["_raw"]: r for r in transform_parse_events(lines, D).collect()}
    assert rows[raw_control]["_parse_error"] == "control_characters"
    assert rows[nul]["_parse_error"] == "control_characters"
    assert rows[control]["_parse_error"] is None  # escaped in JSON: the line is fine, clean strips the value


def test_a_number_that_is_not_one_is_quarantined_and_a_quoted_number_is_read(spark):
    lines = spark.createDataFrame(
        [(_event(event_id="p1", price="abc"), "f.jsonl"), (_event(event_id="p2", price="12.5"), "f.jsonl"),
         (_event(event_id="p3", event_type="purchase", quantity="two"), "f.jsonl"),
         (_event(event_id="p4", price="NA"), "f.jsonl"), (_event(event_id="p5", price=None), "f.jsonl"),
         (_event(event_id="p6", rating=True), "f.jsonl")],
        "_raw string, _source_file string",
    )
    rows = {r["event_id"]: r for r in transform_parse_events(lines, D).collect()}
    assert {e: (r["price"], r["_parse_error"]) for e, r in rows.items()} == {
        "p1": (None, "bad_number"), "p2": (12.5, None), "p3": (9.5, "bad_number"), "p4": (None, None),
        "p5": (None, None), "p6": (9.5, "bad_number")}


def test_a_csv_cell_that_is_not_a_number_is_quarantined(spark):
    from jobs.common.landing import Source

    source = Source("shop", "events", "events", columns={"id": "event_id", "cost": "price", "n": "quantity"})
    lines = spark.createDataFrame(
        [(["e1", "abc", "1"], "csv"), (["e2", "7.25", "3.0"], "csv"), (["e3", "", "NULL"], "csv"),
         (["e4", "1", "x"], "csv")],
        "_cells array<string>, _format string",
    ).withColumn("_raw", __import__("pyspark.sql.functions", fromlist=["F"]).concat_ws(",", "_cells"))
    rows = {r["event_id"]: r for r in transform_parse_events(lines, D, source).collect()}
    assert {e: (r["price"], r["quantity"], r["_parse_error"]) for e, r in rows.items()} == {
        "e1": (None, 1, "bad_number"), "e2": (7.25, 3, None), "e3": (None, None, None),
        "e4": (1.0, None, "bad_number")}


def test_dates_that_only_start_like_a_date_are_bad_timestamps(spark):
    from pyspark.sql import functions as F

    from jobs.clean import parse_timestamp

    values = ["20261104", "2026-11-04xyz", "2026-11-04T10:00:00+08:00junk", "2026-11-04", "2026-11-04 10:00",
              "2026-11-04T10:00:00.5+0800", "2019-10-01 00:00:00 UTC", "2026-11-04 10:00:00 Asia/Shanghai",
              "1793671200", "1793671200000"]
    df = spark.createDataFrame([(v,) for v in values], "ts string")
    parsed = dict(zip(values, [r[0] for r in df.select(parse_timestamp(F.col("ts"))).collect()], strict=True))
    assert [v for v, t in parsed.items() if t is None] == ["20261104", "2026-11-04xyz", "2026-11-04T10:00:00+08:00junk"]
    assert parsed["2026-11-04"] == dt.datetime(2026, 11, 4)
    assert parsed["2026-11-04T10:00:00.5+0800"] == dt.datetime(2026, 11, 4, 2, 0, 0, 500000)
    assert parsed["2026-11-04 10:00:00 Asia/Shanghai"] == dt.datetime(2026, 11, 4, 2)


def test_invisible_and_control_characters_do_not_reach_silver_text(spark):
    from tests.test_clean import bronze_row, frame

    review = "\u202eGreat\u200b sound\x00 \x1b[31mred\x1b[0m\ufeff!"
    rows = [bronze_row("a", 1, event_type="review", price=None, rating=5.0, review_text=review,
                       device="i\u200dos", channel="\x1b[1morganic", geo="Shang\u2066hai"),
            bronze_row("b", 2, event_type="search", item_id=None, price=None, query="\u200b\u200f"),
            bronze_row("c\u200b", 3, user_id="u1\u00ad", item_id="i1\u2060", session_id="s1\x07")]
    typed = {r["_line"]: r for r in transform_type_events(frame(spark, rows)).collect()}
    assert typed[1]["review_text"] == "Great sound red!"
    assert (typed[1]["device"], typed[1]["channel"], typed[1]["geo"]) == ("ios", "organic", "Shanghai")
    assert typed[2]["query"] is None  # nothing visible is left: missing
    assert (typed[3]["event_id"], typed[3]["user_id"], typed[3]["item_id"], typed[3]["session_id"]) == (
        "c", "u1", "i1", "s1")


def test_item_titles_lose_invisible_characters_too(spark):
    df = spark.createDataFrame([("i1", "Phone\u200b \u202eX\x1b[0m", "electronics>phones", "Ac\u200dme", 10.0, D)],
                               "item_id string, title string, category_path string, brand string, price double, "
                               "snapshot_date date")
    row = transform_items(df).collect()[0]
    assert (row["title"], row["brand"]) == ("Phone X", "Acme")


def test_a_source_declaring_iso_times_refuses_the_basic_format_and_trailing_junk():
    import pandas as pd

    from jobs.common.landing import TimestampFormat, parse_instants

    values = pd.Series(["20261104", "2026-11-04xyz", "20261104T100000Z", "2026-11-04T10:00:00+08:00", "2026-11-04"])
    got = parse_instants(values, TimestampFormat(declared=True)).tolist()
    assert [pd.isna(v) for v in got] == [True, True, True, False, False]
    assert got[3] == pd.Timestamp("2026-11-04T02:00:00Z")
    declared = parse_instants(pd.Series(["20261104", "2026-11-04"]), TimestampFormat("%Y%m%d", declared=True)).tolist()
    assert declared[0] == pd.Timestamp("2026-11-04T00:00:00Z") and pd.isna(declared[1])
