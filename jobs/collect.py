"""Collect: landed event, user, item and social-edge files into the bronze layer, one partition per date.

Every landed record is kept as it came (`_raw`), with the file it came from and its 1-based line
number, typed where it parses. Records that cannot be used go to bronze.quarantine with a reason;
they stop the load only when their share of a file or a day passes `collect.max_quarantine_share`.

Files are read by Python tasks inside Spark (one task per file, see `read_landing_files`): Spark's
own text reader knows no line numbers, and line numbers are what lets a person find a bad record
with `sed -n Np FILE`. Nothing is collected to the driver but file names and per-file counts.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs.common.audit import write_audit
from jobs.common.config import Config
from jobs.common.delta import replace_dates
from jobs.common.errors import ConfigError, InputDataError
from jobs.common.landing import (
    EVENT_ID_FROM_COLUMN,
    EVENT_ID_HASH,
    EVENT_ID_HASH_OCCURRENCE,
    EVENT_SCHEMA,
    ITEM_SCHEMA,
    KIND_SCHEMA,
    KINDS,
    SOCIAL_EDGE_SCHEMA,
    USER_SCHEMA,
    FileLayout,
    Source,
    calendar_instants,
    iso_utc,
    parse_instants,
    parse_sources,
    schema_fields,
)
from jobs.common.migrations import migrate
from jobs.common.step import StepResult, TableCount

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame, SparkSession

EDGE_TYPES = ("follow", "share_to")

# Collect-side quarantine reasons; the clean step adds its own (docs/data-contract.md lists both).
REASON_UNPARSEABLE = "unparseable_json"
REASON_WRONG_COLUMNS = "wrong_column_count"
REASON_BAD_ENCODING = "bad_encoding"
REASON_NO_EVENT_ID = "missing_event_id"
REASON_BAD_PARQUET = "unparseable_parquet"
REASON_CONTROL_CHARACTERS = "control_characters"
REASON_BAD_NUMBER = "bad_number"
COLLECT_REASONS = (REASON_UNPARSEABLE, REASON_WRONG_COLUMNS, REASON_BAD_ENCODING, REASON_NO_EVENT_ID,
                   REASON_BAD_PARQUET, REASON_CONTROL_CHARACTERS, REASON_BAD_NUMBER)
# A raw C0 control character (tab aside) has no place in a text line: JSON forbids it unescaped, and
# in a delimited file it is binary junk. (Escaped in JSON, `\u0001`, the line is fine; clean strips it.)
_CONTROL_CHARACTER = r"[\x00-\x08\x0B-\x1F]"
# Cells that mean "no value" in the exports we read; any other text in a numeric column is a bad_number.
MISSING_NUMBER_TOKENS = ("null", "none", "na", "n/a", "nan", "\\n", "-")
# A file that cannot be read to its end (a truncated gzip stream, a vanished file) is not a bad
# record: the reader reports it this way and run() stops with the file and line, before writing.
_UNREADABLE = "unreadable_file"

QUARANTINE_COLUMNS = ("step", "reason", "_source_file", "_line", "_raw", "event_date", "_ingested_at")
DEFAULT_MAX_QUARANTINE_SHARE = 0.05

_KIND_SCHEMA = KIND_SCHEMA
_KIND_TABLE = {"events": "bronze.events", "users": "bronze.users", "items": "bronze.items",
               "social_edges": "bronze.social_edges"}

# File formats by extension; `.gz` may follow the text formats.
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_SKIPPED_PREFIXES = ("_", ".")  # _SUCCESS, .crc and other writer droppings

# The landing folders read when the profile declares no `collect.sources`.
DEFAULT_SOURCES: dict[str, dict[str, Any]] = {
    "events": {"kind": "events", "folder": "events"},
    "users": {"kind": "users", "folder": "users"},
    "items": {"kind": "items", "folder": "items"},
    "social_edges": {"kind": "social_edges", "folder": "social_edges", "optional": True},
}
_HASH_ID_PREFIX, _HASH_ID_HEX = "h", 20  # 80 bits: no collision in any realistic shop's lifetime

_BLOCK_BYTES = 16 << 20  # read text files in 16 MiB blocks, so memory stays flat on any file size
_PARQUET_BATCH_ROWS = 65_536

# What the Python reader hands back to Spark, per landed line.
RECORD_SCHEMA = "_file int, _line long, _raw string, _reason string, _cells array<string>"


# --------------------------------------------------------------------------------------------------
# Sources: which landing folders hold what, and how their columns map onto ours.


def configured_sources(cfg: Config) -> list[Source]:
    """The profile's `collect.sources`, checked, so a typo fails before Spark starts."""
    return parse_sources(cfg.get("collect.sources", None) or DEFAULT_SOURCES)


def max_quarantine_share(cfg: Config) -> float:
    share = float(cfg.get("collect.max_quarantine_share", DEFAULT_MAX_QUARANTINE_SHARE))
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"collect.max_quarantine_share must lie between 0 and 1, got {share}")
    return share


def landing_path(cfg: Config, *parts: str) -> str:
    return "/".join([cfg.landing_zone.rstrip("/"), *parts])


def _source_folder(cfg: Config, source: Source, day: dt.date | None) -> str:
    parts = [source.folder] + ([f"event_date={day.isoformat()}"] if day is not None else [])
    return landing_path(cfg, *parts)


# --------------------------------------------------------------------------------------------------
# Finding the files (driver side: names only).


@dataclass(frozen=True)
class LandingFile:
    uri: str          # what _source_file says: a local absolute path, or the full URI elsewhere
    fmt: str          # jsonl, csv or parquet
    source: str       # name of the Source it belongs to
    day: dt.date      # event_date for dated kinds, the run date for snapshots


