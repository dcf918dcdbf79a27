"""Mix checks: a day where one item, user or category takes the events fails against the recent days (issue 22, item 4)."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from tests.test_quality_checks import with_settings

DAY = dt.date(2031, 5, 10)  # the validated day; the 7 days before it hold the same normal mix
FIRST = dt.date(2031, 9, 1)  # a day of the same lakehouse with no earlier day: a new lakehouse
PAST = [DAY - dt.timedelta(days=i) for i in range(1, 8)]

SCHEMA = "event_id string, user_key string, item_id string, event_date date"
SUITE = {
    "name": "silver.events",
    "meta": {"spark_checks": [
        {"id": "top_item_share", "type": "top_share", "kwargs": {"column": "item_id", "mix": "item"},
         "meta": {"severity": "error"}},
        {"id": "top_user_share", "type": "top_share", "kwargs": {"column": "user_key", "mix": "user"},
         "meta": {"severity": "error"}},
        {"id": "top_category_share", "type": "top_share",
         "kwargs": {"column": "item_id", "mix": "category", "lookup": "silver.items.category",
                    "ignore": {"$PARAMETER": "no_category"}},
         "meta": {"severity": "error"}},
        {"id": "item_mix_entropy", "type": "mix_entropy", "kwargs": {"column": "item_id"}, "meta": {"severity": "error"}},
        {"id": "item_mix_psi", "type": "mix_psi", "kwargs": {"column": "item_id"}, "meta": {"severity": "warn"}},
    ]},
    "expectations": [
        {"type": "expect_table_columns_to_match_set",
         "kwargs": {"column_set": ["event_id", "user_key", "item_id", "event_date"], "exact_match": False},
         "meta": {"severity": "error"}},
    ],
}


def normal_items() -> list[str]:
    """A normal day's 100 item events: the item `hit` 3 times (3%), i01..i97 once each."""
    return ["hit"] * 3 + [f"i{n:02d}" for n in range(1, 98)]


def skewed_items() -> list[str]:
    """The skewed day's 100 item events: `hit` 90 times (90%), i01..i10 once each."""
    return ["hit"] * 90 + [f"i{n:02d}" for n in range(1, 11)]


def rows(day: dt.date, items: list[str | None]) -> list[tuple]:
    """One event per item, spread over 20 users (5 events each for 100 events)."""
    return [(f"e{day:%m%d}{i:03d}", f"u{i % 20:02d}", item, day) for i, item in enumerate(items)]


def category(item: str) -> str:
    """hit is in c0; iNN in c(NN mod 4): a normal day's top category is c0 with 3 + 24 = 27 events."""
    return "c0" if item == "hit" else f"c{int(item[1:]) % 4}"


@pytest.fixture(scope="module")
def mixed(spark, cfg, tmp_path_factory):
    from jobs.common.delta import replace_dates

    root = tmp_path_factory.mktemp("mix_suites")
    (root / "expectations" / "silver").mkdir(parents=True)
    (root / "expectations" / "silver" / "events.json").write_text(json.dumps(SUITE))
    own = with_settings(cfg, root=root, lakehouse_root=f"{cfg.lakehouse_root}/quality_mix_tests",
                        quality__mix__min_rows=50)
    history = [r for day in PAST for r in rows(day, normal_items())]
    replace_dates(spark.createDataFrame(history, SCHEMA), own, "silver.events", PAST)
    items = [(item, category(item), PAST[-1]) for item in sorted(set(normal_items()))] + [("mystery", "unknown", PAST[-1])]
    replace_dates(spark.createDataFrame(items, "item_id string, category string, snapshot_date date"), own,
                  "silver.items", [PAST[-1]])
    return own


def validate_day(spark, cfg, day, items):
    from jobs.quality import validate

    return validate(spark, cfg, "silver.events", day, df=spark.createDataFrame(rows(day, items), SCHEMA))


def outcome(report, check_id):
    result = report.result(check_id)
    return ("skipped" if result.skipped else "passed" if result.success else result.severity), result.observed_value


# --------------------------------------------------------------------------------------------------
# The arithmetic, without Spark


