"""Benchmark re-ranking (jobs/rerank.py): seconds to turn candidates into top-K lists with MMR.

Usage: .venv/bin/python benchmarks/bench_rerank.py [--users 20000] [--candidates 100] [--k 10] [--out FILE]

Synthetic candidates (`candidates` per user from 50,000 items in 22 categories, 5% of items unavailable,
one bought item per user) go through rerank() in a local Spark session with the profile's settings;
the result is counted, so every user's greedy MMR runs. It also times mmr_select() on one user in plain
Python, which is the per-user cost inside applyInPandas. Prints a table; --out writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time

ITEMS = 50_000
CATEGORIES = 22


def frames(spark, users: int, candidates: int):
    from pyspark.sql import functions as F

    from jobs.rerank import SOURCES

    items = spark.range(ITEMS).select(
        F.format_string("i%06d", "id").alias("item_id"),
        F.format_string("c%02d", F.col("id") % CATEGORIES).alias("category"),
        F.format_string("b%03d", F.col("id") % 300).alias("brand"),
        (F.lit(5.0) + F.col("id") % 997).cast("double").alias("price"),
        (F.col("id") % 20 != 0).alias("available"),
    )
    h = F.abs(F.xxhash64("id"))
    cands = spark.range(users * candidates).select(
        F.format_string("u%07d", (F.col("id") / candidates).cast("long")).alias("user_key"),
        F.format_string("i%06d", h % ITEMS).alias("item_id"),
        ((h % 10_000) / 10_000.0).alias("score"),
        F.element_at(F.array(*[F.lit(s) for s in SOURCES]), (F.col("id") % len(SOURCES) + 1).cast("int")).alias("source"),
        F.lit("c01").alias("evidence"),
    )
    bought = spark.range(users).select(F.format_string("u%07d", "id").alias("user_key"),
                                       F.format_string("i%06d", F.col("id") % ITEMS).alias("item_id"))
    return cands, bought, items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import pandas as pd

    from jobs.common.config import load_config
    from jobs.common.spark import build_spark
    from jobs.rerank import mmr_select, rerank

    spark = build_spark(load_config(), app_suffix="bench-rerank")
    cands, bought, items = frames(spark, args.users, args.candidates)
    started = time.monotonic()
    rows = rerank(cands, bought, items, k=args.k, mmr_lambda=0.7, rules={"max_per_brand": 3}).count()
    spark_s = time.monotonic() - started

    one = pd.DataFrame({"user_key": "u", "item_id": [f"i{i}" for i in range(args.candidates)],
                        "score": [i / args.candidates for i in range(args.candidates)], "source": "embedding",
                        "evidence": "", "category": [f"c{i % CATEGORIES}" for i in range(args.candidates)],
                        "brand": [f"b{i % 300}" for i in range(args.candidates)]})
    started = time.monotonic()
    for _ in range(200):
        mmr_select(one, args.k, 0.7, max_per_brand=3)
    per_user_ms = (time.monotonic() - started) / 200 * 1000

    figures = {"users": args.users, "candidates_per_user": args.candidates, "k": args.k, "rows_out": rows,
               "rerank_seconds": round(spark_s, 1), "users_per_second": round(args.users / spark_s),
               "mmr_select_ms_per_user": round(per_user_ms, 2)}
    print(f"{'users':>8} {'cands/user':>10} {'k':>3} {'rows out':>10} {'rerank s':>9} {'users/s':>9} {'mmr ms/user':>12}")
    print(f"{args.users:>8,} {args.candidates:>10} {args.k:>3} {rows:>10,} {spark_s:>9.1f} "
          f"{figures['users_per_second']:>9,} {per_user_ms:>12.2f}")
    if args.out:
        with open(args.out, "w") as out:
            json.dump(figures, out, indent=2)
    spark.stop()


if __name__ == "__main__":
    main()
