"""Quality: validate a table's partition with its GX suite and Spark checks; record, document, gate.

Each table has one suite, `expectations/<layer>/<table>.json`: a Great Expectations 1.x suite whose
`meta.spark_checks` adds the checks GX has no expectation for (previous-day comparisons, freshness,
references to other tables, recommendation-list rules). Every check carries `meta.severity`: `error`
fails the run, `warn` only reports. docs/quality.md lists what each suite checks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.common import catalog
from jobs.common.catalog import TableSpec, spec, table_path
from jobs.common.config import Config, project_root
from jobs.common.delta import read_table, replace_dates, table_exists
from jobs.common.errors import ConfigError, PortraitError
from jobs.common.feature_windows import FeatureWindows
from jobs.common.pii import has_pii, mask_pii, redact_value
from jobs.common.step import StepResult
from jobs.quality_history import (
    ABSENT,
    MISSING_TODAY,
    Band,
    FieldProfile,
    QualityParams,
    daily_values,
    has_values_in_history,
    mean_band,
    volume_band,
    volume_observed,
)
from jobs.quality_mix import (
    DayMix,
    Limit,
    MixParams,
    bucket_counts,
    day_mixes,
    lower_limit,
    psi,
    psi_against_recent,
    upper_limit,
    value_frame,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger("portrait.quality")

RESULTS_TABLE = "ops.validation_results"  # in jobs/common/catalog.py: partitioned by run_date
FIELDS_TABLE = "ops.field_profile"  # per table, date and contract field: non-null share and status

RESULTS_SCHEMA = (
    "run_date date, table_name string, check_id string, expectation_type string, column_name string, "
    "severity string, success boolean, skipped boolean, observed_value string, unexpected_count long, "
    "sample_rows string, source string, rows_validated long, table_success boolean, validated_at timestamp"
)
FIELDS_SCHEMA = ("run_date date, table_name string, column_name string, non_null_share double, non_null_rows long, "
                 "rows long, status string, history_days int, profiled_at timestamp")

ERROR, WARN = "error", "warn"
SEVERITIES = (ERROR, WARN)
SAMPLE_ROWS = 5
REDACTED = "<redacted>"  # what a sample shows for a column its suite lists in meta.redact_columns

# The reasons a landed line may be set aside with (bronze.events `_parse_error`, bronze.quarantine
# `reason`), by the step that gives them. The reasons the steps' modules define (REASON_* strings,
# *REASONS tuples) are allowed as well, so a reason defined in code is never refused here; a null or
# made-up one is.
COLLECT_REASONS = ("unparseable_json", "wrong_column_count", "bad_encoding", "missing_event_id",
                   "unparseable_parquet", "control_characters", "bad_number")
CLEAN_REASONS = (
    "missing_user_id", "unknown_event_type", "bad_timestamp", "price_out_of_range", "quantity_out_of_range",
    "rating_out_of_range", "rating_off_scale", "unknown_item", "unknown_user", "held_unknown_item",
    "held_unknown_user", "bot_rate", "impossible_sequence", "outlier", "too_late",
    "negative_price", "bad_quantity",  # the names clean gave before the *_out_of_range ones
)
QUARANTINE_STEPS = ("collect", "clean")
# A staged table (staging.X, written by the score step before publish promotes it) is held to the
# suite of the table it becomes (publish.X); its previous-day baseline is that published table, and
# its same-day references to publish.* tables point at their staged counterparts.
STAGED_LAYER, PUBLISHED_LAYER = "staging", "publish"


class QualityError(PortraitError):
    """Data failed an error-severity check; the message lists each failure and a few bad rows."""

    def __init__(self, message: str, reports: Sequence["ValidationReport"] = ()):
        super().__init__(message)
        self.reports = list(reports)


# --------------------------------------------------------------------------------------------------
# Results


@dataclass
class CheckResult:
    """One expectation or Spark check on one partition, in the same shape whichever ran it."""

    check_id: str
    expectation_type: str
    column: str | None
    severity: str
    success: bool
    observed_value: Any = None
    unexpected_count: int | None = None
    sample: list[dict[str, Any]] = field(default_factory=list)
    source: str = "gx"  # gx | spark
    skipped: bool = False  # not evaluated (no previous partition, column missing): never a failure
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return not self.success and not self.skipped


@dataclass
class ValidationReport:
    table: str
    run_date: dt.date
    row_count: int
    results: list[CheckResult]
    seconds: float = 0.0
    gx_result: Any = field(default=None, repr=False, compare=False)  # GX's own result, for its renderer
    # The field profile: per listed column its non-null share today and status (quality_history.FieldProfile).
    fields: list[dict[str, Any]] = field(default_factory=list)

    def fields_with(self, status: str) -> list[str]:
        return [f["column"] for f in self.fields if f["status"] == status]

    @property
    def errors(self) -> list[CheckResult]:
        return [r for r in self.results if r.failed and r.severity == ERROR]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if r.failed and r.severity == WARN]

    @property
    def success(self) -> bool:
        return not self.errors

    def result(self, check_id_or_type: str) -> CheckResult:
        """The result with this check_id, or the only one of this expectation type."""
        matches = [r for r in self.results if r.check_id == check_id_or_type]
        matches = matches or [r for r in self.results if r.expectation_type == check_id_or_type]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} results match '{check_id_or_type}' in {self.table}")
        return matches[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table, "run_date": self.run_date.isoformat(), "row_count": self.row_count,
            "success": self.success, "seconds": round(self.seconds, 2),
            "results": [asdict(r) for r in self.results], "fields": self.fields,
        }

    def summary(self, max_rows: int = SAMPLE_ROWS) -> str:
        """A few lines a person can act on: what failed, where, what was seen, some bad rows."""
        head = (f"{self.table} {self.run_date}: {'passed' if self.success else 'FAILED'} "
                f"({len(self.errors)} errors, {len(self.warnings)} warnings, {len(self.results)} checks, "
                f"{self.row_count:,} rows)")
        lines = [head]
        absent = [f["column"] for f in self.fields if f["status"] == ABSENT and f.get("optional")]
        missing = self.fields_with(MISSING_TODAY)
        skipped = sum(1 for r in self.results if r.skipped and "absent in this dataset" in str(r.observed_value))
        if absent or skipped:
            lines.append(f"  fields absent in this dataset: {', '.join(absent) or 'none of this table'}; "
                         f"checks skipped for an absent field: {skipped}")
        if missing:
            lines.append(f"  fields with no value today but values before (checked as usual): {', '.join(missing)}")
        keys = list(catalog.TABLES[self.table].keys) if self.table in catalog.TABLES else []
        rows_left = max_rows
        for r in self.errors + self.warnings:
            label = "FAIL" if r.severity == ERROR else "warn"
            column = f" [{r.column}]" if r.column else ""
            lines.append(f"  {label} {r.check_id}{column}: {_format_observed(r)}")
            first = keys + (r.column.split(",") if r.column else [])
            for row in r.sample[:rows_left]:
                lines.append(f"       bad row: {_format_row(row, first)}")
            rows_left -= min(len(r.sample), rows_left)
        return "\n".join(lines)


def _format_observed(r: CheckResult) -> str:
    value = r.observed_value
    if isinstance(value, Mapping):
        text = ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    else:
        text = _short(value)
    if r.unexpected_count is not None and "unexpected" not in text:
        text = f"{r.unexpected_count:,} unexpected; {text}"
    return text


def _format_row(row: Mapping[str, Any], first: Sequence[str] = (), width: int = 220) -> str:
    """The keys and the checked columns first, then the rest, cut to one readable line."""
    order = [k for k in dict.fromkeys(first) if k in row] + [k for k in row if k not in first]
    return _short("{" + ", ".join(f"{k}: {_short(row[k], 40)}" for k in order) + "}", width)


def _short(value: Any, width: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _jsonable(value: Any, width: int = 300) -> Any:
    """Plain JSON values from Spark rows, GX results, numpy and pandas scalars."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, str):
        return value if len(value) <= width else value[: width - 1] + "…"
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "asDict"):  # pyspark Row
        return _jsonable(value.asDict(recursive=True), width)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, width) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v, width) for v in value]
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # pandas DataFrame
        return [_jsonable(r, width) for r in value.to_dict(orient="records")]
    if hasattr(value, "item"):  # numpy scalar
        return _jsonable(value.item(), width)
    if hasattr(value, "to_json_dict"):
        return _jsonable(value.to_json_dict(), width)
    return str(value)


# --------------------------------------------------------------------------------------------------
# Suites


def suites_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "expectations"


def suite_path(layer_table: str, root: Path | None = None) -> Path:
    layer, _, table = layer_table.partition(".")
    if not layer or not table:
        raise ConfigError(f"'{layer_table}' is not layer.table (for example silver.events)")
    return suites_dir(root) / layer / f"{table}.json"


def suite_for(table: str, root: Path | None = None) -> str:
    """The suite a table is validated with: its own, or for a staged table the published one's."""
    layer, _, name = table.partition(".")
    if layer == STAGED_LAYER and not suite_path(table, root).is_file():
        return f"{PUBLISHED_LAYER}.{name}"
    return table


def baseline_table(table: str) -> str:
    """Where the previous day comes from: a staged day is compared with what was published."""
    layer, _, name = table.partition(".")
    return f"{PUBLISHED_LAYER}.{name}" if layer == STAGED_LAYER else table


def suite_tables(root: Path | None = None) -> tuple[str, ...]:
    """Catalog tables, in catalog order, that have a suite of their own or through staging."""
    return tuple(t for t in catalog.TABLES if suite_path(suite_for(t, root), root).is_file())