def test_day_mix_and_entropy_by_hand():
    from jobs.quality_mix import day_mix, normalised_entropy

    mix = day_mix({"a": 90, **{f"b{n}": 1 for n in range(10)}})
    assert (mix.rows, mix.distinct, mix.top_value, mix.top_count, mix.top_share) == (100, 11, "a", 90, 0.9)
    # H = ln 100 - (90 ln 90) / 100, over its maximum ln 11.
    assert mix.entropy == pytest.approx((math.log(100) - 0.9 * math.log(90)) / math.log(11))
    assert normalised_entropy([5, 5, 5, 5]) == pytest.approx(1.0)
    assert normalised_entropy([7]) == 0.0 and day_mix({}).rows == 0  # one value; an empty day: no division
    assert day_mix({"x": 2, "y": 2}).top_value == "y"  # a tie: the last by name, as Spark's max(struct)


def test_limits_learn_from_the_recent_days_and_fall_back_without_them():
    from jobs.quality_mix import lower_limit, upper_limit

    learned = upper_limit([0.1, 0.12, 0.11], 3.0, 0.2, 0.5, 3, "share")
    assert (round(learned.value, 4), learned.recent_median, learned.method) == (0.33, 0.11, "3 x the recent median")
    floor = upper_limit([0.03] * 3, 3.0, 0.2, 0.5, 3, "share")
    assert floor.value == 0.2 and floor.method.startswith("the floor quality.mix.share_floor")
    first = upper_limit([0.03] * 2, 3.0, 0.2, 0.5, 3, "share")
    assert first.value == 0.5 and first.method.startswith("absolute (2 usable past days < quality.min_history_days 3")
    assert lower_limit([0.8, 1.0, 0.9], 0.5, 0.3, 3).value == pytest.approx(0.45)
    assert lower_limit([], 0.5, 0.3, 3).value == 0.3


def test_mix_psi_is_zero_for_the_same_mix_and_large_for_a_collapse():
    from jobs.quality_mix import OTHER, bucketed, mix_psi, psi

    normal = {"hit": 3, **{f"i{n:02d}": 1 for n in range(1, 98)}}
    days = {d: normal for d in PAST}
    index, past = mix_psi(days, normal, 2)
    assert index == 0.0 and past == [0.0] * 7
    assert bucketed(normal, ["hit", "i01"]) == {"hit": 3, "i01": 1, OTHER: 96}
    skewed = {"hit": 90, **{f"i{n:02d}": 1 for n in range(1, 11)}}
    index, _ = mix_psi(days, skewed, 2)  # buckets hit, i97 (ties by name: i01) and the rest
    assert index == pytest.approx(psi({"hit": 90, "i01": 1, OTHER: 9}, {"hit": 21, "i01": 7, OTHER: 672}))
    assert index > 2.5
    assert psi({}, {"a": 1}) == 0.0  # an empty day: nothing to compare, no ZeroDivisionError


def test_mix_settings_are_checked_once_by_name(cfg):
    from jobs.common.errors import ConfigError
    from jobs.quality_mix import MixParams

    assert MixParams.from_config(cfg).share_floor == {"item": 0.2, "user": 0.2, "category": 0.5}
    with pytest.raises(ConfigError, match="quality.mix.share_floor"):
        MixParams.from_config(with_settings(cfg, quality__mix__share_floor={"item": 0.2}))
    with pytest.raises(ConfigError, match="quality.mix.min_rows"):
        MixParams.from_config(with_settings(cfg, quality__mix__min_rows=0))


# --------------------------------------------------------------------------------------------------
# Through validate()


@pytest.mark.spark
def test_a_normal_day_passes_every_mix_check(spark, mixed):
    report = validate_day(spark, mixed, DAY, normal_items())
    assert report.success and not report.warnings, report.summary()
    assert outcome(report, "top_item_share") == ("passed", {
        "top_value": "hit", "share": 0.03, "rows": 100, "top_rows": 3, "limit": 0.2,
        "method": "the floor quality.mix.share_floor (3 x the recent median is below it)", "history_days": 7,
        "recent_median": 0.03})
    status, observed = outcome(report, "top_category_share")
    assert status == "passed" and (observed["top_value"], observed["share"], observed["limit"]) == ("c0", 0.27, 0.81)
    assert outcome(report, "item_mix_psi")[1]["psi"] == 0.0


