"""Mix checks' arithmetic: how concentrated a day's events are (top share, entropy, PSI) and the limits learned from the recent days.

A day where one item takes 90% of the events can pass every row-level check. The mix checks
(`top_share`, `mix_entropy`, `mix_psi` in jobs/quality.py) compare the day's concentration with the
same figure on the table's recent days: a limit is `factor` x the recent median, never stricter than an
absolute floor. With fewer than `quality.min_history_days` usable past days (a new lakehouse) the limit
is a documented absolute one instead. A day or past day with fewer than `quality.mix.min_rows` events is
not judged nor learned from: a handful of events is all noise. docs/quality.md explains each setting.
Pure Python: tests give exact counts and get exact figures.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs.common.config import Config
from jobs.common.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

PSI_EPS = 1e-4  # a bucket empty on one side must not make the index infinite
OTHER = "<other>"  # the PSI bucket of every value outside the recent days' top values
MIXES = ("item", "user", "category")


@dataclass(frozen=True)
class MixParams:
    """The `quality.mix` section of the profile, checked once."""

    min_rows: int
    share_factor: float
    share_floor: Mapping[str, float]
    share_no_history: Mapping[str, float]
    entropy_ratio: float
    entropy_no_history: float
    psi_factor: float
    psi_floor: float
    psi_no_history: float
    psi_top_values: int

    def __post_init__(self) -> None:
        if self.min_rows < 1 or self.psi_top_values < 1:
            raise ConfigError("quality.mix.min_rows and quality.mix.psi_top_values must be at least 1")
        if self.share_factor < 1 or self.psi_factor < 1:
            raise ConfigError(f"quality.mix.share_factor ({self.share_factor}) and quality.mix.psi_factor "
                              f"({self.psi_factor}) are factors of the recent median, at least 1")
        for name in ("share_floor", "share_no_history"):
            values = getattr(self, name)
            if set(values) != set(MIXES) or not all(0 < v <= 1 for v in values.values()):
                raise ConfigError(f"quality.mix.{name} needs a share in (0, 1] for each of {', '.join(MIXES)}, "
                                  f"got {dict(values)}")
        if not (0 < self.entropy_ratio <= 1 and 0 <= self.entropy_no_history <= 1):
            raise ConfigError("quality.mix.entropy_ratio must be in (0, 1] and quality.mix.entropy_no_history in [0, 1]")
        if self.psi_floor <= 0 or self.psi_no_history <= 0:
            raise ConfigError("quality.mix.psi_floor and quality.mix.psi_no_history must be above 0")

    @classmethod
    def from_config(cls, cfg: Config) -> "MixParams":
        section = cfg.get("quality.mix")
        if not isinstance(section, Mapping):
            raise ConfigError(f"profile '{cfg.profile}' has no section 'quality.mix' (conf/local.yaml lists it; "
                              "docs/quality.md explains it)")
        try:
            return cls(
                min_rows=int(section["min_rows"]), share_factor=float(section["share_factor"]),
                share_floor={k: float(v) for k, v in section["share_floor"].items()},
                share_no_history={k: float(v) for k, v in section["share_no_history"].items()},
                entropy_ratio=float(section["entropy_ratio"]),
                entropy_no_history=float(section["entropy_no_history"]),
                psi_factor=float(section["psi_factor"]), psi_floor=float(section["psi_floor"]),
                psi_no_history=float(section["psi_no_history"]), psi_top_values=int(section["psi_top_values"]),
            )
        except KeyError as exc:
            raise ConfigError(f"profile '{cfg.profile}' has no setting 'quality.mix.{exc.args[0]}' "
                              "(conf/local.yaml lists them; docs/quality.md explains them)") from None
        except (AttributeError, TypeError, ValueError) as exc:
            raise ConfigError(f"a quality.mix.* setting of profile '{cfg.profile}' has the wrong type: {exc}") from None


@dataclass(frozen=True)
class DayMix:
    """How one day's events spread over the values of a column."""

    rows: int
    distinct: int
    top_value: Any
    top_count: int
    entropy: float  # normalised: Shannon entropy / log(distinct values); 1 = even, 0 = one value

    @property
    def top_share(self) -> float:
        return self.top_count / self.rows if self.rows else 0.0


