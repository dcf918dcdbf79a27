"""Sources declared in config: delimiters, header or column_names, timestamp formats, constants,
history files routed to UTC days, the relative calendar, and the mapping-mismatch error. Hand-made files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from jobs.collect import preflight, read_file
from jobs.common.config import Config
from jobs.common.errors import ConfigError, InputDataError
from jobs.common.landing import (
    FileLayout,
    RelativeCalendar,
    TimestampFormat,
    calendar_instants,
    iso_utc,
    parse_instants,
    parse_source,
)
from tests.conftest import make_config


def with_sources(cfg: Config, sources: dict) -> Config:
    """The profile with `collect.sources` replaced (as a dataset overlay does)."""
    data = dict(cfg.data)
    data["collect"] = {**data["collect"], "sources": sources, "max_quarantine_share": 0.5}
    return Config(cfg.profile, cfg.root, data)


def records(path: Path, layout: FileLayout, wanted: list[str]) -> list[tuple]:
    out = []
    for batch in read_file(0, str(path), "csv", wanted, layout=layout):
        for row in batch.to_pylist():
            out.append((row["_line"], row["_reason"], row["_cells"]))
    return out


# --------------------------------------------------------------------------------------------------
# Delimiters and headers (the reader, no Spark).


@pytest.mark.parametrize("delimiter, text", [
    ("\t", "user\titem\tts\nu1\ti1\t100\nu2\t\t200\n"),
    ("::", "user::item::ts\nu1::i1::100\nu2::::200\n"),
    ("|", "user|item|ts\nu1|i1|100\nu2||200\n"),
    (",", 'user,item,ts\nu1,i1,100\nu2,"",200\n'),
])
def test_each_delimiter_cuts_cells_by_the_header(tmp_path, delimiter, text):
    path = tmp_path / "f.txt"
    path.write_text(text)
    layout = parse_source("s", {"kind": "events", "delimiter": delimiter, "format": "csv", "event_id": "hash_of_line",
                                "columns": {"user": "user_id", "item": "item_id", "ts": "ts"}}, "w").layout
    assert records(path, layout, ["ts", "user", "item"]) == [
        (2, None, ["100", "u1", "i1"]), (3, None, ["200", "u2", None])]


def test_whitespace_aligned_columns_with_a_leading_space(tmp_path):
    path = tmp_path / "cdnow.txt"
    path.write_text(" customer_id  date number_of_cds  dollar_value\n 00001 19970101  1   11.77\n"
                    " 00002 19970112  2   12.00  extra\n")
    layout = FileLayout(delimiter="whitespace")
    assert records(path, layout, ["customer_id", "dollar_value", "date"]) == [
        (2, None, ["00001", "11.77", "19970101"]), (3, "wrong_column_count", None)]


def test_a_file_without_header_reads_column_names_and_line_one_is_a_record(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::31::2.5::1260759144\n\n2::10::4::835355493::x\n")
    source = parse_source("r", {"kind": "events", "delimiter": "::", "header": False, "format": "csv",
                                "column_names": ["userId", "movieId", "rating", "timestamp"],
                                "event_id": "hash_of_line",
                                "columns": {"userId": "user_id", "movieId": "item_id", "timestamp": "ts"}}, "w")
    assert records(path, source.layout, ["userId", "movieId", "timestamp"]) == [
        (1, None, ["1", "31", "1260759144"]), (3, "wrong_column_count", None)]


@pytest.mark.parametrize("settings, message", [
    ({"header": False}, "column_names must list the file's columns"),
    ({"column_names": ["a"]}, "column_names is for files without a header row"),
    ({"header": False, "column_names": ["a", "t"]}, "columns maps 'u', which w.column_names does not list"),
    ({"delimiter": '"'}, "delimiter is '\"'"),
    ({"timestamp": {"format": "yyyy-MM-dd"}}, "timestamp.format is 'yyyy-MM-dd'"),
    ({"timestamp": {"format": "epoch_s", "zone": "Mars/Base"}}, "not a time zone"),
    ({"layout": "weekly"}, "layout is 'weekly'"),
    ({"constants": {"event_type": "rating", "ts": "x"}}, "constants sets 'ts', which w.columns already maps"),
    ({"constants": {"colour": "red"}}, "constants sets 'colour', which is not a events field"),
    ({"layout": "history", "calendar": {"user": "u", "sequence": "n", "days_since_previous": "d",
                                        "start": "2017-01-01"}}, "has both a calendar and a ts column"),
    ({"calendar": {"user": "u", "sequence": "n", "days_since_previous": "d", "start": "2017-01-01"}},
     "calendar derives event times; it needs kind: events and layout: history"),
    ({"format": "xlsx"}, "format is 'xlsx'"),
])
def test_bad_layout_settings_name_the_setting(settings, message):
    base = {"kind": "events", "event_id": "hash_of_line", "columns": {"u": "user_id", "t": "ts"}}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        parse_source("s", {**base, **settings}, "w")


# --------------------------------------------------------------------------------------------------
# Timestamp formats and the relative calendar (pandas; the same functions run inside collect).


def as_iso(values, spec) -> list:
    return iso_utc(parse_instants(pd.Series(values, dtype=object), spec)).tolist()


def test_epoch_seconds_and_milliseconds():
    assert as_iso(["1260759144", 1260759179, "12x", None], TimestampFormat("epoch_s")) == [
        "2009-12-14T02:52:24+00:00", "2009-12-14T02:52:59+00:00", None, None]
    assert as_iso(["1260759144123"], TimestampFormat("epoch_ms")) == ["2009-12-14T02:52:24.123000+00:00"]


def test_a_strptime_pattern_is_read_in_the_sources_zone():
    spec = TimestampFormat("%Y%m%d", "America/New_York", True)
    assert as_iso(["19970101", "19970701", "1997-01-01", "19971340"], spec) == [
        "1997-01-01T05:00:00+00:00", "1997-07-01T04:00:00+00:00", None, None]


def test_iso_values_keep_their_offset_and_naive_ones_take_the_zone():
    spec = TimestampFormat("iso", "Asia/Shanghai", True)
    assert as_iso(["2019-10-01T00:00:00+08:00", "2019-10-01 23:30:00", "2019-10-01T01:00:00Z", "noon"], spec) == [
        "2019-09-30T16:00:00+00:00", "2019-10-01T15:30:00+00:00", "2019-10-01T01:00:00+00:00", None]


def test_the_relative_calendar_adds_days_since_the_previous_order_per_user():
    calendar = RelativeCalendar("u", "n", "d", "h", dt.date(2017, 1, 1), "UTC")
    frame = pd.DataFrame({  # two lines of user 1's first order; orders out of order in the file
        "u": ["1", "1", "1", "2", "2", "1", "3", "3"],
        "n": [1, 1, 3, 1, 2, 2, 1, 2],
        "d": [None, None, 3.0, None, 30.0, 7.0, None, None],
        "h": [8, 8, 0, 23, 5, 10, 9, 9],
    })
    got = iso_utc(calendar_instants(frame.u, frame.n, frame.d, frame.h, calendar)).tolist()
    assert got == ["2017-01-01T08:00:00+00:00", "2017-01-01T08:00:00+00:00", "2017-01-11T00:00:00+00:00",
                   "2017-01-01T23:00:00+00:00", "2017-01-31T05:00:00+00:00", "2017-01-08T10:00:00+00:00",
                   "2017-01-01T09:00:00+00:00", None]  # user 3's second order has no gap: unknown


# --------------------------------------------------------------------------------------------------
# The mapping-mismatch error, before Spark starts.


def test_a_file_lacking_a_mapped_column_fails_preflight_naming_file_column_and_setting(tmp_path):
    folder = tmp_path / "landing" / "ml"
    folder.mkdir(parents=True)
    (folder / "ratings.csv").write_text("userId,item,rating,timestamp\n1,31,2.5,1260759144\n")
    cfg = with_sources(make_config(tmp_path), {"ratings": {
        "kind": "events", "folder": "ml", "layout": "history", "event_id": "hash_of_line",
        "timestamp": "epoch_s", "constants": {"event_type": "rating"},
        "columns": {"userId": "user_id", "movieId": "item_id", "timestamp": "ts"}}})
    with pytest.raises(InputDataError) as err:
        preflight(cfg, dt.date(2009, 12, 14))
    assert str(err.value).startswith(
        f"collect.sources.ratings.columns maps 'movieId', but {folder / 'ratings.csv'} has columns "
        "userId, item, rating, timestamp")


def test_column_names_that_do_not_fit_the_first_line_fail_preflight(tmp_path):
    folder = tmp_path / "landing" / "ml"
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_text("1,31,2.5,1260759144\n")  # commas, but the source says ::
    cfg = with_sources(make_config(tmp_path), {"ratings": {
        "kind": "events", "folder": "ml", "layout": "history", "event_id": "hash_of_line", "format": "csv",
        "delimiter": "::", "header": False, "column_names": ["u", "i", "r", "t"], "timestamp": "epoch_s",
        "columns": {"u": "user_id", "i": "item_id", "t": "ts"}}})
    with pytest.raises(InputDataError, match=r"column_names lists 4 columns \(u, i, r, t\), but the first record "
                                             r"of .*ratings.dat has 1 cells \(delimiter '::'\)"):
        preflight(cfg, dt.date(2009, 12, 14))


def test_a_missing_history_folder_is_named(tmp_path):
    cfg = with_sources(make_config(tmp_path), {"ratings": {
        "kind": "events", "folder": "ml", "layout": "history", "event_id": "hash_of_line",
        "timestamp": "epoch_s", "columns": {"u": "user_id", "t": "ts"}}})
    with pytest.raises(InputDataError, match=r"no ratings history at .*/landing/ml"):
        preflight(cfg, dt.date(2009, 12, 14))


# --------------------------------------------------------------------------------------------------
# Collect end to end on history files (Spark).

HISTORY_DAYS = [dt.date(1997, 1, 1), dt.date(1997, 1, 2)]


@pytest.fixture(scope="module")
def history_run(spark, tmp_path_factory):
    """A CDNOW-like purchase history (one file, New York dates), naive New York times near midnight in
    JSON lines, and an Instacart-like calendar source."""
    from jobs.collect import run
    from jobs.common.delta import read_table

    base = tmp_path_factory.mktemp("history")
    shop = base / "landing" / "cdnow"
    shop.mkdir(parents=True)
    (shop / "CDNOW_master.txt").write_text(
        " customer_id  date number_of_cds  dollar_value\n"
        " 00001 19970101  1   11.77\n"      # New York midnight = 05:00 UTC on 1 Jan
        " 00002 19961231  1   12.00\n"      # before the range: another run's day
        " 00003 19970102  2   20.50\n"
        " 00004 1997xx02  1    5.00\n"      # no usable time: stays under the run date, clean rejects it
        " 00005 19970103  1    9.99\n")     # after the range
    orders = base / "landing" / "orders"
    orders.mkdir(parents=True)
    (orders / "lines.csv").write_text(
        ",order_id,user_id,order_number,order_dow,order_hour_of_day,days_since_prior_order,product_id\n"
        "0,10,7,1,2,23,,196\n"
        "1,10,7,1,2,23,,14084\n"
        "2,11,7,2,3,8,1.0,196\n"
        "3,12,8,1,0,9,,42\n")
    visits = base / "landing" / "visits"
    visits.mkdir(parents=True)
    (visits / "all.jsonl").write_text(  # naive New York clock times near midnight
        '{"vid": "v1", "who": "a", "what": "i9", "when": "1996-12-31 23:30:00"}\n'   # 04:30 UTC on 1 Jan
        '{"vid": "v2", "who": "a", "what": "i9", "when": "1997-01-01 18:59:59"}\n'   # 23:59:59 UTC on 1 Jan
        '{"vid": "v3", "who": "a", "what": "i9", "when": "1997-01-02 19:00:00"}\n')  # 00:00 UTC on 3 Jan: later
    sources = {
        "visits": {"kind": "events", "folder": "visits", "layout": "history",
                   "timestamp": {"format": "iso", "zone": "America/New_York"}, "constants": {"event_type": "view"},
                   "columns": {"vid": "event_id", "who": "user_id", "what": "item_id", "when": "ts"}},
        "cdnow": {"kind": "events", "folder": "cdnow", "layout": "history", "format": "csv",
                  "delimiter": " ", "event_id": "hash_of_line", "emit_master": True,
                  "timestamp": {"format": "%Y%m%d", "zone": "America/New_York"},
                  "constants": {"event_type": "purchase", "item_id": "cdnow-catalogue"},
                  "columns": {"customer_id": "user_id", "date": "ts", "dollar_value": "price"}},
        "orders": {"kind": "events", "folder": "orders", "layout": "history", "event_id": "hash_of_line",
                   "emit_master": True, "constants": {"event_type": "purchase"},
                   "calendar": {"user": "user_id", "sequence": "order_number",
                                "days_since_previous": "days_since_prior_order", "hour": "order_hour_of_day",
                                "start": "1996-12-31", "zone": "UTC"},
                   "columns": {"user_id": "user_id", "product_id": "item_id"}},
    }
    cfg = with_sources(make_config(base), sources)
    preflight(cfg, HISTORY_DAYS[-1], 2)
    result = run(spark, cfg, HISTORY_DAYS[-1], collect_days=2)
    events = read_table(spark, cfg, "bronze.events").orderBy("_source_file", "_line").collect()
    return cfg, result, events, {t: read_table(spark, cfg, t).collect() for t in ("bronze.users", "bronze.items")}


def test_history_rows_land_on_their_utc_day_and_other_days_are_left_for_their_runs(history_run):
    _, result, events, _ = history_run
    cdnow = [(e["_line"], e["user_id"], e["ts"], e["event_date"], e["event_type"], e["item_id"], e["price"],
              e["quantity"]) for e in events if e["_source_file"].endswith("CDNOW_master.txt")]
    assert cdnow == [
        (2, "00001", "1997-01-01T05:00:00+00:00", dt.date(1997, 1, 1), "purchase", "cdnow-catalogue", 11.77, None),
        (4, "00003", "1997-01-02T05:00:00+00:00", dt.date(1997, 1, 2), "purchase", "cdnow-catalogue", 20.5, None),
        (5, "00004", None, dt.date(1997, 1, 2), "purchase", "cdnow-catalogue", 5.0, None),
    ]
    assert result.details["files"] == 3  # each history file listed (and read) once for the two days
    visits = [(e["event_id"], e["ts"], e["event_date"]) for e in events if e["_source_file"].endswith("all.jsonl")]
    assert visits == [("v1", "1997-01-01T04:30:00+00:00", dt.date(1997, 1, 1)),
                      ("v2", "1997-01-01T23:59:59+00:00", dt.date(1997, 1, 1))]


def test_the_calendar_times_order_lines_and_routes_them(history_run):
    _, _, events, _ = history_run
    orders = [(e["_line"], e["user_id"], e["item_id"], e["ts"], e["event_date"])
              for e in events if e["_source_file"].endswith("lines.csv")]
    # User 7's first order (lines 2 and 3) and user 8's fall on 31 December, before the range.
    assert orders == [(4, "7", "196", "1997-01-01T08:00:00+00:00", dt.date(1997, 1, 1))]


def test_derived_master_rows_have_ids_only(history_run):
    _, _, _, master = history_run
    users = sorted((u["user_id"], u["name"], u["city"], u["age"]) for u in master["bronze.users"])
    items = sorted((i["item_id"], i["title"], i["category_path"], i["price"]) for i in master["bronze.items"])
    assert users == [("00001", None, None, None), ("00003", None, None, None), ("00004", None, None, None),
                     ("7", None, None, None)]
    assert items == [("196", None, None, None), ("cdnow-catalogue", None, None, None)]


def test_whole_numbers_written_with_a_decimal_point_are_whole_numbers_and_ratings_keep_their_halves(spark):
    """pandas writes integer columns with gaps as 3.0: a quantity of 3.0 is 3 and 2.5 is no whole number (NULL).
    A rating is a number: 3.0, 4 and a half star 2.5 keep their values; text that is no number is NULL, and
    the event is quarantined `bad_number` (it used to pass, the quantity then defaulting to 1 in clean)."""
    from jobs.collect import transform_parse_records

    source = parse_source("r", {"kind": "events", "event_id": "hash_of_line", "layout": "history",
                                "columns": {"u": "user_id", "q": "quantity", "r": "rating", "t": "ts"}}, "w")
    lines = [["1", "3.0", "3.0", "t"], ["1", "2.5", "2.5", "t"], ["1", "4", "4", "t"], ["1", "x", "abc", "t"]]
    records = spark.createDataFrame(
        [(n, ",".join(cells), None, cells, "csv", "f.csv", dt.date(2009, 12, 14))
         for n, cells in enumerate(lines, start=2)],
        "_line long, _raw string, _reason string, _cells array<string>, _format string, _source_file string, "
        "event_date date")
    # read_columns order: u, q, r, t
    parsed = transform_parse_records(records, source).orderBy("_line").collect()
    assert [r["quantity"] for r in parsed] == [3, None, 4, None]
    assert [r["rating"] for r in parsed] == [3.0, 2.5, 4.0, None]
    assert [r["_parse_error"] for r in parsed] == [None, "bad_number", None, "bad_number"]