def _follow_windows(data: dict[str, Any], windows: FeatureWindows) -> None:
    """Rename, in place, the columns a suite names for the default feature windows (`active_days_30d`)
    to the configured windows' names (meta.columns_follow_windows; jobs/common/feature_windows.py)."""
    def renamed(kwargs: dict[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        if isinstance(out.get("column"), str):
            out["column"] = windows.rename(out["column"])
        if isinstance(out.get("column_set"), list):
            out["column_set"] = [windows.rename(c) if isinstance(c, str) else c for c in out["column_set"]]
        return out

    for item in data.get("expectations", []):
        item["kwargs"] = renamed(item.get("kwargs") or {})
    for check in (data.get("meta") or {}).get("spark_checks", []):
        check["kwargs"] = renamed(check.get("kwargs") or {})


def load_suite(layer_table: str, root: Path | None = None, windows: FeatureWindows | None = None):
    """The GX ExpectationSuite of a table, read from expectations/<layer>/<table>.json.

    Severities are checked here, so a typo in a suite fails before any data is read; GX's own
    severity field is set to match (error -> critical, warn -> warning) for its renderers. A suite
    whose meta says `columns_follow_windows` names window columns as the default feature windows do;
    with `windows` (features.windows) they are renamed to the configured ones.
    """
    import great_expectations as gx

    path = suite_path(layer_table, root)
    if not path.is_file():
        raise ConfigError(f"no expectation suite for {layer_table}: {path} does not exist; "
                          f"expectations/README.md says how to write one")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if windows is not None and (data.get("meta") or {}).get("columns_follow_windows"):
        _follow_windows(data, windows)
    for position, item in enumerate(data.get("expectations", [])):
        _check_severity(path, f"expectation {position} ({item.get('type')})", item.get("meta") or {})
        item["severity"] = "warning" if _severity(item.get("meta")) == WARN else "critical"
    redact = (data.get("meta") or {}).get("redact_columns", [])
    if not isinstance(redact, list) or not all(isinstance(c, str) for c in redact):
        raise ConfigError(f"{path}: meta.redact_columns must be a list of column names, not {redact!r}")
    for position, check in enumerate((data.get("meta") or {}).get("spark_checks", [])):
        if check.get("type") not in SPARK_CHECKS:
            raise ConfigError(f"{path}: spark check {position} has unknown type '{check.get('type')}'; "
                              f"known: {', '.join(sorted(SPARK_CHECKS))}")
        _check_severity(path, f"spark check {position} ({check['type']})", check.get("meta") or {},
                        setting_allowed=True)
    try:
        return gx.ExpectationSuite(**data)
    except Exception as exc:  # GX raises pydantic and its own errors; both mean a bad suite file
        raise ConfigError(f"{path} is not a valid GX 1.x expectation suite: {exc}") from None


def _severity(meta: Mapping[str, Any] | None) -> str:
    return str((meta or {}).get("severity", ERROR))


def _check_severity(path: Path, what: str, meta: Mapping[str, Any], setting_allowed: bool = False) -> None:
    """A severity is error or warn; a spark check may name a setting instead ({"$config": "quality.x"})."""
    given = (meta or {}).get("severity")
    if setting_allowed and isinstance(given, Mapping) and isinstance(given.get("$config"), str):
        return
    requires = (meta or {}).get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(r, str) and r for r in requires):
        raise ConfigError(f"{path}: {what} has meta.requires {requires!r}; use a list of fields "
                          "(a column, or layer.table.column)")
    if _severity(meta) not in SEVERITIES:
        raise ConfigError(f"{path}: {what} has severity '{meta.get('severity')}'; use one of {SEVERITIES}")


def suite_parameters(cfg: Config, run_date: dt.date, spark: "SparkSession | None" = None) -> dict[str, Any]:
    """Values that suites name with {"$PARAMETER": ...}: allowed sets come from the code that owns them.

    With `spark`, `category_vocab_size` is the length of the date's gold.category_vocab (None, no
    check, where that has no rows).
    """
    import jobs.clean
    import jobs.collect
    from jobs.clean import AGE_BANDS, EVENT_TYPES, CleanParams
    from jobs.common.catalogue import OTHER, UNKNOWN, CatalogueParams
    from jobs.common.taxonomy import TOP_LEVEL
    from jobs.common.feature_windows import MEDIUM
    from jobs.features import feature_version
    from ml.segments import segment_names
    from jobs.sequences import sequence_length

    builtin = CatalogueParams.from_config(cfg).builtin
    rating_min, rating_max = CleanParams.from_config(cfg).rating_range
    windows = FeatureWindows.from_config(cfg)
    day_start = dt.datetime.combine(run_date, dt.time(), tzinfo=dt.timezone.utc)
    collect_reasons = _reasons(COLLECT_REASONS, jobs.collect)
    try:  # the bands the profile configures (privacy.generalise), as clean labels them
        from jobs.common.privacy import Generalisation

        age_bands = list(Generalisation.from_config(cfg).age_band_labels)
    except (ImportError, AttributeError):  # before the bands became configurable
        age_bands = [label for _, _, label in AGE_BANDS] + ["unknown"]
    return {
        "run_date": [run_date],
        "day_start": day_start,
        "day_end": day_start + dt.timedelta(days=1),
        "event_types": list(EVENT_TYPES),
        "parse_errors": collect_reasons,
        "quarantine_reasons": list(dict.fromkeys(collect_reasons + _reasons(CLEAN_REASONS, jobs.clean))),
        "quarantine_steps": list(QUARANTINE_STEPS),
        # A shop's own categories cannot be listed in advance: None checks nothing (taxonomy none).
        "taxonomy_top_level": [*TOP_LEVEL, OTHER] if builtin else None,
        "taxonomy_size": len(TOP_LEVEL),
        "item_categories": [*TOP_LEVEL, UNKNOWN] if builtin else None,
        "no_category": [UNKNOWN],  # an item without a category: not part of the category mix
        "category_vocab_size": _vocab_size(spark, cfg, run_date),
        "segment_ids": list(segment_names(windows)),
        "segment_names": list(segment_names(windows).values()),
        "age_bands": age_bands,
        # clean.ranges.rating: silver ratings and published averages lie inside it; gold's avg_rating is
        # 0 for a user without ratings, so its floor is 0 where the scale starts above 0.
        "rating_min": rating_min,
        "rating_max": rating_max,
        "avg_rating_min": min(0.0, rating_min),
        "feature_version": [feature_version(windows)],
        "feature_window_days": windows.longest,            # the longest of features.windows
        "medium_window_days": windows.role(MEDIUM),        # the behaviour-mix window (30 by default)
        "recommend_k": int(cfg.get("recommend.k")),
        "embedding_dim": int(cfg.get("model.embedding_dim")),
        "sequence_length": sequence_length(cfg),
    }


def _vocab_size(spark: "SparkSession | None", cfg: Config, run_date: dt.date) -> int | None:
    """How many categories gold.category_vocab holds for the date; None without Spark or rows."""
    from jobs.common.catalogue import read_category_vocab
    from jobs.common.errors import InputDataError

    if spark is None:
        return None
    try:
        return len(read_category_vocab(spark, cfg, run_date))
    except InputDataError:
        return None


def _reasons(contract: Sequence[str], module: Any) -> list[str]:
    """The contract's reasons, then any other the step's module defines (REASON_* or *REASONS)."""
    defined: list[str] = []
    for name, value in sorted(vars(module).items()):
        if name.startswith("REASON_") and isinstance(value, str):
            defined.append(value)
        elif name.endswith("REASONS") and isinstance(value, (tuple, list)):
            defined += [v for v in value if isinstance(v, str)]
    return list(dict.fromkeys([*contract, *defined]))


def _resolve(value: Any, cfg: Config, parameters: Mapping[str, Any]) -> Any:
    """Spark-check kwargs may name a suite parameter or a config setting instead of a literal."""
    if isinstance(value, Mapping) and "$PARAMETER" in value:
        name = value["$PARAMETER"]
        if name not in parameters:
            raise ConfigError(f"unknown suite parameter '{name}'; known: {', '.join(sorted(parameters))}")
        return parameters[name]
    if isinstance(value, Mapping) and "$config" in value:
        return cfg.get(value["$config"], value.get("default")) if "default" in value else cfg.get(value["$config"])
    return value


# --------------------------------------------------------------------------------------------------
# Spark checks: what GX cannot say about one batch on its own.


@dataclass
class _Finding:
    success: bool
    observed: Any
    unexpected_count: int | None = None
    sample: list[dict[str, Any]] = field(default_factory=list)
    skipped: bool = False
    severity: str | None = None  # overrides the suite's: a learned band without enough history only warns


def _skip(reason: str) -> _Finding:
    return _Finding(True, {"skipped": reason}, skipped=True)


class _CheckContext:
    """What a Spark check sees: the cached partition, one row of aggregates over it, and the same
    aggregates over the previous day's partition, computed on first use. Sharing one aggregate pass
    per partition keeps the Spark checks to a handful of jobs."""

    def __init__(self, spark: "SparkSession", cfg: Config, table: TableSpec, run_date: dt.date,
                 partition: "DataFrame", checks: Sequence[Mapping[str, Any]], listed_columns: Iterable[str] = (),
                 params: QualityParams | None = None, optional_fields: Iterable[str] = ()):
        from pyspark.sql import functions as F

        self.spark, self.cfg, self.table, self.run_date = spark, cfg, table, run_date
        self.partition = partition
        self.params = params or QualityParams.from_config(cfg)
        self.listed_columns = set(listed_columns)  # the columns the suite's schema expectation names
        self.optional_fields = set(optional_fields)  # the fields a dataset may not have at all
        self._aggregates = _aggregates_for(checks, set(partition.columns))
        profiled = sorted(self.listed_columns & set(partition.columns))
        self._aggregates.update({f"non_null__{c}": (c, F.count(F.col(c))) for c in profiled})
        self.stats = self._aggregate(partition)
        self.row_count = int(self.stats["rows"])
        self.profile = self._profile(profiled)
        # The columns whose daily means the drift bands learn from: one pass over the history for all of them.
        self._band_means = [c["kwargs"]["column"] for c in checks if c["type"] == "mean_band"
                            and isinstance((c.get("kwargs") or {}).get("column"), str)]
        self._history: dict[dt.date, dict[str, Any]] | None = None
        self._absent_elsewhere: dict[str, bool] = {}
        self._previous: "DataFrame | None | bool" = False
        self._previous_stats: dict[str, Any] | None = None
        self._cache: dict[Any, "DataFrame"] = {}
        self._exists: dict[str, bool] = {}
        self._tables: dict[str, "DataFrame"] = {}
        self._mixes: dict[tuple[str, str | None, tuple[str, ...]], tuple[dict[dt.date, DayMix], "DataFrame"]] = {}
        self._mix_params: MixParams | None = None

    @property
    def mix_params(self) -> MixParams:
        if self._mix_params is None:
            self._mix_params = MixParams.from_config(self.cfg)
        return self._mix_params

    def _profile(self, columns: Sequence[str]) -> FieldProfile:
        """Non-null values of each listed column today; for a column with none, also in the history window."""
        non_null = {c: int(self.stats[f"non_null__{c}"] or 0) for c in columns}
        empty = [c for c, n in non_null.items() if n == 0] if self.row_count else []
        before = has_values_in_history(self.spark, self.cfg, baseline_table(self.table.name), empty, self.run_date,
                                       self.params.history_days) if empty else {}
        return FieldProfile(self.table.name, self.run_date, self.row_count, non_null, self.params.history_days, before,
                            frozenset(self.optional_fields))

    def history(self) -> dict[dt.date, dict[str, Any]]:
        """Per day of the table in the history window before the date: its rows and the drift bands' means."""
        if self._history is None:
            self._history = daily_values(self.spark, self.cfg, baseline_table(self.table.name), self.run_date,
                                         self.params.history_days, self._band_means)
        return self._history

    def absent_field(self, reference: str) -> str | None:
        """Why a check needing `reference` (a column of this table, or layer.table.column) cannot run, if so."""
        layer_table, _, column = reference.rpartition(".")
        if not layer_table or layer_table == self.table.name:
            return self.profile.reason(column) if self.profile.absent(column) else None
        if reference not in self._absent_elsewhere:
            found = has_values_in_history(self.spark, self.cfg, self.same_day(layer_table), [column], self.run_date,
                                          self.params.history_days, include_run_date=True)
            self._absent_elsewhere[reference] = not found[column]
        if self._absent_elsewhere[reference]:
            return (f"{reference} is absent in this dataset: no value up to {self.run_date} "
                    f"in the last {self.params.history_days} days")
        return None

    def _aggregate(self, frame: "DataFrame", prefixes: tuple[str, ...] = ("",)) -> dict[str, Any]:
        present = set(frame.columns)
        exprs = [expr.alias(name) for name, (column, expr) in self._aggregates.items()
                 if (column is None or column in present) and name.startswith(prefixes)]
        return frame.agg(*exprs).first().asDict()

    @property
    def previous_date(self) -> dt.date:
        return self.run_date - dt.timedelta(days=1)

    def previous(self) -> "DataFrame | None":
        """The previous day's partition as stored, or None when the table has no rows for that day."""
        from pyspark.sql import functions as F

        if self._previous is False:
            self._previous = None
            baseline = baseline_table(self.table.name)
            if table_exists(self.spark, self.cfg, baseline):
                frame = self.spark.read.format("delta").load(table_path(self.cfg, baseline)).where(
                    F.col(spec(baseline).date_column) == F.lit(self.previous_date))
                stats = self._aggregate(frame, ("rows", "mean__"))  # what day-to-day checks compare
                if stats["rows"]:
                    self._previous, self._previous_stats = frame, stats
        return self._previous  # type: ignore[return-value]

    @property
    def previous_stats(self) -> dict[str, Any]:
        self.previous()
        return self._previous_stats or {}

    def exists(self, name: str) -> bool:
        if name not in self._exists:
            self._exists[name] = table_exists(self.spark, self.cfg, name)
        return self._exists[name]

    def read(self, name: str) -> "DataFrame":
        """A table the checks read, loaded once per validation (each load reads its Delta log)."""
        if name not in self._tables:
            self._tables[name] = self.spark.read.format("delta").load(table_path(self.cfg, name))
        return self._tables[name]

    def day_of(self, name: str) -> "DataFrame":
        """Another table's partition for the validated date."""
        from pyspark.sql import functions as F

        return self.read(name).where(F.col(spec(name).date_column) == F.lit(self.run_date))

    def cached(self, name: Any, build: Callable[[], "DataFrame"]) -> "DataFrame":
        """A frame several checks read, built and cached on first use; release() frees it."""
        if name not in self._cache:
            self._cache[name] = build().cache()
        return self._cache[name]

    def release(self) -> None:
        for frame in self._cache.values():
            frame.unpersist()
        self._cache.clear()

    def sample(self, frame: "DataFrame") -> list[dict[str, Any]]:
        return [_jsonable(row.asDict(recursive=True)) for row in frame.limit(SAMPLE_ROWS).collect()]

    def same_day(self, ref_table: str) -> str:
        """A staged day refers to the other staged tables of that day, not to yesterday's published ones."""
        layer, _, name = ref_table.partition(".")
        if self.table.layer == STAGED_LAYER and layer == PUBLISHED_LAYER and f"{STAGED_LAYER}.{name}" in catalog.TABLES:
            return f"{STAGED_LAYER}.{name}"
        return ref_table


def _aggregates_for(checks: Sequence[Mapping[str, Any]], present: set[str]) -> dict[str, tuple[str | None, "Column"]]:
    """name -> (column it needs, aggregate) for every check answered by one pass over a partition."""
    from pyspark.sql import functions as F

    aggregates: dict[str, tuple[str | None, Column]] = {"rows": (None, F.count(F.lit(1)))}
    for check in checks:
        kwargs = check.get("kwargs") or {}
        column = kwargs.get("column")
        if not isinstance(column, str) or column not in present:
            continue
        if check["type"] in ("mean_vs_previous", "mean_band"):
            aggregates[f"mean__{column}"] = (column, F.avg(F.col(column)))
        elif check["type"] == "freshness":
            aggregates[f"newest__{column}"] = (column, F.max(F.unix_timestamp(F.col(column))))
        elif check["type"] == "array_values":
            condition = _array_condition(**kwargs)
            aggregates[_array_stat(kwargs)] = (column, F.sum(F.when(condition, 1).otherwise(0)))
    return aggregates


def _no_previous(ctx: _CheckContext) -> _Finding:
    return _skip(f"no rows for {ctx.previous_date}")


def _check_row_count_vs_previous(ctx: _CheckContext, min_ratio: float, max_ratio: float) -> _Finding:
    if ctx.previous() is None:
        return _no_previous(ctx)
    before = int(ctx.previous_stats["rows"])
    ratio = ctx.row_count / before
    observed = {"rows": ctx.row_count, "previous_rows": before, "ratio": round(ratio, 3),
                "allowed": [min_ratio, max_ratio]}
    return _Finding(min_ratio <= ratio <= max_ratio, observed)


def _check_mean_vs_previous(ctx: _CheckContext, column: str, max_relative_change: float) -> _Finding:
    if ctx.previous() is None:
        return _no_previous(ctx)
    now, before = ctx.stats.get(f"mean__{column}"), ctx.previous_stats.get(f"mean__{column}")
    if before is None or now is None or before == 0:
        return _skip(f"no mean to compare (this day {now}, previous day {before})")
    change = abs(now - before) / abs(before)
    observed = {"mean": round(now, 6), "previous_mean": round(before, 6), "relative_change": round(change, 4),
                "allowed": max_relative_change}
    return _Finding(change <= max_relative_change, observed)


def _distributions(now: "DataFrame", before: "DataFrame", bucket: "Column") -> tuple[dict[Any, int], dict[Any, int]]:
    """Rows per bucket on both days, in one job."""
    from pyspark.sql import functions as F

    both = now.select(bucket.alias("b"), F.lit(0).alias("day")).unionByName(
        before.select(bucket.alias("b"), F.lit(1).alias("day")))
    counts: tuple[dict[Any, int], dict[Any, int]] = ({}, {})
    for row in both.groupBy("day", "b").agg(F.count(F.lit(1)).alias("n")).collect():
        counts[row["day"]][row["b"]] = row["n"]
    return counts


def _check_psi_vs_previous(ctx: _CheckContext, column: str, max_psi: float, bins: int = 10) -> _Finding:
    """Population stability index of a column against the previous day (quantile bins for numbers)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import NumericType

    previous = ctx.previous()
    if previous is None:
        return _no_previous(ctx)
    if isinstance(ctx.partition.schema[column].dataType, NumericType):
        probabilities = [i / bins for i in range(1, bins)]
        edges = sorted(set(previous.approxQuantile(column, probabilities, 0.001)))
        value = F.col(column).cast("double")
        bucket = F.when(value.isNull(), F.lit(-1)).otherwise(
            sum((F.when(value > F.lit(edge), 1).otherwise(0) for edge in edges), F.lit(0)))
    else:
        bucket = F.coalesce(F.col(column).cast("string"), F.lit("<null>"))
    now, before = _distributions(ctx.partition, previous, bucket)
    # An empty day has no distribution; the volume band is the check that judges it.
    if not sum(now.values()):
        return _skip(f"no rows on {ctx.run_date}: nothing to compare with {ctx.previous_date}")
    if not sum(before.values()):
        return _skip(f"no rows on {ctx.previous_date}: nothing to compare {ctx.run_date} with")
    index = psi(now, before)
    return _Finding(index <= max_psi, {"psi": round(index, 4), "buckets": len(set(now) | set(before)),
                                       "allowed": max_psi})


def _check_freshness(ctx: _CheckContext, column: str, max_lag_hours: float, max_lead_hours: float = 0.0) -> _Finding:
    """The newest event is close to the end of the logical day: not stale, not from the future."""
    newest = ctx.stats.get(f"newest__{column}")
    if newest is None:
        return _Finding(False, {"newest": None, "reason": f"no {column} values"})
    day_end = dt.datetime.combine(ctx.run_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
    lag_hours = (day_end.timestamp() - newest) / 3600
    observed = {"newest": dt.datetime.fromtimestamp(newest, dt.timezone.utc).isoformat(),
                "hours_before_end_of_day": round(lag_hours, 2), "allowed": [-max_lead_hours, max_lag_hours]}
    return _Finding(-max_lead_hours <= lag_hours <= max_lag_hours, observed)


def _reference_keys(ctx: _CheckContext, ref_table: str, ref_column: str, ref_date: str) -> "DataFrame | None":
    from pyspark.sql import functions as F

    if not ctx.exists(ref_table):
        return None
    if ref_date == "same":
        ref = ctx.day_of(ref_table)
    elif ref_date == "latest":
        from jobs.features import latest_snapshot

        ref = latest_snapshot(ctx.spark, ctx.cfg, ref_table, ctx.run_date)
    else:
        raise ConfigError(f"exists_in: ref_date must be 'same' or 'latest', not '{ref_date}'")
    value = F.col(ref_column)
    if ref.schema[ref_column].dataType.typeName() == "array":  # silver.items.categories: each of an item's values
        value = F.explode(value)
    return ref.select(value.alias("_ref")).distinct()


def _check_exists_in(ctx: _CheckContext, column: str, ref_table: str, ref_column: str | None = None,
                     ref_date: str = "latest") -> _Finding:
    """Every value of `column` exists in `ref_table` (its snapshot for the date, or the same date)."""
    from pyspark.sql import functions as F

    if ref_date == "same":
        ref_table = ctx.same_day(ref_table)
    ref = _reference_keys(ctx, ref_table, ref_column or column, ref_date)
    if ref is None:
        return _Finding(False, {"reason": f"reference table {ref_table} does not exist"})
    missing = ctx.partition.where(F.col(column).isNotNull()).join(
        ref, F.col(column) == F.col("_ref"), "left_anti")
    count = missing.count()
    return _Finding(count == 0, {"missing_in_" + ref_table: count}, count, ctx.sample(missing) if count else [])


def _array_condition(column: str, field: str | None = None, value_set: Any = None,
                     min_value: float | None = None, max_value: float | None = None,
                     length: int | None = None) -> "Column":
    """True for a row whose array breaks the rule; null arrays only break a length rule."""
    from pyspark.sql import functions as F

    def element(x):
        return x[field] if field else x

    bad = F.lit(False)
    if length is not None:
        bad = bad | (F.coalesce(F.size(column), F.lit(-1)) != F.lit(int(length)))
    if value_set is not None:
        allowed = list(value_set)
        bad = bad | F.coalesce(F.exists(column, lambda x: element(x).isNull() | ~element(x).isin(allowed)), F.lit(False))
    if min_value is not None:
        bad = bad | F.coalesce(F.exists(column, lambda x: element(x) < F.lit(min_value)), F.lit(False))
    if max_value is not None:
        bad = bad | F.coalesce(F.exists(column, lambda x: element(x) > F.lit(max_value)), F.lit(False))
    return bad


def _array_stat(kwargs: Mapping[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(kwargs, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"bad_arrays__{digest}"


def _check_array_values(ctx: _CheckContext, column: str, **rule: Any) -> _Finding:
    """Each array element (or element.field) is in a set or a range; optionally a fixed length.

    The count of bad rows comes from the shared aggregate pass; rows are fetched only on failure.
    """
    count = int(ctx.stats[_array_stat({"column": column, **rule})])
    rows = ctx.partition.where(_array_condition(column, **rule)) if count else None
    return _Finding(count == 0, {"unexpected_rows": count, "of": ctx.row_count}, count,
                    ctx.sample(rows) if rows is not None else [])


def _check_rows_per_key(ctx: _CheckContext, key: str, min_rows: int | None = None,
                        max_rows: int | None = None) -> _Finding:
    from pyspark.sql import functions as F

    counts = ctx.partition.groupBy(key).agg(F.count(F.lit(1)).alias("rows"))
    bad = F.lit(False)
    if min_rows is not None:
        bad = bad | (F.col("rows") < F.lit(int(min_rows)))
    if max_rows is not None:
        bad = bad | (F.col("rows") > F.lit(int(max_rows)))
    offenders = counts.where(bad)
    count = offenders.count()
    return _Finding(count == 0, {"keys_out_of_bounds": count, "allowed": [min_rows, max_rows]}, count,
                    ctx.sample(offenders.orderBy(key)) if count else [])


def _check_ranks_contiguous(ctx: _CheckContext, key: str, rank: str) -> _Finding:
    """Per key the ranks are exactly 1..n: no gap, no repeat, nothing below 1."""
    from pyspark.sql import functions as F

    per_key = ctx.partition.groupBy(key).agg(
        F.min(rank).alias("min_rank"), F.max(rank).alias("max_rank"), F.count(F.lit(1)).alias("rows"),
        F.countDistinct(rank).alias("distinct_ranks"), F.sort_array(F.collect_list(rank)).alias("ranks"))
    offenders = per_key.where((F.col("min_rank") != 1) | (F.col("max_rank") != F.col("rows"))
                              | (F.col("distinct_ranks") != F.col("rows")))
    count = offenders.count()
    return _Finding(count == 0, {"keys_with_bad_ranks": count}, count,
                    ctx.sample(offenders.select(key, "ranks").orderBy(key)) if count else [])


def _check_non_increasing(ctx: _CheckContext, key: str, order_by: str, column: str) -> _Finding:
    """Within each key, `column` never rises as `order_by` grows (scores fall with rank)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    window = Window.partitionBy(key).orderBy(order_by)
    steps = ctx.partition.select(key, order_by, column, F.lag(column).over(window).alias(f"previous_{column}"))
    rises = steps.where(F.col(column) > F.col(f"previous_{column}"))
    count = rises.count()
    return _Finding(count == 0, {"rising_steps": count}, count, ctx.sample(rises.orderBy(key, order_by)) if count else [])


def _purchases(ctx: _CheckContext, key: str, item: str, lookback_days: int) -> "DataFrame | None":
    """Distinct (key, item) bought in silver.events in the `lookback_days` up to and including the date.

    Months of events are scanned once per validation: the bought-item and list-length checks share
    the cached result.
    """
    from pyspark.sql import functions as F

    if not ctx.exists("silver.events"):
        return None

    def bought() -> "DataFrame":
        horizon = ctx.run_date - dt.timedelta(days=int(lookback_days))
        return ctx.read("silver.events").where(
            (F.col("event_type") == "purchase") & (F.col("event_date") > F.lit(horizon))
            & (F.col("event_date") <= F.lit(ctx.run_date))
        ).select(F.col("user_key").alias(key), F.col("item_id").alias(item)).distinct()

    return ctx.cached(("purchases", key, item, int(lookback_days)), bought)


def _check_not_recently_bought(ctx: _CheckContext, key: str, item: str, lookback_days: int | None) -> _Finding:
    """No recommended item was bought by the same user in the look-back window up to the date.

    The rule is off when the window is 0 days (or unset): the check is then skipped.
    """
    if not lookback_days or int(lookback_days) <= 0:
        return _skip("the bought-items rule is off (look-back of 0 days)")
    bought = _purchases(ctx, key, item, int(lookback_days))
    if bought is None:
        return _Finding(False, {"reason": "silver.events does not exist, so purchases cannot be checked"})
    offenders = ctx.partition.join(bought, [key, item], "left_semi")
    count = offenders.count()
    return _Finding(count == 0, {"bought_items_recommended": count, "lookback_days": int(lookback_days)}, count,
                    ctx.sample(offenders) if count else [])


def _catalogue_rules(candidates: "DataFrame", rules: Mapping[str, Any] | None,
                     available_column: str | None) -> "DataFrame":
    """The items the recommender may use at all: available, and not excluded by a business rule
    (`recommend.rules`: exclude_categories, min_price, max_price). Per-list caps (max_per_brand,
    max_per_category) are not counted: they bind only on a catalogue of a few brands or categories."""
    from pyspark.sql import functions as F

    if available_column and available_column in candidates.columns:
        candidates = candidates.where(F.coalesce(F.col(available_column), F.lit(False)))
    rules = rules or {}
    if rules.get("exclude_categories"):
        candidates = candidates.where(~F.col("category").isin(*rules["exclude_categories"]))
    if rules.get("min_price") is not None:
        candidates = candidates.where(F.col("price") >= F.lit(float(rules["min_price"])))
    if rules.get("max_price") is not None:
        candidates = candidates.where(F.col("price") <= F.lit(float(rules["max_price"])))
    return candidates


def _check_list_length(ctx: _CheckContext, key: str, item: str, k: int, candidates_table: str,
                       candidates_filter: str | None = None, lookback_days: int | None = 0,
                       users_table: str | None = None, rules: Mapping[str, Any] | None = None,
                       available_column: str | None = None) -> _Finding:
    """Exactly k rows per key, unless the key has fewer than k eligible candidates: then one per candidate.

    A key's eligible candidates are the distinct `item` values of `candidates_table`'s partition for the
    date that are available and pass the business `rules` (see _catalogue_rules) and the SQL
    `candidates_filter`, less the items the key bought in the `lookback_days` up to the date when that
    rule is on (> 0). With `users_table`, its keys for the date that have no row at all are counted too
    (0 rows where min(k, eligible) were due).
    """
    from pyspark.sql import functions as F

    candidates_table = ctx.same_day(candidates_table)
    if not ctx.exists(candidates_table):
        return _Finding(False, {"reason": f"candidate table {candidates_table} does not exist"})
    candidates = _catalogue_rules(ctx.day_of(candidates_table), rules, available_column)
    if candidates_filter:
        candidates = candidates.where(candidates_filter)
    candidates = candidates.select(F.col(item).alias("_item")).distinct()
    available = candidates.count()
    k, lookback = int(k), int(lookback_days or 0)

    rows = ctx.partition.groupBy(key).agg(F.count(F.lit(1)).alias("rows"))
    if users_table:
        users_table = ctx.same_day(users_table)
        if not ctx.exists(users_table):
            return _Finding(False, {"reason": f"user table {users_table} does not exist"})
        users = ctx.day_of(users_table).select(key).distinct()
        rows = rows.join(users, key, "full_outer").fillna(0, subset=["rows"])
    if lookback > 0:
        bought = _purchases(ctx, key, item, lookback)
        if bought is None:
            return _Finding(False, {"reason": "silver.events does not exist, so purchases cannot be counted"})
        per_key = bought.join(candidates, F.col(item) == F.col("_item"), "left_semi").groupBy(key).agg(
            F.count(F.lit(1)).alias("bought"))
        rows = rows.join(per_key, key, "left").fillna(0, subset=["bought"])
    else:
        rows = rows.withColumn("bought", F.lit(0))
    eligible = F.lit(available) - F.col("bought")
    checked = rows.select(key, "rows", eligible.alias("eligible"), F.least(F.lit(k), eligible).alias("expected"))
    offenders = checked.where(F.col("rows") != F.col("expected"))
    count = offenders.count()
    observed = {"keys_with_wrong_length": count, "k": k, "candidates": available,
                "bought_excluded_days": lookback}
    return _Finding(count == 0, observed, count, ctx.sample(offenders.orderBy(key)) if count else [])


def _check_unlisted_columns(ctx: _CheckContext, optional: Sequence[str] = ()) -> _Finding:
    """Columns neither the suite's schema expectation nor `optional` names: reported so that they get checks.

    `optional` lists columns a table may have or not, such as one a step is starting to write.
    """
    if not ctx.listed_columns:
        return _skip("the suite names no columns")
    unlisted = sorted(set(ctx.partition.columns) - ctx.listed_columns - set(optional))
    return _Finding(not unlisted, {"unlisted": unlisted}, len(unlisted) or None)


def _check_columns_absent(ctx: _CheckContext, columns: Sequence[str]) -> _Finding:
    """None of these columns is in the table (Spark names are case-insensitive, so neither is this)."""
    forbidden = {c.lower() for c in columns}
    present = sorted(c for c in ctx.partition.columns if c.lower() in forbidden)
    return _Finding(not present, {"present": present, "forbidden": sorted(columns)}, len(present) or None)


def _check_row_share_of(ctx: _CheckContext, ref_table: str, max_share: float) -> _Finding:
    """This day's rows are at most `max_share` of `ref_table`'s rows for the same date."""
    if not ctx.exists(ref_table):
        return _Finding(False, {"reason": f"reference table {ref_table} does not exist"})
    total = ctx.day_of(ref_table).count()
    if total == 0:
        return _skip(f"{ref_table} has no rows for {ctx.run_date}")
    share = ctx.row_count / total
    observed = {"rows": ctx.row_count, f"{ref_table}_rows": total, "share": round(share, 4), "allowed": max_share}
    return _Finding(share <= max_share, observed)


def _band_finding(ctx: _CheckContext, band: Band, observed: dict[str, Any]) -> _Finding:
    """Pass inside the band; outside it, fail, or only warn while the history is shorter than min_history_days."""
    if band.expected is None:
        return _skip(f"no earlier day in the last {ctx.params.history_days} days to learn a band from")
    if band.enough_history:
        return _Finding(band.inside, observed)
    observed = {**observed, "note": f"only {band.history_days} past days (quality.min_history_days is "
                                    f"{ctx.params.min_history_days}): a warning until there are more"}
    return _Finding(band.inside, observed, severity=WARN)


def _check_row_count_band(ctx: _CheckContext, min_ratio: float | None = None,
                          spike_severity: str | None = None) -> _Finding:
    """The day's rows are inside the band learned from the table's own recent days (jobs/quality_history.py);
    `min_ratio` is the narrowest band (expected / or x it), quality.volume_min_ratio when not given.
    `spike_severity` (warn) reports a day above the band at that severity: a busy day is rarely lost data."""
    history = {day: values["rows"] for day, values in ctx.history().items()}
    band = volume_band(history, ctx.run_date, ctx.row_count, ctx.params, min_ratio)
    finding = _band_finding(ctx, band, volume_observed(band))
    if spike_severity and not finding.success and band.high is not None and band.value > band.high:
        if spike_severity not in SEVERITIES:
            raise ConfigError(f"row_count_band spike_severity is '{spike_severity}'; use one of {SEVERITIES}")
        finding.severity = WARN if finding.severity == WARN else spike_severity
    return finding


def _check_mean_band(ctx: _CheckContext, column: str) -> _Finding:
    """The day's mean of `column` is inside the band learned from the means of the table's recent days."""
    mean = ctx.stats.get(f"mean__{column}")
    if mean is None:
        return _skip(f"no {column} value on {ctx.run_date}")
    history = {day: values[column] for day, values in ctx.history().items() if values.get(column) is not None}
    band = mean_band(history, ctx.run_date, float(mean), ctx.params)
    observed = {"mean": round(float(mean), 6), "history_days": band.history_days, "method": band.method}
    if band.expected is not None:
        observed.update(expected=round(band.expected, 6), allowed=[round(band.low, 6), round(band.high, 6)])
    return _band_finding(ctx, band, observed)


def _check_array_exists_in(ctx: _CheckContext, column: str, ref_table: str, ref_column: str,
                           field: str | None = None, ref_date: str = "latest", key: str | None = None,
                           also_allowed: Sequence[str] = ()) -> _Finding:
    """Every element (or element.field) of the arrays in `column` is a value of `ref_table`.`ref_column`
    or one of `also_allowed`: e.g. an interest tag names a category that has items in the catalogue of that
    date, or the vocabulary's `other` bucket (which stands for categories past the cap, all with items)."""
    from pyspark.sql import functions as F

    if ref_date == "same":
        ref_table = ctx.same_day(ref_table)
    ref = _reference_keys(ctx, ref_table, ref_column, ref_date)
    if ref is None:
        return _Finding(False, {"reason": f"reference table {ref_table} does not exist"})
    keys = [key] if key else []
    elements = ctx.partition.select(*keys, F.explode_outer(column).alias("_element"))
    value = F.col("_element")[field] if field else F.col("_element")
    values = elements.select(*keys, value.alias("_value")).where(
        F.col("_value").isNotNull() & ~F.col("_value").isin(*also_allowed) if also_allowed else F.col("_value").isNotNull())
    missing = values.join(ref, F.col("_value") == F.col("_ref"), "left_anti")
    missing_values = sorted(r["_value"] for r in missing.select("_value").distinct().limit(50).collect())
    count = missing.count() if missing_values else 0
    label = f"{column}.{field}" if field else column
    observed = {f"values_not_in_{ref_table}.{ref_column}": missing_values[:SAMPLE_ROWS], "elements": count}
    sample = ctx.sample(missing.withColumnRenamed("_value", label)) if count else []
    return _Finding(count == 0, observed, count, sample)


def _check_not_constant(ctx: _CheckContext, column: str) -> _Finding:
    """A categorical column takes more than one value across the day's rows (users), once there are more
    rows than quality.constant_min_users; one band or segment for everybody says the rule has no input.
    Its severity is quality.constant_severity."""
    from pyspark.sql import functions as F

    if ctx.row_count <= ctx.params.constant_min_users:
        return _skip(f"{ctx.row_count} rows; judged above quality.constant_min_users "
                     f"({ctx.params.constant_min_users})")
    values = [r[0] for r in ctx.partition.select(F.col(column).cast("string")).distinct().limit(2).collect()]
    observed = {"distinct_values": values if len(values) < 2 else f"{len(values)} or more", "rows": ctx.row_count}
    return _Finding(len(values) > 1, observed, None if len(values) > 1 else ctx.row_count,
                    severity=ctx.params.constant_severity)


def _check_churn_event_present(ctx: _CheckContext, column: str, event_types: Sequence[str],
                               window_days: int, events_table: str = "silver.events") -> _Finding:
    """A churn risk is published only when the event churn is defined on (`model.churn_events`, a purchase by
    default) occurs in `events_table` in the `window_days` up to the date: without it the label is constant
    and the score meaningless."""
    from pyspark.sql import functions as F

    if f"non_null__{column}" in ctx.stats:  # the profile's count, when the suite lists the column
        scored = int(ctx.stats[f"non_null__{column}"] or 0)
    else:
        scored = ctx.partition.where(F.col(column).isNotNull()).count()
    if scored == 0:
        return _skip(f"no {column} published on {ctx.run_date}")
    if not ctx.exists(events_table):
        return _Finding(False, {"reason": f"{events_table} does not exist, so the churn event cannot be counted"})
    types = [event_types] if isinstance(event_types, str) else list(event_types)
    date_column = spec(events_table).date_column
    start = ctx.run_date - dt.timedelta(days=int(window_days))
    found = ctx.read(events_table).where(
        F.col("event_type").isin(types) & (F.col(date_column) > F.lit(start))
        & (F.col(date_column) <= F.lit(ctx.run_date))).limit(1).count()
    observed = {"churn_events": types, "found_in_window": bool(found), "window_days": int(window_days),
                "rows_with_" + column: scored}
    return _Finding(bool(found), observed, None if found else scored)


# --------------------------------------------------------------------------------------------------
# Mix checks: how concentrated the day's events are, against the recent days (jobs/quality_mix.py)


def _mix(ctx: _CheckContext, column: str, lookup: str | None,
         ignore: Sequence[str] = ()) -> "tuple[dict[dt.date, DayMix], DataFrame] | None":
    """The day's and the recent days' mixes of `column` (or of what `lookup`, layer.table.column, maps it to),
    and the (day, value, n) counts behind them; None when the lookup table does not exist. Values in
    `ignore` (the catalogue's `unknown` category) are no value: rows with them are not part of the mix."""
    from pyspark.sql import functions as F

    key = (column, lookup, tuple(ignore))
    if key not in ctx._mixes:
        mapping = None
        if lookup:
            table, _, mapped = lookup.rpartition(".")
            if not ctx.exists(table):
                return None
            if spec(table).date_column == "snapshot_date":
                from jobs.features import latest_snapshot

                mapping = latest_snapshot(ctx.spark, ctx.cfg, table, ctx.run_date)
            else:
                mapping = ctx.day_of(table)
            mapping = mapping.select(column, mapped)
        baseline = baseline_table(ctx.table.name)
        frames = [value_frame(ctx.partition, column, F.lit(ctx.run_date), mapping)]
        if ctx.exists(baseline):
            date_column = spec(baseline).date_column
            start = ctx.run_date - dt.timedelta(days=ctx.params.history_days)
            past = ctx.read(baseline).where((F.col(date_column) >= F.lit(start))
                                            & (F.col(date_column) < F.lit(ctx.run_date)))
            frames.append(value_frame(past, column, F.col(date_column), mapping))
        both = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
        if ignore:
            both = both.where(~F.col("value").isin(*ignore))
        counts = ctx.cached(("mix", *key),
                            lambda: both.groupBy("day", "value").agg(F.count(F.lit(1)).alias("n")))
        ctx._mixes[key] = (day_mixes(counts), counts)
    return ctx._mixes[key]


def _mix_days(ctx: _CheckContext, column: str, lookup: str | None,
              ignore: Sequence[str] = ()) -> "tuple[DayMix, dict[dt.date, DayMix]] | _Finding":
    """Today's mix and the past days' big enough to learn from, or the finding that skips the check."""
    found = _mix(ctx, column, lookup, ignore)
    what = lookup or column
    if found is None:
        return _skip(f"{lookup.rpartition('.')[0]} does not exist: no {what} to look up")  # type: ignore[union-attr]
    mixes, _ = found
    today = mixes.get(ctx.run_date, DayMix(0, 0, None, 0, 0.0))
    minimum = ctx.mix_params.min_rows
    if today.rows < minimum:
        return _skip(f"{today.rows} rows with a value of {what} on {ctx.run_date}; a mix is judged from "
                     f"quality.mix.min_rows ({minimum})")
    past = {day: mix for day, mix in mixes.items() if day != ctx.run_date and mix.rows >= minimum}
    return today, past


def _check_top_share(ctx: _CheckContext, column: str, mix: str, lookup: str | None = None,
                     ignore: Sequence[str] = ()) -> _Finding:
    """The share of the day's rows that the most frequent value of `column` (or of `lookup`) takes is at most
    max(quality.mix.share_floor[mix], share_factor x its median on the recent days), or
    quality.mix.share_no_history[mix] while fewer than quality.min_history_days past days have
    quality.mix.min_rows rows. `mix` (item, user, category) picks the settings; rows whose value is in
    `ignore` (an item without a category) are not counted."""
    days = _mix_days(ctx, column, lookup, ignore)
    if isinstance(days, _Finding):
        return days
    today, past = days
    p = ctx.mix_params
    if mix not in p.share_floor:
        raise ConfigError(f"top_share mix is '{mix}'; use one of {', '.join(p.share_floor)}")
    limit = upper_limit([m.top_share for m in past.values()], p.share_factor, p.share_floor[mix],
                        p.share_no_history[mix], ctx.params.min_history_days, "share")
    observed = {"top_value": today.top_value, "share": round(today.top_share, 4), "rows": today.rows,
                "top_rows": today.top_count, **limit.observed()}
    return _Finding(today.top_share <= limit.value, observed, None if today.top_share <= limit.value else today.top_count)


def _check_mix_entropy(ctx: _CheckContext, column: str, lookup: str | None = None,
                       ignore: Sequence[str] = ()) -> _Finding:
    """The normalised entropy of the day's mix of `column` (1 = even over its values, 0 = one value) is at
    least quality.mix.entropy_ratio x its median on the recent days, or quality.mix.entropy_no_history
    while there are too few of them (as for top_share)."""
    days = _mix_days(ctx, column, lookup, ignore)
    if isinstance(days, _Finding):
        return days
    today, past = days
    p = ctx.mix_params
    limit: Limit = lower_limit([m.entropy for m in past.values()], p.entropy_ratio, p.entropy_no_history,
                               ctx.params.min_history_days)
    observed = {"entropy": round(today.entropy, 4), "distinct": today.distinct, "rows": today.rows,
                **limit.observed()}
    return _Finding(today.entropy >= limit.value, observed)


def _check_mix_psi(ctx: _CheckContext, column: str, lookup: str | None = None,
                   ignore: Sequence[str] = ()) -> _Finding:
    """The PSI of the day's mix of `column` (or `lookup`) against the pooled recent days, over their
    quality.mix.psi_top_values values and one bucket for the rest, is at most max(quality.mix.psi_floor,
    psi_factor x the median of each recent day's PSI against the others), or quality.mix.psi_no_history
    while there are too few recent days. Skipped without any recent day to compare with."""
    days = _mix_days(ctx, column, lookup, ignore)
    if isinstance(days, _Finding):
        return days
    today, past = days
    if not past:
        return _skip(f"no day with quality.mix.min_rows ({ctx.mix_params.min_rows}) rows in the "
                     f"{ctx.params.history_days} days before {ctx.run_date}: nothing to compare with")
    p = ctx.mix_params
    _, counts = _mix(ctx, column, lookup, ignore)  # type: ignore[misc]
    buckets = bucket_counts(counts, sorted(past), p.psi_top_values)
    index, normal = psi_against_recent({day: buckets.get(day, {}) for day in past}, buckets.get(ctx.run_date, {}))
    limit = upper_limit(normal, p.psi_factor, p.psi_floor, p.psi_no_history, ctx.params.min_history_days, "psi")
    observed = {"psi": round(index, 4), "rows": today.rows, "buckets": p.psi_top_values + 1, **limit.observed()}
    return _Finding(index <= limit.value, observed)


def _pii_scans(frame: "DataFrame", exclude: Iterable[str] = ()) -> dict[str, tuple["Column", "Column"]]:
    """column -> (holds PII, its values masked) for every string column, array of strings and map with
    string keys or values: the columns a `no_pii` check reads."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    scans: dict[str, tuple[Column, Column]] = {}
    for field_ in frame.schema.fields:
        kind, column = field_.dataType, F.col(f"`{field_.name}`")
        if field_.name in set(exclude):
            continue
        if isinstance(kind, T.StringType):
            scans[field_.name] = (has_pii(column), mask_pii(column))
        elif isinstance(kind, T.ArrayType) and isinstance(kind.elementType, T.StringType):
            scans[field_.name] = (F.exists(column, has_pii), F.to_json(F.transform(column, mask_pii)))
        elif isinstance(kind, T.MapType) and (isinstance(kind.keyType, T.StringType)
                                              or isinstance(kind.valueType, T.StringType)):
            parts = [F.map_keys(column)] if isinstance(kind.keyType, T.StringType) else []
            parts += [F.map_values(column)] if isinstance(kind.valueType, T.StringType) else []
            strings = parts[0] if len(parts) == 1 else F.concat(*parts)
            scans[field_.name] = (F.exists(strings, has_pii), F.to_json(F.transform(strings, mask_pii)))
    return scans


def _check_no_pii(ctx: _CheckContext, exclude: Sequence[str] = ()) -> _Finding:
    """No string value (inside arrays and maps too) holds an email, a phone, an ID-card or a card number
    (jobs/common/pii.py). The sample shows the offending values masked, never the raw value."""
    from pyspark.sql import functions as F

    scans = _pii_scans(ctx.partition, exclude)
    if not scans:
        return _skip("no text column")
    row = ctx.partition.agg(*[F.count(F.when(found, 1)).alias(f"c{i}") for i, (found, _) in enumerate(scans.values())]
                            ).first()
    hits = {name: int(row[f"c{i}"]) for i, name in enumerate(scans) if row[f"c{i}"]}
    observed = {"columns_scanned": len(scans), "rows_with_pii": hits}
    if not hits:
        return _Finding(True, observed, 0)
    sample = []
    for name in hits:
        found, masked = scans[name]
        values = ctx.partition.where(found).select(masked.alias("v")).limit(SAMPLE_ROWS).collect()
        sample += [{"column": name, "value_masked": r["v"]} for r in values]
    return _Finding(False, observed, sum(hits.values()), sample[:SAMPLE_ROWS])


SPARK_CHECKS: dict[str, Callable[..., _Finding]] = {
    "row_count_vs_previous": _check_row_count_vs_previous,
    "mean_vs_previous": _check_mean_vs_previous,
    "psi_vs_previous": _check_psi_vs_previous,
    "freshness": _check_freshness,
    "exists_in": _check_exists_in,
    "array_values": _check_array_values,
    "rows_per_key": _check_rows_per_key,
    "ranks_contiguous": _check_ranks_contiguous,
    "non_increasing": _check_non_increasing,
    "not_recently_bought": _check_not_recently_bought,
    "list_length": _check_list_length,
    "unlisted_columns": _check_unlisted_columns,
    "columns_absent": _check_columns_absent,
    "row_share_of": _check_row_share_of,
    "row_count_band": _check_row_count_band,
    "mean_band": _check_mean_band,
    "array_exists_in": _check_array_exists_in,
    "not_constant": _check_not_constant,
    "churn_event_present": _check_churn_event_present,
    "top_share": _check_top_share,
    "mix_entropy": _check_mix_entropy,
    "mix_psi": _check_mix_psi,
    "no_pii": _check_no_pii,
}
# kwargs that name columns of the validated table, so a missing column skips the check.
_COLUMN_KWARGS = ("column", "column_A", "column_B", "key", "rank", "order_by", "item")


# --------------------------------------------------------------------------------------------------
# Validation


def _check_columns(kwargs: Mapping[str, Any]) -> list[str]:
    columns = [kwargs[k] for k in _COLUMN_KWARGS if isinstance(kwargs.get(k), str)]
    columns += list(kwargs.get("column_list") or [])
    return columns


def _column_label(kwargs: Mapping[str, Any]) -> str | None:
    columns = _check_columns(kwargs)
    return ",".join(columns) if columns else None


def _unique_ids(labels: Iterable[str]) -> list[str]:
    seen: dict[str, int] = {}
    ids = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        ids.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return ids


def _gx_batch(partition: "DataFrame", table: str):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    # persist=False: the partition is cached here once, and unpersisted when validation ends.
    source = context.data_sources.add_spark("portrait", persist=False)
    definition = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("partition")
    return definition.get_batch(batch_parameters={"dataframe": partition})


def _gx_observed(result: Mapping[str, Any]) -> tuple[Any, int | None, list[dict[str, Any]]]:
    """Observed value, unexpected count and bad rows from a GX result dict (BASIC format)."""
    if "details" in result and isinstance(result["details"], Mapping) and "mismatched" in result["details"]:
        observed: Any = {**result["details"]["mismatched"]}
    elif "observed_value" in result:
        observed = result["observed_value"]
    else:
        observed = None
    count = result.get("unexpected_count")
    if count is not None:
        observed = {"unexpected": count, "of": result.get("element_count"),
                    "values": (result.get("partial_unexpected_list") or [])[:SAMPLE_ROWS]}
    rows = _jsonable(result.get("unexpected_rows") or [])
    return _jsonable(observed), count, list(rows)[:SAMPLE_ROWS]


def _run_gx(partition: "DataFrame", table: str, name: str, expectations: Sequence[dict[str, Any]],
            parameters: Mapping[str, Any]):
    """One GX run of all expectations (pass/fail only), then details for the failed ones only.

    The details (unexpected values and rows) cost a scan per expectation; fetching them only for
    failures keeps the common, passing case to a single pass over the cached partition. Results
    come back in GX's order, so they are matched to expectations by the id each one is given here.
    Returns GX's suite result (with the detailed results swapped in) and the results by id.
    """
    import great_expectations as gx

    batch = _gx_batch(partition, table)
    outcome = batch.validate(gx.ExpectationSuite(name=name, expectations=list(expectations)),
                             result_format={"result_format": "BOOLEAN_ONLY"},
                             expectation_parameters=dict(parameters))
    by_id = {r.expectation_config.id: r for r in outcome.results}
    failed = [e for e in expectations if not by_id[e["id"]].success]
    if failed:
        details = batch.validate(
            gx.ExpectationSuite(name=f"{name}.failed", expectations=failed),
            result_format={"result_format": "BASIC", "include_unexpected_rows": True,
                           "partial_unexpected_count": SAMPLE_ROWS},
            expectation_parameters=dict(parameters))
        by_id.update({r.expectation_config.id: r for r in details.results})
        outcome.results = [by_id[r.expectation_config.id] for r in outcome.results]
    return outcome, by_id


def validate(spark: "SparkSession", cfg: Config, table: str, run_date: dt.date,
             df: "DataFrame | None" = None) -> ValidationReport:
    """Validate `table`'s partition for `run_date` (or `df`, e.g. a frame not yet written).

    The partition is cached once; GX runs every expectation of the suite in one validation, then
    the Spark checks run on the same cached rows. Pass a cached `df` to reuse it for the write.
    """
    from pyspark.sql import functions as F

    started = time.monotonic()
    table_spec = spec(table)
    suite = load_suite(suite_for(table, cfg.root), cfg.root, FeatureWindows.from_config(cfg))
    parameters = suite_parameters(cfg, run_date, spark)
    if df is None:
        df = read_table(spark, cfg, table).where(F.col(table_spec.date_column) == F.lit(run_date))
    cached_here = not df.is_cached
    partition = df.cache() if cached_here else df
    try:
        # The first aggregate fills the cache; GX and the Spark checks then read cached rows.
        checks = _resolved_checks(suite, cfg, parameters)
        ctx = _CheckContext(spark, cfg, table_spec, run_date, partition, checks, _listed_columns(suite),
                            QualityParams.from_config(cfg), (suite.meta or {}).get("optional_fields") or ())
        results, gx_result = _validate_gx(partition, table, suite, parameters, ctx)
        try:
            results += _validate_spark_checks(ctx, checks)
        finally:
            ctx.release()
    finally:
        if cached_here:
            partition.unpersist()
    redact = (suite.meta or {}).get("redact_columns") or ()
    _redact(results, redact)
    masked_gx = _redact_pii(results)
    if (redact or masked_gx) and any(r.failed and r.source == "gx" for r in results):
        gx_result = None  # GX's own page would show the bad rows unredacted; ours shows them redacted
    ids = _unique_ids(r.check_id or (f"{r.expectation_type}({r.column})" if r.column else r.expectation_type)
                      for r in results)
    for result, check_id in zip(results, ids):
        result.check_id = check_id
    report = ValidationReport(table, run_date, ctx.row_count, results, time.monotonic() - started, gx_result,
                              ctx.profile.to_rows())
    log.info("%s", report.summary().splitlines()[0])
    return report


def _listed_columns(suite) -> set[str]:
    return {c for e in suite.expectations if e.expectation_type == "expect_table_columns_to_match_set"
            for c in e.configuration.kwargs.get("column_set") or ()}


def _redact(results: Sequence[CheckResult], columns: Iterable[str]) -> None:
    """Blank the values of personal columns (names, emails, phones) in samples and observed values,
    so that ops.validation_results and the reports never copy them out of bronze."""
    hidden = set(columns)
    if not hidden:
        return
    for r in results:
        r.sample = [{k: (REDACTED if k in hidden and v is not None else v) for k, v in row.items()}
                    for row in r.sample]
        if r.column and hidden & set(r.column.split(",")) and isinstance(r.observed_value, dict) \
                and "values" in r.observed_value:
            r.observed_value = {**r.observed_value,
                                "values": [REDACTED if v is not None else None for v in r.observed_value["values"]]}


def _redact_pii(results: Sequence[CheckResult]) -> bool:
    """Mask emails, phones, ID-card and card numbers in every sample and observed value, whatever the
    column (a phone written into `geo`, a raw bronze line); True when a GX result had something masked."""
    masked_gx = False
    for r in results:
        sample, observed = redact_value(r.sample), redact_value(r.observed_value)
        if r.source == "gx" and (sample != r.sample or observed != r.observed_value):
            masked_gx = True
        r.sample, r.observed_value = sample, observed
    return masked_gx


def _unrestricted_parameter(kwargs: Mapping[str, Any], parameters: Mapping[str, Any]) -> str | None:
    """The name of a {"$PARAMETER": name} kwarg whose value is None (any value allowed, e.g. the item
    categories of a catalogue read with `catalogue.taxonomy: none`), or None when every set is given."""
    for value in kwargs.values():
        if isinstance(value, Mapping) and "$PARAMETER" in value and parameters.get(value["$PARAMETER"], "") is None:
            return value["$PARAMETER"]
    return None


def _validate_gx(partition: "DataFrame", table: str, suite, parameters,
                 ctx: "_CheckContext | None" = None) -> tuple[list[CheckResult], Any]:
    present = set(partition.columns)
    checks_column_set = any(e.expectation_type == "expect_table_columns_to_match_set" for e in suite.expectations)
    runnable, missing_columns, absent = [], {}, {}
    for position, expectation in enumerate(suite.expectations):
        columns = _check_columns(expectation.configuration.kwargs)
        missing = [c for c in columns if c not in present]
        reason = _absent_reason(ctx, columns, expectation.configuration.meta) if ctx and not missing else None
        unrestricted = _unrestricted_parameter(expectation.configuration.kwargs, parameters)
        if missing:
            missing_columns[position] = missing
        elif reason:
            absent[position] = reason
        elif unrestricted:
            absent[position] = f"any value is allowed: the suite parameter '{unrestricted}' is not restricted here"
        else:
            runnable.append(position)
    outcome, by_id = None, {}
    if runnable:
        dicts = [{**suite.expectations[i].configuration.to_json_dict(), "id": str(i)} for i in runnable]
        outcome, by_id = _run_gx(partition, table, suite.name, dicts, parameters)

    results = []
    for position, expectation in enumerate(suite.expectations):
        config = expectation.configuration
        kwargs = _jsonable({k: v for k, v in config.kwargs.items() if k != "batch_id"})
        base = dict(expectation_type=config.type, column=_column_label(config.kwargs),
                    severity=_severity(config.meta), source="gx", kwargs=kwargs, check_id="")
        if position in missing_columns:
            # The column-set expectation reports the missing column once; without one, this fails.
            reason = {"missing_columns": missing_columns[position]}
            results.append(CheckResult(**base, success=checks_column_set, skipped=checks_column_set,
                                       observed_value=reason))
            continue
        if position in absent:  # not failed and not faked: the dataset has no such field
            results.append(CheckResult(**base, success=True, skipped=True, observed_value={"skipped": absent[position]}))
            continue
        gx_result = by_id[str(position)]
        info = gx_result.exception_info or {}
        if info.get("raised_exception"):
            results.append(CheckResult(**base, success=False,
                                       observed_value={"error": str(info.get("exception_message"))[:300]}))
            continue
        observed, count, rows = _gx_observed(gx_result.result or {}) if not gx_result.success else (None, None, [])
        results.append(CheckResult(**base, success=bool(gx_result.success), observed_value=observed,
                                   unexpected_count=count, sample=rows))
    return results, outcome


def _spark_label(kwargs: Mapping[str, Any]) -> str | None:
    if isinstance(kwargs.get("column"), str):
        return kwargs["column"] + (f".{kwargs['field']}" if kwargs.get("field") else "")
    columns = [kwargs[k] for k in ("key", "rank", "item") if isinstance(kwargs.get(k), str)]
    return ",".join(columns) or None


def _resolved_checks(suite, cfg: Config, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The suite's Spark checks with parameter and config references (in kwargs and severity) replaced by values."""
    checks = []
    for check in (suite.meta or {}).get("spark_checks", []):
        meta = dict(check.get("meta") or {})
        if isinstance(meta.get("severity"), Mapping):
            setting = meta["severity"]["$config"]
            meta["severity"] = _resolve(meta["severity"], cfg, parameters)
            if meta["severity"] not in SEVERITIES:
                raise ConfigError(f"{setting} is '{meta['severity']}' (the severity of {suite.name}'s "
                                  f"{check['type']} check); use one of {SEVERITIES}")
        kwargs = {k: _resolve(v, cfg, parameters) for k, v in (check.get("kwargs") or {}).items()}
        checks.append({**check, "meta": meta, "kwargs": kwargs})
    return checks


def _absent_reason(ctx: "_CheckContext", columns: Iterable[str], meta: Mapping[str, Any] | None) -> str | None:
    """Why a check cannot run on this dataset: a column it checks, or a field it `requires` (meta.requires,
    e.g. silver.events.rating under an average rating), is absent in the dataset; None when it can run."""
    for reference in [*columns, *((meta or {}).get("requires") or [])]:
        reason = ctx.absent_field(reference)
        if reason:
            return reason
    return None


def _validate_spark_checks(ctx: _CheckContext, checks: Sequence[Mapping[str, Any]]) -> list[CheckResult]:
    results = []
    present = set(ctx.partition.columns)
    for check in checks:
        kwargs = check["kwargs"]
        base = dict(expectation_type=check["type"], column=_spark_label(kwargs),
                    severity=_severity(check.get("meta")), source="spark", kwargs=_jsonable(kwargs),
                    check_id=check.get("id", ""))
        missing = [c for c in _check_columns(kwargs) if c not in present]
        absent = None if missing else _absent_reason(ctx, _check_columns(kwargs), check.get("meta"))
        if missing:
            finding = _skip(f"missing columns {missing}")
        elif absent:
            finding = _skip(absent)
        else:
            finding = SPARK_CHECKS[check["type"]](ctx, **kwargs)
        if finding.severity:
            base["severity"] = finding.severity
        results.append(CheckResult(**base, success=finding.success, observed_value=_jsonable(finding.observed),
                                   unexpected_count=finding.unexpected_count, sample=finding.sample,
                                   skipped=finding.skipped))
    return results


# --------------------------------------------------------------------------------------------------
# Recording, docs, the step


def _as_reports(reports: "ValidationReport | Iterable[ValidationReport]") -> list[ValidationReport]:
    return [reports] if isinstance(reports, ValidationReport) else list(reports)


def record(spark: "SparkSession", cfg: Config, report: "ValidationReport | Iterable[ValidationReport]") -> int:
    """Replace the results of these tables and dates in ops.validation_results (one Delta commit), and
    their field profiles in ops.field_profile; returns the result rows written."""
    reports = _as_reports(report)
    if not reports:
        return 0
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = [
        (rep.run_date, rep.table, r.check_id, r.expectation_type, r.column, r.severity, r.success, r.skipped,
         json.dumps(r.observed_value, default=str, ensure_ascii=False), r.unexpected_count,
         json.dumps(r.sample, default=str, ensure_ascii=False), r.source, rep.row_count, rep.success, now)
        for rep in reports for r in rep.results
    ]
    tables = sorted({rep.table for rep in reports})
    dates = {rep.run_date for rep in reports}
    predicate = "table_name IN ({})".format(", ".join(repr(t) for t in tables))
    frame = spark.createDataFrame(rows, RESULTS_SCHEMA)
    written = replace_dates(frame, cfg, RESULTS_TABLE, dates, extra_predicate=predicate)
    history_days = QualityParams.from_config(cfg).history_days
    profile = [(rep.run_date, rep.table, f["column"], f["non_null_share"], f["non_null_rows"], rep.row_count,
                f["status"], history_days, now) for rep in reports for f in rep.fields]
    replace_dates(spark.createDataFrame(profile, FIELDS_SCHEMA), cfg, FIELDS_TABLE, dates, extra_predicate=predicate)
    return written


def docs_dir(cfg: Config) -> Path:
    """quality.docs_dir when set, else quality_docs next to a local lakehouse (or in the project)."""
    if cfg.get("quality.docs_dir", None):
        return Path(cfg.location("quality.docs_dir"))
    root = cfg.lakehouse_root
    if "://" in root:
        return cfg.root / "quality_docs"
    return Path(root).parent / "quality_docs"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}
