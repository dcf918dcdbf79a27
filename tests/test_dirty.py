"""`portrait generate --dirty`: the manifest tells the truth about the files, defects never share a row,
and collect quarantines exactly the collect-side defects (the clean side plugs into `collected` below)."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.generate import EVENT_TYPES, generate
from jobs.generate_dirty import CLEAN_REASON, DUPLICATE_KINDS, break_line, kinds_for, to_fullwidth
from tests.conftest import make_config

START = dt.date(2026, 11, 1)
USERS, DAYS, SEED = 30, 2, 5
FULLWIDTH = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\u3000]")  # full-width letters, digits, space


def _generate(root: Path, level="light", file_format="jsonl", compress=False, **extra):
    summary = generate(root / "landing", root / "ground_truth", users=USERS, days=DAYS, seed=SEED, start_date=START,
                       dirty=level, file_format=file_format, gzip=compress, **extra)
    manifest_path = root / "ground_truth" / "dirty_manifest.json"
    return summary, (json.loads(manifest_path.read_text()) if manifest_path.exists() else None)


def _event_lines(path: Path) -> tuple[list[str] | None, list[bytes]]:
    """(CSV header or None, raw data lines) of an event file."""
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    lines = raw.split(b"\n")[:-1]
    if ".csv" in path.name:
        return next(csv.reader([lines[0].decode()])), lines[1:]
    return None, lines


def _master_ids(landing: Path, folder: str, key: str) -> set[str]:
    (path,) = (landing / folder).iterdir()
    if path.suffix == ".parquet":
        return set(pq.read_table(path).column(key).to_pylist())
    header, lines = _event_lines(path)
    if header is None:
        return {json.loads(line)[key] for line in lines}
    return {row[header.index(key)] for row in csv.reader(line.decode() for line in lines)}


def _classify(landing: Path, day: str) -> tuple[Counter, int]:
    """Defects found in a day's file by looking at it, independently of the generator; one per row at most."""
    (path,) = (landing / "events" / f"event_date={day}").iterdir()
    users, items = _master_ids(landing, "users", "user_id"), _master_ids(landing, "items", "item_id")
    found: Counter = Counter()
    header, lines, records = None, [], []
    if path.suffix == ".parquet":
        records = [(json.dumps(r), r) for r in pq.read_table(path).to_pylist()]
    else:
        header, lines = _event_lines(path)
    for raw in lines:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            found["bad_encoding"] += 1
            continue
        if header is None:
            try:
                records.append((text, json.loads(text)))
            except json.JSONDecodeError:
                found["broken_json"] += 1
        else:
            (row,) = csv.reader([text])
            if len(row) != len(header):
                found["wrong_column_count"] += 1
            else:
                records.append((text, {k: (v if v != "" else None) for k, v in zip(header, row, strict=True)}))
    per_minute = Counter((r["user_id"], (r["ts"] or "")[:16]) for _, r in records)
    bots = {user for (user, _), n in per_minute.items() if n > 30}
    seen_lines, seen_ids = set(), set()
    for text, r in records:
        kinds = []
        if text in seen_lines:
            kinds.append("exact_duplicate")
        elif r["event_id"] is not None and r["event_id"] in seen_ids:
            kinds.append("id_duplicate")
        seen_lines.add(text)
        seen_ids.add(r["event_id"])
        if r["event_id"] is None:
            kinds.append("missing_event_id")
        if r["user_id"] is None:
            kinds.append("missing_user_id")
        elif r["user_id"] in bots:
            kinds.append("bot_burst")
        elif r["user_id"] not in users:
            kinds.append("unknown_user")
        if r["item_id"] is not None and r["item_id"] not in items:
            kinds.append("unknown_item")
        if r["event_type"] not in EVENT_TYPES:
            kinds.append("unknown_event_type")
        try:
            instant = dt.datetime.fromisoformat(r["ts"])
            if instant.astimezone(dt.timezone.utc).date().isoformat() < day:
                kinds.append("late_event")
        except ValueError:
            kinds.append("bad_timestamp")
        price, quantity, rating = (None if r[k] is None else float(r[k]) for k in ("price", "quantity", "rating"))
        if price is not None and not 0 <= price <= 1e6:
            kinds.append("price_out_of_range")
        if quantity is not None and not 1 <= quantity <= 99:
            kinds.append("quantity_out_of_range")
        if rating is not None and not 1 <= rating <= 5:
            kinds.append("rating_out_of_range")
        if any(FULLWIDTH.search(r[k] or "") for k in ("query", "review_text")):
            kinds.append("fullwidth_text")
        if r["device"] is None and r["channel"] is None:
            kinds.append("missing_optional")
        assert len(kinds) <= 1, f"{day}: two defects on one row: {kinds} in {text}"
        found.update(kinds)
    return found, len(records) if path.suffix == ".parquet" else len(lines)


