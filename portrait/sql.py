"""SQL over the lakehouse, named as the catalog names it (`publish.user_profile`): Spark SQL, or DuckDB without Spark.

- Spark: register_tables() creates schema `layer` and table `layer.table` (`USING delta LOCATION`) in the
  session's in-memory catalog for every catalog table that exists; `portrait sql "SELECT ..."` runs on it.
- No Spark: duckdb_connection() opens each table with delta-rs (`deltalake`) as an Arrow dataset and
  registers it in DuckDB as a view `layer.table`, so the same SELECT runs there (or read into pandas).

Time travel, in both: as_of_version={"publish.user_profile": 3} pins a table to a Delta version. In Spark
SQL, `SELECT ... FROM publish.user_profile VERSION AS OF 3` / `TIMESTAMP AS OF '2026-11-20'` works too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.common.catalog import TABLES, spec, table_path
from jobs.common.config import Config
from jobs.common.errors import ConfigError, PortraitError

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    from pyspark.sql import SparkSession

FORMATS = ("table", "csv", "json")


class SQLError(PortraitError):
    """The query could not run: the engine's message, on one line."""


def parse_versions(items: Iterable[str]) -> dict[str, int]:
    """["publish.user_profile=3"] -> {"publish.user_profile": 3}; the table must be in the catalog."""
    versions: dict[str, int] = {}
    for item in items:
        name, sep, number = item.partition("=")
        if not sep or not number.strip().isdigit():
            raise ConfigError(f"--as-of-version takes TABLE=VERSION (publish.user_profile=3), not '{item}'")
        versions[spec(name.strip()).name] = int(number)
    return versions


def _exists(location: str) -> bool:
    if "://" in location:
        return True  # object stores: let the engine say whether it is there
    return (Path(location) / "_delta_log").is_dir()


def existing_tables(cfg: Config) -> list[str]:
    return [name for name in TABLES if _exists(table_path(cfg, name))]


def _check_versions(cfg: Config, versions: Mapping[str, int]) -> None:
    missing = [name for name in versions if not _exists(table_path(cfg, name))]
    if missing:
        raise ConfigError(f"--as-of-version names {', '.join(missing)}, which has no Delta table in {cfg.lakehouse_root}")


# --- Spark ----------------------------------------------------------------------------------------

def register_tables(spark: "SparkSession", cfg: Config, as_of_version: Mapping[str, int] | None = None) -> list[str]:
    """Every existing catalog table as `layer.table` in the session catalog; returns the names registered."""
    versions = dict(as_of_version or {})
    _check_versions(cfg, versions)
    names = existing_tables(cfg)
    for layer in sorted({spec(n).layer for n in names}):
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {layer}")
    for name in names:
        location = table_path(cfg, name).replace("'", "\\'")
        # Both kinds are only entries in the in-memory catalog: dropping one never touches the files.
        if spark.catalog.tableExists(name):
            kind = "VIEW" if spark.catalog.getTable(name).tableType == "VIEW" else "TABLE"
            spark.sql(f"DROP {kind} {name}")
        if name in versions:
            spark.sql(f"CREATE VIEW {name} AS SELECT * FROM delta.`{location}` VERSION AS OF {versions[name]}")
        else:
            spark.sql(f"CREATE TABLE {name} USING delta LOCATION '{location}'")
    return names


def _one_line(exc: BaseException) -> str:
    """The first line of an engine's message (Spark's says what and where; the rest is advice and plan)."""
    first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    text = re.sub(r"\s*SQLSTATE: \w+.*$", "", " ".join(first.split()))
    return text[:400] + ("…" if len(text) > 400 else "")


def spark_query(spark: "SparkSession", cfg: Config, sql: str, as_of_version: Mapping[str, int] | None = None,
                limit: int | None = None) -> "pd.DataFrame":
    """Run `sql` with the lakehouse registered; at most `limit` rows come back (None = all)."""
    from pyspark.errors import PySparkException
    from py4j.protocol import Py4JJavaError

    import logging

    register_tables(spark, cfg, as_of_version)
    # PySpark also logs a failed query with its whole JVM stack; the one-line SQLError below says it.
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    try:
        frame = spark.sql(sql)
        return (frame.limit(limit) if limit is not None else frame).toPandas()
    except (PySparkException, Py4JJavaError) as exc:
        raise SQLError(f"SQL failed: {_one_line(exc)}") from None


# --- delta-rs + DuckDB ----------------------------------------------------------------------------

def duckdb_connection(cfg: Config, as_of_version: Mapping[str, int] | None = None,
                      tables: Iterable[str] | None = None) -> "duckdb.DuckDBPyConnection":
    """An in-memory DuckDB with every existing table (or `tables`) as view `layer.table`; no Spark, no JVM.

    Each table is a delta-rs Arrow dataset, so filters and projections are pushed down to the Parquet files.
    """
    import duckdb
    from deltalake import DeltaTable

    versions = dict(as_of_version or {})
    _check_versions(cfg, versions)
    names = [spec(t).name for t in tables] if tables is not None else existing_tables(cfg)
    con = duckdb.connect()
    for layer in sorted({spec(n).layer for n in names}):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
    for name in names:
        table = DeltaTable(table_path(cfg, name), version=versions.get(name))
        arrow_name = name.replace(".", "__")
        con.register(arrow_name, table.to_pyarrow_dataset())
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM {arrow_name}")
    return con


def duckdb_query(cfg: Config, sql: str, as_of_version: Mapping[str, int] | None = None) -> "pd.DataFrame":
    import duckdb

    con = duckdb_connection(cfg, as_of_version)
    try:
        # through Arrow, so DATE stays a date (as from Spark) instead of becoming a timestamp
        return con.sql(sql).to_arrow_table().to_pandas()
    except duckdb.Error as exc:
        raise SQLError(f"SQL failed: {_one_line(exc)}") from None
    finally:
        con.close()


# --- output ---------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """numpy and Arrow values as plain Python, for JSON and for comparing engines."""
    import numpy as np

    if hasattr(value, "asDict"):  # a Spark Row (struct) reads as a dict, as DuckDB gives it
        return {k: _plain(v) for k, v in value.asDict().items()}
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def rows(frame: "pd.DataFrame") -> list[tuple]:
    """The result as a list of tuples of plain Python values (NaN and None both as None)."""
    import math

    def clean(v: Any) -> Any:
        v = _plain(v)
        if hasattr(v, "to_pydatetime"):
            v = v.to_pydatetime()
        return None if (isinstance(v, float) and math.isnan(v)) or v is None else v

    return [tuple(clean(v) for v in record) for record in frame.itertuples(index=False, name=None)]


def render(frame: "pd.DataFrame", fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        columns = list(frame.columns)
        return "\n".join(json.dumps(dict(zip(columns, r)), default=str, ensure_ascii=False) for r in rows(frame))
    if frame.empty:
        return "(no rows)  columns: " + ", ".join(frame.columns)
    return frame.to_string(index=False, max_colwidth=60)
