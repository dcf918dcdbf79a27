"""Collect: every landed format into bronze with file and line, quarantine reasons, the share limit,
the public e-commerce export layout, and idempotent reloads. Hand-written files, exact rows."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.collect import (
    COLLECT_REASONS,
    FileCount,
    check_quarantine_share,
    configured_sources,
    file_format,
    read_file,
)
from jobs.common.errors import ConfigError, InputDataError
from tests.conftest import make_config

D1, D2 = dt.date(2026, 11, 3), dt.date(2026, 11, 4)
EXPORT_DAY = dt.date(2019, 10, 1)


def _event(**fields) -> str:
    base = {"event_id": "e1", "user_id": "u1", "session_id": "s1", "event_type": "view", "item_id": "i1",
            "ts": "2026-11-03T10:00:00+08:00", "price": 9.5, "quantity": None, "query": None, "review_text": None,
            "rating": None, "device": "ios", "channel": "organic", "geo": "Shanghai"}
    base.update(fields)
    return json.dumps(base, ensure_ascii=False, separators=(",", ":"))


def _records(path: Path, fmt: str, wanted=("event_id", "user_id", "price")) -> list[dict]:
    return [r for batch in read_file(0, str(path), fmt, list(wanted)) for r in batch.to_pylist()]


# --------------------------------------------------------------------------------------------------
# Reading files (plain Python, no Spark)


@pytest.mark.parametrize(("name", "expected"), [
    ("events-00000.jsonl", "jsonl"), ("a.JSONL.gz", "jsonl"), ("x.ndjson", "jsonl"), ("b.csv", "csv"),
    ("b.csv.gz", "csv"), ("c.parquet", "parquet"), ("c.parquet.gz", None), ("notes.txt", None), ("README", None),
])
def test_file_format_comes_from_the_extension(name, expected):
    assert file_format(name) == expected


def test_json_lines_keep_line_numbers_across_blank_lines_bom_and_crlf(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _event().encode() + b"\r\n\n  \n" + _event(event_id="e2").encode())
    records = _records(path, "jsonl")
    assert [(r["_line"], r["_raw"], r["_reason"], r["_cells"]) for r in records] == [
        (1, _event(), None, None), (4, _event(event_id="e2"), None, None)]


def test_bad_utf8_is_kept_visible_and_named(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"event_id":"e1"}\n{"event_id":"e2","geo":"caf\xe9"}\n{"event_id":"e3"}\n')
    records = _records(path, "jsonl")
    assert [(r["_line"], r["_raw"], r["_reason"]) for r in records] == [
        (1, '{"event_id":"e1"}', None), (2, '{"event_id":"e2","geo":"caf\\xe9"}', "bad_encoding"),
        (3, '{"event_id":"e3"}', None)]


def test_gzip_gives_the_same_records_as_plain_text(tmp_path):
    text = "\n".join(_event(event_id=f"e{i}") for i in range(5)) + "\n"
    (tmp_path / "a.jsonl").write_text(text)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    assert _records(tmp_path / "a.jsonl.gz", "jsonl") == _records(tmp_path / "a.jsonl", "jsonl")
    assert len(_records(tmp_path / "a.jsonl", "jsonl")) == 5


def test_csv_maps_cells_by_header_counts_the_header_as_line_one_and_names_wrong_column_counts(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text('price,event_id,extra,user_id\n9.50,e1,x,u1\ne2,u2\n"1,5","e3",,"u ""3"""\n\n1,e4,x,u4,more\n'
                    '"unclosed,e5,x,u5\n')
    records = _records(path, "csv")
    assert [(r["_line"], r["_reason"], r["_cells"]) for r in records] == [
        (2, None, ["e1", "u1", "9.50"]),
        (3, "wrong_column_count", None),
        (4, None, ["e3", 'u "3"', "1,5"]),
        (6, "wrong_column_count", None),
        (7, "wrong_column_count", None),  # a quote that never closes: records never span lines
    ]
    assert records[1]["_raw"] == "e2,u2"