# --------------------------------------------------------------------------------------------------
# The generator (plain Python)


@pytest.mark.parametrize(("file_format", "compress"), [("jsonl", False), ("jsonl", True), ("csv", True),
                                                       ("parquet", False)])
def test_the_manifest_tells_what_the_files_hold(tmp_path, file_format, compress):
    summary, manifest = _generate(tmp_path, "light", file_format, compress)
    assert (manifest["level"], manifest["format"], manifest["gzip"]) == ("light", file_format, compress)
    assert list(manifest["days"]) == ["2026-11-01", "2026-11-02"]
    for day, planted in manifest["days"].items():
        found, records = _classify(tmp_path / "landing", day)
        assert dict(found) == {kind: n for kind, n in planted.items() if n}, day
        assert records == manifest["records"][day] == summary.events_per_day[day]
        assert set(planted) == set(kinds_for(file_format))
        assert all(n >= 1 for kind, n in planted.items()), planted  # light plants every kind at least once
        assert planted["bot_burst"] == 200 * len(manifest["bots"][day]) == 200
    assert manifest["totals"] == {k: sum(d[k] for d in manifest["days"].values()) for k in kinds_for(file_format)}
    assert summary.defects == manifest["totals"]


def test_heavy_plants_more_and_a_clean_rerun_removes_the_manifest(tmp_path):
    _, light = _generate(tmp_path / "a", "light")
    _, heavy = _generate(tmp_path / "b", "heavy")
    assert all(heavy["totals"][k] > light["totals"][k] for k in light["totals"])
    assert heavy["totals"]["bot_burst"] == 2 * 200 * DAYS
    summary, manifest = _generate(tmp_path / "b", "none")
    assert manifest is None and summary.dirty == "none" and "dirty_manifest" not in summary.paths


def test_dirty_output_is_deterministic_and_leaves_the_clean_rows_alone(tmp_path):
    _generate(tmp_path / "a", "light")
    _generate(tmp_path / "b", "light")
    _generate(tmp_path / "clean", "none")
    day = "event_date=2026-11-01/events-00000.jsonl"
    dirty_a = (tmp_path / "a" / "landing" / "events" / day).read_bytes()
    assert dirty_a == (tmp_path / "b" / "landing" / "events" / day).read_bytes()
    clean = (tmp_path / "clean" / "landing" / "events" / day).read_bytes().split(b"\n")
    untouched = set(dirty_a.split(b"\n"))
    # Every row but the handful of victims is byte for byte the clean row.
    assert sum(line in untouched for line in clean[:-1]) >= len(clean) - 1 - len(kinds_for("jsonl"))


