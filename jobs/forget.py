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
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from jobs.common.catalog import TABLES, spec, table_path
from jobs.common.config import Config
from jobs.common.delta import read_table, table_exists
from jobs.common.errors import ConfigError, InputDataError
from jobs.common.privacy import load_hmac_key, pseudonymise_py
from jobs.common.runlock import forget_lock

if TYPE_CHECKING:
    from collections.abc import Callable

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
    # Data files outside a table's current version that held the person (uncommitted writes of a killed
    # or conflicting run, older versions), per table: VACUUM FULL removes them.
    stray_files: dict[str, int] = field(default_factory=dict)
    snapshots_removed: list[str] = field(default_factory=list)   # training snapshot folders
    docs_changed: list[str] = field(default_factory=list)        # quality report files rewritten or removed
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
        would = "would be " if self.dry_run else ""
        for table, n in sorted(self.stray_files.items()):
            out.append(f"  {table:<28} {n} data file(s) outside the table's current version held the person: "
                       f"{would}removed (VACUUM FULL)")
        if self.snapshots_removed:
            out.append(f"training snapshots {would}removed: {', '.join(self.snapshots_removed)}")
        if self.docs_changed:
            out.append(f"quality report files {would}rewritten or removed: {len(self.docs_changed)}")
        if self.tables_vacuumed:
            out.append(f"vacuumed (retention 0): {', '.join(self.tables_vacuumed)}")
        if self.request_id:
            out.append(f"recorded in {REQUESTS_TABLE} as request {self.request_id}")
        return out


# The id as a whole token (so `u1` does not match `u10`): no word character on either side.
_TOKEN_OPEN, _TOKEN_CLOSE = "(?<![A-Za-z0-9_])", "(?![A-Za-z0-9_])"


def token_pattern(raw_id: str) -> str:
    """A Java regex that finds the id as a whole token, quoted literally (Spark's side of mentions_person)."""
    quoted = "\\Q" + raw_id.replace("\\E", "\\E\\\\E\\Q") + "\\E"
    return f"{_TOKEN_OPEN}{quoted}{_TOKEN_CLOSE}"


PERSON_SCHEMA = "raw_id string, user_key string, pattern string"
PERSON = "p"     # the one-row frame of the person in forget's MERGE
TARGET = "t"


def _person(raw_id: str, user_key: str, in_merge: bool) -> "tuple[Column, Column, Column]":
    """The raw id, the pseudonym and the token pattern: literals to count, the person frame's columns to change.

    A DELETE or UPDATE writes its condition, literals included, into the Delta log's commit info (and
    DESCRIBE HISTORY) for delta.logRetentionDuration; a MERGE on a one-row frame records only the
    column names, so forget does not write the id it removes into every table's log.
    """
    from pyspark.sql import functions as F

    if in_merge:
        return F.col(f"{PERSON}.raw_id"), F.col(f"{PERSON}.user_key"), F.col(f"{PERSON}.pattern")
    return F.lit(raw_id), F.lit(user_key), F.lit(token_pattern(raw_id))


def person_rows(columns: list[str], raw_id: str, user_key: str, in_merge: bool = False) -> "Column | None":
    """The rows of a table that belong to the person, from the columns it has; None if it has none of them."""
    from pyspark.sql import functions as F

    raw, key, pattern = _person(raw_id, user_key, in_merge)
    col = (lambda c: F.col(f"{TARGET}.`{c}`")) if in_merge else F.col
    conditions = [F.trim(col(c)) == raw for c in RAW_ID_COLUMNS if c in columns]
    conditions += [col(c) == key for c in KEY_COLUMNS if c in columns]
    conditions += [F.coalesce(F.regexp(col(c), pattern), F.lit(False)) for c in RAW_TEXT_COLUMNS if c in columns]
    if not conditions:
        return None
    combined = conditions[0]
    for condition in conditions[1:]:
        combined = combined | condition
    return F.coalesce(combined, F.lit(False))


def _mentions(column: str, raw_id: str, user_key: str, in_merge: bool = False) -> "Column":
    from pyspark.sql import functions as F

    raw, key, pattern = _person(raw_id, user_key, in_merge)
    text = F.col(f"{TARGET}.`{column}`") if in_merge else F.col(column)
    return F.coalesce(text.contains(key) | F.regexp(text, pattern), F.lit(False))


