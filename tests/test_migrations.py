"""Ratings as numbers on an older lakehouse: bronze and silver tables that hold rating as bigint are
migrated to double by the steps that write them; old values are kept, and half stars go through
collect -> clean -> silver unchanged. Real Delta tables on a tiny hand-made landing zone."""

from __future__ import annotations

import datetime as dt

import pytest

from jobs.common.errors import InputDataError
from tests.conftest import make_config
from tests.test_sources import with_sources

pytestmark = pytest.mark.spark

D = dt.date(2016, 10, 16)
BEFORE = D - dt.timedelta(days=1)
OLD_BRONZE = (
    "event_id string, user_id string, session_id string, event_type string, item_id string, ts string, "
    "price double, quantity long, query string, review_text string, rating long, device string, channel string, "
    "geo string, _raw string, _source_file string, _line long, event_date date, _parse_error string, "
    "_ingested_at timestamp"
)
OLD_SILVER = (
    "event_id string, user_key string, session_id string, event_type string, item_id string, ts timestamp, "
    "price double, quantity long, query string, review_text string, rating long, device string, channel string, "
    "geo string, event_date date, landed_date date"
)
STAMP = dt.datetime(2016, 10, 16, 1, 0)


def _types(spark, cfg, name):
    from jobs.common.delta import read_table

    return {f.name: f.dataType.simpleString() for f in read_table(spark, cfg, name).schema.fields}


def test_migrate_casts_an_old_bigint_rating_keeps_values_and_partitions_and_is_idempotent(spark, tmp_path):
    from delta.tables import DeltaTable

    from jobs.common.catalog import table_path
    from jobs.common.delta import read_table, replace_dates
    from jobs.common.migrations import migrate, pending

    cfg = make_config(tmp_path)
    old = spark.createDataFrame(
        [("e1", "k1", None, "rating", "i1", STAMP, None, None, None, None, 4, None, None, None, BEFORE, BEFORE),
         ("e2", "k1", None, "view", "i1", STAMP, 9.5, None, None, None, None, None, None, None, D, D)], OLD_SILVER)
    replace_dates(old, cfg, "silver.events", [BEFORE, D])
    path = table_path(cfg, "silver.events")
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.logRetentionDuration' = 'interval 60 days')")
    assert [m.column for m in pending(spark, cfg, "silver.events")] == ["rating"]

    applied = migrate(spark, cfg, "silver.events")
    assert [(m.column, m.old_type, m.new_type) for m in applied] == [("rating", "bigint", "double")]
    assert _types(spark, cfg, "silver.events")["rating"] == "double"
    rows = sorted((r["event_id"], r["rating"], r["price"], r["event_date"])
                  for r in read_table(spark, cfg, "silver.events").collect())
    assert rows == [("e1", 4.0, None, BEFORE), ("e2", None, 9.5, D)]
    table = DeltaTable.forPath(spark, path)
    detail = table.detail().collect()[0]
    assert detail["partitionColumns"] == ["event_date"]
    assert detail["properties"]["delta.logRetentionDuration"] == "interval 60 days"
    assert table.history(1).collect()[0]["userMetadata"] == "portrait migration: rating bigint -> double"
    # The old version stays readable (time travel) until VACUUM.
    assert read_table(spark, cfg, "silver.events", version=1).schema["rating"].dataType.simpleString() == "bigint"

    assert migrate(spark, cfg, "silver.events") == [] and pending(spark, cfg, "silver.events") == []
    assert table.history(1).collect()[0]["version"] == 2  # nothing rewritten the second time
    assert migrate(spark, cfg, "silver.held_events") == []  # no table yet: nothing to do


def test_a_rating_column_of_an_unexpected_type_is_named_not_rewritten(spark, tmp_path):
    from jobs.common.delta import replace_dates
    from jobs.common.migrations import migrate

    cfg = make_config(tmp_path)
    odd = spark.createDataFrame([("e1", "four", BEFORE)], "event_id string, rating string, landed_date date")
    replace_dates(odd, cfg, "silver.held_events", [BEFORE])
    with pytest.raises(InputDataError, match=r"silver.held_events at .*held_events has column rating of type "
                                             r"string; Portrait writes double there and can migrate only from bigint"):
        migrate(spark, cfg, "silver.held_events")
    assert _types(spark, cfg, "silver.held_events")["rating"] == "string"


