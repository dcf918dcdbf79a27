"""Forget: remove one person from every layer (Delta DELETE, then VACUUM) and record the request.

`portrait forget --user RAW_ID` calls run_forget(). The person is found by the raw id in bronze (and
inside raw landed lines), by the HMAC pseudonym everywhere after bronze, and their traces in the ops
layer's free-text columns (validation samples) are blanked. docs/cleaning.md describes what is and
is not covered.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jobs.common.catalog import TABLES, spec, table_path
from jobs.common.config import Config
from jobs.common.delta import read_table, table_exists
from jobs.common.errors import ConfigError, InputDataError
from jobs.common.privacy import load_hmac_key, pseudonymise_py

if TYPE_CHECKING:
    from pyspark.sql import Column, SparkSession

REQUESTS_TABLE = "ops.forget_requests"
REQUESTS_SCHEMA = (
    "request_id string, user_key string, requested_at timestamp, request_date date, requested_by string, "
    "reason string, rows_removed map<string,long>, total_rows long, tables_vacuumed array<string>"
)
RAW_ID_COLUMNS = ("user_id", "src_user_id", "dst_user_id")     # bronze: the id as landed
KEY_COLUMNS = ("user_key", "src_key", "dst_key")               # silver and later: the pseudonym
RAW_TEXT_COLUMNS = ("_raw",)                                   # a landed line holds the id as a token
# Tables whose rows are about the pipeline, not about a person: their text is blanked, rows stay.
SCRUB_LAYERS = ("ops",)
NOT_TOUCHED = (REQUESTS_TABLE, "ops.run_audit")
FORGET_THREADS = 4


@dataclass
class ForgetResult:
    user_key: str
    rows_removed: dict[str, int] = field(default_factory=dict)
    tables_vacuumed: list[str] = field(default_factory=list)
    request_id: str | None = None
    dry_run: bool = False

    @property
    def total_rows(self) -> int:
        return sum(self.rows_removed.values())

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = [f"user_key {self.user_key}"]
        out += [f"  {table:<28} {verb} {n:>8,}" for table, n in sorted(self.rows_removed.items()) if n]
        if self.total_rows == 0:
            out.append("no rows of this person were found in any table; nothing removed"
                       + ("" if self.dry_run else " (the request is recorded)"))
        else:
            out.append(f"{verb} {self.total_rows:,} rows in {sum(1 for n in self.rows_removed.values() if n)} tables")
        if self.tables_vacuumed:
            out.append(f"vacuumed (retention 0): {', '.join(self.tables_vacuumed)}")
        if self.request_id:
            out.append(f"recorded in {REQUESTS_TABLE} as request {self.request_id}")
        return out


def token_pattern(raw_id: str) -> str:
    """A Java regex that finds the id as a whole token (so `u1` does not match `u10`), quoted literally."""
    quoted = "\\Q" + raw_id.replace("\\E", "\\E\\\\E\\Q") + "\\E"
    return f"(?<![A-Za-z0-9_]){quoted}(?![A-Za-z0-9_])"


def person_rows(columns: list[str], raw_id: str, user_key: str) -> "Column | None":
    """The rows of a table that belong to the person, from the columns it has; None if it has none of them."""
    from pyspark.sql import functions as F

    conditions = [F.trim(F.col(c)) == F.lit(raw_id) for c in RAW_ID_COLUMNS if c in columns]
    conditions += [F.col(c) == F.lit(user_key) for c in KEY_COLUMNS if c in columns]
    conditions += [F.coalesce(F.col(c).rlike(token_pattern(raw_id)), F.lit(False)) for c in RAW_TEXT_COLUMNS
                   if c in columns]
    if not conditions:
        return None
    combined = conditions[0]
    for condition in conditions[1:]:
        combined = combined | condition
    return F.coalesce(combined, F.lit(False))


def _mentions(column: str, raw_id: str, user_key: str) -> "Column":
    from pyspark.sql import functions as F

    text = F.col(column)
    return F.coalesce(text.contains(user_key) | text.rlike(token_pattern(raw_id)), F.lit(False))


def _purge_and_vacuum(spark: "SparkSession", path: str) -> None:
    """Make removed rows physically gone: rewrite deletion vectors away, then VACUUM with retention 0.

    LITE mode finds the files to delete in the Delta log instead of listing the table's folders, which
    is what makes VACUUM slow; when the log no longer covers every file, FULL mode does the listing.
    """
    from delta.tables import DeltaTable

    quoted = path.replace("`", "``")
    properties = DeltaTable.forPath(spark, path).detail().collect()[0]["properties"] or {}
    if str(properties.get("delta.enableDeletionVectors", "false")).lower() == "true":
        # With deletion vectors a DELETE only marks rows; PURGE rewrites the files without them.
        spark.sql(f"REORG TABLE delta.`{quoted}` APPLY (PURGE)")
    try:
        try:
            spark.sql(f"VACUUM delta.`{quoted}` RETAIN 0 HOURS LITE").collect()
        except Exception as exc:
            if "DELTA_CANNOT_VACUUM_LITE" not in str(exc):
                raise
            spark.sql(f"VACUUM delta.`{quoted}` RETAIN 0 HOURS FULL").collect()
    except Exception as exc:  # Delta refuses a 0-hour retention unless the check is off
        if "retentionDurationCheck" in str(exc):
            raise ConfigError(
                "VACUUM with retention 0 is refused: set spark.conf "
                "spark.databricks.delta.retentionDurationCheck.enabled: \"false\" in the profile "
                "(conf/local.yaml has it) so forgotten rows leave no old files behind"
            ) from None
        raise


def _forget_in_table(spark: "SparkSession", cfg: Config, name: str, raw_id: str, user_key: str,
                     dry_run: bool, vacuum: bool) -> int | None:
    """Rows of the person in one table, removed (or blanked, in ops) and vacuumed; None = nothing to look at."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    if not table_exists(spark, cfg, name):
        return None
    frame = read_table(spark, cfg, name)
    path = table_path(cfg, name)
    if spec(name).layer in SCRUB_LAYERS:
        texts = [f.name for f in frame.schema.fields if f.dataType.simpleString() == "string"]
        if not texts:
            return None
        hits = {c: _mentions(c, raw_id, user_key) for c in texts}
        condition = F.lit(False)
        for hit in hits.values():
            condition = condition | hit
        change = {c: F.when(hit, F.lit(None).cast("string")).otherwise(F.col(c)) for c, hit in hits.items()}
    else:
        condition = person_rows(frame.columns, raw_id, user_key)
        if condition is None:
            return None
        change = None
    found = frame.where(condition).count()
    if found and not dry_run:
        table = DeltaTable.forPath(spark, path)
        if change is None:
            table.delete(condition)
        else:
            table.update(condition=condition, set=change)  # one commit blanks every mentioning column
        if vacuum:
            _purge_and_vacuum(spark, path)
    return found