@pytest.mark.spark
def test_the_day_one_item_takes_90_percent_fails_with_its_figures(spark, mixed):
    report = validate_day(spark, mixed, DAY, skewed_items())
    assert [r.check_id for r in report.errors] == ["top_item_share", "top_category_share", "item_mix_entropy"], \
        report.summary()
    assert [r.check_id for r in report.warnings] == ["item_mix_psi"]
    assert outcome(report, "top_item_share") == ("error", {
        "top_value": "hit", "share": 0.9, "rows": 100, "top_rows": 90, "limit": 0.2,
        "method": "the floor quality.mix.share_floor (3 x the recent median is below it)", "history_days": 7,
        "recent_median": 0.03})
    # c0: hit's 90 and i04, i08.
    assert outcome(report, "top_category_share") == ("error", {
        "top_value": "c0", "share": 0.92, "rows": 100, "top_rows": 92, "limit": 0.81, "method": "3 x the recent median",
        "history_days": 7, "recent_median": 0.27})
    normal_entropy = (math.log(100) - 3 * math.log(3) / 100) / math.log(98)
    status, observed = outcome(report, "item_mix_entropy")
    assert status == "error" and observed == {
        "entropy": round((math.log(100) - 0.9 * math.log(90)) / math.log(11), 4), "distinct": 11, "rows": 100,
        "limit": round(0.5 * normal_entropy, 4), "method": "0.5 x the recent median", "history_days": 7,
        "recent_median": round(normal_entropy, 4)}
    assert outcome(report, "top_user_share")[0] == "passed"  # the users are as on any day
    assert "FAIL top_item_share [item_id]: 90 unexpected; top_value=hit, share=0.9, rows=100" in report.summary()


@pytest.mark.spark
def test_without_history_the_absolute_limits_judge(spark, mixed):
    report = validate_day(spark, mixed, FIRST, skewed_items())
    status, observed = outcome(report, "top_item_share")
    assert status == "error" and (observed["share"], observed["limit"], observed["history_days"]) == (0.9, 0.5, 0)
    assert observed["method"] == ("absolute (0 usable past days < quality.min_history_days 7; "
                                  "quality.mix.share_no_history)")
    assert outcome(report, "item_mix_psi") == ("skipped", {"skipped": (
        "no day with quality.mix.min_rows (50) rows in the 28 days before 2031-09-01: nothing to compare with")})
    # The items of the lakehouse's catalogue hold for any later date, so the category check judges too.
    assert outcome(report, "top_category_share")[1]["limit"] == 0.8
    assert validate_day(spark, mixed, FIRST, normal_items()).success


@pytest.mark.spark
def test_an_empty_day_and_a_small_day_are_skipped_not_crashed(spark, mixed):
    empty = validate_day(spark, mixed, DAY, [])
    for check_id in ("top_item_share", "top_user_share", "top_category_share", "item_mix_entropy", "item_mix_psi"):
        assert outcome(empty, check_id)[0] == "skipped", check_id
    assert outcome(empty, "top_item_share")[1] == {
        "skipped": "0 rows with a value of item_id on 2031-05-10; a mix is judged from quality.mix.min_rows (50)"}
    small = validate_day(spark, mixed, DAY, ["hit"] * 30)  # one item, but 30 events: below min_rows
    assert outcome(small, "top_item_share")[0] == "skipped" and small.success
    # Events without an item (searches) are not part of the item mix, nor items without a category of the
    # category mix: 300 of each leave the shares of a normal day.
    searches = validate_day(spark, mixed, DAY, normal_items() + [None] * 300)
    assert outcome(searches, "top_item_share")[1]["rows"] == 100 and searches.success
    uncategorised = validate_day(spark, mixed, DAY, normal_items() + ["mystery"] * 300)
    assert outcome(uncategorised, "top_category_share")[1]["share"] == 0.27
    assert outcome(uncategorised, "top_item_share")[0] == "error"  # 300 of 400 events on one item