def test_parquet_rows_become_json_with_row_numbers_and_a_corrupt_file_one_record(tmp_path):
    pq.write_table(pa.table({"event_id": ["p1", None], "price": [1.5, None],
                             "ts": [dt.datetime(2026, 11, 3, 10, 0), None]}), tmp_path / "c.parquet")
    records = _records(tmp_path / "c.parquet", "parquet")
    assert [(r["_line"], r["_raw"], r["_reason"]) for r in records] == [
        (1, '{"event_id":"p1","price":1.5,"ts":"2026-11-03T10:00:00"}', None),
        (2, '{"event_id":null,"price":null,"ts":null}', None)]
    (tmp_path / "d.parquet").write_bytes(b"PAR1 this is not parquet")
    (bad,) = _records(tmp_path / "d.parquet", "parquet")
    assert (bad["_line"], bad["_reason"]) == (1, "unparseable_parquet")
    assert bad["_raw"].startswith("unreadable parquet after 0 rows:")


def test_a_truncated_gzip_file_is_reported_not_quarantined(tmp_path):
    packed = gzip.compress(("\n".join(_event(event_id=f"e{i}") for i in range(50)) + "\n").encode())
    (tmp_path / "t.jsonl.gz").write_bytes(packed[:-12])
    records = _records(tmp_path / "t.jsonl.gz", "jsonl")
    assert records[-1]["_reason"] == "unreadable_file"
    assert f"cannot read {tmp_path / 't.jsonl.gz'}" in records[-1]["_raw"]


def test_reading_in_small_blocks_gives_the_same_lines(tmp_path, monkeypatch):
    import jobs.collect as collect

    lines = [_event(event_id=f"e{i}", geo="北京" * (i % 7)) for i in range(200)]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    whole = _records(tmp_path / "a.jsonl", "jsonl")
    monkeypatch.setattr(collect, "_BLOCK_BYTES", 97)  # blocks end mid-line and mid-character
    assert _records(tmp_path / "a.jsonl", "jsonl") == whole
    assert [r["_line"] for r in whole] == list(range(1, 201))


# --------------------------------------------------------------------------------------------------
# The share limit (pure)


def _counts(*rows):
    return [FileCount(f, "events", D1, reason, n) for f, reason, n in rows]


def test_share_under_the_limit_passes_and_a_corrupt_parquet_file_does_not_count_alone():
    check_quarantine_share(_counts(("a.jsonl", None, 95), ("a.jsonl", "unparseable_json", 5),
                                   ("d.parquet", "unparseable_parquet", 1)), 0.06, lambda f: [])


def test_share_over_the_limit_names_file_share_and_first_bad_lines():
    asked = []

    def first_bad(name):
        asked.append(name)
        return [(3, "unparseable_json"), (7, "bad_encoding")]

    counts = _counts(("a.jsonl", None, 90), ("a.jsonl", "unparseable_json", 6), ("a.jsonl", "bad_encoding", 4),
                     ("b.jsonl", None, 1000))
    with pytest.raises(InputDataError) as error:
        check_quarantine_share(counts, 0.05, first_bad)
    message = str(error.value)
    assert "a.jsonl: 10 of 100 records (10.0%) unusable; first bad lines: 3 (unparseable_json), 7 (bad_encoding)" \
        in message
    assert "collect.max_quarantine_share (5.0%)" in message and "nothing was written" in message
    assert asked == ["a.jsonl"] and "b.jsonl" not in message and "events of 2026-11-03" not in message


def test_share_over_the_limit_for_a_day_of_many_files():
    counts = _counts(*[(f"f{i}.jsonl", None, 19) for i in range(3)], *[(f"f{i}.jsonl", "bad_encoding", 1)
                                                                        for i in range(3)],
                     ("d.parquet", "unparseable_parquet", 1), ("e.parquet", "unparseable_parquet", 1))
    with pytest.raises(InputDataError, match=re.escape("events of 2026-11-03: 5 of 62 records (8.1%) unusable")):
        check_quarantine_share(counts, 0.06, lambda f: [])