def forget_user(spark: "SparkSession", cfg: Config, raw_id: str, reason: str | None = None,
                requested_by: str | None = None, dry_run: bool = False, vacuum: bool = True) -> ForgetResult:
    """Delete the person's rows from every catalog table, blank their traces in ops, vacuum, record.

    Tables are independent, so a few are worked on at once: most of the time of a Delta command on a
    small table is planning and committing, not reading.
    """
    from concurrent.futures import ThreadPoolExecutor

    raw_id = (raw_id or "").strip()
    if not raw_id:
        raise InputDataError("forget needs the person's user id (--user); it was empty")
    user_key = pseudonymise_py(load_hmac_key(cfg), raw_id)
    result = ForgetResult(user_key, dry_run=dry_run)
    names = [name for name in TABLES if name not in NOT_TOUCHED]
    with ThreadPoolExecutor(max_workers=FORGET_THREADS) as pool:
        found = dict(zip(names, pool.map(
            lambda name: _forget_in_table(spark, cfg, name, raw_id, user_key, dry_run, vacuum), names)))
    result.rows_removed = {name: n for name, n in found.items() if n is not None}
    if dry_run:
        return result
    if vacuum:
        result.tables_vacuumed = [name for name, n in result.rows_removed.items() if n]
    result.request_id = _record(spark, cfg, result, reason, requested_by)
    return result


def _record(spark: "SparkSession", cfg: Config, result: ForgetResult, reason: str | None,
            requested_by: str | None) -> str:
    """Append one row: a request is never replaced, so the table is the log of every request."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    request_id = str(uuid.uuid4())
    who = requested_by or os.environ.get("PORTRAIT_REQUESTED_BY") or _os_user()
    row = (request_id, result.user_key, now, now.date(), who, reason, dict(result.rows_removed), result.total_rows,
           list(result.tables_vacuumed))
    frame = spark.createDataFrame([row], REQUESTS_SCHEMA)
    frame.write.format("delta").mode("append").partitionBy(*spec(REQUESTS_TABLE).partition_by).save(
        table_path(cfg, REQUESTS_TABLE))
    return request_id


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def run_forget(cfg: Config, raw_id: str, reason: str | None = None, requested_by: str | None = None,
               dry_run: bool = False) -> ForgetResult:
    """The CLI entry: check the id and the key before Spark starts, then forget."""
    if not (raw_id or "").strip():
        raise InputDataError("forget needs the person's user id (--user); it was empty")
    load_hmac_key(cfg)
    from jobs.common.spark import build_spark

    return forget_user(build_spark(cfg), cfg, raw_id, reason=reason, requested_by=requested_by, dry_run=dry_run)
