"""Schema migrations of an existing lakehouse: column type changes that Delta cannot make in place.

Delta's type widening (`delta.enableTypeWidening`, Delta 4.4) changes byte/short/int to long or
double and long only to decimal: `ALTER TABLE ... ALTER COLUMN rating TYPE DOUBLE` on a bigint column
fails with DELTA_UNSUPPORTED_ALTER_TABLE_CHANGE_COL_OP, and a write of doubles into it fails with
DELTA_FAILED_TO_MERGE_FIELDS (a MERGE would instead cast 3.5 to 3). So a migration here rewrites the
table once, every value cast to the new type, as one Delta commit (`overwriteSchema`): the old
version stays readable by time travel until VACUUM, and a failed rewrite leaves the table as it was.

A step calls `migrate(spark, cfg, name)` for each table it writes before it writes it (collect:
bronze.events; clean: silver.events and silver.held_events). docs/cleaning.md ("Upgrading an older
lakehouse") says what happens to an older lakehouse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs.common.catalog import spec, table_path
from jobs.common.config import Config
from jobs.common.delta import read_table, table_exists
from jobs.common.errors import InputDataError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColumnMigration:
    table: str
    column: str
    old_type: str   # Spark's simpleString of the type an older lakehouse has: bigint
    new_type: str   # the contract's type now: double
    why: str


# Only changes that keep every old value exactly (|x| < 2**53 for bigint -> double).
MIGRATIONS: tuple[ColumnMigration, ...] = tuple(
    ColumnMigration(table, "rating", "bigint", "double", "ratings in half stars (MovieLens 0.5 .. 5.0)")
    for table in ("bronze.events", "silver.events", "silver.held_events")
)


def pending(spark: "SparkSession", cfg: Config, name: str) -> list[ColumnMigration]:
    """The migrations table `name` still needs (none for a table that does not exist yet).

    A column of neither the old nor the new type is an error that names the table, column and type.
    """
    wanted = [m for m in MIGRATIONS if m.table == name]
    if not wanted or not table_exists(spark, cfg, name):
        return []
    types = {f.name: f.dataType.simpleString() for f in read_table(spark, cfg, name).schema.fields}
    for m in wanted:
        if m.column in types and types[m.column] not in (m.old_type, m.new_type):
            raise InputDataError(
                f"{name} at {table_path(cfg, name)} has column {m.column} of type {types[m.column]}; Portrait "
                f"writes {m.new_type} there and can migrate only from {m.old_type}. Cast the column by hand "
                "(docs/cleaning.md, 'Upgrading an older lakehouse') or move the table away and reload it"
            )
    return [m for m in wanted if types.get(m.column) == m.old_type]


def migrate(spark: "SparkSession", cfg: Config, name: str) -> list[ColumnMigration]:
    """Bring table `name` to the contract's column types by one rewrite; returns the migrations applied.

    Idempotent: a table already migrated (or not there yet) is left alone. Partitioning and table
    properties stay as they are; `DESCRIBE HISTORY` shows the rewrite with its userMetadata.
    """
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    todo = pending(spark, cfg, name)
    if not todo:
        return []
    path = table_path(cfg, name)
    partition_by = list(DeltaTable.forPath(spark, path).detail().collect()[0]["partitionColumns"]
                        or spec(name).partition_by)
    new_types = {m.column: m.new_type for m in todo}
    table = read_table(spark, cfg, name)
    rewritten = table.select(*[F.col(f"`{c}`").cast(new_types[c]).alias(c) if c in new_types else F.col(f"`{c}`")
                               for c in table.columns])
    what = ", ".join(f"{m.column} {m.old_type} -> {m.new_type}" for m in todo)
    log.info("migrating %s at %s: %s (one rewrite of the table)", name, path, what)
    (
        rewritten.write.format("delta").mode("overwrite")
        .option("overwriteSchema", "true")
        .option("userMetadata", f"portrait migration: {what}")
        .partitionBy(*partition_by)
        .save(path)
    )
    return todo


def migrate_lakehouse(spark: "SparkSession", cfg: Config, dry_run: bool = False) -> dict[str, list[ColumnMigration]]:
    """Every table with pending migrations -> those migrations, applied unless `dry_run` (`portrait migrate`).

    The steps migrate the tables they write on their own; this does it for all of them at once, before a
    backfill that runs several days side by side (two runs rewriting one table: one of them fails).
    """
    done: dict[str, list[ColumnMigration]] = {}
    for name in dict.fromkeys(m.table for m in MIGRATIONS):
        todo = pending(spark, cfg, name) if dry_run else migrate(spark, cfg, name)
        if todo:
            done[name] = todo
    return done
