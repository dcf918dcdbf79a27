import datetime as dt

import pytest

from jobs.sequences import SEQUENCE_COLUMNS, transform_user_sequences

pytestmark = pytest.mark.spark
D = dt.date(2026, 11, 14)
EVENTS = "event_id string, user_key string, event_type string, item_id string, ts timestamp, event_date date"


def _ts(day: dt.date, seconds: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=seconds)


def _frames(spark, extra=()):
    y = D - dt.timedelta(days=1)
    events = spark.createDataFrame(
        [("e1", "a", "view", "i1", _ts(y, 100), y),
         ("e2", "a", "search", None, _ts(y, 150), y),          # no item: not an interaction
         ("e3", "a", "add_to_cart", "i2", _ts(y, 160), y),
         ("e5", "a", "purchase", "i2", _ts(D, 10), D),
         ("e4", "a", "view", "i9", _ts(D, 10), D),              # same second as e5: event_id orders them
         ("e6", "b", "view", "i1", _ts(D, 500), D),
         ("e7", "c", "view", "i1", _ts(D - dt.timedelta(days=95), 0), D - dt.timedelta(days=95)),  # outside window
         *extra],
        EVENTS,
    )
    items = spark.createDataFrame([("i1", "electronics"), ("i2", "beauty")], "item_id string, category string")
    return events, items


def _rows(df):
    return {r["user_key"]: r.asDict() for r in df.collect()}


def test_sequences_by_hand(spark):
    events, items = _frames(spark)
    rows = _rows(transform_user_sequences(events, items, D, max_length=10, window_days=90))
    assert set(rows) == {"a", "b"}
    a = rows["a"]
    assert a["item_ids"] == ["i1", "i2", "i9", "i2"]
    assert a["categories"] == ["electronics", "beauty", "unknown", "beauty"]
    assert a["event_types"] == ["view", "add_to_cart", "view", "purchase"]
    assert a["gaps"] == [0, 60, 86_400 - 160 + 10, 0]
    assert (a["length"], a["as_of_date"]) == (4, D)
    assert rows["b"]["item_ids"] == ["i1"] and rows["b"]["gaps"] == [0] and rows["b"]["length"] == 1


def test_sequences_keep_the_newest_n_and_their_gaps(spark):
    events, items = _frames(spark)
    a = _rows(transform_user_sequences(events, items, D, max_length=2))["a"]
    # The two newest interactions; the first kept gap is still measured from the dropped event before it.
    assert a["item_ids"] == ["i9", "i2"]
    assert a["gaps"] == [86_400 - 160 + 10, 0]
    assert a["length"] == 2


def test_sequences_are_point_in_time(spark):
    later = D + dt.timedelta(days=1)
    events, items = _frames(spark, extra=[("e8", "a", "view", "i1", _ts(later, 5), later),
                                          ("e9", "z", "view", "i1", _ts(later, 5), later)])
    before = _rows(transform_user_sequences(_frames(spark)[0], items, D, max_length=10))
    after = _rows(transform_user_sequences(events, items, D, max_length=10))
    assert after == before
    assert transform_user_sequences(events, items, D, max_length=10).columns == list(SEQUENCE_COLUMNS)


def test_sequences_leave_out_events_that_landed_after_the_date(spark):
    from pyspark.sql import functions as F

    events, items = _frames(spark)
    landed = events.withColumn("landed_date", F.col("event_date"))
    late = spark.createDataFrame([("e0", "b", "view", "i2", _ts(D, 1), D, D + dt.timedelta(days=1))],
                                 EVENTS + ", landed_date date")
    rows = _rows(transform_user_sequences(landed.unionByName(late), items, D, max_length=10))
    assert rows["b"]["item_ids"] == ["i1"]  # e0 happened on D but only landed the day after
    assert rows["a"]["item_ids"] == ["i1", "i2", "i9", "i2"]


def test_sequences_reject_a_non_positive_length(spark):
    events, items = _frames(spark)
    with pytest.raises(ValueError, match="max_length must be at least 1"):
        transform_user_sequences(events, items, D, max_length=0)


def test_sequences_step_writes_the_date_once_and_audits(spark, tmp_path):
    from pyspark.sql import functions as F

    from jobs import sequences
    from jobs.common.delta import read_table, replace_dates
    from tests.conftest import make_config

    cfg = make_config(tmp_path)
    events, items = _frames(spark)
    replace_dates(events, cfg, "silver.events", [D, D - dt.timedelta(days=1), D - dt.timedelta(days=95)])
    replace_dates(items.withColumn("snapshot_date", F.lit(D)), cfg, "silver.items", [D])
    for _ in range(2):  # a rerun replaces the date, it never adds to it
        result = sequences.run(spark, cfg, D)
    table = read_table(spark, cfg, "gold.user_sequences")
    assert sorted(r["user_key"] for r in table.collect()) == ["a", "b"]
    assert [(t.table, t.rows_in, t.rows_out) for t in result.tables] == [("gold.user_sequences", 2, 2)]
    audit = read_table(spark, cfg, "ops.run_audit").where("step = 'sequences'").collect()
    assert [(r["rows_in"], r["rows_out"], r["balanced"]) for r in audit] == [(2, 2, True)]