# --------------------------------------------------------------------------------------------------
# Sources in the profile


def test_the_default_profile_declares_the_landing_sources(tmp_path):
    sources = {s.name: s for s in configured_sources(make_config(tmp_path))}
    assert {n: (s.kind, s.folder, s.optional) for n, s in sources.items()} == {
        "events": ("events", "events", False), "users": ("users", "users", False),
        "items": ("items", "items", False), "social_edges": ("social_edges", "social_edges", True),
        "ecommerce_export": ("events", "ecommerce_events", True)}
    export = sources["ecommerce_export"]
    assert export.event_id == "hash_of_line" and export.emit_master
    assert export.event_types == {"view": "view", "cart": "add_to_cart", "remove_from_cart": "remove_from_cart",
                                  "purchase": "purchase"}
    assert ("product_id", "item_id", "string") in export.fields() and ("brand", "item.brand", "string") in \
        export.fields()


@pytest.mark.parametrize(("env", "message"), [
    ({"PORTRAIT__COLLECT__SOURCES__EVENTS__KIND": "clicks"}, "collect.sources.events.kind is 'clicks'"),
    ({"PORTRAIT__COLLECT__SOURCES__ECOMMERCE_EXPORT__COLUMNS__BRAND": "item.maker"},
     "maps 'brand' to 'item.maker', which is not a events field"),
    ({"PORTRAIT__COLLECT__SOURCES__ECOMMERCE_EXPORT__EVENT_ID": "column"}, "maps no column to event_id"),
    ({"PORTRAIT__COLLECT__MAX_QUARANTINE_SHARE": "1.5"}, "must lie between 0 and 1, got 1.5"),
])
def test_bad_source_settings_are_refused_before_spark_starts(tmp_path, env, message):
    from jobs.collect import preflight

    with pytest.raises(ConfigError, match=re.escape(message)):
        preflight(make_config(tmp_path, **env), D1)


def test_unknown_file_types_in_the_landing_zone_are_refused(tmp_path):
    from jobs.collect import landing_files

    cfg = make_config(tmp_path)
    folder = tmp_path / "landing" / "events" / f"event_date={D1}"
    folder.mkdir(parents=True)
    (folder / "_SUCCESS").write_text("")
    (folder / "a.jsonl").write_text(_event() + "\n")
    assert [f.uri for f in landing_files(cfg, configured_sources(cfg)[:1], [D1], D1)] == [str(folder / "a.jsonl")]
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(InputDataError, match=re.escape(f"{folder / 'notes.txt'}: unknown file type")):
        landing_files(cfg, configured_sources(cfg)[:1], [D1], D1)


# --------------------------------------------------------------------------------------------------
# The step on a hand-made landing zone (Spark)

A_JSONL = [
    _event(event_id="e1"),                                   # 1
    "",                                                      # 2: blank, not a record
    '{"event_id": "e9", "user_id": ',                        # 3: unparseable_json
    None,                                                    # 4: bad_encoding (bytes below)
    _event(event_id=None, user_id="u5"),                     # 5: missing_event_id
    _event(event_id="e2", event_type="purchase", quantity=2),  # 6
]
BAD_BYTES = b'{"event_id":"e8","geo":"M\xfcnchen"}'
B_CSV = ("event_id,user_id,event_type,item_id,ts,price,quantity,query\n"
         "e10,u1,purchase,i2,2026-11-03T11:00:00Z,12.50,2,\n"
         "e11,u2\n"
         'e12,u2,search,,2026-11-03T12:00:00Z,,,"shoes, red"\n')
EDGES = ['{"src_user_id":"u1","dst_user_id":"u2","edge_type":"follow","ts":"2026-11-03T09:00:00Z"}',
         '{"src_user_id":"u2","dst_user_id":"u1","edge_type":"share_to","ts":"2026-11-03T09:30:00Z"}']


