"""Checks that fit the data: learned volume and drift bands, the field profile, nonsense outputs."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
from pathlib import Path

import pytest

from jobs.common.config import Config

SAT = dt.date(2031, 3, 15)  # a Saturday: the validated day of the weekly-pattern table
FRI = SAT - dt.timedelta(days=1)
LONELY = dt.date(2031, 6, 7)  # a Saturday with only three earlier days in its table


def with_settings(cfg: Config, root: Path | None = None, **settings) -> Config:
    """The profile with dotted settings replaced (`quality.constant_min_users=3`)."""
    data = copy.deepcopy(dict(cfg.data))
    for dotted, value in settings.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return Config(profile=cfg.profile, root=root or cfg.root, data=data)


# --------------------------------------------------------------------------------------------------
# Bands, without Spark: exact figures on exact histories


def params(cfg, **overrides):
    from jobs.quality_history import QualityParams

    base = QualityParams.from_config(cfg)
    return QualityParams(**{**base.__dict__, **overrides})


def weekly(day: dt.date, weeks: int = 4, weekday: int = 10, saturday: int = 40) -> dict[dt.date, int]:
    """`weeks` weeks before `day`: `weekday` rows on Sunday..Friday, `saturday` rows on Saturdays."""
    return {day - dt.timedelta(days=i): (saturday if (day - dt.timedelta(days=i)).weekday() == 5 else weekday)
            for i in range(1, 7 * weeks + 1)}


def test_a_saturday_four_times_the_friday_is_inside_a_band_learned_per_weekday(cfg):
    from jobs.quality_history import volume_band, volume_observed

    history = weekly(SAT, saturday=400, weekday=100)
    assert history[FRI] == 100  # the old rule (at most 3x the previous day) fails 400 on SAT
    band = volume_band(history, SAT, 400, params(cfg))
    assert band.inside and band.enough_history
    # No spread around the weekly pattern: the band is the floor, expected / or x quality.volume_min_ratio (1.5).
    assert volume_observed(band) == {
        "rows": 400, "expected": 400.0, "allowed": [round(401 / 1.5 - 1, 1), round(401 * 1.5 - 1, 1)],
        "history_days": 28, "method": "trend and day of week (4 past Saturdays)", "trend_per_day": "+0.0%"}
    assert not volume_band(history, SAT, 100, params(cfg)).inside   # a Saturday like a weekday: a collapse
    assert not volume_band(history, SAT, 1000, params(cfg)).inside  # 2.5x a Saturday
    # With fewer weeks than quality.weekday_min_weeks the level is the plain median: 400 is then far outside.
    band = volume_band(weekly(SAT, weeks=2, saturday=400, weekday=100), SAT, 400, params(cfg))
    assert band.method == "trend" and not band.inside


def test_a_steady_trend_is_followed_and_a_day_below_it_fails(cfg):
    from jobs.quality_history import volume_band

    growing = {SAT - dt.timedelta(days=i): round(100 * 1.05 ** (28 - i)) for i in range(1, 29)}
    today = round(100 * 1.05 ** 28)  # 392: 3.9x the first day of the history, on trend
    band = volume_band(growing, SAT, today, params(cfg))
    assert band.inside and math.exp(band.trend_per_day) == pytest.approx(1.05, abs=0.002)
    assert math.expm1(band.expected) == pytest.approx(today, rel=0.01)
    assert not volume_band(growing, SAT, 150, params(cfg)).inside  # yesterday's 373 falls to 150


def test_a_noisy_history_widens_the_band(cfg):
    from jobs.quality_history import volume_band

    noisy = {SAT - dt.timedelta(days=i): n for i, n in enumerate([100, 60, 150, 80, 130, 70, 120, 90, 140], 1)}
    steady = {d: 100 for d in noisy}
    assert volume_band(noisy, SAT, 230, params(cfg)).inside
    assert not volume_band(steady, SAT, 230, params(cfg)).inside


def test_a_small_table_is_allowed_its_counting_noise_and_a_large_one_is_not(cfg):
    from jobs.quality_history import volume_band

    small = {SAT - dt.timedelta(days=i): 12 for i in range(1, 15)}
    large = {d: 1200 for d in small}
    assert volume_band(small, SAT, 30, params(cfg)).inside  # 2.5x a dozen: noise
    assert not volume_band(small, SAT, 2, params(cfg)).inside
    assert not volume_band(large, SAT, 3000, params(cfg)).inside  # 2.5x twelve hundred: not noise


def test_quality_settings_are_checked_once_by_name(cfg):
    from jobs.common.errors import ConfigError
    from jobs.quality_history import QualityParams

    with pytest.raises(ConfigError, match="quality.constant_severity"):
        QualityParams.from_config(with_settings(cfg, quality__constant_severity="fatal"))
    with pytest.raises(ConfigError, match="quality.min_history_days"):
        QualityParams.from_config(with_settings(cfg, quality__min_history_days=40))
    with pytest.raises(ConfigError, match="quality.volume_min_ratio"):
        QualityParams.from_config(with_settings(cfg, quality__volume_min_ratio=0.5))


# --------------------------------------------------------------------------------------------------
# Through validate(), on a small table of our own with a suite of our own


EVENTS_SCHEMA = "event_id string, event_type string, price double, rating long, event_date date"
SUITE = {
    "name": "silver.events",
    "meta": {
        "optional_fields": ["price", "rating"],
        "spark_checks": [
            {"type": "row_count_band", "kwargs": {}, "meta": {"severity": "error"}},
            {"id": "spikes_only_warn", "type": "row_count_band", "kwargs": {"spike_severity": "warn"},
             "meta": {"severity": "error"}},
            {"type": "row_count_vs_previous", "kwargs": {"min_ratio": 0.6, "max_ratio": 3.0},
             "meta": {"severity": "warn", "notes": "the old fixed rule, for contrast"}},
            {"type": "mean_band", "kwargs": {"column": "price"}, "meta": {"severity": "error"}},
        ],
    },
    "expectations": [
        {"type": "expect_table_columns_to_match_set",
         "kwargs": {"column_set": ["event_id", "event_type", "price", "rating", "event_date"], "exact_match": False},
         "meta": {"severity": "error"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "event_id"}, "meta": {"severity": "error"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "price"}, "meta": {"severity": "error"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "rating", "min_value": 1, "max_value": 5},
         "meta": {"severity": "error"}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "event_id", "regex": "^e"},
         "meta": {"severity": "warn", "requires": ["silver.items.price"]}},
    ],
}


def events(day: dt.date, n: int, price: float | None = 10.0, rating: int | None = None) -> list[tuple]:
    return [(f"e{day:%m%d}{i:03d}", "view", price, rating, day) for i in range(n)]


@pytest.fixture(scope="module")
def own(spark, cfg, tmp_path_factory):
    """A lakehouse and a suite folder of this module: 28 weekly-pattern days before SAT written in ONE
    commit (a history file loaded at once), and three days before LONELY."""
    from jobs.common.delta import replace_dates

    root = tmp_path_factory.mktemp("suites")
    (root / "expectations" / "silver").mkdir(parents=True)
    (root / "expectations" / "silver" / "events.json").write_text(json.dumps(SUITE))
    own_cfg = with_settings(cfg, root=root, lakehouse_root=f"{cfg.lakehouse_root}/quality_checks_tests")
    history = weekly(SAT)
    rows = [r for day, n in sorted(history.items()) for r in events(day, n)]
    lonely = [LONELY - dt.timedelta(days=i) for i in (1, 2, 3)]
    rows += [r for day in lonely for r in events(day, 10)]
    replace_dates(spark.createDataFrame(rows, EVENTS_SCHEMA), own_cfg, "silver.events", sorted(history) + lonely)
    return own_cfg


def check(report, check_id):
    result = report.result(check_id)
    return ("skipped" if result.skipped else "passed" if result.success else result.severity), result.observed_value


@pytest.mark.spark
def test_validate_learns_the_weekly_band_from_many_days_loaded_at_once(spark, own):
    from jobs.quality import validate

    report = validate(spark, own, "silver.events", SAT, df=spark.createDataFrame(events(SAT, 40), EVENTS_SCHEMA))
    status, observed = check(report, "row_count_band")
    assert status == "passed" and observed["expected"] == 40.0 and observed["history_days"] == 28
    assert check(report, "row_count_vs_previous")[0] == "warn"  # 40 / 10: the fixed 3x rule would have stopped it
    assert check(report, "mean_band(price)")[0] == "passed"
    assert report.success and {r.check_id for r in report.errors} == set()


@pytest.mark.spark
def test_validate_fails_a_real_collapse_and_a_price_drift(spark, own):
    from jobs.quality import validate

    report = validate(spark, own, "silver.events", SAT,
                      df=spark.createDataFrame(events(SAT, 8, price=25.0), EVENTS_SCHEMA))
    assert [r.check_id for r in report.errors] == ["row_count_band", "spikes_only_warn", "mean_band(price)"], \
        report.summary()
    status, observed = check(report, "row_count_band")
    # 40 expected rows: counting noise (4 / sqrt(40) on the log scale) is wider than quality.volume_min_ratio.
    assert status == "error" and observed["rows"] == 8 and observed["allowed"] == [20.8, 76.2]
    assert observed["method"] == "trend and day of week (4 past Saturdays), counting noise"
    status, observed = check(report, "mean_band(price)")
    assert status == "error" and observed["expected"] == 10.0 and observed["allowed"] == [9.0, 11.0]


@pytest.mark.spark
def test_a_day_above_the_band_fails_unless_spikes_only_warn(spark, own):
    from jobs.quality import validate

    report = validate(spark, own, "silver.events", SAT, df=spark.createDataFrame(events(SAT, 200), EVENTS_SCHEMA))
    assert check(report, "row_count_band")[0] == "error" and check(report, "spikes_only_warn")[0] == "warn"
    assert [r.check_id for r in report.errors] == ["row_count_band"]


@pytest.mark.spark
def test_with_too_little_history_a_band_only_warns(spark, own):
    from jobs.quality import validate

    report = validate(spark, own, "silver.events", LONELY,
                      df=spark.createDataFrame(events(LONELY, 40), EVENTS_SCHEMA))
    status, observed = check(report, "row_count_band")
    assert status == "warn" and observed["history_days"] == 3 and "quality.min_history_days is 7" in observed["note"]
    assert report.success and [r.check_id for r in report.warnings] == ["row_count_band", "spikes_only_warn",
                                                                        "row_count_vs_previous"]
    # The first day of a table has nothing to learn from: skipped, not failed.
    first = validate(spark, own, "silver.events", dt.date(2030, 1, 1),
                     df=spark.createDataFrame(events(dt.date(2030, 1, 1), 5), EVENTS_SCHEMA))
    assert check(first, "row_count_band")[0] == "skipped" and first.success


@pytest.mark.spark
def test_a_field_absent_in_the_dataset_skips_its_checks_and_one_missing_today_fails(spark, own):
    from jobs.common.delta import read_table
    from jobs.quality import FIELDS_TABLE, record, validate

    # rating: never a value, today or in the 28 days before -> absent in this dataset: skipped with the reason.
    # price: values every day before, none today -> missing today: its not-null check runs and fails.
    report = validate(spark, own, "silver.events", SAT,
                      df=spark.createDataFrame(events(SAT, 40, price=None), EVENTS_SCHEMA))
    status, observed = check(report, "expect_column_values_to_be_between(rating)")
    assert status == "skipped"
    assert observed == {"skipped": f"silver.events.rating is absent in this dataset: no value on {SAT} "
                                   "nor in the 28 days before"}
    assert [r.check_id for r in report.errors] == ["expect_column_values_to_not_be_null(price)"]
    assert check(report, "mean_band(price)")[0] == "skipped"  # no price today: nothing to compare
    statuses = {f["column"]: (f["status"], f["non_null_share"]) for f in report.fields}
    assert statuses == {"event_id": ("present", 1.0), "event_type": ("present", 1.0), "event_date": ("present", 1.0),
                        "price": ("missing_today", 0.0), "rating": ("absent_in_dataset", 0.0)}
    summary = report.summary()
    assert "fields absent in this dataset: rating; checks skipped for an absent field: 2" in summary
    assert "no value today but values before (checked as usual): price" in summary
    # A field another table lacks (silver.items does not exist here): the check that requires it is skipped.
    status, observed = check(report, "expect_column_values_to_match_regex(event_id)")
    assert status == "skipped" and "silver.items.price is absent" in observed["skipped"]

    record(spark, own, report)
    stored = {r["column_name"]: (r["status"], r["non_null_share"], r["rows"])
              for r in read_table(spark, own, FIELDS_TABLE).where(f"run_date = '{SAT}'").collect()}
    assert stored["rating"] == ("absent_in_dataset", 0.0, 40) and stored["price"] == ("missing_today", 0.0, 40)


@pytest.mark.spark
def test_a_required_field_that_is_not_optional_is_checked_even_when_empty(spark, own):
    """Only fields the suite lists as optional can be absent: an all-null key still fails."""
    from jobs.quality import validate

    rows = [(None, "view", 10.0, None, SAT)] * 40
    report = validate(spark, own, "silver.events", SAT, df=spark.createDataFrame(rows, EVENTS_SCHEMA))
    assert "expect_column_values_to_not_be_null(event_id)" in {r.check_id for r in report.errors}