def file_format(name: str) -> str | None:
    """jsonl, csv or parquet from the file name (`.gz` allowed after the text formats), else None."""
    lower = name.lower()
    if lower.endswith(".gz"):
        fmt = FORMATS.get("." + lower[:-3].rsplit(".", 1)[-1]) if "." in lower[:-3] else None
        return fmt if fmt in ("jsonl", "csv") else None
    return FORMATS.get("." + lower.rsplit(".", 1)[-1]) if "." in lower else None


def filesystem(uri: str, spark_conf: Mapping[str, str] | None = None):
    """A pyarrow filesystem and the path within it, for local paths, file:, s3a:/s3: and other URIs."""
    from pyarrow import fs as pafs

    if "://" not in uri and not uri.startswith("file:"):
        return pafs.LocalFileSystem(), uri
    scheme, rest = uri.split(":", 1)
    if scheme == "file":
        return pafs.LocalFileSystem(), "/" + rest.lstrip("/")
    if scheme in ("s3a", "s3"):
        conf = spark_conf or {}
        endpoint = conf.get("spark.hadoop.fs.s3a.endpoint")
        options: dict[str, Any] = {}
        if endpoint:
            scheme_part, _, host = endpoint.partition("://")
            options.update(endpoint_override=host or scheme_part, scheme="http" if scheme_part == "http" else "https")
        if str(conf.get("spark.hadoop.fs.s3a.path.style.access", "")).lower() == "true":
            options["force_virtual_addressing"] = False
        return pafs.S3FileSystem(**options), rest.lstrip("/")
    return pafs.FileSystem.from_uri(uri)


def _display_uri(root_uri: str, path: str) -> str:
    if "://" not in root_uri:
        return path
    scheme = root_uri.split("://", 1)[0]
    return f"{scheme}://{path}"


def list_files(folder_uri: str, spark_conf: Mapping[str, str] | None = None,
               fmt: str | None = None) -> list[tuple[str, str]] | None:
    """(uri, format) of every data file under a folder, sorted; None when the folder does not exist.

    `fmt` (a source's `format` setting) reads every file as that format, whatever its extension
    (`.txt`, `.dat`, `.tsv`); otherwise the extension decides.
    """
    from pyarrow import fs as pafs

    fs, path = filesystem(folder_uri, spark_conf)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return None
    if info.type != pafs.FileType.Directory:
        raise InputDataError(f"{folder_uri} is a file; the landing zone wants a folder there")
    found = []
    for entry in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if entry.type != pafs.FileType.File:
            continue
        relative = entry.path[len(path):].lstrip("/")
        if any(part.startswith(_SKIPPED_PREFIXES) for part in relative.split("/")):
            continue
        file_fmt = fmt or file_format(entry.base_name)
        if file_fmt is None:
            raise InputDataError(
                f"{_display_uri(folder_uri, entry.path)}: unknown file type; the landing zone takes "
                ".jsonl, .csv (either may be .gz) and .parquet files, or any text file where the source "
                "declares its format (collect.sources.NAME.format). Move the file elsewhere or rename it"
            )
        found.append((_display_uri(folder_uri, entry.path), file_fmt))
    return sorted(found)


def _spark_conf(cfg: Config) -> dict[str, str]:
    return {str(k): str(v) for k, v in (cfg.get("spark.conf", {}) or {}).items()}


def _require_landing(cfg: Config, path: str, what: str, fmt: str | None = None) -> list[tuple[str, str]]:
    found = list_files(path, _spark_conf(cfg), fmt)
    if found is None:
        raise InputDataError(
            f"no {what} at {path}: the landing zone ({cfg.landing_zone}) has nothing for it; "
            "run `portrait generate` or `portrait datasets import NAME`, or point landing_zone in the "
            "profile at the shop's files"
        )
    return found


def preflight(cfg: Config, run_date: dt.date, collect_days: int = 1) -> None:
    """Fail before Spark starts when the landing zone lacks a folder this run needs, or a file lacks a
    column its source's mapping names."""
    from jobs.common.dates import days_ending

    max_quarantine_share(cfg)
    sources = configured_sources(cfg)
    conf = _spark_conf(cfg)
    for source in sources:
        if source.daily_folders:
            folders = [(_source_folder(cfg, source, day), f"{source.name} for {day}")
                       for day in days_ending(run_date, collect_days)]
        else:
            what = f"{source.name} history" if source.history else f"{source.name} master data"
            folders = [(_source_folder(cfg, source, None), what)]
        for folder, what in folders:
            found = (list_files(folder, conf, source.layout.format) if source.optional
                     else _require_landing(cfg, folder, what, source.layout.format))
            for uri, fmt in found or []:
                check_file_columns(source, uri, fmt, conf)


def file_columns(uri: str, fmt: str, layout: FileLayout,
                 spark_conf: Mapping[str, str] | None = None) -> tuple[list[str], int] | None:
    """(column names, cells in the first record) of a landed file, from its header, its first JSON
    object or its Parquet schema; None for an empty file or one whose first line cannot be read."""
    fs, path = filesystem(uri, spark_conf)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            with fs.open_input_file(path) as handle:
                names = pq.read_schema(handle).names
        except Exception:  # noqa: BLE001  (a corrupt file is collect's unparseable_parquet, not a mapping error)
            return None
        return names, len(names)
    compression = "gzip" if uri.lower().endswith(".gz") else None
    with fs.open_input_stream(path, compression=compression) as stream:
        block = b""
        for block in _text_blocks(stream, 1 << 16):
            if any(line.strip() for line in block.split(b"\n")):
                break
    first = next((line for line in block.split(b"\n") if line.strip()), None)
    if first is None:
        return None
    text = _decode(first)[0].rstrip("\r").lstrip("\ufeff")
    if fmt == "jsonl":
        try:
            record = json.loads(text)
        except ValueError:
            return None
        return (list(record), len(record)) if isinstance(record, dict) else None
    cells = layout.split(text)
    if cells is None:
        return None
    if layout.header:
        return [c.strip() for c in cells], len(cells)
    return list(layout.column_names), len(cells)