def _write_landing(landing: Path) -> None:
    day1 = landing / "events" / f"event_date={D1}"
    day1.mkdir(parents=True)
    (day1 / "a.jsonl").write_bytes(b"\n".join(BAD_BYTES if line is None else line.encode() for line in A_JSONL)
                                   + b"\n")
    (day1 / "b.csv.gz").write_bytes(gzip.compress(B_CSV.encode()))
    pq.write_table(pa.table({"event_id": ["p1", None], "user_id": ["u3", "u3"], "quantity": [3, 1]}),
                   day1 / "c.parquet")
    (day1 / "d.parquet").write_bytes(b"PAR1 truncated in transit")
    (day1 / "f.jsonl.gz").write_bytes(gzip.compress((_event(event_id="e20", user_id="u2") + "\n").encode()))
    day2 = landing / "events" / f"event_date={D2}"
    day2.mkdir(parents=True)
    (day2 / "a.jsonl").write_text(_event(event_id="e30", ts="2026-11-04T08:00:00Z") + "\n"
                                  + _event(event_id="e31", ts="2026-11-04T09:00:00Z") + "\n")
    (landing / "users").mkdir()
    (landing / "users" / "users.csv").write_text(
        "user_id,name,email,phone,age,gender,occupation,city,signup_date\n"
        "u1,张三,z@example.com,13800000000,34,F,teacher,Shanghai,2025-01-02\n"
        "u2,Li Si,l@example.com,13900000000,41,M,doctor\n"
        "u3,Wang Wu,w@example.com,13700000000,29,M,nurse,Beijing,2025-03-04\n")
    (landing / "items").mkdir()
    (landing / "items" / "items.jsonl").write_text(
        '{"item_id":"i1","title":"Phone","category_path":"phones>smartphones","brand":"Acme","price":999.0}\n'
        '{"item_id":"i2","title":"Case","category_path":"phones>accessories","brand":"Acme","price":12.5}\n')
    edges = landing / "social_edges" / f"event_date={D1}"
    edges.mkdir(parents=True)
    (edges / "edges.jsonl").write_text("\n".join(EDGES) + "\n")


@pytest.fixture(scope="module")
def loaded(spark, tmp_path_factory):
    """Collect D1 and then D2 from one hand-made landing zone; the share limit is off here."""
    from jobs.collect import run

    base = tmp_path_factory.mktemp("collect")
    _write_landing(base / "landing")
    cfg = make_config(base, PORTRAIT__COLLECT__MAX_QUARANTINE_SHARE="1")
    results = {D1: run(spark, cfg, D1), D2: run(spark, cfg, D2)}
    return cfg, base / "landing", results


def _sorted(rows):
    """Rows in a fixed order, NULLs included (None does not compare with str)."""
    return sorted((tuple(r) for r in rows), key=lambda row: tuple("" if v is None else str(v) for v in row))


def _rows(spark, cfg, name, *columns, where=None):
    from jobs.common.delta import read_table

    frame = read_table(spark, cfg, name)
    if where:
        frame = frame.where(where)
    return _sorted(frame.select(*columns).collect())


