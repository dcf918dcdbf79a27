"""Benchmark quality validation: seconds to validate a day of a table against seconds to write it.

Usage: .venv/bin/python benchmarks/bench_quality.py [--rows 1000000] [--repeat 2]
                                                   [--tables silver.events,publish.recommendations] [--out FILE]

In a temporary lakehouse with the profile's Spark settings, for each table it writes a day of `rows`
rows (and what its checks read: the previous day, and for recommendations the day's items, profiles
and purchases), times the write of the validated day, then times validate() on it. It prints a table
and, with --out, writes the figures as JSON.

- silver.events: generated events of one UTC day, in the table's schema.
- publish.recommendations: rows / K users with K ranked items each (K = recommend.k), drawn from
  50,000 items, with a profile row per user and a purchase per user in the look-back window; the
  list-length, rank, score, bought-item and reference checks all run on it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time

DAY = dt.date(2026, 11, 14)
ITEMS = 50_000


def events_day(spark, rows: int, day: dt.date, seed: int, **overrides):
    """`rows` plausible events of one UTC day, in the silver.events schema, made inside Spark.

    `overrides` replace columns by expressions over the row number `id`.
    """
    from pyspark.sql import functions as F

    from jobs.clean import EVENT_TYPES, SILVER_EVENT_COLUMNS

    # Roughly the generator's mix: mostly views, then clicks and searches, few purchases.
    mix = ["view"] * 11 + ["click"] * 4 + ["search"] * 2 + ["add_to_cart", "purchase"] + list(EVENT_TYPES)
    h = F.abs(F.xxhash64(F.col("id"), F.lit(seed)))
    event_type = F.element_at(F.array(*[F.lit(t) for t in mix]), (h % len(mix) + 1).cast("int"))
    priced = event_type.isin("view", "click", "add_to_cart", "purchase")
    day_start = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc).timestamp())
    columns = {
        "event_id": F.format_string("e%012x", F.col("id") + F.lit(seed) * F.lit(10**10)),
        "user_key": F.sha2((F.col("id") % 20000).cast("string"), 256),
        "session_id": F.format_string("s%012x", (F.col("id") / 7).cast("long") + F.lit(seed) * F.lit(10**10)),
        "event_type": event_type,
        "item_id": F.when(event_type != "search", F.format_string("i%06d", h % ITEMS)),
        "ts": F.timestamp_seconds(F.lit(day_start) + (F.col("id") * 86399 / rows).cast("long")),
        "price": F.when(priced, F.round(F.lit(5.0) + (h % 200000) / 100.0, 2)),
        "quantity": F.when(event_type.isin("add_to_cart", "remove_from_cart", "purchase"), h % 3 + 1),
        "query": F.when(event_type == "search", F.lit("running shoes")),
        "review_text": F.when(event_type == "review", F.lit("Works well.")),
        "rating": F.when(event_type.isin("review", "rating"), (h % 5 + 1).cast("double")),
        "device": F.element_at(F.array(*[F.lit(x) for x in ("ios", "android", "web", "mini_program")]),
                               (h % 4 + 1).cast("int")),
        "channel": F.element_at(F.array(*[F.lit(x) for x in ("organic", "search_ads", "social", "email", "push")]),
                                (h % 5 + 1).cast("int")),
        "geo": F.lit("Shanghai"),
        "event_date": F.lit(day),
        "landed_date": F.lit(day),
        **overrides,
    }
    # The columns clean writes today (the suite requires no other); one this script does not know is left out.
    return spark.range(rows).select(*[columns[c].alias(c) for c in SILVER_EVENT_COLUMNS if c in columns])


def rec_user_key(user):
    """Keys of the recommendation benchmark's users, apart from the events' users."""
    from pyspark.sql import functions as F

    return F.sha2(F.concat(F.lit("r"), user.cast("long").cast("string")), 256)


def recommendations_day(spark, rows: int, k: int, day: dt.date):
    """rows // k users, each with k distinct items in rank order and falling scores."""
    from pyspark.sql import functions as F

    users = max(1, rows // k)
    return spark.range(users * k).select(
        rec_user_key(F.col("id") / k).alias("user_key"),
        F.lit(day).alias("as_of_date"),
        ((F.col("id") % k) + 1).cast("int").alias("rank"),
        # k consecutive items from a per-user start: distinct within a user.
        F.format_string("i%06d", ((F.col("id") / k).cast("long") * 7 + F.col("id") % k) % ITEMS).alias("item_id"),
        F.round(F.lit(1.0) - (F.col("id") % k) / F.lit(k + 1.0), 6).alias("score"),
        F.lit("popular in electronics, your interest tag (0.80)").alias("reason"),
        F.lit("1").alias("model_version"),
    )


def _timed(step):
    started = time.perf_counter()
    value = step()
    return value, time.perf_counter() - started


def bench_events(spark, cfg, rows: int):
    from jobs.common.delta import replace_dates

    previous = DAY - dt.timedelta(days=1)
    replace_dates(events_day(spark, rows, previous, 1), cfg, "silver.events", [previous])
    _, seconds = _timed(lambda: replace_dates(events_day(spark, rows, DAY, 2), cfg, "silver.events", [DAY]))
    return seconds


def bench_recommendations(spark, cfg, rows: int):
    """Writes what the checks read, then times the write of the day's recommendations."""
    from pyspark.sql import functions as F

    from jobs.common.delta import replace_dates

    k = int(cfg.get("recommend.k"))
    users = max(1, rows // k)
    items = spark.range(ITEMS).select(
        F.format_string("i%06d", F.col("id")).alias("item_id"), F.lit("electronics").alias("category"),
        F.lit("Sony").alias("brand"), F.lit(10.0).alias("price"), F.lit(10).cast("long").alias("views_30d"),
        F.lit(1).cast("long").alias("purchases_30d"), F.lit(1.0).alias("popularity"),
        F.lit(0.1).alias("conversion_30d"), F.lit(0.5).alias("price_pct_in_category"), F.lit(DAY).alias("as_of_date"))
    replace_dates(items, cfg, "gold.item_features", [DAY])
    # The checks read only user_key and the date of the profile: a narrow table stands in for it here.
    profiles = spark.range(users).select(rec_user_key(F.col("id")).alias("user_key"), F.lit(DAY).alias("as_of_date"))
    replace_dates(profiles, cfg, "publish.user_profile", [DAY])
    # One purchase per user in the look-back window, of the item just after its list.
    bought = events_day(spark, users, DAY - dt.timedelta(days=3), 3, user_key=rec_user_key(F.col("id")),
                        event_type=F.lit("purchase"), quantity=F.lit(1).cast("long"), price=F.lit(10.0),
                        item_id=F.format_string("i%06d", (F.col("id") * 7 + k) % ITEMS))
    replace_dates(bought, cfg, "silver.events", [DAY - dt.timedelta(days=3)])
    _, seconds = _timed(lambda: replace_dates(recommendations_day(spark, rows, k, DAY), cfg,
                                              "publish.recommendations", [DAY]))
    return seconds


BENCHES = {"silver.events": bench_events, "publish.recommendations": bench_recommendations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the validated day")
    parser.add_argument("--repeat", type=int, default=2, help="validations to time; the best is reported")
    parser.add_argument("--tables", default=",".join(BENCHES), help=f"comma-separated, of {', '.join(BENCHES)}")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = set(tables) - set(BENCHES)
    if unknown:
        parser.error(f"unknown tables {sorted(unknown)}; choose from {', '.join(BENCHES)}")

    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PORTRAIT__LAKEHOUSE_ROOT"] = f"{tmp}/lakehouse"
        os.environ.setdefault("PORTRAIT_HMAC_KEY", "benchmark-key-0123456789abcdef")
        from jobs.common.config import load_config
        from jobs.common.spark import build_spark
        from jobs.quality import validate

        cfg = load_config()
        spark = build_spark(cfg, app_suffix="bench-quality")
        import great_expectations  # noqa: F401  -- imported once, outside the timing, as in a long-lived worker

        for table in tables:
            write_seconds = BENCHES[table](spark, cfg, args.rows)
            timings, report = [], None
            for _ in range(args.repeat):
                report, seconds = _timed(lambda: validate(spark, cfg, table, DAY))
                timings.append(seconds)
            best = min(timings)
            figures.append({
                "table": table, "rows": report.row_count, "checks": len(report.results), "passed": report.success,
                "failed_checks": [r.check_id for r in report.results if r.failed],
                "write_seconds": round(write_seconds, 2), "validate_seconds": round(best, 2),
                "validate_seconds_all": [round(t, 2) for t in timings],
                "validate_to_write_ratio": round(best / write_seconds, 2),
                "spark_master": str(cfg.get("spark.master")),
            })
        spark.stop()

    print(f"{'table':<26}{'rows':>11}{'checks':>8}{'write s':>9}{'validate s (all runs)':>24}{'ratio':>7}  passed")
    for f in figures:
        runs = "{:.1f} ({})".format(f["validate_seconds"], ", ".join(f"{t:.1f}" for t in f["validate_seconds_all"]))
        passed = "yes" if f["passed"] else "NO: " + ", ".join(f["failed_checks"])
        print(f"{f['table']:<26}{f['rows']:>11,}{f['checks']:>8}{f['write_seconds']:>9.1f}{runs:>24}"
              f"{f['validate_to_write_ratio']:>7.2f}  {passed}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            json.dump(figures, out, indent=1)


if __name__ == "__main__":
    main()