def check_file_columns(source: Source, uri: str, fmt: str, spark_conf: Mapping[str, str] | None = None) -> None:
    """InputDataError when a file lacks a column that the source's mapping (or calendar) reads."""
    needed = source.required_columns()
    if not needed:
        return
    found = file_columns(uri, fmt, source.layout, spark_conf)
    if found is None:
        return
    names, cells = found
    where = f"collect.sources.{source.name}"
    if not source.layout.header and fmt == "csv" and cells != len(names):
        raise InputDataError(
            f"{where}.column_names lists {len(names)} columns ({', '.join(names)}), but the first record of "
            f"{uri} has {cells} cells (delimiter {source.layout.delimiter!r}); fix column_names or the delimiter"
        )
    for column in needed:
        if column not in names:
            what = "maps" if column in source.columns else "reads"
            raise InputDataError(
                f"{source.setting_of(column)} {what} '{column}', but {uri} has columns {', '.join(names)}; "
                f"fix the mapping in the profile (or the dataset's yaml), or the file"
                + (f" (is the delimiter {source.layout.delimiter!r} right?)" if fmt == "csv" and len(names) == 1
                   else "")
            )


def landing_files(cfg: Config, sources: list[Source], dates: list[dt.date], run_date: dt.date) -> list[LandingFile]:
    """The files of a run. A history source's files are listed once, under the run date; their rows
    find their own days when they are read (`transform_route_history`)."""
    conf = _spark_conf(cfg)
    files = []
    for source in sources:
        days = dates if source.daily_folders else [run_date]
        for day in days:
            folder = _source_folder(cfg, source, day if source.daily_folders else None)
            for uri, fmt in list_files(folder, conf, source.layout.format) or []:
                files.append(LandingFile(uri, fmt, source.name, day))
    return files


# --------------------------------------------------------------------------------------------------
# Reading one file into records (runs in Spark's Python workers; plain Python, tested directly).


def _decode(raw: bytes) -> tuple[str, bool]:
    """The text of a line and whether it was valid UTF-8; invalid bytes stay visible as \\xNN."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="backslashreplace"), False


def _split_block(block: bytes) -> tuple["pa.Array", list[int] | None]:
    """The lines of a block that ends in a newline, without their line ends, as an Arrow string array.

    Valid UTF-8 (the usual case) is handled by Arrow kernels without a Python loop; otherwise the
    block is decoded line by line and the positions of the bad lines are returned.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    newlines = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
    offsets = np.concatenate([[0], newlines + 1]).astype(np.int32)
    lines = pa.Array.from_buffers(pa.binary(), len(newlines), [None, pa.py_buffer(offsets.tobytes()),
                                                                     pa.py_buffer(block)])
    lines = pc.binary_slice(lines, 0, -1)
    try:
        text = lines.cast(pa.string())
        bad = None
    except pa.ArrowInvalid:
        decoded = [_decode(raw) for raw in lines.to_pylist()]
        text = pa.array([t for t, _ in decoded], pa.string())
        bad = [i for i, (_, ok) in enumerate(decoded) if not ok]
    return pc.utf8_rtrim(text, characters="\r"), bad


def _text_blocks(stream, block_bytes: int = _BLOCK_BYTES) -> Iterator[bytes]:
    """Blocks of whole lines (each ending in a newline; the last one gets one if it lacks it)."""
    carry = b""
    while True:
        chunk = stream.read(block_bytes)
        if not chunk:
            break
        data = carry + chunk if carry else chunk
        end = data.rfind(b"\n") + 1
        if end == 0:
            carry = data
            continue
        yield data[:end]
        carry = data[end:]
    if carry:
        yield carry + b"\n"


def _record_batch(file_index: int, lines: list[int], raws: list[str], reasons: list[str | None],
                  cells: list[list[str | None] | None] | None = None) -> "pa.RecordBatch":
    import pyarrow as pa

    n = len(lines)
    return pa.RecordBatch.from_arrays(
        [pa.array([file_index] * n, pa.int32()), pa.array(lines, pa.int64()), pa.array(raws, pa.string()),
         pa.array(reasons, pa.string()), pa.array(cells if cells is not None else [None] * n,
                                                  pa.list_(pa.string()))],
        names=["_file", "_line", "_raw", "_reason", "_cells"],
    )


