"""Benchmark collect and clean against DuckDB doing the same reading, de-duplication and typing.

Usage:
  .venv/bin/python benchmarks/bench_clean.py                       # 1M and 10M events (10M takes a while)
  .venv/bin/python benchmarks/bench_clean.py --events 1000000 --out bench_clean.json
  .venv/bin/python benchmarks/bench_clean.py --events 200000 --format csv --gzip

For each size it generates a landing zone (jobs.generate, `--days` day files), then runs each engine in
its own child process while sampling the memory of that process and all its children (the Spark driver,
its JVM and Python workers; DuckDB's process), so peak memory is per engine:

- spark collect: jobs.collect.run over every day (collect_days = --days), the profile's Spark settings
  (PORTRAIT_ENV, default local: local[2], driver 3g); seconds are the step alone, without Spark's start.
- duckdb: read the same files, drop duplicate event_ids, type ts/price/quantity/rating, write Parquet,
  with as many threads as Spark has cores.
- spark clean: jobs.clean over what collect wrote (`child_spark_clean`); `--steps collect` skips it.

Prints one table and, with --out, writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from _harness import child_environment, each_size, peak_mib, run_sampled, write_figures

START = dt.date(2026, 11, 1)
EVENTS_PER_USER_DAY = 9.2  # what the generator draws on average (bench_generate.py)
DEFAULT_SIZES = "1000000,10000000"


# --------------------------------------------------------------------------------------------------
# Child processes: each engine runs alone in one, so its memory is its own.


def _timed_step(step: str, table: str, days: int) -> dict[str, Any]:
    """Run jobs.<step> over the generated days in a fresh Spark session; the clock starts after Spark."""
    import importlib

    from jobs.common.config import load_config
    from jobs.common.spark import build_spark

    module = importlib.import_module(f"jobs.{step}")
    cfg = load_config()
    started = time.perf_counter()
    spark = build_spark(cfg, app_suffix="bench")
    spark_start = time.perf_counter() - started
    last = START + dt.timedelta(days=days - 1)
    started = time.perf_counter()
    result = module.run(spark, cfg, last, collect_days=days)
    seconds = time.perf_counter() - started
    counts = next(t for t in result.tables if t.table == table)
    spark.stop()
    return {"seconds": seconds, "spark_start_seconds": spark_start, "rows": counts.rows_in,
            "rows_out": counts.rows_out, "duplicates": counts.duplicates, "quarantined": counts.quarantined_total}


def child_spark_collect(days: int) -> dict[str, Any]:
    """jobs.collect over the landing zone into bronze."""
    return _timed_step("collect", "bronze.events", days)


def child_spark_clean(days: int) -> dict[str, Any]:
    """jobs.clean over the bronze tables that collect just wrote."""
    return _timed_step("clean", "silver.events", days)


def child_duckdb(landing: Path, file_format: str, threads: int, out: Path) -> dict[str, Any]:
    import duckdb

    pattern = str(landing / "events" / "*" / "*")
    columns = ("event_id", "user_id", "session_id", "event_type", "item_id", "ts", "price", "quantity", "query",
               "review_text", "rating", "device", "channel", "geo")
    as_text = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in columns) + "}"
    if file_format == "jsonl":
        source = f"read_json('{pattern}', format = 'newline_delimited', columns = {as_text}, ignore_errors = true)"
    elif file_format == "csv":
        source = f"read_csv('{pattern}', header = true, columns = {as_text}, ignore_errors = true)"
    else:
        source = f"read_parquet('{pattern}')"
    typed = ", ".join(
        f"try_cast({c} AS TIMESTAMPTZ) AS {c}" if c == "ts"
        else f"try_cast({c} AS DOUBLE) AS {c}" if c in ("price", "rating")
        else f"try_cast({c} AS BIGINT) AS {c}" if c == "quantity"
        else c
        for c in columns)
    connection = duckdb.connect()
    connection.execute(f"SET threads = {threads}")
    connection.execute("SET TimeZone = 'UTC'")
    started = time.perf_counter()
    connection.execute(
        f"COPY (SELECT {typed} FROM {source} WHERE event_id IS NOT NULL "
        f"QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY ts, user_id) = 1) "
        f"TO '{out}' (FORMAT parquet)")
    seconds = time.perf_counter() - started
    rows_out = connection.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    rows_in = connection.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
    return {"seconds": seconds, "rows": rows_in, "rows_out": rows_out}


# --------------------------------------------------------------------------------------------------
# The parent: generate, run each child, sample its memory.


def _run_child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run this script as a child with `args`; returns its JSON answer plus peak_rss_mib of its process tree."""
    print(f"  running {args[0]} ...", file=sys.stderr, flush=True)
    answer, samples = run_sampled([sys.executable, __file__, "--child", *args], env, f"{' '.join(args)} failed")
    if answer is not None:
        answer["peak_rss_mib"] = peak_mib(samples)
    print(f"  {args[0]}: {json.dumps(answer)}", file=sys.stderr, flush=True)
    return answer


