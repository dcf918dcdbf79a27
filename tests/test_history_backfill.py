"""`portrait backfill`: a range of days loaded by one run (collect and clean as one job each), rerun-safe."""

import datetime as dt
from collections import Counter

import pytest

from jobs.runner import PIPELINE, run_step, task_id

FIRST = dt.date(2026, 11, 1)
DAYS = 6
LAST = FIRST + dt.timedelta(days=DAYS - 1)


def _backfill_through(cfg, last_task: str) -> list[dict]:
    """What `portrait backfill --from FIRST --to LAST` runs up to `last_task`, less the validations (their
    own tests cover them; on 2 shared cores they tripled this test's time)."""
    tasks = [task_id(step, params) for step, params in PIPELINE]
    return [run_step(step, LAST, cfg, reload_from=FIRST.isoformat(), **params)
            for step, params in PIPELINE[:tasks.index(last_task) + 1] if step != "validate"]


@pytest.mark.spark
def test_backfill_loads_every_day_once_and_a_rerun_changes_nothing(spark, tmp_path):
    from pyspark.sql import functions as F

    from jobs.common.delta import read_table
    from jobs.generate import generate
    from tests.conftest import make_config

    cfg = make_config(tmp_path)
    landed = generate(tmp_path / "landing", tmp_path / "ground_truth", users=40, days=DAYS, seed=3,
                      start_date=FIRST)
    results = _backfill_through(cfg, "features")
    # Run again (collect and clean, the steps that load the range): the same days are replaced, never duplicated.
    collect, clean = (run_step(step, LAST, cfg, reload_from=FIRST.isoformat()) for step in ("collect", "clean"))
    assert [r["step"] for r in results] == ["collect", "clean", "features"]
    assert collect["details"]["dates"] == [(FIRST + dt.timedelta(days=n)).isoformat() for n in range(DAYS)]
    bronze = read_table(spark, cfg, "bronze.events")
    per_day = {r["event_date"].isoformat(): r["n"] for r in bronze.groupBy("event_date").agg(F.count("*").alias("n")).collect()}
    assert per_day == landed.events_per_day   # every day of the range, each exactly once
    assert bronze.select("event_id").distinct().count() == landed.events

    silver = read_table(spark, cfg, "silver.events")
    silver_days = Counter(r["landed_date"] for r in silver.select("landed_date").collect())
    assert sorted(silver_days) == [FIRST + dt.timedelta(days=n) for n in range(DAYS)]
    assert sum(silver_days.values()) == silver.select("event_id").distinct().count()
    silver_count = next(t for t in clean["tables"] if t["table"] == "silver.events")
    assert silver_count["rows_in"] == landed.events and silver_count["rows_out"] == sum(silver_days.values())

    audit = read_table(spark, cfg, "ops.run_audit").collect()
    assert {r["run_date"] for r in audit} == {LAST}   # the range is audited once, under the run date
    assert Counter((r["step"], r["table_name"]) for r in audit)[("clean", "silver.events")] == 1
    unbalanced = [(r["step"], r["table_name"]) for r in audit if not r["balanced"]]
    assert unbalanced == []
    events_audit = next(r for r in audit if (r["step"], r["table_name"]) == ("clean", "silver.events"))
    assert events_audit["rows_in"] == landed.events

    gold = read_table(spark, cfg, "gold.user_features")
    assert {r["as_of_date"] for r in gold.select("as_of_date").distinct().collect()} == {LAST}


def _data_files(spark, path) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, str(path)).detail().collect()[0]["numFiles"])


@pytest.mark.spark
def test_a_write_of_many_days_makes_one_file_per_day_not_one_per_task_and_day(spark, tmp_path):
    from jobs.common.catalog import table_path
    from jobs.common.delta import replace_dates
    from tests.conftest import make_config

    cfg = make_config(tmp_path)
    days = [FIRST + dt.timedelta(days=n) for n in range(3)]
    rows = [(f"u{n}", days[n % 3], n) for n in range(24)]
    # 4 tasks, each holding rows of all 3 days (what a shuffle by user or event id leaves)
    flags = spark.createDataFrame(rows, "user_key string, landed_date date, events long").repartition(4, "user_key")
    assert flags.rdd.getNumPartitions() == 4

    assert replace_dates(flags, cfg, "silver.user_flags", days) == 24
    assert _data_files(spark, table_path(cfg, "silver.user_flags")) == 3

    plain = tmp_path / "plain"   # the same frame written without the optimized write: a file per task and day
    flags.write.format("delta").partitionBy("landed_date").save(str(plain))
    assert _data_files(spark, plain) > 3   # 11 or 12, as the hash spreads the days over the tasks
