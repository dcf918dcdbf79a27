"""Benchmark the features step: one daily increment against a 90-day recompute, and DuckDB as a reference.

Usage: .venv/bin/python benchmarks/bench_features.py [--events 1000000 10000000] [--out bench_features.json]

For each size: jobs.generate writes 91 days of sample events (users = events / 830, the generator's ~9
events per user per day), which are loaded into a temporary lakehouse as silver tables (user id as the
key: pseudonymising is clean's cost, not this step's). Then, for the last day D:

* full step: `jobs.features.run(mode="full")` for D (state, user features, item features written);
* incremental step: the same for D after D-1's state was written (it reads D's events and the days
  leaving the 7/30/90-day windows);
* core: only the user-feature state of D (full vs incremental) computed into Spark's no-op sink;
* DuckDB: the core aggregations (event counts by type over 1/7/30/90 days and decayed category
  affinity) in one SQL query over the same Parquet files, checked against Spark's state.

Prints a table and, with --out, writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

START = dt.date(2026, 8, 1)
DAYS = 91  # a 90-day window for D plus the day before it
EVENTS_PER_USER = 830  # ~9.2 events per user per day over 90 days (measured on the generator)


def load_silver(spark, cfg, landing: Path) -> dict[str, int]:
    """Generated landing files -> silver.events / users / items, typed like clean writes them."""
    from pyspark.sql import functions as F

    from jobs.clean import age_band
    from jobs.common.catalog import table_path
    from jobs.common.taxonomy import PATH_SEPARATOR

    schema = ("event_id string, user_id string, session_id string, event_type string, item_id string, ts string, "
              "price double, quantity long, query string, review_text string, rating double, device string, "
              "channel string, geo string")
    raw = spark.read.schema(schema).json(str(landing / "events"))
    ts = F.to_timestamp("ts")
    events = raw.select(
        "event_id", F.col("user_id").alias("user_key"), "session_id", "event_type", "item_id", ts.alias("ts"), "price",
        "quantity", "query", "review_text", "rating", "device", "channel", "geo",
        F.to_date(ts).alias("event_date"), F.to_date(ts).alias("landed_date"),
    )
    events.write.format("delta").mode("overwrite").partitionBy("event_date").save(table_path(cfg, "silver.events"))
    items = spark.read.json(str(landing / "items")).select(
        "item_id", "title", "category_path",
        F.split("category_path", PATH_SEPARATOR).getItem(0).alias("category"), "brand", F.col("price").cast("double"),
        F.lit(START).alias("snapshot_date"))
    items.write.format("delta").mode("overwrite").partitionBy("snapshot_date").save(table_path(cfg, "silver.items"))
    users = spark.read.json(str(landing / "users")).select(
        F.col("user_id").alias("user_key"), age_band(F.col("age")).alias("age_band"), "gender", "occupation", "city",
        F.to_date("signup_date").alias("signup_date"), F.lit(START).alias("snapshot_date"))
    users.write.format("delta").mode("overwrite").partitionBy("snapshot_date").save(table_path(cfg, "silver.users"))
    return {"items": items.count(), "users": users.count()}


DUCKDB_CORE = """
WITH window_events AS (
    SELECT e.user_key, e.event_type, e.event_date, date_diff('day', e.event_date, DATE '{day}') AS age,
           CASE WHEN e.event_type = 'search' THEN NULL ELSE i.category END AS category
    FROM read_parquet({events}) e LEFT JOIN read_parquet({items}) i USING (item_id)
    WHERE e.event_date BETWEEN DATE '{first}' AND DATE '{day}'
), counts AS (
    SELECT user_key,
           {count_columns}
    FROM window_events GROUP BY user_key
), affinity AS (
    SELECT user_key, category, SUM(weight * pow(0.5, age / {half_life})) AS weight
    FROM window_events JOIN (VALUES {weights}) AS w(event_type, weight) USING (event_type)
    WHERE category IS NOT NULL AND weight > 0
    GROUP BY user_key, category
)
SELECT c.*, a.category, a.weight FROM counts c LEFT JOIN affinity a USING (user_key)
"""


def duckdb_core(events_files: list[str], items_files: list[str], day: dt.date, half_life: float):
    """Windowed counts by type and decayed category weights of every user, in DuckDB."""
    import duckdb

    from jobs.feature_state import EVENT_TYPES, EVENT_WEIGHTS

    columns = ["COUNT(*) FILTER (WHERE age < {w}) AS n_events__{w}".format(w=w) for w in (1, 7, 30, 90)]
    columns += [f"COUNT(*) FILTER (WHERE age < {w} AND event_type = '{t}') AS n_{t}__{w}"
                for t in EVENT_TYPES for w in (1, 7, 30, 90)]
    weights = ", ".join(f"('{t}', {w})" for t, w in EVENT_WEIGHTS.items() if t != "search")
    sql = DUCKDB_CORE.format(
        day=day.isoformat(), first=(day - dt.timedelta(days=89)).isoformat(), events=events_files, items=items_files,
        count_columns=",\n           ".join(columns), half_life=half_life, weights=weights)
    connection = duckdb.connect()
    connection.execute("PRAGMA threads=2")
    started = time.perf_counter()
    frame = connection.execute(sql).df()
    return time.perf_counter() - started, frame


def _files(path: str) -> list[str]:
    from deltalake import DeltaTable

    return DeltaTable(path).file_uris()


def bench(size: int, workdir: Path, seed: int) -> dict:
    from pyspark.sql import functions as F

    from jobs.common.catalog import table_path
    from jobs.common.config import load_config
    from jobs.common.delta import read_table
    from jobs.common.spark import build_spark
    from jobs.feature_state import FeatureParams, transform_full_state, transform_incremental_state
    from jobs.features import feature_params, run
    from jobs.generate import generate

    base = workdir / f"events-{size}"
    os.environ["PORTRAIT__LAKEHOUSE_ROOT"] = str(base / "lakehouse")
    cfg = load_config()
    users = max(50, round(size / EVENTS_PER_USER))
    started = time.perf_counter()
    summary = generate(base / "landing", base / "ground_truth", users=users, days=DAYS, seed=seed, start_date=START)
    generate_s = time.perf_counter() - started

    spark = build_spark(cfg, app_suffix="bench-features")
    started = time.perf_counter()
    counts = load_silver(spark, cfg, base / "landing")
    load_s = time.perf_counter() - started
    day = START + dt.timedelta(days=DAYS - 1)
    yesterday = day - dt.timedelta(days=1)
    events = read_table(spark, cfg, "silver.events")
    window_events = events.where(F.col("event_date") > F.lit(day - dt.timedelta(days=90))).count()
    day_events = events.where(F.col("event_date") == F.lit(day)).count()

    def timed(fn):
        began = time.perf_counter()
        value = fn()
        return time.perf_counter() - began, value

    full_step_s, full_result = timed(lambda: run(spark, cfg, day, mode="full"))
    run(spark, cfg, yesterday, mode="full")  # the state the increment continues
    incremental_step_s, incremental_result = timed(lambda: run(spark, cfg, day, mode="incremental"))
    assert incremental_result.details["mode"] == "incremental", incremental_result.details

    params: FeatureParams = feature_params(cfg)
    items = read_table(spark, cfg, "silver.items")
    previous = read_table(spark, cfg, "gold.user_feature_state").where(F.col("as_of_date") == F.lit(yesterday))
    full_core_s, _ = timed(lambda: transform_full_state(events, items, day, params).write.format("noop").mode("overwrite").save())
    incremental_core_s, _ = timed(lambda: transform_incremental_state(events, items, previous, day, params)
                                  .write.format("noop").mode("overwrite").save())
    state = read_table(spark, cfg, "gold.user_feature_state").where(F.col("as_of_date") == F.lit(day))
    active_users = state.count()
    spark_totals = state.agg(F.sum("n_events__90"), F.sum("n_purchase__7")).collect()[0]

    duck_s, duck = duckdb_core(_files(table_path(cfg, "silver.events")), _files(table_path(cfg, "silver.items")),
                               day, params.half_life_days)
    per_user = duck.drop_duplicates("user_key")
    agrees = (int(per_user["n_events__90"].sum()) == int(spark_totals[0])
              and int(per_user["n_purchase__7"].sum()) == int(spark_totals[1]))
    spark.stop()
    return {
        "events_generated": summary.events, "users": counts["users"], "items": counts["items"],
        "window_events": window_events, "day_events": day_events, "active_users": active_users,
        "generate_s": round(generate_s, 1), "load_silver_s": round(load_s, 1),
        "full_step_s": round(full_step_s, 1), "incremental_step_s": round(incremental_step_s, 1),
        "full_core_s": round(full_core_s, 1), "incremental_core_s": round(incremental_core_s, 1),
        "full_events_per_s": round(window_events / full_core_s),
        "full_users_per_s": round(counts["users"] / full_core_s),
        "incremental_events_per_s": round(day_events / incremental_core_s),
        "incremental_users_per_s": round(counts["users"] / incremental_core_s),
        "full_over_incremental_core": round(full_core_s / incremental_core_s, 2),
        "full_over_incremental_step": round(full_step_s / incremental_step_s, 2),
        "duckdb_core_s": round(duck_s, 2), "spark_full_core_over_duckdb": round(full_core_s / duck_s, 1),
        "duckdb_agrees_with_spark": agrees,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000], help="generated events per size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--workdir", type=Path, help="keep the data here (default: a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("PORTRAIT_HMAC_KEY", "benchmark-key-0123456789abcdef")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        for size in args.events:
            figures = {"target_events": size, **bench(size, workdir, args.seed)}
            results.append(figures)
            print(json.dumps(figures), flush=True)

    header = ("events", "users", "full s", "incr s", "full ev/s", "incr ev/s", "full users/s", "incr users/s",
              "full/incr", "step full/incr", "DuckDB s", "Spark/DuckDB")
    print(" | ".join(header))
    for r in results:
        print(" | ".join(str(x) for x in (
            r["window_events"], r["users"], r["full_core_s"], r["incremental_core_s"], r["full_events_per_s"],
            r["incremental_events_per_s"], r["full_users_per_s"], r["incremental_users_per_s"],
            r["full_over_incremental_core"], r["full_over_incremental_step"], r["duckdb_core_s"],
            r["spark_full_core_over_duckdb"])))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
