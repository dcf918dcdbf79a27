"""Benchmark quality validation: seconds to validate a silver.events day against seconds to write it.

Usage: .venv/bin/python benchmarks/bench_quality.py [--rows 1000000] [--repeat 2]
Builds a silver.events-shaped day (and the previous day, which the day-to-day checks read) in a
temporary lakehouse with the profile's Spark settings, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time

DAY = dt.date(2026, 11, 14)


def events_day(spark, rows: int, day: dt.date, seed: int):
    """`rows` plausible events of one UTC day, in the silver.events schema, made inside Spark."""
    from pyspark.sql import functions as F

    from jobs.clean import EVENT_TYPES, SILVER_EVENT_COLUMNS

    # Roughly the generator's mix: mostly views, then clicks and searches, few purchases.
    mix = ["view"] * 11 + ["click"] * 4 + ["search"] * 2 + ["add_to_cart", "purchase"] + list(EVENT_TYPES)
    h = F.abs(F.xxhash64(F.col("id"), F.lit(seed)))
    event_type = F.element_at(F.array(*[F.lit(t) for t in mix]), (h % len(mix) + 1).cast("int"))
    priced = event_type.isin("view", "click", "add_to_cart", "purchase")
    day_start = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc).timestamp())
    frame = spark.range(rows).select(
        F.format_string("e%012x", F.col("id") + F.lit(seed) * F.lit(10**10)).alias("event_id"),
        F.sha2((F.col("id") % 20000).cast("string"), 256).alias("user_key"),
        F.format_string("s%012x", (F.col("id") / 7).cast("long") + F.lit(seed) * F.lit(10**10)).alias("session_id"),
        event_type.alias("event_type"),
        F.when(event_type != "search", F.format_string("i%06d", h % 50000)).alias("item_id"),
        F.timestamp_seconds(F.lit(day_start) + (F.col("id") * 86399 / rows).cast("long")).alias("ts"),
        F.when(priced, F.round(F.lit(5.0) + (h % 200000) / 100.0, 2)).alias("price"),
        F.when(event_type.isin("add_to_cart", "remove_from_cart", "purchase"), h % 3 + 1).alias("quantity"),
        F.when(event_type == "search", F.lit("running shoes")).alias("query"),
        F.when(event_type == "review", F.lit("Works well.")).alias("review_text"),
        F.when(event_type.isin("review", "rating"), h % 5 + 1).alias("rating"),
        F.element_at(F.array(*[F.lit(x) for x in ("ios", "android", "web", "mini_program")]), (h % 4 + 1).cast("int")).alias("device"),
        F.element_at(F.array(*[F.lit(x) for x in ("organic", "search_ads", "social", "email", "push")]), (h % 5 + 1).cast("int")).alias("channel"),
        F.lit("Shanghai").alias("geo"),
        F.lit(day).alias("event_date"),
    )
    return frame.select(*SILVER_EVENT_COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="events in the validated day")
    parser.add_argument("--repeat", type=int, default=2, help="validations to time; the best is reported")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PORTRAIT__LAKEHOUSE_ROOT"] = f"{tmp}/lakehouse"
        os.environ.setdefault("PORTRAIT_HMAC_KEY", "benchmark-key-0123456789abcdef")
        from jobs.common.config import load_config
        from jobs.common.delta import replace_dates
        from jobs.common.spark import build_spark
        from jobs.quality import validate

        cfg = load_config()
        spark = build_spark(cfg, app_suffix="bench-quality")
        previous = DAY - dt.timedelta(days=1)
        replace_dates(events_day(spark, args.rows, previous, 1), cfg, "silver.events", [previous])

        started = time.perf_counter()
        replace_dates(events_day(spark, args.rows, DAY, 2), cfg, "silver.events", [DAY])
        write_seconds = time.perf_counter() - started

        import great_expectations  # noqa: F401  -- imported once, outside the timing, as in a long-lived worker

        timings, report = [], None
        for _ in range(args.repeat):
            started = time.perf_counter()
            report = validate(spark, cfg, "silver.events", DAY)
            timings.append(time.perf_counter() - started)
        validate_seconds = min(timings)
        print(json.dumps({
            "table": "silver.events", "rows": report.row_count, "checks": len(report.results),
            "passed": report.success, "failed_checks": [r.check_id for r in report.results if r.failed],
            "write_seconds": round(write_seconds, 2), "validate_seconds": round(validate_seconds, 2),
            "validate_seconds_all": [round(t, 2) for t in timings],
            "validate_to_write_ratio": round(validate_seconds / write_seconds, 2),
            "spark_master": str(cfg.get("spark.master")),
        }))
        spark.stop()


if __name__ == "__main__":
    main()