th{background:#f3f3f3}.pass{color:#17692b;font-weight:600}.fail{color:#b00020;font-weight:600}
.warn{color:#a15c00;font-weight:600}.skip{color:#777}code,pre{font-size:12px;white-space:pre-wrap}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>")


def _status(result: Mapping[str, Any]) -> tuple[str, str]:
    if result.get("skipped"):
        return "skip", "skipped"
    if result["success"]:
        return "pass", "passed"
    return ("fail", "FAILED") if result["severity"] == ERROR else ("warn", "warning")


def _report_page(data: Mapping[str, Any], gx_page: str | None) -> str:
    rows = []
    for r in data["results"]:
        css, label = _status(r)
        sample = ""
        if r["sample"]:
            sample = "<pre>" + html.escape("\n".join(json.dumps(s, ensure_ascii=False, default=str)
                                                     for s in r["sample"])) + "</pre>"
        rows.append(
            f"<tr><td class='{css}'>{label}</td><td>{html.escape(r['check_id'])}</td>"
            f"<td>{html.escape(r['source'])}</td><td>{html.escape(r['severity'])}</td>"
            f"<td><code>{html.escape(json.dumps(r['observed_value'], ensure_ascii=False, default=str))}</code>"
            f"</td><td>{sample}</td></tr>")
    fields = "".join(
        f"<tr><td>{html.escape(f['column'])}</td><td>{'' if f['non_null_share'] is None else f['non_null_share']}</td>"
        f"<td class='{'skip' if f['status'] == ABSENT else 'fail' if f['status'] == MISSING_TODAY else ''}'>"
        f"{html.escape(f['status'].replace('_', ' '))}</td></tr>" for f in data.get("fields", []))
    if fields:
        fields = ("<h2>Fields</h2><p>Share of rows with a value. A field <em>absent in this dataset</em> has no value "
                  "today nor in the history window: checks that need it are skipped. One <em>missing today</em> had "
                  "values before: its checks run.</p><table><tr><th>field</th><th>non-null share</th><th>status</th>"
                  "</tr>" + fields + "</table>")
    verdict = "<span class='pass'>passed</span>" if data["success"] else "<span class='fail'>FAILED</span>"
    link = f" · <a href='{html.escape(gx_page)}'>GX data docs page</a>" if gx_page else ""
    body = (f"<p><a href='../index.html'>all validations</a>{link}</p>"
            f"<h1>{html.escape(data['table'])} · {data['run_date']}</h1>"
            f"<p>{verdict} · {data['row_count']:,} rows · {len(data['results'])} checks · {data['seconds']} s</p>"
            "<table><tr><th>status</th><th>check</th><th>by</th><th>severity</th><th>observed</th>"
            "<th>sample of bad rows</th></tr>" + "".join(rows) + "</table>" + fields)
    return _page(f"{data['table']} {data['run_date']}", body)


def _gx_page(gx_result: Any) -> str | None:
    """GX's own Data Docs rendering of the GX part of a validation, when its renderer manages it."""
    try:
        from great_expectations.render.renderer import ValidationResultsPageRenderer
        from great_expectations.render.view import DefaultJinjaPageView

        return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(gx_result))
    except Exception as exc:  # the renderer is optional polish; our own page has every result
        log.warning("GX could not render its data docs page: %s", exc)
        return None


def _write_index(folder: Path) -> None:
    entries = []
    for path in folder.glob("*/*.json"):
        try:
            entries.append((json.loads(path.read_text(encoding="utf-8")), path))
        except (OSError, json.JSONDecodeError):
            continue
    entries.sort(key=lambda e: (e[0]["run_date"], e[0]["table"]), reverse=True)
    rows = []
    for data, path in entries:
        css, label = ("pass", "passed") if data["success"] else ("fail", "FAILED")
        warnings = sum(1 for r in data["results"] if not r["success"] and not r.get("skipped")
                       and r["severity"] == WARN)
        errors = sum(1 for r in data["results"] if not r["success"] and not r.get("skipped")
                     and r["severity"] == ERROR)
        href = html.escape(f"{path.parent.name}/{path.stem}.html")
        rows.append(f"<tr><td>{data['run_date']}</td><td><a href='{href}'>{html.escape(data['table'])}</a></td>"
                    f"<td class='{css}'>{label}</td><td>{errors}</td><td>{warnings}</td>"
                    f"<td>{data['row_count']:,}</td></tr>")
    body = ("<h1>Portrait data quality</h1><table><tr><th>date</th><th>table</th><th>result</th>"
            "<th>errors</th><th>warnings</th><th>rows</th></tr>" + "".join(rows) + "</table>")
    (folder / "index.html").write_text(_page("Portrait data quality", body), encoding="utf-8")


def build_docs(cfg: Config, reports: "ValidationReport | Iterable[ValidationReport]" = ()) -> Path:
    """Write a page per validated table and date plus an index of every page so far; returns the folder.

    Our page lists GX expectations and Spark checks together; next to it, GX's own renderer
    writes its Data Docs page for the GX part (`<date>.gx.html`).
    """
    folder = docs_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    for rep in _as_reports(reports):
        target = folder / rep.table
        target.mkdir(exist_ok=True)
        stem = rep.run_date.isoformat()
        data = rep.to_dict()
        (target / f"{stem}.json").write_text(json.dumps(data, default=str, ensure_ascii=False, indent=1),
                                             encoding="utf-8")
        gx_html = _gx_page(rep.gx_result) if rep.gx_result is not None else None
        gx_name = None
        if gx_html:
            gx_name = f"{stem}.gx.html"
            (target / gx_name).write_text(gx_html, encoding="utf-8")
        (target / f"{stem}.html").write_text(_report_page(data, gx_name), encoding="utf-8")
    _write_index(folder)
    return folder


def _without_person(value: Any, mentions: Callable[[str], bool]) -> Any:
    """A report value with the person taken out: their sample rows dropped, any other text naming them blanked."""
    if isinstance(value, list):
        return [_without_person(v, mentions) for v in value]
    if isinstance(value, dict):
        return {k: _without_person([row for row in v if not mentions(json.dumps(row, default=str, ensure_ascii=False))]
                                   if k == "sample" and isinstance(v, list) else v, mentions)
                for k, v in value.items()}
    if isinstance(value, str) and mentions(value):
        return None
    return value


def forget_in_docs(cfg: Config, mentions: Callable[[str], bool], dry_run: bool = False) -> list[str]:
    """Take a person out of the HTML quality reports (`portrait forget`); returns the files changed.

    A page's JSON loses the person's sample rows and is written again with its HTML page; GX's own page
    cannot be rebuilt without its validation result, so one that mentions them is deleted (the page
    then links none). Any other file of the folder that mentions them is deleted too.
    """
    folder = docs_dir(cfg)
    if not folder.is_dir():
        return []
    changed: list[str] = []
    for path in sorted(folder.glob("*/*.json")):
        text = path.read_text(encoding="utf-8", errors="replace")
        gx_page = path.with_name(f"{path.stem}.gx.html")
        gx_mentions = gx_page.exists() and mentions(gx_page.read_text(encoding="utf-8", errors="replace"))
        if not (mentions(text) or gx_mentions):
            continue
        changed += [str(path), str(path.with_suffix(".html"))] + ([str(gx_page)] if gx_mentions else [])
        if dry_run:
            continue
        if gx_mentions:
            gx_page.unlink()
        data = _without_person(json.loads(text), mentions)
        path.write_text(json.dumps(data, default=str, ensure_ascii=False, indent=1), encoding="utf-8")
        path.with_suffix(".html").write_text(_report_page(data, gx_page.name if gx_page.exists() else None),
                                             encoding="utf-8")
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and str(p) not in changed):
        if mentions(path.read_text(encoding="utf-8", errors="replace")):
            changed.append(str(path))
            if not dry_run:
                path.unlink()
    if changed and not dry_run:
        _write_index(folder)
    return changed