@pytest.mark.spark
def test_every_format_lands_in_bronze_with_file_and_line(spark, loaded):
    cfg, landing, _ = loaded
    day1 = landing / "events" / f"event_date={D1}"
    rows = _rows(spark, cfg, "bronze.events", "_source_file", "_line", "event_id", "user_id", "event_type",
                 "price", "quantity", "query", "_parse_error", where=f"event_date = '{D1}'")
    a, b, c, d, f = (str(day1 / n) for n in ("a.jsonl", "b.csv.gz", "c.parquet", "d.parquet", "f.jsonl.gz"))
    assert rows == _sorted([
        (a, 1, "e1", "u1", "view", 9.5, None, None, None),
        (a, 3, None, None, None, None, None, None, "unparseable_json"),
        (a, 4, None, None, None, None, None, None, "bad_encoding"),
        (a, 5, None, "u5", "view", 9.5, None, None, "missing_event_id"),
        (a, 6, "e2", "u1", "purchase", 9.5, 2, None, None),
        (b, 2, "e10", "u1", "purchase", 12.5, 2, None, None),
        (b, 3, None, None, None, None, None, None, "wrong_column_count"),
        (b, 4, "e12", "u2", "search", None, None, "shoes, red", None),
        (c, 1, "p1", "u3", None, None, 3, None, None),
        (c, 2, None, "u3", None, None, 1, None, "missing_event_id"),
        (d, 1, None, None, None, None, None, None, "unparseable_parquet"),
        (f, 1, "e20", "u2", "view", 9.5, None, None, None),
    ])
    raws = dict(((r[0], r[1]), r[2]) for r in _rows(spark, cfg, "bronze.events", "_source_file", "_line", "_raw"))
    assert raws[(a, 4)] == '{"event_id":"e8","geo":"M\\xfcnchen"}'
    assert raws[(b, 4)] == 'e12,u2,search,,2026-11-03T12:00:00Z,,,"shoes, red"'
    assert raws[(c, 1)] == '{"event_id":"p1","user_id":"u3","quantity":3}'


@pytest.mark.spark
def test_unusable_records_are_quarantined_with_file_line_and_reason(spark, loaded):
    cfg, landing, _ = loaded
    day1 = landing / "events" / f"event_date={D1}"
    rows = _rows(spark, cfg, "bronze.quarantine", "step", "reason", "_source_file", "_line", "event_date")
    assert rows == _sorted([
        ("collect", "unparseable_json", str(day1 / "a.jsonl"), 3, D1),
        ("collect", "bad_encoding", str(day1 / "a.jsonl"), 4, D1),
        ("collect", "missing_event_id", str(day1 / "a.jsonl"), 5, D1),
        ("collect", "wrong_column_count", str(day1 / "b.csv.gz"), 3, D1),
        ("collect", "missing_event_id", str(day1 / "c.parquet"), 2, D1),
        ("collect", "unparseable_parquet", str(day1 / "d.parquet"), 1, D1),
        # users.csv is a snapshot: its bad line is filed under each run date that loaded it
        ("collect", "wrong_column_count", str(landing / "users" / "users.csv"), 3, D1),
        ("collect", "wrong_column_count", str(landing / "users" / "users.csv"), 3, D2),
    ])
    assert {r[0] for r in _rows(spark, cfg, "bronze.quarantine", "reason")} <= set(COLLECT_REASONS)
    from jobs.common.delta import read_table

    assert read_table(spark, cfg, "bronze.quarantine").columns == [
        "step", "reason", "_source_file", "_line", "_raw", "event_date", "_ingested_at"]


@pytest.mark.spark
def test_master_data_and_social_edges_land_with_lines(spark, loaded):
    cfg, landing, _ = loaded
    assert _rows(spark, cfg, "bronze.users", "user_id", "name", "age", "city", "_line", "snapshot_date",
                 where=f"snapshot_date = '{D1}'") == [
        ("u1", "张三", 34, "Shanghai", 2, D1), ("u3", "Wang Wu", 29, "Beijing", 4, D1)]
    assert _rows(spark, cfg, "bronze.items", "item_id", "price", "_line", "snapshot_date",
                 where=f"snapshot_date = '{D2}'") == [
        ("i1", 999.0, 1, D2), ("i2", 12.5, 2, D2)]
    assert _rows(spark, cfg, "bronze.social_edges", "src_user_id", "dst_user_id", "edge_type", "ts", "_line",
                 "event_date") == [("u1", "u2", "follow", "2026-11-03T09:00:00Z", 1, D1),
                                   ("u2", "u1", "share_to", "2026-11-03T09:30:00Z", 2, D1)]


