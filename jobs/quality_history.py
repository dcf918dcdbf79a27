"""Quality history: the bands volume and drift checks learn from a table's own past days, and which fields a dataset has.

Real traffic is not steady (weekends, growth, a launch), so a fixed ratio to yesterday either fails good days
or misses bad ones. A band is learned instead from the table's own per-day values in the last
`quality.history_days` days: a robust trend (Theil-Sen), a day-of-week level when there are enough weeks,
and a spread from the median absolute deviation. With fewer than `quality.min_history_days` days the check
only warns. docs/quality.md explains every setting.

The field profile says, per table and date, which contract fields hold values: a field with none today and
none in the history window is *absent in this dataset* (checks that need it are skipped, with the reason);
one that had values before but none today is *missing today* (its checks run, and fail).
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs.common.catalog import spec, table_path
from jobs.common.config import Config
from jobs.common.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ERROR, WARN = "error", "warn"
MAD_TO_SIGMA = 1.4826  # the MAD of a normal sample times this estimates its standard deviation

# Field statuses of the profile (ops.field_profile.status).
PRESENT, MISSING_TODAY, ABSENT, NO_ROWS = "present", "missing_today", "absent_in_dataset", "no_rows"


@dataclass(frozen=True)
class QualityParams:
    """The `quality:` section of the profile, checked once."""

    history_days: int
    min_history_days: int
    weekday_min_weeks: int
    band_mad_multiplier: float
    volume_min_ratio: float
    snapshot_min_ratio: float
    mean_min_relative_change: float
    constant_min_users: int
    constant_severity: str

    def __post_init__(self) -> None:
        for name in ("history_days", "min_history_days", "weekday_min_weeks", "constant_min_users"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"quality.{name} must be at least 1, got {getattr(self, name)}")
        if self.min_history_days > self.history_days:
            raise ConfigError(f"quality.min_history_days ({self.min_history_days}) is above quality.history_days "
                              f"({self.history_days}); no table could ever have enough history")
        if self.band_mad_multiplier <= 0 or self.mean_min_relative_change < 0:
            raise ConfigError("quality.band_mad_multiplier must be > 0 and quality.mean_min_relative_change >= 0")
        for name in ("volume_min_ratio", "snapshot_min_ratio"):
            if getattr(self, name) < 1:
                raise ConfigError(f"quality.{name} is a factor (rows may be expected x or / it), at least 1, "
                                  f"got {getattr(self, name)}")
        if self.constant_severity not in (ERROR, WARN):
            raise ConfigError(f"quality.constant_severity is '{self.constant_severity}'; use error or warn")

    @classmethod
    def from_config(cls, cfg: Config) -> "QualityParams":
        section = cfg.get("quality")
        try:
            return cls(
                history_days=int(section["history_days"]), min_history_days=int(section["min_history_days"]),
                weekday_min_weeks=int(section["weekday_min_weeks"]),
                band_mad_multiplier=float(section["band_mad_multiplier"]),
                volume_min_ratio=float(section["volume_min_ratio"]),
                snapshot_min_ratio=float(section["snapshot_min_ratio"]),
                mean_min_relative_change=float(section["mean_min_relative_change"]),
                constant_min_users=int(section["constant_min_users"]),
                constant_severity=str(section["constant_severity"]),
            )
        except KeyError as exc:
            raise ConfigError(f"profile '{cfg.profile}' has no setting 'quality.{exc.args[0]}' "
                              "(conf/local.yaml lists them; docs/quality.md explains them)") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"a quality.* setting of profile '{cfg.profile}' has the wrong type: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Per-day history of a table


def daily_values(spark: "SparkSession", cfg: Config, table: str, run_date: dt.date, days: int,
                 means_of: Sequence[str] = ()) -> dict[dt.date, dict[str, Any]]:
    """Per date of `table` in the `days` days before `run_date`: {"rows": n, <column>: mean, ...}, in one pass.

    Counted by the table's date column, read as Delta: a load that wrote many days in one commit
    (a history file, a run with collect_days > 1) still gives each day its own count.
    """
    from pyspark.sql import functions as F

    from jobs.common.delta import table_exists

    if not table_exists(spark, cfg, table):
        return {}
    date_column = spec(table).date_column
    frame = spark.read.format("delta").load(table_path(cfg, table)).where(
        (F.col(date_column) >= F.lit(run_date - dt.timedelta(days=days))) & (F.col(date_column) < F.lit(run_date)))
    present = set(frame.columns)
    aggregates = [F.count(F.lit(1)).alias("rows")]
    aggregates += [F.avg(F.col(c)).alias(f"mean__{c}") for c in dict.fromkeys(means_of) if c in present]
    rows = frame.groupBy(F.col(date_column).alias("day")).agg(*aggregates).collect()
    return {r["day"]: {"rows": int(r["rows"]), **{c: r[f"mean__{c}"] for c in means_of if c in present}}
            for r in rows}


# --------------------------------------------------------------------------------------------------
# Bands


@dataclass
class Band:
    """What a learned band says about one value."""

    value: float
    expected: float | None
    low: float | None
    high: float | None
    history_days: int
    method: str
    enough_history: bool
    trend_per_day: float = 0.0  # additive per day, on the scale the band was learned on

    @property
    def inside(self) -> bool:
        return self.low is None or self.low <= self.value <= self.high  # type: ignore[operator]


def theil_sen_slope(points: Sequence[tuple[float, float]]) -> float:
    """The median of the slopes between every pair of points: a trend that a few odd days do not bend."""
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points) for x2, y2 in points[i + 1:] if x2 != x1]
    return statistics.median(slopes) if slopes else 0.0


def _mad(values: Sequence[float]) -> float:
    centre = statistics.median(values)
    return statistics.median(abs(v - centre) for v in values)


def learn_band(history: Mapping[dt.date, float], run_date: dt.date, value: float, params: QualityParams,
               min_half_width: float = 0.0, min_relative: float = 0.0) -> Band:
    """A band for `value` on `run_date` from the values of past dates (already on the scale to compare on).

    expected = the trend-corrected median of the past days (of the same weekday when at least
    `weekday_min_weeks` of them are in the history); half-width = `band_mad_multiplier` robust standard
    deviations of the trend- and weekday-corrected past values, never less than `min_half_width` nor
    than `min_relative` of the expected value.
    """
    days = sorted(history)
    enough = len(days) >= params.min_history_days
    if not days:
        return Band(value, None, None, None, 0, "no history", False)
    points = [((d - run_date).days, float(history[d])) for d in days]
    slope = theil_sen_slope(points) if len(points) >= 3 else 0.0
    residual = {d: history[d] - slope * (d - run_date).days for d in days}
    same_weekday = [d for d in days if d.weekday() == run_date.weekday()]
    by_weekday = len(same_weekday) >= params.weekday_min_weeks
    if by_weekday:
        levels = {w: statistics.median(residual[d] for d in days if d.weekday() == w)
                  for w in {d.weekday() for d in days}}
        expected = levels[run_date.weekday()]
        spread = _mad([residual[d] - levels[d.weekday()] for d in days])
        method = f"trend and day of week ({len(same_weekday)} past {run_date.strftime('%A')}s)"
    else:
        expected = statistics.median(residual.values())
        spread = _mad(list(residual.values()))
        method = "trend" if len(points) >= 3 else "median"
    half = max(params.band_mad_multiplier * MAD_TO_SIGMA * spread, min_half_width, min_relative * abs(expected))
    return Band(value, expected, expected - half, expected + half, len(days), method, enough, slope)


def volume_band(history_rows: Mapping[dt.date, int], run_date: dt.date, rows: int, params: QualityParams,
                min_ratio: float | None = None) -> Band:
    """The band of a day's row count, learned on log(1 + rows): growth and weekly swings are multiplicative.

    It is never narrower than expected / or x `min_ratio` (default quality.volume_min_ratio), nor than the
    counting noise of a small table: `band_mad_multiplier` / sqrt(expected rows) (a Poisson count's relative
    deviation), so that a table of a dozen rows a day is not failed for a day of thirty.
    """
    ratio = params.volume_min_ratio if min_ratio is None else float(min_ratio)
    if ratio < 1:
        raise ConfigError(f"a row_count_band min_ratio is a factor of at least 1, got {ratio}")
    logged = {d: math.log1p(n) for d, n in history_rows.items()}
    band = learn_band(logged, run_date, math.log1p(rows), params, math.log(ratio))
    if band.expected is not None:
        noise = params.band_mad_multiplier / math.sqrt(max(math.expm1(band.expected), 1.0))
        if band.high - band.expected < noise:  # type: ignore[operator]
            band.low, band.high = band.expected - noise, band.expected + noise
            band.method += ", counting noise"
    return band


def volume_observed(band: Band) -> dict[str, Any]:
    def rows(x: float | None) -> float | None:
        return None if x is None else round(max(math.expm1(x), 0.0), 1)

    return {"rows": round(math.expm1(band.value)), "expected": rows(band.expected),
            "allowed": [rows(band.low), rows(band.high)], "history_days": band.history_days,
            "method": band.method, "trend_per_day": f"{math.exp(band.trend_per_day) - 1:+.1%}"}


def mean_band(history_means: Mapping[dt.date, float], run_date: dt.date, mean: float, params: QualityParams) -> Band:
    """The band of a day's mean of a column; never narrower than ± mean_min_relative_change of the expected."""
    return learn_band(history_means, run_date, mean, params, min_relative=params.mean_min_relative_change)