def test_portrait_migrate_lists_then_rewrites_every_old_table_once(spark, tmp_path):
    """`portrait migrate --dry-run` names the tables and changes nothing; `portrait migrate` rewrites them."""
    from typer.testing import CliRunner

    from jobs.common.delta import replace_dates
    from portrait.cli import app
    from tests.conftest import lake_overrides

    cfg = make_config(tmp_path)
    old = [("e1", "1", None, "rating", "10", "2016-10-15T12:00:00+00:00", None, None, None, None, 3, None, None, None,
            "{}", "f.csv", 2, BEFORE, None, STAMP)]
    replace_dates(spark.createDataFrame(old, OLD_BRONZE), cfg, "bronze.events", [BEFORE])
    replace_dates(spark.createDataFrame([("e2", 2, BEFORE)], "event_id string, rating long, landed_date date"),
                  cfg, "silver.held_events", [BEFORE])
    env = {**lake_overrides(tmp_path), "PORTRAIT_ENV": "ci"}
    runner = CliRunner()

    dry = runner.invoke(app, ["migrate", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines() == ["bronze.events: rating bigint -> double (dry run: not changed)",
                                       "silver.held_events: rating bigint -> double (dry run: not changed)"]
    assert _types(spark, cfg, "bronze.events")["rating"] == "bigint"

    done = runner.invoke(app, ["migrate"], env=env)
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == ["bronze.events: rating bigint -> double (rewritten)",
                                        "silver.held_events: rating bigint -> double (rewritten)"]
    assert [_types(spark, cfg, t)["rating"] for t in ("bronze.events", "silver.held_events")] == ["double", "double"]
    from jobs.common.delta import read_table

    assert [r["rating"] for r in read_table(spark, cfg, "bronze.events").collect()] == [3.0]
    again = runner.invoke(app, ["migrate"], env=env)
    assert again.output.strip() == f"{cfg.lakehouse_root}: nothing to migrate"


def _ratings_landing(cfg) -> None:
    """Five MovieLens-like lines of one user on D: 3.5, 4, 4.0, 0.5 and a rating that is no number (bad_number)."""
    from pathlib import Path

    folder = Path(cfg.landing_zone) / "ratings"
    folder.mkdir(parents=True)
    noon = int(dt.datetime(2016, 10, 16, 12, tzinfo=dt.timezone.utc).timestamp())
    lines = [f"1,{item},{rating},{noon + 60 * n}" for n, (item, rating) in
             enumerate([("10", "3.5"), ("11", "4"), ("12", "4.0"), ("13", "0.5"), ("14", "abc")])]
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def old_lake(spark, tmp_path_factory):
    """A lakehouse whose bronze.events and silver.events were written with rating bigint, one old row
    each on the day before; then collect and clean run for D on the five landed ratings."""
    from jobs import clean, collect
    from jobs.common.delta import replace_dates

    base = tmp_path_factory.mktemp("old_lake")
    cfg = with_sources(make_config(base), {"ratings": {
        "kind": "events", "folder": "ratings", "layout": "history", "event_id": "hash_of_line",
        "emit_master": True, "timestamp": "epoch_s", "constants": {"event_type": "rating"},
        "columns": {"userId": "user_id", "movieId": "item_id", "rating": "rating", "timestamp": "ts"}}})
    _ratings_landing(cfg)
    old_bronze = [("old", "1", None, "rating", "10", "2016-10-15T12:00:00+00:00", None, None, None, None, 4,
                   None, None, None, '{"old": 4}', "old.jsonl", 1, BEFORE, None, STAMP)]
    replace_dates(spark.createDataFrame(old_bronze, OLD_BRONZE), cfg, "bronze.events", [BEFORE])
    old_silver = [("old", "k-old", None, "rating", "10", STAMP - dt.timedelta(days=1), None, None, None, None, 5,
                   None, None, None, BEFORE, BEFORE)]
    replace_dates(spark.createDataFrame(old_silver, OLD_SILVER), cfg, "silver.events", [BEFORE])
    collect.preflight(cfg, D, 1)
    collected = collect.run(spark, cfg, D, collect_days=1)
    cleaned = clean.run(spark, cfg, D, collect_days=1)
    return cfg, collected, cleaned


def test_collect_migrates_bronze_and_types_every_rating_as_a_number(spark, old_lake):
    from jobs.common.delta import read_table

    cfg, collected, _ = old_lake
    assert _types(spark, cfg, "bronze.events")["rating"] == "double"
    rows = sorted((r["event_date"], r["_line"], r["item_id"], r["rating"], r["_parse_error"])
                  for r in read_table(spark, cfg, "bronze.events").collect())
    assert rows == [(BEFORE, 1, "10", 4.0, None),  # the old row, kept
                    (D, 2, "10", 3.5, None), (D, 3, "11", 4.0, None), (D, 4, "12", 4.0, None),
                    (D, 5, "13", 0.5, None), (D, 6, "14", None, "bad_number")]  # "abc" is no rating
    audit = next(t for t in collected.tables if t.table == "bronze.events")
    assert (audit.rows_in, audit.rows_out, audit.quarantined) == (5, 4, {"bad_number": 1})


def test_half_stars_reach_silver_and_the_rest_is_quarantined_with_its_reason(spark, old_lake):
    from jobs.common.delta import read_table

    cfg, _, cleaned = old_lake
    assert _types(spark, cfg, "silver.events")["rating"] == "double"
    silver = sorted((r["event_date"], r["item_id"], r["rating"]) for r in read_table(spark, cfg, "silver.events").collect())
    assert silver == [(BEFORE, "10", 5.0), (D, "10", 3.5), (D, "11", 4.0), (D, "12", 4.0)]
    quarantine = read_table(spark, cfg, "bronze.quarantine")
    assert sorted((r["_line"], r["step"], r["reason"], r["_raw"].split(",")[2]) for r in quarantine.collect()) == [
        (5, "clean", "rating_out_of_range", "0.5"), (6, "collect", "bad_number", "abc")]
    counts = next(t for t in cleaned.tables if t.table == "silver.events")
    assert (counts.rows_in, counts.rows_out, counts.quarantined) == (4, 3, {"rating_out_of_range": 1})