def day_mix(counts: Mapping[Any, int]) -> DayMix:
    """The mix of one day from its rows per value."""
    counts = {k: n for k, n in counts.items() if n > 0}
    rows = sum(counts.values())
    if not rows:
        return DayMix(0, 0, None, 0, 0.0)
    top_value = max(counts, key=lambda k: (counts[k], str(k)))  # ties: the last by name, as Spark's max(struct)
    return DayMix(rows, len(counts), top_value, counts[top_value], normalised_entropy(counts.values()))


def day_mix_of(rows: int, distinct: int, top_value: Any, top_count: int, sum_n_log_n: float) -> DayMix:
    """The mix of one day from aggregates over its counts (sum of n log n), as Spark computes them."""
    if not rows:
        return DayMix(0, 0, None, 0, 0.0)
    entropy = 0.0 if distinct < 2 else (math.log(rows) - sum_n_log_n / rows) / math.log(distinct)
    return DayMix(rows, distinct, top_value, top_count, min(max(entropy, 0.0), 1.0))


def normalised_entropy(counts: Sequence[int] | Any) -> float:
    """Shannon entropy of the counts divided by its maximum, log(number of values); 0 for a single value."""
    counts = [n for n in counts if n > 0]
    rows = sum(counts)
    if len(counts) < 2:
        return 0.0
    entropy = math.log(rows) - sum(n * math.log(n) for n in counts) / rows
    return entropy / math.log(len(counts))


def psi(now: Mapping[Any, int], before: Mapping[Any, int]) -> float:
    """Population stability index of two distributions given as counts per bucket (0 when either is empty)."""
    total_now, total_before = sum(now.values()), sum(before.values())
    if not total_now or not total_before:
        return 0.0
    index = 0.0
    for key in set(now) | set(before):
        p = max(now.get(key, 0) / total_now, PSI_EPS)
        q = max(before.get(key, 0) / total_before, PSI_EPS)
        index += (p - q) * math.log(p / q)
    return index


def bucketed(counts: Mapping[Any, int], top: Sequence[Any]) -> dict[Any, int]:
    """Counts per value of `top`, and every other value together as OTHER."""
    keep = set(top)
    out: dict[Any, int] = {}
    for key, n in counts.items():
        bucket = key if key in keep else OTHER
        out[bucket] = out.get(bucket, 0) + n
    return out


def top_values(days: Mapping[Any, Mapping[Any, int]], k: int) -> list[Any]:
    """The k values with the most rows over all `days` (ties by name)."""
    pooled: dict[Any, int] = {}
    for counts in days.values():
        for key, n in counts.items():
            pooled[key] = pooled.get(key, 0) + n
    return sorted(pooled, key=lambda key: (-pooled[key], str(key)))[:k]


@dataclass(frozen=True)
class Limit:
    """The limit a day's figure is held to, and where it came from."""

    value: float
    method: str
    history_days: int
    recent_median: float | None = None

    def observed(self) -> dict[str, Any]:
        out: dict[str, Any] = {"limit": round(self.value, 4), "method": self.method, "history_days": self.history_days}
        if self.recent_median is not None:
            out["recent_median"] = round(self.recent_median, 4)
        return out


def upper_limit(history: Sequence[float], factor: float, floor: float, no_history: float,
                min_history_days: int, name: str) -> Limit:
    """A ceiling for a figure that should not rise (a top share, a PSI): max(floor, factor x recent median),
    or `no_history` with fewer than `min_history_days` past values."""
    if len(history) < min_history_days:
        return Limit(no_history, f"absolute ({len(history)} usable past days < quality.min_history_days "
                                 f"{min_history_days}; quality.mix.{name}_no_history)", len(history))
    median = statistics.median(history)
    learned = factor * median
    if learned >= floor:
        return Limit(learned, f"{factor:g} x the recent median", len(history), median)
    return Limit(floor, f"the floor quality.mix.{name}_floor ({factor:g} x the recent median is below it)",
                 len(history), median)