def _condition(columns: list[str], texts: list[str] | None, raw_id: str, user_key: str,
               in_merge: bool = False) -> "Column | None":
    """The person's rows, or (texts given) the rows whose text mentions them; on the table itself to count
    them, or (in_merge) as the MERGE's condition. None when the table has no column to find them by."""
    from pyspark.sql import functions as F

    if texts is None:
        return person_rows(columns, raw_id, user_key, in_merge)
    condition = F.lit(False)
    for c in texts:
        condition = condition | _mentions(c, raw_id, user_key, in_merge)
    return condition


def mentions_person(raw_id: str, user_key: str) -> "Callable[[str], bool]":
    """A text test for the person: the pseudonym anywhere, or the raw id as a whole token (Python's token_pattern)."""
    token = re.compile(f"{_TOKEN_OPEN}{re.escape(raw_id)}{_TOKEN_CLOSE}")
    return lambda text: user_key in text or token.search(text) is not None


def _vacuum(spark: "SparkSession", path: str, full: bool = False) -> None:
    """VACUUM with retention 0: LITE takes the files to delete from the Delta log; FULL lists the folders,
    so it also deletes files no commit ever named (uncommitted writes of a killed or conflicting run)."""
    quoted = path.replace("`", "``")
    try:
        try:
            spark.sql(f"VACUUM delta.`{quoted}` RETAIN 0 HOURS {'FULL' if full else 'LITE'}").collect()
        except Exception as exc:
            if full or "DELTA_CANNOT_VACUUM_LITE" not in str(exc):
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
    _vacuum(spark, path)


def _filesystem(location: str) -> "tuple[Any, str]":
    """pyarrow's file system and path of a location: a local folder, or s3a:// (pyarrow says s3://)."""
    import pyarrow.fs as pafs

    uri = "s3://" + location[len("s3a://"):] if location.startswith("s3a://") else location
    if "://" not in uri:
        uri = str(Path(uri).resolve())
    return pafs.FileSystem.from_uri(uri)


def _same_file(uri: str) -> str:
    """A data file's location as pyarrow lists it: /abs/path locally, bucket/key on an object store."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path)
    return unquote(parsed.netloc + parsed.path)


def _data_files(fs: Any, folder: str) -> list[str]:
    """Every Parquet file under a table folder, its log aside: committed, old and never committed alike."""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                  and "/_delta_log/" not in i.path)


def file_mentions(fs: Any, path: str, mentions: "Callable[[str], bool]") -> bool:
    """Whether a Parquet file holds the person in any text value; a file that cannot be read (torn by a
    killed writer) cannot be shown clean, so it counts as holding them."""
    import json as _json

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, filesystem=fs)
    except Exception:
        return True
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            values = [v for v in pc.unique(column).to_pylist() if v]
        elif pa.types.is_nested(column.type):
            values = [_json.dumps(column.to_pylist(), default=str, ensure_ascii=False)]
        else:
            continue
        if any(mentions(v) for v in values):
            return True
    return False


def _stray_files(spark: "SparkSession", fs: Any, folder: str, path: str,
                 mentions: "Callable[[str], bool]") -> list[str]:
    """Data files in a table folder that the table's current version does not read and that hold the person."""
    referenced = {_same_file(f) for f in spark.read.format("delta").load(path).inputFiles()}
    return [f for f in _data_files(fs, folder) if f not in referenced and file_mentions(fs, f, mentions)]