@pytest.mark.parametrize(("level", "file_format", "compress", "message"), [
    ("filthy", "jsonl", False, "dirty must be one of none, light, heavy, got 'filthy'"),
    ("light", "xml", False, "file_format must be one of jsonl, csv, parquet, got 'xml'"),
    ("none", "parquet", True, "gzip applies to jsonl and csv"),
])
def test_bad_output_options_are_refused(tmp_path, level, file_format, compress, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _generate(tmp_path, level, file_format, compress)
    assert not (tmp_path / "landing").exists()


def test_line_breakers_and_full_width_forms():
    assert break_line("broken_json", '{"a":"bc"}') == b'{"a":'
    assert break_line("wrong_column_count", "a,b") == b"a,b,extra"
    assert break_line("bad_encoding", '{"geo":"Xi"}') == b'{"geo":"Xi\xe9"}'
    assert to_fullwidth("running shoes 2") == "ｒｕｎｎｉｎｇ\u3000ｓｈｏｅｓ\u3000２"
    assert to_fullwidth("跑步鞋 便宜") == "跑步鞋\u3000便宜"


# --------------------------------------------------------------------------------------------------
# Collect on dirty data (Spark). The clean step adds its assertions on the same fixture.


def expected_clean(manifest: dict, day: str) -> dict:
    """What the clean step should report for a day: quarantined by reason, and duplicates removed.

    late_event, missing_optional and fullwidth_text are kept (moved, defaulted, normalised).
    """
    planted = manifest["days"][day]
    quarantined = {manifest["clean_reasons"][k]: n for k, n in planted.items() if k in manifest["clean_reasons"]}
    return {"quarantined": quarantined, "duplicates": sum(planted[k] for k in manifest["duplicates"])}


def test_expected_clean_counts_come_from_the_manifest(tmp_path):
    _, manifest = _generate(tmp_path, "light")
    expected = expected_clean(manifest, "2026-11-01")
    assert expected["duplicates"] == 2
    assert expected["quarantined"] == {**{reason: 1 for reason in CLEAN_REASON.values()}, "bot_rate": 200}
    assert set(manifest["collect_reasons"]) == {"broken_json", "bad_encoding", "missing_event_id"}
    assert set(manifest["duplicates"]) == set(DUPLICATE_KINDS)


@pytest.fixture(scope="module", params=[("jsonl", True), ("csv", False)], ids=["jsonl.gz", "csv"])
def collected(request, spark, tmp_path_factory):
    """A light dirty landing zone (30 users, 2 days) collected in one run; (cfg, manifest, result)."""
    from jobs.collect import run

    file_format, compress = request.param
    base = tmp_path_factory.mktemp(f"dirty-{file_format}")
    _, manifest = _generate(base, "light", file_format, compress)
    cfg = make_config(base)  # the default 5% limit: light dirt stays under it
    last = START + dt.timedelta(days=DAYS - 1)
    result = run(spark, cfg, last, collect_days=DAYS)
    return cfg, manifest, result


@pytest.mark.spark
def test_collect_quarantines_exactly_the_collect_side_defects(spark, collected):
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table

    cfg, manifest, _ = collected
    found = {(r["event_date"].isoformat(), r["reason"]): r["n"] for r in
             read_table(spark, cfg, "bronze.quarantine").where("step = 'collect'")
             .groupBy("event_date", "reason").agg(F.count("*").alias("n")).collect()}
    expected = {(day, manifest["collect_reasons"][kind]): n for day, planted in manifest["days"].items()
                for kind, n in planted.items() if kind in manifest["collect_reasons"]}
    assert found == expected
    assert all(n >= 1 for n in expected.values()) and len(expected) == 3 * DAYS


@pytest.mark.spark
def test_collect_accounts_for_every_dirty_record(spark, collected):
    from jobs.common.delta import read_table

    cfg, manifest, result = collected
    events = next(t for t in result.tables if t.table == "bronze.events")
    assert events.rows_in == sum(manifest["records"].values()) == read_table(spark, cfg, "bronze.events").count()
    assert events.rows_in == events.rows_out + events.quarantined_total
    assert events.quarantined == {manifest["collect_reasons"][k]: manifest["totals"][k]
                                  for k in manifest["collect_reasons"]}
    audit = read_table(spark, cfg, "ops.run_audit").where("step = 'collect'").collect()
    assert audit and all(r["balanced"] for r in audit)