def lower_limit(history: Sequence[float], ratio: float, no_history: float, min_history_days: int) -> Limit:
    """A floor for a figure that should not fall (the normalised entropy): ratio x the recent median, or
    `no_history` with fewer than `min_history_days` past values."""
    if len(history) < min_history_days:
        return Limit(no_history, f"absolute ({len(history)} usable past days < quality.min_history_days "
                                 f"{min_history_days}; quality.mix.entropy_no_history)", len(history))
    median = statistics.median(history)
    return Limit(ratio * median, f"{ratio:g} x the recent median", len(history), median)


def mix_psi(days: Mapping[Any, Mapping[Any, int]], today: Mapping[Any, int], k: int) -> tuple[float, list[float]]:
    """Today's PSI against the pooled recent days, and each past day's PSI against the other past days
    (what a normal day's index looks like), over the pooled days' top `k` values and OTHER."""
    top = top_values(days, k)
    return psi_against_recent({day: bucketed(counts, top) for day, counts in days.items()}, bucketed(today, top))


def psi_against_recent(per_day: Mapping[Any, Mapping[Any, int]], today: Mapping[Any, int]) -> tuple[float, list[float]]:
    """mix_psi over counts already in buckets."""
    pooled: dict[Any, int] = {}
    for counts in per_day.values():
        for key, n in counts.items():
            pooled[key] = pooled.get(key, 0) + n
    past = []
    if len(per_day) >= 2:
        for counts in per_day.values():
            rest = {key: pooled[key] - counts.get(key, 0) for key in pooled}
            past.append(psi(counts, rest))
    return psi(today, pooled), past


# --------------------------------------------------------------------------------------------------
# The same figures from Spark: per-day aggregates and bucket counts, never one row per value on the driver


def value_frame(events: "DataFrame", column: str, day: "Column", lookup: "DataFrame | None" = None) -> "DataFrame":
    """(day, value) of the rows that have one: `column` itself, or its `lookup` (key, value) mapping
    (an event's item -> the item's category); rows without a value are not part of the mix."""
    from pyspark.sql import functions as F

    frame = events.select(day.alias("day"), F.col(column).cast("string").alias("value"))
    if lookup is not None:
        frame = frame.join(lookup.select(F.col(lookup.columns[0]).cast("string").alias("value"),
                                         F.col(lookup.columns[1]).cast("string").alias("mapped")), "value", "left") \
            .select("day", F.col("mapped").alias("value"))
    return frame.where(F.col("value").isNotNull())


def day_mixes(counts: "DataFrame") -> dict[Any, DayMix]:
    """DayMix per day from (day, value, n) counts, in one job."""
    from pyspark.sql import functions as F

    n = F.col("n")
    rows = counts.groupBy("day").agg(
        F.sum(n).alias("rows"), F.count(F.lit(1)).alias("distinct"), F.max(F.struct(n, F.col("value"))).alias("top"),
        F.sum(n * F.log(n)).alias("s")).collect()
    return {r["day"]: day_mix_of(int(r["rows"]), int(r["distinct"]), r["top"]["value"], int(r["top"]["n"]),
                                 float(r["s"])) for r in rows}


def bucket_counts(counts: "DataFrame", past_days: Sequence[Any], k: int) -> dict[Any, dict[Any, int]]:
    """Per day, the (day, value, n) counts in the buckets of mix_psi: the past days' top `k` values and OTHER."""
    from pyspark.sql import functions as F

    past = counts.where(F.col("day").isin(list(past_days)))
    top = [r["value"] for r in past.groupBy("value").agg(F.sum("n").alias("n"))
           .orderBy(F.desc("n"), F.asc("value")).limit(k).collect()]
    bucket = F.when(F.col("value").isin(top), F.col("value")).otherwise(F.lit(OTHER)) if top else F.lit(OTHER)
    out: dict[Any, dict[Any, int]] = {}
    for r in counts.groupBy("day", bucket.alias("b")).agg(F.sum("n").alias("n")).collect():
        out.setdefault(r["day"], {})[r["b"]] = int(r["n"])
    return out