def expand_tables(tables: str | Iterable[str], root: Path | None = None) -> tuple[str, ...]:
    """`silver.events`, a layer (`silver`), or several of either, comma-separated or as a list."""
    items = [t.strip() for t in (tables.split(",") if isinstance(tables, str) else tables) if t and t.strip()]
    known = suite_tables(root)
    chosen: list[str] = []
    for item in items:
        names = [t for t in known if t.split(".")[0] == item] if "." not in item else [item]
        if not names or not set(names) <= set(known):
            raise ConfigError(f"'{item}' is neither a table nor a layer with suites; tables: {', '.join(known)}")
        chosen += [n for n in names if n not in chosen]
    if not chosen:
        raise ConfigError("no tables to validate; name tables (silver.events) or layers (silver)")
    return tuple(chosen)


def failure_message(reports: Sequence[ValidationReport], docs: Path | None = None) -> str:
    failed = [r for r in reports if not r.success]
    lines = [f"data quality failed for {', '.join(f'{r.table} {r.run_date}' for r in failed)}; "
             "nothing after this check should publish it"]
    rows_left = SAMPLE_ROWS  # bad rows in the whole message, not per table
    for rep in failed:
        text = rep.summary(max_rows=rows_left)
        rows_left -= text.count("bad row: ")
        lines.append(text)
    if docs:
        lines.append(f"details: {docs / 'index.html'}")
    lines.append("fix the data (or the step that wrote it) and re-run the step for that date; a check that "
                 "is wrong belongs in expectations/<layer>/<table>.json")
    return "\n".join(lines)


# What "all" validates: every layer an analyst or a later step reads. The staging layer is left out:
# the DAG validates a staged day before publish, and what passed is then in publish.
ALL_LAYERS = ("bronze", "silver", "gold", "publish")


def run(spark: "SparkSession", cfg: Config, run_date: dt.date, tables: str | Sequence[str] = ALL_LAYERS) -> StepResult:
    """Validate tables for a date, record every result, build the docs, then fail on any error check.

    `tables` names tables or layers (`"staging"` is the scored day before it is published), as a
    tuple or one comma-separated string, so that an Airflow task can pass it as a plain parameter.
    """
    names = expand_tables(tables, cfg.root)
    reports = [validate(spark, cfg, name, run_date) for name in names]
    record(spark, cfg, reports)
    folder = build_docs(cfg, reports)
    log.info("quality docs: %s", folder / "index.html")
    if not all(r.success for r in reports):
        raise QualityError(failure_message(reports, folder), reports)
    result = StepResult("quality", run_date)
    result.details.update({
        "validated": ",".join(names),
        "checks": sum(len(r.results) for r in reports),
        "warnings": sum(len(r.warnings) for r in reports),
        "rows": {r.table: r.row_count for r in reports},
        "docs": str(folder / "index.html"),
    })
    return result