def _forget_in_table(spark: "SparkSession", cfg: Config, name: str, raw_id: str, user_key: str,
                     dry_run: bool, vacuum: bool) -> tuple[int | None, int]:
    """Rows of the person in one table, removed (or blanked, in ops) and vacuumed, and the number of data
    files outside its current version that held them; (None, 0) = nothing to look at."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    path = table_path(cfg, name)
    mentions = mentions_person(raw_id, user_key)
    if not table_exists(spark, cfg, name):
        # A first write killed before its commit leaves data files and no log: nothing reads them, so
        # the ones that hold the person are simply deleted.
        fs, folder = _filesystem(path)
        strays = [f for f in _data_files(fs, folder) if file_mentions(fs, f, mentions)]
        if strays and vacuum and not dry_run:
            for f in strays:
                fs.delete_file(f)
        return None, len(strays)
    frame = read_table(spark, cfg, name)
    scrub = spec(name).layer in SCRUB_LAYERS
    texts = [f.name for f in frame.schema.fields if f.dataType.simpleString() == "string"] if scrub else None
    condition = _condition(frame.columns, texts, raw_id, user_key) if texts or not scrub else None
    if condition is None:    # no column to find the person by (ops: no text column)
        return None, 0
    found = frame.where(condition).count()
    if found and not dry_run:
        person = spark.createDataFrame([(raw_id, user_key, token_pattern(raw_id))], PERSON_SCHEMA)
        merge = DeltaTable.forPath(spark, path).alias(TARGET).merge(person.alias(PERSON), _condition(
            frame.columns, texts, raw_id, user_key, in_merge=True))
        if scrub:
            # One commit blanks every mentioning column of the rows; the rows stay.
            merge = merge.whenMatchedUpdate(set={
                c: F.when(_mentions(c, raw_id, user_key, True), F.lit(None).cast("string"))
                .otherwise(F.col(f"{TARGET}.`{c}`")) for c in texts})
        else:
            merge = merge.whenMatchedDelete()
        merge.execute()
        if vacuum:
            _purge_and_vacuum(spark, path)
    if not vacuum:
        return found, 0
    fs, folder = _filesystem(path)
    strays = _stray_files(spark, fs, folder, path, mentions)
    if strays and not dry_run:
        _vacuum(spark, path, full=True)
    return found, len(strays)


def forget_user(spark: "SparkSession", cfg: Config, raw_id: str, reason: str | None = None,
                requested_by: str | None = None, dry_run: bool = False, vacuum: bool = True) -> ForgetResult:
    """Delete the person's rows from every catalog table, blank their traces in ops, vacuum, drop the
    training snapshots and rewrite the quality reports that hold them, record.

    Tables are independent, so a few are worked on at once: most of the time of a Delta command on a
    small table is planning and committing, not reading. The lakehouse-wide forget lock keeps runs out
    meanwhile: a VACUUM FULL would delete the files of a write in flight.
    """
    raw_id = (raw_id or "").strip()
    if not raw_id:
        raise InputDataError("forget needs the person's user id (--user); it was empty")
    user_key = pseudonymise_py(load_hmac_key(cfg), raw_id)
    if dry_run:
        return _forget(spark, cfg, raw_id, user_key, None, None, dry_run, vacuum)
    with forget_lock(cfg):
        return _forget(spark, cfg, raw_id, user_key, reason, requested_by, dry_run, vacuum)


def _forget(spark: "SparkSession", cfg: Config, raw_id: str, user_key: str, reason: str | None,
            requested_by: str | None, dry_run: bool, vacuum: bool) -> ForgetResult:
    from concurrent.futures import ThreadPoolExecutor

    from jobs.quality import forget_in_docs

    result = ForgetResult(user_key, dry_run=dry_run)
    names = [name for name in TABLES if name not in NOT_TOUCHED]
    with ThreadPoolExecutor(max_workers=FORGET_THREADS) as pool:
        found = dict(zip(names, pool.map(
            lambda name: _forget_in_table(spark, cfg, name, raw_id, user_key, dry_run, vacuum), names)))
    result.rows_removed = {name: n for name, (n, _) in found.items() if n is not None}
    result.stray_files = {name: k for name, (_, k) in found.items() if k}
    mentions = mentions_person(raw_id, user_key)
    result.snapshots_removed = forget_in_snapshots(cfg, mentions, dry_run)
    result.docs_changed = forget_in_docs(cfg, mentions, dry_run)
    if dry_run:
        return result
    if vacuum:
        result.tables_vacuumed = sorted(name for name, n in result.rows_removed.items()
                                        if n or name in result.stray_files)
    result.request_id = _record(spark, cfg, result, reason, requested_by)
    return result


def forget_in_snapshots(cfg: Config, mentions: "Callable[[str], bool]", dry_run: bool) -> list[str]:
    """Remove every training snapshot (model.snapshot_dir/<run date>/) that holds the person.

    A snapshot is a cache of one training run's examples: the next train of that date writes it again
    from the tables, which no longer hold the person, so dropping it whole is both simplest and complete.
    """
    import pyarrow.fs as pafs

    fs, root = _filesystem(cfg.location("model.snapshot_dir"))
    removed = []
    for entry in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if entry.type == pafs.FileType.Directory:
            if any(file_mentions(fs, f, mentions) for f in _data_files(fs, entry.path)):
                removed.append(entry.base_name)
                if not dry_run:
                    fs.delete_dir(entry.path)
        elif entry.path.endswith(".parquet") and file_mentions(fs, entry.path, mentions):
            removed.append(entry.base_name)
            if not dry_run:
                fs.delete_file(entry.path)
    return sorted(removed)


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