# --------------------------------------------------------------------------------------------------
# Field profile


@dataclass
class FieldProfile:
    """Non-null share of each contract field of a table's day, and whether the dataset has the field at all."""

    table: str
    run_date: dt.date
    rows: int
    non_null: dict[str, int]
    history_days: int
    had_values: dict[str, bool] = field(default_factory=dict)  # in the history window; for fields empty today
    optional: frozenset[str] = frozenset()  # the suite's optional_fields: the only ones whose checks may be skipped

    def share(self, column: str) -> float | None:
        return None if not self.rows else round(self.non_null[column] / self.rows, 6)

    def status(self, column: str) -> str:
        if not self.rows:
            return NO_ROWS
        if self.non_null.get(column, 0) > 0:
            return PRESENT
        return MISSING_TODAY if self.had_values.get(column) else ABSENT

    def absent(self, column: str) -> bool:
        """An optional field the dataset does not have: checks on it are skipped."""
        return column in self.optional and column in self.non_null and self.status(column) == ABSENT

    def reason(self, column: str) -> str:
        return (f"{self.table}.{column} is absent in this dataset: no value on {self.run_date} "
                f"nor in the {self.history_days} days before")

    def to_rows(self) -> list[dict[str, Any]]:
        return [{"column": c, "non_null_share": self.share(c), "non_null_rows": self.non_null[c],
                 "status": self.status(c), "optional": c in self.optional} for c in self.non_null]


def has_values_in_history(spark: "SparkSession", cfg: Config, table: str, columns: Iterable[str], run_date: dt.date,
                          days: int, include_run_date: bool = False) -> dict[str, bool]:
    """Whether each column of `table` holds any value in the `days` days before `run_date` (and on it, if asked).

    One small job per column that stops at the first value: a field that is there is found at once, and only
    a field absent in the dataset is read through.
    """
    from pyspark.sql import functions as F

    from jobs.common.delta import table_exists

    columns = list(columns)
    if not columns or not table_exists(spark, cfg, table):
        return {c: False for c in columns}
    frame = spark.read.format("delta").load(table_path(cfg, table))
    date_column = spec(table).date_column
    last = run_date if include_run_date else run_date - dt.timedelta(days=1)
    window = frame.where((F.col(date_column) >= F.lit(run_date - dt.timedelta(days=days)))
                         & (F.col(date_column) <= F.lit(last)))
    return {c: c in frame.columns and bool(window.where(F.col(c).isNotNull()).limit(1).count()) for c in columns}