def _spark_cores() -> int:
    from jobs.common.config import load_config

    master = str(load_config().get("spark.master"))
    if master.startswith("local[") and master[6:-1].isdigit():
        return int(master[6:-1])
    return os.cpu_count() or 1


def bench_size(events: int, days: int, file_format: str, compress: bool, workdir: Path,
               steps: tuple[str, ...] = ("collect", "clean")) -> dict[str, Any]:
    from jobs.generate import generate

    users = max(1, math.ceil(events / (days * EVENTS_PER_USER_DAY)))
    started = time.perf_counter()
    summary = generate(workdir / "landing", workdir / "ground_truth", users=users, days=days, seed=1,
                       start_date=START, file_format=file_format, gzip=compress)
    landing_bytes = sum(p.stat().st_size for p in (workdir / "landing" / "events").rglob("*") if p.is_file())
    row: dict[str, Any] = {
        "events_target": events, "events": summary.events, "users": users, "days": days, "format": file_format,
        "gzip": compress, "landing_mib": round(landing_bytes / 2**20), "generate_seconds":
            round(time.perf_counter() - started, 1),
    }
    env = child_environment(workdir)
    row["spark_collect"] = _run_child(["spark_collect", str(days)], env)
    row["spark_clean"] = _run_child(["spark_clean", str(days)], env) if "clean" in steps else None
    row["duckdb"] = _run_child(["duckdb", str(workdir / "landing"), file_format, str(_spark_cores()),
                                str(workdir / "duckdb.parquet")], env)
    for engine in ("spark_collect", "spark_clean", "duckdb"):
        figures = row[engine]
        if figures:
            figures["events_per_s"] = round(figures["rows"] / figures["seconds"]) if figures["seconds"] else None
            figures["seconds"] = round(figures["seconds"], 1)
    collect, duck = row["spark_collect"], row["duckdb"]
    row["duckdb_vs_spark_collect"] = round(duck["events_per_s"] / collect["events_per_s"], 1)
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| events | format | engine | seconds | events/s | peak RSS (MiB) | note |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        fmt = row["format"] + (".gz" if row["gzip"] else "")
        for engine, label in (("spark_collect", "Spark collect"), ("spark_clean", "Spark clean"),
                              ("duckdb", "DuckDB read+dedupe+type")):
            figures = row.get(engine)
            if not figures:
                lines.append(f"| {row['events']:,} | {fmt} | {label} | – | – | – | not measured in this run |")
                continue
            note = (f"Spark start {figures['spark_start_seconds']:.0f} s not counted"
                    if "spark_start_seconds" in figures else f"{row['duckdb_vs_spark_collect']}× Spark collect")
            lines.append(f"| {row['events']:,} | {fmt} | {label} | {figures['seconds']} | {figures['events_per_s']:,} "
                         f"| {figures['peak_rss_mib']:,} | {note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        kind, *rest = argv[1:]
        if kind == "spark_collect":
            answer = child_spark_collect(int(rest[0]))
        elif kind == "spark_clean":
            answer = child_spark_clean(int(rest[0]))
        else:
            answer = child_duckdb(Path(rest[0]), rest[1], int(rest[2]), Path(rest[3]))
        print(json.dumps(answer))
        return

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", default=DEFAULT_SIZES, help=f"comma-separated sizes (default {DEFAULT_SIZES})")
    parser.add_argument("--days", type=int, default=5, help="day files the events are spread over (default 5)")
    parser.add_argument("--format", dest="file_format", default="jsonl", choices=("jsonl", "csv", "parquet"))
    parser.add_argument("--gzip", action="store_true", help="gzip the landing files")
    parser.add_argument("--steps", default="collect,clean",
                        help="Spark steps to time: collect,clean (default) or collect (DuckDB always runs)")
    parser.add_argument("--workdir", default=None, help="where to put the data (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    rows = each_size(args.events, args.workdir, "bench_clean_", lambda size, workdir: bench_size(
        size, args.days, args.file_format, args.gzip, workdir, tuple(args.steps.split(","))))
    print(_table(rows))
    write_figures(args.out, rows)


if __name__ == "__main__":
    main()