@pytest.mark.spark
def test_audit_counts_every_record_read(spark, loaded):
    cfg, _, results = loaded
    rows = {r[0]: r[1:] for r in _rows(spark, cfg, "ops.run_audit", "table_name", "rows_in", "rows_out",
                                       "duplicates", "quarantined", "balanced",
                                       where=f"run_date = '{D1}' AND step = 'collect'")}
    assert rows == {
        "bronze.events": (12, 6, 0, 6, True),
        "bronze.users": (3, 2, 0, 1, True),
        "bronze.items": (2, 2, 0, 0, True),
        "bronze.social_edges": (2, 2, 0, 0, True),
    }
    events = results[D1].tables[0]
    assert events.quarantined == {"unparseable_json": 1, "bad_encoding": 1, "missing_event_id": 2,
                                  "wrong_column_count": 1, "unparseable_parquet": 1}


@pytest.mark.spark
def test_reloading_a_date_replaces_that_date_only(spark, loaded):
    from jobs.collect import run

    cfg, landing, _ = loaded
    columns = ("event_date", "_source_file", "_line", "event_id", "_parse_error")
    before = _rows(spark, cfg, "bronze.events", *columns)
    quarantine_before = _rows(spark, cfg, "bronze.quarantine", "reason", "_source_file", "_line", "event_date")
    d1_file = landing / "events" / f"event_date={D1}" / "a.jsonl"
    original = d1_file.read_bytes()
    d1_file.write_text("changed after the D1 load\n")  # a D2 reload must not read D1 at all
    try:
        run(spark, cfg, D2)
    finally:
        d1_file.write_bytes(original)
    assert _rows(spark, cfg, "bronze.events", *columns) == before  # D1 untouched, D2 not doubled
    assert _rows(spark, cfg, "bronze.quarantine", "reason", "_source_file", "_line", "event_date") == \
        quarantine_before
    assert [r for r in before if r[0] == D2] == [
        (D2, str(landing / "events" / f"event_date={D2}" / "a.jsonl"), 1, "e30", None),
        (D2, str(landing / "events" / f"event_date={D2}" / "a.jsonl"), 2, "e31", None)]
    assert len(_rows(spark, cfg, "ops.run_audit", "table_name", where=f"run_date = '{D2}'")) == 4


@pytest.mark.spark
def test_above_the_share_limit_nothing_is_written(spark, loaded, tmp_path):
    from jobs.collect import run
    from jobs.common.delta import table_version

    _, landing, _ = loaded
    cfg = make_config(tmp_path)  # the default limit, 5%
    (tmp_path / "landing").symlink_to(landing)
    with pytest.raises(InputDataError) as error:
        run(spark, cfg, D1)
    message = str(error.value)
    a = tmp_path / "landing" / "events" / f"event_date={D1}" / "a.jsonl"
    assert f"{a}: 3 of 5 records (60.0%) unusable; first bad lines: 3 (unparseable_json), 4 (bad_encoding), " \
           "5 (missing_event_id)" in message
    assert "events of 2026-11-03: 6 of 12 records (50.0%) unusable" in message
    assert table_version(spark, cfg, "bronze.events") is None and table_version(spark, cfg, "ops.run_audit") is None


# --------------------------------------------------------------------------------------------------
# The public e-commerce export layout, mapped by config

EXPORT = [
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session",
    "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,"
    "72d76fde-8bb3-4e00-8c23-a032dfed738c",
    "2019-10-01 00:00:01 UTC,cart,3900821,2053013552326770905,appliances.environment.water_heater,aqua,33.20,"
    "554748717,9333dfbd-b87a-4708-9857-6336556b0fcc",
    "2019-10-01 00:00:05 UTC,purchase,3900821,2053013552326770905,appliances.environment.water_heater,aqua,"
    "31.90,554748717,9333dfbd-b87a-4708-9857-6336556b0fcc",
    "2019-10-01 00:00:07 UTC,remove_from_cart,17200506,2053013559792632471,furniture.living_room.sofa,,"
    "543.10,554748717,9333dfbd-b87a-4708-9857-6336556b0fcc",
]