def _read_text(file_index: int, stream, fmt: str, wanted: list[str],
               layout: FileLayout | None = None) -> Iterator["pa.RecordBatch"]:
    """Records of a JSON-lines or delimited file: one per non-blank line, numbered as `sed -n Np` counts.

    Delimited files are cut by `layout` (delimiter; a header row, or `column_names` for files without one).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    layout = layout or FileLayout()
    first_line = 1
    header: list[str] | None = None
    positions: list[int] = []
    if not layout.header:
        header = list(layout.column_names)
        index = {name: i for i, name in enumerate(header)}
        positions = [index.get(name, -1) for name in wanted]
    for block in _text_blocks(stream):
        text, bad = _split_block(block)
        if first_line == 1 and len(text) and text[0].as_py().startswith("\ufeff"):  # a byte-order mark
            text = pa.concat_arrays([pc.utf8_slice_codeunits(text.slice(0, 1), 1), text.slice(1)])
        numbers = np.arange(first_line, first_line + len(text), dtype=np.int64)
        first_line += len(text)
        keep = pc.not_equal(pc.utf8_trim_whitespace(text), "")  # blank lines are not records
        bad_mask = np.zeros(len(text), dtype=bool)
        if bad:
            bad_mask[bad] = True
        if fmt == "jsonl":
            reasons = pa.array(np.where(bad_mask, REASON_BAD_ENCODING, None), pa.string()) if bad else None
            batch = pa.RecordBatch.from_arrays(
                [pa.array(np.full(len(text), file_index, dtype=np.int32)), pa.array(numbers), text,
                 reasons if reasons is not None else pa.nulls(len(text), pa.string()),
                 pa.nulls(len(text), pa.list_(pa.string()))],
                names=["_file", "_line", "_raw", "_reason", "_cells"],
            ).filter(keep)
            if batch.num_rows:
                yield batch
            continue
        # Delimited: the first non-blank line is the header (unless the layout names the columns);
        # cells follow it in the order of `wanted`.
        kept = np.flatnonzero(np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool))
        raws = text.take(pa.array(kept)).to_pylist()
        rows = [layout.split(raw) for raw in raws]
        out_lines, out_raws, out_reasons, out_cells = [], [], [], []
        for position, raw, row in zip(kept.tolist(), raws, rows, strict=True):
            if header is None and not bad_mask[position] and row is not None:
                header = [name.strip() for name in row]
                index = {name: i for i, name in enumerate(header)}
                positions = [index.get(name, -1) for name in wanted]
                continue
            reason, values = None, None
            if bad_mask[position]:
                reason = REASON_BAD_ENCODING
            elif header is None or row is None or len(row) != len(header):
                reason = REASON_WRONG_COLUMNS
            else:
                values = [(row[i] if row[i] != "" else None) if i >= 0 else None for i in positions]
            out_lines.append(int(numbers[position]))
            out_raws.append(raw)
            out_reasons.append(reason)
            out_cells.append(values)
        if out_lines:
            yield _record_batch(file_index, out_lines, out_raws, out_reasons, out_cells)


def _csv_cells(line: str) -> list[str] | None:
    """The cells of one CSV line (comma, `"` quoting); None when its quoting is unbalanced."""
    return FileLayout().split(line)


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return _decode(value)[0]
    return str(value)


def _read_parquet(file_index: int, handle) -> Iterator["pa.RecordBatch"]:
    """One record per row, `_raw` a JSON rendering of it; a corrupt file gives one unparseable_parquet record."""
    import pyarrow.parquet as pq

    line = 0
    try:
        parquet = pq.ParquetFile(handle)
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            rows = batch.to_pylist()
            raws = [json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=_json_default) for row in rows]
            numbers = list(range(line + 1, line + len(rows) + 1))
            yield _record_batch(file_index, numbers, raws, [None] * len(rows))
            line += len(rows)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and others for a damaged file
        yield _record_batch(file_index, [line + 1], [f"unreadable parquet after {line} rows: {exc}"],
                            [REASON_BAD_PARQUET])


def read_file(file_index: int, uri: str, fmt: str, wanted: list[str],
              spark_conf: Mapping[str, str] | None = None,
              layout: FileLayout | None = None) -> Iterator["pa.RecordBatch"]:
    """Every record of one landed file as Arrow batches (RECORD_SCHEMA); never raises on bad content."""
    fs, path = filesystem(uri, spark_conf)
    try:
        if fmt == "parquet":
            with fs.open_input_file(path) as handle:
                yield from _read_parquet(file_index, handle)
            return
        compression = "gzip" if uri.lower().endswith(".gz") else None
        lines_seen = 0
        with fs.open_input_stream(path, compression=compression) as stream:
            for batch in _read_text(file_index, stream, fmt, wanted, layout):
                lines_seen = int(batch.column(1)[-1].as_py())
                yield batch
    except Exception as exc:  # a truncated gzip stream, a file that vanished: stop the run, name it
        where = f"after line {lines_seen}" if fmt != "parquet" and lines_seen else "at the start"
        yield _record_batch(file_index, [0], [f"cannot read {uri} {where}: {type(exc).__name__}: {exc}"],
                            [_UNREADABLE])


def _reader(files: list[tuple[str, str, list[str], FileLayout]], spark_conf: Mapping[str, str]):
    """The function that mapInArrow runs: each input id is an index into `files`."""

    def read(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        for batch in batches:
            for file_index in batch.column(0).to_pylist():
                uri, fmt, wanted, layout = files[file_index]
                yield from read_file(int(file_index), uri, fmt, wanted, spark_conf, layout)

    return read


def read_landing_files(spark: "SparkSession", files: list[LandingFile], sources: Mapping[str, Source],
                       spark_conf: Mapping[str, str] | None = None) -> "DataFrame":
    """All records of `files`, one Spark task per file, with _source_file, _format, _source and event_date.

    The file list travels to the tasks inside the function; each task streams its file in blocks,
    so neither the driver nor a worker ever holds a whole file.
    """
    from pyspark.sql import functions as F

    plan = [(f.uri, f.fmt, [theirs for theirs, _ in sources[f.source].read_columns()], sources[f.source].layout)
            for f in files]
    catalog = spark.createDataFrame(
        [(i, f.uri, f.fmt, f.source, f.day) for i, f in enumerate(files)],
        "_file int, _source_file string, _format string, _source string, event_date date",
    )
    if not files:
        return spark.createDataFrame([], "_source_file string, _line long, _raw string, _reason string, "
                                         "_cells array<string>, _format string, _source string, event_date date")
    records = spark.range(0, len(files), 1, numPartitions=len(files)).select(F.col("id").cast("int").alias("_file"))
    records = records.mapInArrow(_reader(plan, dict(spark_conf or {})), RECORD_SCHEMA)
    return records.join(F.broadcast(catalog), "_file").select(
        "_source_file", "_line", "_raw", "_reason", "_cells", "_format", "_source", "event_date")


# --------------------------------------------------------------------------------------------------
# Typing records (pure DataFrame -> DataFrame).


def _with_defaults(records: "DataFrame", event_date: dt.date | None) -> "DataFrame":
    """Fill the record columns a hand-made frame may lack (tests and older callers pass _raw only)."""
    from pyspark.sql import functions as F

    defaults = {"_line": F.lit(None).cast("long"), "_reason": F.lit(None).cast("string"),
                "_cells": F.lit(None).cast("array<string>"), "_format": F.lit("jsonl"),
                "_source_file": F.lit(None).cast("string")}
    for name, value in defaults.items():
        if name not in records.columns:
            records = records.withColumn(name, value)
    if event_date is not None:
        records = records.withColumn("event_date", F.lit(event_date))
    return records


def _typed_cell(cell: "Column", kind: str) -> "Column":
    """A text cell as `kind`, NULL where it does not parse; a whole number written with a decimal
    point (`3.0`, as pandas writes integer columns that have gaps) is still a whole number."""
    from pyspark.sql import functions as F

    if kind != "long":
        return cell.try_cast(kind)
    number = cell.try_cast("double")
    return F.coalesce(cell.try_cast("long"), F.when(number == F.floor(number), number.cast("long")))


def transform_parse_records(records: "DataFrame", source: Source) -> "DataFrame":
    """Typed columns (our field names; `item.*` fields under `_item`) plus `_parse_error`, per record.

    JSON lines and Parquet renderings go through from_json; CSV cells (already in `source.read_columns()`
    order) are cast with try_cast, so a cell that is not a number becomes NULL and `_raw` keeps it.
    A value of the wrong JSON type is NULL too; only a line that is not a JSON object is unparseable.
    """
    from pyspark.sql import functions as F

    wanted = source.fields()
    columns = source.read_columns()
    json_schema = ", ".join(f"`{theirs}` {kind}" for theirs, kind in columns) + ", `_corrupt_record` string"
    as_json = F.from_json("_raw", json_schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt_record"})
    as_csv = F.struct(*[_typed_cell(F.try_element_at("_cells", F.lit(i + 1)), kind).alias(theirs)
                        for i, (theirs, kind) in enumerate(columns)],
                      F.lit(None).cast("string").alias("_corrupt_record"))
    # Records the reader already refused (bad encoding, wrong column count, corrupt Parquet) stay untyped.
    parsed = records.withColumn("_parsed", F.when(F.col("_reason").isNull(), F.when(
        F.col("_format") == "csv", as_csv).otherwise(as_json)))
    # PERMISSIVE from_json also flags type mismatches as corrupt; a line is broken only when it is not
    # a JSON object at all, which json_object_keys tells (NULL for anything else).
    broken = F.col("_reason").isNull() & (F.col("_format") != "csv") & (
        F.col("_parsed").isNull()
        | (F.col("_parsed._corrupt_record").isNotNull() & F.json_object_keys("_raw").isNull())
    )
    # Numbers: a quoted number ("12.5") is read as one; any other text where a number belongs is a
    # bad_number (events), never a silent null that clean would then default or impute.
    numeric = {theirs: kind for theirs, kind in columns if kind in ("double", "long", "int")}
    if numeric:
        as_text = F.from_json("_raw", ", ".join(f"`{theirs}` string" for theirs in numeric))
        position = {theirs: i for i, (theirs, _) in enumerate(columns)}
        # Only a CSV line or a JSON line that from_json flagged (a type mismatch sets _corrupt_record) needs
        # its numbers' text: the others are read once, as before.
        mismatch = (F.col("_format") == "csv") | F.col("_parsed._corrupt_record").isNotNull()
        parsed = parsed.withColumn("_text", F.when(F.col("_reason").isNull() & mismatch, F.struct(*[
            F.when(F.col("_format") == "csv", F.try_element_at("_cells", F.lit(position[theirs] + 1)))
            .otherwise(as_text[theirs]).alias(theirs) for theirs in numeric])))

    def typed_value(theirs: str) -> "Column":
        if theirs not in numeric:
            return F.col(f"_parsed.`{theirs}`")
        text = F.trim(F.col(f"_text.`{theirs}`"))
        return F.coalesce(F.col(f"_parsed.`{theirs}`"), _typed_cell(text, numeric[theirs]))

    def not_a_number(theirs: str) -> "Column":
        text = F.trim(F.col(f"_text.`{theirs}`"))
        return (text.isNotNull() & (text != F.lit("")) & ~F.lower(text).isin(*MISSING_NUMBER_TOKENS)
                & typed_value(theirs).isNull())

    bad_number = F.lit(False)
    for theirs in numeric:
        bad_number = bad_number | F.coalesce(not_a_number(theirs), F.lit(False))
    typed = [typed_value(theirs).alias(ours) for theirs, ours, _ in wanted
             if not ours.startswith(("item.", "_calendar."))]
    missing = [name for name, _ in schema_fields(_KIND_SCHEMA[source.kind])
               if name not in {ours for _, ours, _ in wanted} and name not in source.constants]
    kinds = dict(schema_fields(_KIND_SCHEMA[source.kind]))
    constants = [F.lit(value).cast(kinds[name]).alias(name) for name, value in source.constants.items()]
    calendar = [F.struct(*[F.col(f"_parsed.`{theirs}`").alias(ours.split(".", 1)[1])
                           for theirs, ours, _ in wanted if ours.startswith("_calendar.")]).alias("_calendar")
                ] if source.calendar is not None else []
    item_fields = [(theirs, ours.split(".", 1)[1]) for theirs, ours, _ in wanted if ours.startswith("item.")]
    item_struct = []
    if source.kind == "events":  # item.* fields, all of them, NULL where the source maps none
        mapped = {ours: theirs for theirs, ours in item_fields}
        item_struct = [F.struct(*[(typed_value(mapped[name]) if name in mapped else F.lit(None).cast(kind))
                                  .alias(name) for name, kind in schema_fields(ITEM_SCHEMA)]).alias("_item")]
    out = parsed.select(
        *typed,
        *[F.lit(None).cast(kinds[name]).alias(name) for name in missing],
        *constants,
        *item_struct,
        *calendar,
        "_raw", "_source_file", "_line", "event_date", "_reason",
        F.when(F.col("_reason").isNull() & F.col("_raw").rlike(_CONTROL_CHARACTER), F.lit(REASON_CONTROL_CHARACTERS))
        .when(F.col("_reason").isNull() & broken, F.lit(REASON_UNPARSEABLE)).alias("_broken"),
        F.when(F.col("_reason").isNull() & bad_number, F.lit(REASON_BAD_NUMBER)).alias("_bad_number"),
    )
    if source.kind == "events":
        if source.event_id in (EVENT_ID_HASH, EVENT_ID_HASH_OCCURRENCE):
            hashed = F.col("_raw")
            if source.event_id == EVENT_ID_HASH_OCCURRENCE:
                from pyspark.sql import Window

                repeat = F.row_number().over(Window.partitionBy("_source_file", "_raw").orderBy("_line"))
                hashed = F.when(repeat == 1, F.col("_raw")).otherwise(
                    F.concat(F.col("_raw"), F.lit("\u0000#"), repeat.cast("string")))
            out = out.withColumn("event_id", F.when(F.col("_reason").isNull() & F.col("_broken").isNull(),
                                                    F.concat(F.lit(_HASH_ID_PREFIX),
                                                             F.substring(F.sha2(hashed, 256), 1, _HASH_ID_HEX))))
        if source.event_types:
            mapping = F.create_map(*[F.lit(x) for pair in source.event_types.items() for x in pair])
            out = out.withColumn("event_type", F.coalesce(F.try_element_at(mapping, F.col("event_type")),
                                                          F.col("event_type")))
    reason = F.coalesce(F.col("_reason"), F.col("_broken"))
    if source.kind == "events":
        no_id = F.col("event_id").isNull() | (F.trim(F.col("event_id")) == F.lit(""))
        reason = F.coalesce(reason, F.when(no_id, F.lit(REASON_NO_EVENT_ID)), F.col("_bad_number"))
    return out.withColumn("_parse_error", reason).drop("_reason", "_broken", "_bad_number")


def transform_source_times(parsed: "DataFrame", source: Source, dates: list[dt.date],
                           run_date: dt.date) -> "DataFrame":
    """Times collect derives itself: for a source that declares its timestamp format (or a relative
    calendar), `ts` becomes ISO-8601 UTC text; for a history source each row also gets the UTC day
    of its time as event_date, and only the rows of the run's days are kept.

    A value that does not fit the declared format becomes NULL (clean quarantines it as bad_timestamp;
    `_raw` keeps what came). History rows without a usable time cannot find their day: they stay
    under the run date, where clean quarantines them. Sources that declare nothing pass unchanged.
    """
    from pyspark.sql import functions as F

    if not source.derives_ts:
        return parsed.drop("_calendar") if "_calendar" in parsed.columns else parsed
    if source.calendar is not None:
        parsed = parsed.join(_calendar_times(parsed, source), ["_source_file", "_line"], "left")
        parsed = parsed.withColumn("ts", F.col("_derived_ts")).drop("_derived_ts", "_calendar")
    else:
        spec = source.timestamp

        import pandas as pd

        def to_iso(values):
            return iso_utc(parse_instants(values, spec))

        to_iso.__annotations__ = {"values": pd.Series, "return": pd.Series}  # the pandas UDF reads these
        parsed = parsed.withColumn("ts", F.pandas_udf(to_iso, "string")(F.col("ts")))
    if not source.history:
        return parsed
    day = F.to_date(F.substring("ts", 1, 10))
    routed = parsed.withColumn("event_date", F.coalesce(day, F.lit(run_date)))
    return routed.where(F.col("event_date").between(F.lit(min(dates)), F.lit(max(dates))))


def _calendar_times(parsed: "DataFrame", source: Source) -> "DataFrame":
    """(_source_file, _line, _derived_ts) of a calendar source's usable records, one user per group."""
    import pandas as pd
    from pyspark.sql import functions as F

    calendar = source.calendar
    assert calendar is not None
    roles = list(calendar.columns())

    def derive(frame: "pd.DataFrame") -> "pd.DataFrame":
        instants = calendar_instants(frame["user"], frame["sequence"], frame["days_since_previous"],
                                     frame["hour"] if "hour" in roles else None, calendar)
        return pd.DataFrame({"_source_file": frame["_source_file"], "_line": frame["_line"],
                             "_derived_ts": iso_utc(instants)})

    narrow = parsed.where(F.col("_parse_error").isNull()).select(
        "_source_file", "_line", *[F.col(f"_calendar.{role}").alias(role) for role in roles])
    return narrow.groupBy("user").applyInPandas(derive, "_source_file string, _line long, _derived_ts string")


def transform_parse_events(lines: "DataFrame", event_date: dt.date | None = None,
                           source: Source | None = None) -> "DataFrame":
    """Type each landed event record; keep the raw line and say why a record could not be used."""
    source = source or Source("events", "events", "events")
    parsed = transform_parse_records(_with_defaults(lines, event_date), source)
    return parsed.select(*[name for name, _ in schema_fields(EVENT_SCHEMA)],
                         "_raw", "_source_file", "_line", "event_date", "_parse_error")


def transform_quarantine(parsed: "DataFrame", ingested_at: dt.datetime) -> "DataFrame":
    """The unusable records of a parsed frame, in bronze.quarantine's columns."""
    from pyspark.sql import functions as F

    return parsed.where(F.col("_parse_error").isNotNull()).select(
        F.lit("collect").alias("step"), F.col("_parse_error").alias("reason"), "_source_file", "_line", "_raw",
        "event_date", F.lit(ingested_at).alias("_ingested_at"),
    )


def transform_derived_master(events: "DataFrame", items: "DataFrame", users: "DataFrame",
                             snapshot_date: dt.date, ingested_at: dt.datetime) -> tuple["DataFrame", "DataFrame"]:
    """Item and user rows for ids that only event files in an export layout mention.

    One row per id, from its latest record (by ts, then file and line, so reruns agree); the
    export's dotted category codes become our `top>sub` paths. Ids the master files already
    hold are left out. Returns (derived items, derived users), each in its bronze table's columns.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    usable = events.where(F.col("_parse_error").isNull())
    latest = Window.partitionBy("_id").orderBy(F.col("ts").desc_nulls_last(), F.col("_source_file").desc(),
                                               F.col("_line").desc())

    def item_value(name: str) -> "Column":
        if name == "price":  # where the source says its event price is the item's price (an export's is)
            return F.coalesce(F.col("_item.price"), F.when(F.col("_item_price_from_event"), F.col("price")))
        if name == "category_path":  # with category_separator ".": electronics.smartphone -> electronics>smartphone
            path = F.col("_item.category_path")
            return F.when(F.col("_category_separator").isNull(), path).otherwise(
                F.replace(path, F.col("_category_separator"), F.lit(">")))
        return F.col(f"_item.{name}")

    derived_items = (
        usable.where(F.col("item_id").isNotNull()).withColumn("_id", F.col("item_id"))
        .withColumn("_n", F.row_number().over(latest)).where("_n = 1")
        .join(items.select(F.col("item_id").alias("_id")).distinct(), "_id", "left_anti")
        .select(*[(F.col("item_id") if name == "item_id" else item_value(name)).alias(name)
                  for name, _ in schema_fields(ITEM_SCHEMA)],
                "_raw", "_source_file", "_line", F.lit(ingested_at).alias("_ingested_at"),
                F.lit(snapshot_date).alias("snapshot_date"))
    )
    derived_users = (
        usable.where(F.col("user_id").isNotNull()).withColumn("_id", F.col("user_id"))
        .withColumn("_n", F.row_number().over(latest)).where("_n = 1")
        .join(users.select(F.col("user_id").alias("_id")).distinct(), "_id", "left_anti")
        .select(*[(F.col("user_id") if name == "user_id" else F.lit(None).cast(kind)).alias(name)
                  for name, kind in schema_fields(USER_SCHEMA)],
                "_raw", "_source_file", "_line", F.lit(ingested_at).alias("_ingested_at"),
                F.lit(snapshot_date).alias("snapshot_date"))
    )
    return derived_items, derived_users


# --------------------------------------------------------------------------------------------------
# The quarantine share: per file and per day, checked before anything is written.


@dataclass(frozen=True)
class FileCount:
    source_file: str
    kind: str
    day: dt.date
    reason: str | None
    rows: int


def check_quarantine_share(counts: list[FileCount], max_share: float,
                           first_bad_lines: "callable[[str], list[tuple[int, str]]]") -> None:
    """Raise InputDataError when unusable records pass `max_share` of a file or of a kind's day.

    A corrupt Parquet file counts as one record of its day; its own share is not defined.
    `first_bad_lines(file)` is asked only on failure, for the first few (line, reason) of a file.
    """
    per_file: dict[str, list[int]] = {}
    per_day: dict[tuple[str, dt.date], list[int]] = {}
    for c in counts:
        bad = c.reason is not None
        if c.reason != REASON_BAD_PARQUET:
            tally = per_file.setdefault(c.source_file, [0, 0])
            tally[0] += c.rows
            tally[1] += c.rows if bad else 0
        tally = per_day.setdefault((c.kind, c.day), [0, 0])
        tally[0] += c.rows
        tally[1] += c.rows if bad else 0
    problems = []
    for name, (rows, bad) in sorted(per_file.items()):
        if rows and bad / rows > max_share:
            lines = ", ".join(f"{line} ({reason})" for line, reason in first_bad_lines(name))
            problems.append(f"{name}: {bad} of {rows} records ({bad / rows:.1%}) unusable; first bad lines: {lines}")
    for (kind, day), (rows, bad) in sorted(per_day.items()):
        if rows and bad / rows > max_share:
            problems.append(f"{kind} of {day}: {bad} of {rows} records ({bad / rows:.1%}) unusable")
    if problems:
        raise InputDataError(
            f"collect stopped: more than collect.max_quarantine_share ({max_share:.1%}) of the records could not "
            f"be used, so nothing was written. " + "; ".join(problems)
            + ". Fix or re-send the files (bronze.quarantine reasons are in docs/data-contract.md), "
            "or raise collect.max_quarantine_share"
        )


# --------------------------------------------------------------------------------------------------
# The step.


def _master_columns(kind: str) -> list[str]:
    return [name for name, _ in schema_fields(_KIND_SCHEMA[kind])] + ["_raw", "_source_file", "_line",
                                                                        "_ingested_at"]


def run(spark: "SparkSession", cfg: Config, run_date: dt.date, collect_days: int = 1) -> StepResult:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from jobs.common.dates import days_ending
    from jobs.common.delta import table_exists

    preflight(cfg, run_date, collect_days)  # also when run() is called without the runner
    result = StepResult("collect", run_date)
    dates = days_ending(run_date, collect_days)
    max_share = max_quarantine_share(cfg)
    sources = configured_sources(cfg)
    by_name = {s.name: s for s in sources}
    files = landing_files(cfg, sources, dates, run_date)
    ingested_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)

    parsed: dict[str, DataFrame] = {}
    for kind in KINDS:
        frames = []
        for source in (s for s in sources if s.kind == kind):
            records = read_landing_files(spark, [f for f in files if f.source == source.name], by_name,
                                         _spark_conf(cfg))
            typed = transform_source_times(transform_parse_records(records, source), source, dates, run_date)
            frames.append(typed.withColumn("_emit_master", F.lit(source.emit_master))
                          .withColumn("_item_price_from_event", F.lit(source.item_price_from_event))
                          .withColumn("_category_separator", F.lit(source.category_separator).cast("string")))
        if frames:
            frame = frames[0]
            for other in frames[1:]:
                frame = frame.unionByName(other)
            # One partition per landed file, so a cached block is a whole file: MEMORY_AND_DISK unrolls
            # a block in the heap before it spills and ran out of a 3 GiB heap on 2M-line files;
            # DISK_ONLY streams each block to local disk (still cheaper than parsing the files twice).
            parsed[kind] = frame.persist(StorageLevel.DISK_ONLY)
    try:
        counts = _file_counts(parsed)
        unreadable = [c for c in counts if c.reason == _UNREADABLE]
        if unreadable:
            detail = parsed[unreadable[0].kind].where(F.col("_parse_error") == _UNREADABLE).first()
            raise InputDataError(f"{detail['_raw']}; nothing was written. Re-send the file or move it away")

        def first_bad_lines(name: str) -> list[tuple[int, str]]:
            kind = next(c.kind for c in counts if c.source_file == name)
            rows = (parsed[kind].where((F.col("_source_file") == name) & F.col("_parse_error").isNotNull())
                    .orderBy("_line").select("_line", "_parse_error").limit(5).collect())
            return [(r["_line"], r["_parse_error"]) for r in rows]

        check_quarantine_share(counts, max_share, first_bad_lines)
        migrate(spark, cfg, "bronze.events")  # an older bronze.events holds rating as bigint
        result.tables.extend(_write_bronze(spark, cfg, parsed, counts, dates, run_date, ingested_at,
                                           any(by_name[f.source].kind == "social_edges" for f in files)
                                           or table_exists(spark, cfg, "bronze.social_edges"),
                                           any(by_name[f.source].emit_master for f in files)))
    finally:
        for frame in parsed.values():
            frame.unpersist()

    write_audit(spark, cfg, "collect", run_date, result.tables)
    result.details["dates"] = [d.isoformat() for d in dates]
    result.details["files"] = len(files)
    return result


def _file_counts(parsed: Mapping[str, "DataFrame"]) -> list[FileCount]:
    from pyspark.sql import functions as F

    per_kind = [frame.groupBy("_source_file", "event_date", "_parse_error").agg(F.count("*").alias("n"))
                .withColumn("kind", F.lit(kind)) for kind, frame in parsed.items()]
    union = per_kind[0]
    for other in per_kind[1:]:
        union = union.unionByName(other)
    # One job for every kind; it also fills the caches that the writes then read (caching the events
    # measured faster than reading the files twice, and MEMORY_AND_DISK spills what does not fit).
    return [FileCount(r["_source_file"], r["kind"], r["event_date"], r["_parse_error"], int(r["n"]))
            for r in union.collect()]


def _usable_or_empty(spark: "SparkSession", frame: "DataFrame | None", kind: str) -> "DataFrame":
    if frame is None:
        return spark.createDataFrame([], _KIND_SCHEMA[kind] + ", _raw string, _source_file string, _line long")
    return frame.where("_parse_error IS NULL")


def _write_bronze(spark: "SparkSession", cfg: Config, parsed: Mapping[str, "DataFrame"], counts: list[FileCount],
                  dates: list[dt.date], run_date: dt.date, ingested_at: dt.datetime,
                  write_edges: bool, any_emit_master: bool) -> list[TableCount]:
    from pyspark.sql import functions as F

    def tally(kind: str) -> tuple[int, dict[str, int]]:
        rows_in, bad = 0, {}
        for c in counts:
            if c.kind == kind:
                rows_in += c.rows
                if c.reason is not None:
                    bad[c.reason] = bad.get(c.reason, 0) + c.rows
        return rows_in, bad

    tables = []
    stamp = F.lit(ingested_at).alias("_ingested_at")

    events = parsed["events"]
    rows_in, bad = tally("events")
    replace_dates(events.select(*[n for n, _ in schema_fields(EVENT_SCHEMA)], "_raw", "_source_file", "_line",
                                "event_date", "_parse_error", stamp), cfg, "bronze.events", dates)
    tables.append(TableCount("bronze.events", rows_in, rows_in - sum(bad.values()), 0, bad))
    quarantine = transform_quarantine(events, ingested_at)

    masters = {kind: parsed.get(kind) for kind in ("users", "items")}
    derived: dict[str, tuple[DataFrame, int]] = {}
    if any_emit_master:
        derived_items, derived_users = transform_derived_master(
            events.where("_emit_master"), *(_usable_or_empty(spark, masters[k], k) for k in ("items", "users")),
            run_date, ingested_at)
        emitting = events.where("_emit_master AND _parse_error IS NULL")
        for kind, frame, key in (("items", derived_items, "item_id"), ("users", derived_users, "user_id")):
            seen = emitting.where(F.col(key).isNotNull()).select(key).distinct().count()
            derived[kind] = (frame, seen)
    for kind in ("users", "items"):
        frame = masters[kind]
        rows_in, bad = tally(kind)
        good = _usable_or_empty(spark, frame, kind).select(*_master_columns(kind)[:-1], stamp,
                                                             F.lit(run_date).alias("snapshot_date"))
        if kind in derived:
            # Derived rows count as read; those whose id the master files already hold are duplicates.
            extra, seen = derived[kind]
            good = good.unionByName(extra)
            rows_in += seen
        written = replace_dates(good, cfg, _KIND_TABLE[kind], [run_date])
        tables.append(TableCount(_KIND_TABLE[kind], rows_in, written, rows_in - sum(bad.values()) - written, bad))
        if frame is not None:
            quarantine = quarantine.unionByName(transform_quarantine(frame, ingested_at))

    if write_edges:  # no table until a shop lands social edges; then every run replaces its dates
        edges = parsed.get("social_edges")
        rows_in, bad = tally("social_edges")
        if edges is None:
            edges = spark.createDataFrame([], SOCIAL_EDGE_SCHEMA + ", _raw string, _source_file string, "
                                          "_line long, event_date date, _parse_error string")
        good = edges.where("_parse_error IS NULL").select(*_master_columns("social_edges")[:-1], stamp, "event_date")
        written = replace_dates(good, cfg, "bronze.social_edges", dates)
        tables.append(TableCount("bronze.social_edges", rows_in, written, 0, bad))
        if "social_edges" in parsed:
            quarantine = quarantine.unionByName(transform_quarantine(edges, ingested_at))

    replace_dates(quarantine, cfg, "bronze.quarantine", dates, extra_predicate="step = 'collect'")
    return tables