@pytest.mark.spark
def test_the_public_export_layout_is_taken_unchanged(spark, tmp_path):
    from jobs.collect import run

    landing = tmp_path / "landing"
    day = landing / "ecommerce_events" / f"event_date={EXPORT_DAY}"
    day.mkdir(parents=True)
    (day / "2019-Oct.csv").write_text("\n".join(EXPORT) + "\n")
    (landing / "items").mkdir()
    (landing / "items" / "items.jsonl").write_text(
        '{"item_id":"17200506","title":"Sofa","category_path":"furniture>sofas","brand":"Lin","price":599.0}\n')
    cfg = make_config(tmp_path, PORTRAIT__COLLECT__SOURCES__EVENTS__OPTIONAL="true",
                      PORTRAIT__COLLECT__SOURCES__USERS__OPTIONAL="true")
    result = run(spark, cfg, EXPORT_DAY)

    def event_id(line: str) -> str:
        return "h" + hashlib.sha256(line.encode()).hexdigest()[:20]

    assert _rows(spark, cfg, "bronze.events", "event_id", "user_id", "session_id", "event_type", "item_id", "ts",
                 "price", "device", "_line", "_parse_error") == _sorted([
        (event_id(EXPORT[1]), "541312140", "72d76fde-8bb3-4e00-8c23-a032dfed738c", "view", "44600062",
         "2019-10-01 00:00:00 UTC", 35.79, None, 2, None),
        (event_id(EXPORT[2]), "554748717", "9333dfbd-b87a-4708-9857-6336556b0fcc", "add_to_cart", "3900821",
         "2019-10-01 00:00:01 UTC", 33.2, None, 3, None),
        (event_id(EXPORT[3]), "554748717", "9333dfbd-b87a-4708-9857-6336556b0fcc", "purchase", "3900821",
         "2019-10-01 00:00:05 UTC", 31.9, None, 4, None),
        (event_id(EXPORT[4]), "554748717", "9333dfbd-b87a-4708-9857-6336556b0fcc", "remove_from_cart", "17200506",
         "2019-10-01 00:00:07 UTC", 543.1, None, 5, None),
    ])
    # Items only the export mentions are emitted from their latest line; the items file wins for the rest.
    assert _rows(spark, cfg, "bronze.items", "item_id", "title", "category_path", "brand", "price", "_line") == [
        ("17200506", "Sofa", "furniture>sofas", "Lin", 599.0, 1),
        ("3900821", None, "appliances>environment>water_heater", "aqua", 31.9, 4),
        ("44600062", None, None, "shiseido", 35.79, 2),
    ]
    assert _rows(spark, cfg, "bronze.users", "user_id", "name", "_line") == [
        ("541312140", None, 2), ("554748717", None, 5)]
    counts = {t.table: (t.rows_in, t.rows_out, t.duplicates, t.quarantined_total) for t in result.tables}
    assert counts == {"bronze.events": (4, 4, 0, 0), "bronze.items": (4, 3, 1, 0), "bronze.users": (2, 2, 0, 0)}


@pytest.mark.spark
def test_an_export_line_with_a_missing_cell_is_quarantined(spark, tmp_path):
    from jobs.collect import run

    day = tmp_path / "landing" / "ecommerce_events" / f"event_date={EXPORT_DAY}"
    day.mkdir(parents=True)
    (day / "part.csv.gz").write_bytes(gzip.compress(("\n".join([*EXPORT[:2], "2019-10-01 00:00:02 UTC,view,1"])
                                                     + "\n").encode()))
    cfg = make_config(tmp_path, PORTRAIT__COLLECT__SOURCES__EVENTS__OPTIONAL="true",
                      PORTRAIT__COLLECT__SOURCES__USERS__OPTIONAL="true",
                      PORTRAIT__COLLECT__SOURCES__ITEMS__OPTIONAL="true",
                      PORTRAIT__COLLECT__MAX_QUARANTINE_SHARE="0.5")
    run(spark, cfg, EXPORT_DAY)
    assert _rows(spark, cfg, "bronze.quarantine", "reason", "_line", "_raw") == [
        ("wrong_column_count", 3, "2019-10-01 00:00:02 UTC,view,1")]
