"""Every suite passes on clean data and fails on exactly the check that guards against a planted defect."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json

import pytest

from jobs.common.config import Config
from jobs.common.taxonomy import TOP_LEVEL

D = dt.date(2031, 3, 10)          # the validated date
P = D - dt.timedelta(days=1)      # its previous day
LATER = D + dt.timedelta(days=5)  # a date whose partitions carry a defect, far from D's comparisons
K = 3


def key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


U1, U2, U3, U4 = (key(f"user{i}") for i in range(1, 5))

# --------------------------------------------------------------------------------------------------
# Suites as files (no Spark)


def test_every_suite_loads_and_names_only_known_parameters_and_columns(cfg):
    from jobs.clean import SILVER_EVENT_COLUMNS
    from jobs.quality import SPARK_CHECKS, load_suite, suite_parameters

    parameters = suite_parameters(cfg, D)
    for table in ("bronze.events", "silver.events", "silver.users", "silver.items", "gold.user_features",
                  "gold.item_features", "publish.user_profile", "publish.recommendations"):
        suite = load_suite(table)
        assert suite.name == table
        column_sets = [e for e in suite.expectations if e.expectation_type == "expect_table_columns_to_match_set"]
        assert len(column_sets) == 1, f"{table}: one schema expectation"
        schema = set(column_sets[0].column_set)
        for e in suite.expectations:
            assert e.meta.get("severity", "error") in ("error", "warn")
            for value in e.configuration.kwargs.values():
                if isinstance(value, dict) and "$PARAMETER" in value:
                    assert value["$PARAMETER"] in parameters, (table, value)
            column = e.configuration.kwargs.get("column")
            assert column is None or column in schema, (table, column)
        for check in suite.meta["spark_checks"]:
            assert check["type"] in SPARK_CHECKS
            for name, value in check["kwargs"].items():
                if isinstance(value, dict) and "$PARAMETER" in value:
                    assert value["$PARAMETER"] in parameters, (table, value)
                if name in ("column", "key", "rank", "order_by", "item"):
                    assert value in schema, (table, check)
    assert set(load_suite("silver.events").expectations[0].column_set) == set(SILVER_EVENT_COLUMNS)


def test_tables_can_be_named_one_by_one_or_by_layer():
    from jobs.common.errors import ConfigError
    from jobs.quality import expand_tables

    assert expand_tables("silver") == ("silver.events", "silver.users", "silver.items")
    assert expand_tables(["gold.item_features", "publish"]) == (
        "gold.item_features", "publish.user_profile", "publish.recommendations")
    assert expand_tables("bronze.events, silver.events") == ("bronze.events", "silver.events")
    with pytest.raises(ConfigError, match="neither a table nor a layer"):
        expand_tables("platinum")


def test_a_suite_with_an_unknown_severity_is_refused(tmp_path):
    from jobs.common.errors import ConfigError
    from jobs.quality import load_suite

    (tmp_path / "expectations" / "silver").mkdir(parents=True)
    (tmp_path / "expectations" / "silver" / "users.json").write_text(json.dumps({
        "name": "silver.users", "meta": {},
        "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "user_key"},
                          "meta": {"severity": "fatal"}}]}))
    with pytest.raises(ConfigError, match="severity 'fatal'"):
        load_suite("silver.users", tmp_path)


# --------------------------------------------------------------------------------------------------
# Tiny tables


@pytest.fixture(scope="module")
def qcfg(cfg) -> Config:
    """The session profile with its own lakehouse folder (no clash with other tests) and K = 3."""
    data = copy.deepcopy(dict(cfg.data))
    data["lakehouse_root"] = f"{cfg.lakehouse_root}/quality_tests"
    data.setdefault("recommend", {})["k"] = K
    return Config(profile=cfg.profile, root=cfg.root, data=data)


EVENTS_SCHEMA = (
    "event_id string, user_key string, session_id string, event_type string, item_id string, ts timestamp, "
    "price double, quantity long, query string, review_text string, rating long, device string, "
    "channel string, geo string, event_date date"
)
_TYPES = ("view", "click", "view", "search", "add_to_cart", "view", "rating", "purchase")


def event_rows(day: dt.date, tag: str) -> list[tuple]:
    """40 events: 20 kinds, each twice a minute apart, so every other row is the same day at half size."""
    users = (U1, U2, U3, U4)
    rows = []
    for j in range(20):
        kind = _TYPES[j % len(_TYPES)]
        user = users[j % 4]
        item = None if kind == "search" else "i7"
        if kind == "purchase" and day == D and j == 7:
            user, item = U1, "i6"  # u1 bought i6 on D, so i6 must never be recommended to u1
        priced = kind in ("view", "click", "add_to_cart", "purchase")
        for copy_ in range(2):
            ts = dt.datetime.combine(day, dt.time(1), tzinfo=dt.timezone.utc) + dt.timedelta(minutes=66 * j + copy_)
            rows.append((
                f"e{tag}{j:02d}{copy_}", user, f"s{tag}{j % 5}", kind, item, ts,
                100.0 + 10 * (j % 4) if priced else None,
                1 if kind in ("add_to_cart", "purchase") else None,
                "tent" if kind == "search" else None, None, 4 if kind == "rating" else None,
                "ios", "organic", "Shanghai", day,
            ))
    return rows


def replace_column(rows: list[tuple], schema: str, index: int, column: str, value) -> list[tuple]:
    names = [part.split()[0] for part in schema.split(", ")]
    position = names.index(column)
    row = list(rows[index])
    row[position] = value
    return rows[:index] + [tuple(row)] + rows[index + 1:]


USERS_SCHEMA = ("user_key string, age_band string, gender string, occupation string, city string, "
                "signup_date date, snapshot_date date")


def user_rows(day: dt.date, keys=(U1, U2, U3, U4)) -> list[tuple]:
    return [(k, "25-34", "F", "teacher", "Chengdu", dt.date(2030, 1, 1), day) for k in keys]


ITEMS_SCHEMA = ("item_id string, title string, category_path string, category string, brand string, "
                "price double, snapshot_date date")


def item_rows(day: dt.date) -> list[tuple]:
    return [(f"i{i}", f"item {i}", "electronics>headphones", "electronics", "Sony", 10.0 * i, day) for i in range(1, 9)]


ITEM_FEATURES_SCHEMA = ("item_id string, category string, brand string, price double, views_30d long, "
                        "purchases_30d long, popularity double, conversion_30d double, "
                        "price_pct_in_category double, as_of_date date")


def item_feature_rows(day: dt.date) -> list[tuple]:
    return [(f"i{i}", "electronics", "Sony", 10.0 * i, 10, 1, 2.5, 0.1, i / 8, day) for i in range(1, 9)]


PROFILE_SCHEMA = (
    "user_key string, as_of_date date, age_band string, gender string, city string, "
    "interest_tags array<struct<tag:string,score:double>>, top_categories array<string>, price_band string, "
    "consumption_capacity double, activity_level string, avg_rating double, segment_id string, "
    "segment_name string, churn_risk double, value_score double, user_embedding array<float>, "
    "model_version string, feature_version string"
)


def segment_names() -> dict[str, str]:
    try:
        from jobs.score import SEGMENT_NAMES
    except ImportError:
        from jobs.publish import SEGMENT_NAMES
    return SEGMENT_NAMES


def profile_rows(day: dt.date, embedding_dim: int, keys=(U1, U2, U3, U4)) -> list[tuple]:
    names = segment_names()

    return [(k, day, "25-34", "F", "Chengdu", [("electronics", 0.8), ("beauty", 0.4)], ["electronics"], "mid",
             1.02, "medium", 4.5, "regular", names["regular"], 0.25, 120.5, [0.1] * embedding_dim, "3", "1")
            for k in keys]


@pytest.fixture(scope="module")
def lake(spark, qcfg):
    """The tables other checks look up: previous days, references, purchases."""
    from jobs.common.delta import replace_dates

    def write(name, rows, schema, dates):
        replace_dates(spark.createDataFrame(rows, schema), qcfg, name, dates)

    write("silver.events", event_rows(P, "p") + event_rows(D, "d"), EVENTS_SCHEMA, [P, D])
    write("silver.users", user_rows(P) + user_rows(D), USERS_SCHEMA, [P, D])
    write("silver.items", item_rows(D), ITEMS_SCHEMA, [D])
    write("gold.item_features", item_feature_rows(D), ITEM_FEATURES_SCHEMA, [D])
    write("publish.user_profile", profile_rows(D, int(qcfg.get("model.embedding_dim"))), PROFILE_SCHEMA, [D])
    return qcfg


def failures(report) -> set[str]:
    """Ids of the checks that failed, errors and warnings alike."""
    return {r.check_id for r in report.results if r.failed}


def assert_only(report, check_id: str) -> None:
    assert failures(report) == {check_id}, report.summary()
    assert not report.success
    failed = report.result(check_id)
    assert failed.observed_value is not None


# --------------------------------------------------------------------------------------------------
# bronze.events


BRONZE_SCHEMA = (
    "event_id string, user_id string, session_id string, event_type string, item_id string, ts string, "
    "price double, quantity long, query string, review_text string, rating long, device string, "
    "channel string, geo string, _raw string, _source_file string, event_date date, _parse_error string, "
    "_ingested_at timestamp"
)


def bronze_rows() -> list[tuple]:
    source = f"file:/landing/events/event_date={D}/events-00000.jsonl"
    ingested = dt.datetime(2031, 3, 11, 2, 0)
    rows = []
    for i in range(10):
        raw = json.dumps({"event_id": f"e{i}", "user_id": f"u{i:07d}", "event_type": "view"})
        rows.append((f"e{i}", f"u{i:07d}", "s1", "view", "i1", f"{D}T10:0{i}:00+08:00", 10.0, None, None, None,
                     None, "ios", "organic", "Shanghai", raw, source, D, None, ingested))
    return rows


@pytest.mark.spark
@pytest.mark.parametrize("defect", [None, "null_source_file", "unknown_event_type"])
def test_bronze_events(spark, lake, defect):
    from jobs.quality import validate

    rows = bronze_rows()
    if defect == "null_source_file":
        rows = replace_column(rows, BRONZE_SCHEMA, 3, "_source_file", None)
    elif defect == "unknown_event_type":
        rows = replace_column(rows, BRONZE_SCHEMA, 3, "event_type", "teleport")
    report = validate(spark, lake, "bronze.events", D, df=spark.createDataFrame(rows, BRONZE_SCHEMA))
    if defect is None:
        assert report.success and failures(report) == set(), report.summary()
        assert report.row_count == 10
    elif defect == "null_source_file":
        assert_only(report, "expect_column_values_to_not_be_null(_source_file)")
        bad = report.result("expect_column_values_to_not_be_null(_source_file)")
        assert bad.unexpected_count == 1 and bad.sample[0]["event_id"] == "e3"
    else:  # a warning is reported and recorded, but the day passes: clean quarantines the line
        check = "expect_column_values_to_be_in_set(event_type)"
        assert failures(report) == {check} and report.success
        assert [r.check_id for r in report.warnings] == [check] and report.errors == []
        assert "warn expect_column_values_to_be_in_set(event_type)" in report.summary()


# --------------------------------------------------------------------------------------------------
# silver.events: keys, allowed values, schema, and comparisons with the previous day


def _events_defect(spark, defect: str):
    rows = event_rows(D, "d")
    if defect == "duplicate_key":
        rows = replace_column(rows, EVENTS_SCHEMA, 1, "event_id", rows[0][0])
    elif defect == "unknown_event_type":
        rows = replace_column(rows, EVENTS_SCHEMA, 0, "event_type", "teleport")
    elif defect == "half_the_rows":
        rows = rows[::2]
    elif defect == "drifted_prices":
        rows = [r[:6] + ((r[6] * 3 if r[6] is not None else None),) + r[7:] for r in rows]
    frame = spark.createDataFrame(rows, EVENTS_SCHEMA)
    return frame.drop("geo") if defect == "dropped_column" else frame


@pytest.mark.spark
@pytest.mark.parametrize("defect, check_id", [
    (None, None),
    ("duplicate_key", "expect_column_values_to_be_unique(event_id)"),
    ("unknown_event_type", "expect_column_values_to_be_in_set(event_type)"),
    ("dropped_column", "expect_table_columns_to_match_set"),
    ("half_the_rows", "row_count_vs_previous"),
    ("drifted_prices", "mean_vs_previous(price)"),
])
def test_silver_events(spark, lake, defect, check_id):
    from jobs.quality import validate

    if defect is None:  # clean: the stored partition, compared with the stored previous day
        report = validate(spark, lake, "silver.events", D)
        assert report.success and failures(report) == set(), report.summary()
        assert report.row_count == 40
        assert report.result("row_count_vs_previous").observed_value["ratio"] == 1.0
        assert not report.result("freshness(ts)").skipped
        assert report.result("psi_vs_previous(event_type)").observed_value["psi"] == pytest.approx(0, abs=1e-6)
        return
    report = validate(spark, lake, "silver.events", D, df=_events_defect(spark, defect))
    assert_only(report, check_id)
    if defect == "dropped_column":
        assert report.result(check_id).observed_value == {"missing": ["geo"]}
        assert report.result("expect_column_values_to_be_of_type(geo)").skipped
    if defect == "half_the_rows":
        assert report.result(check_id).observed_value["ratio"] == 0.5
    if defect == "unknown_event_type":
        assert report.result(check_id).sample[0]["event_type"] == "teleport"


# --------------------------------------------------------------------------------------------------
# silver.users through the CLI: exit 0 on clean data, 1 with a readable summary on a null key


@pytest.mark.spark
def test_quality_cli_check_exit_codes_and_docs(spark, lake, monkeypatch):
    from pathlib import Path

    from typer.testing import CliRunner

    from jobs.common.delta import replace_dates
    from portrait.quality_cli import quality_app

    replace_dates(spark.createDataFrame(user_rows(LATER, (None, U2, U3)), USERS_SCHEMA), lake, "silver.users", [LATER])
    monkeypatch.setenv("PORTRAIT__LAKEHOUSE_ROOT", lake.lakehouse_root)
    partitions = spark.conf.get("spark.sql.shuffle.partitions")
    runner = CliRunner()
    try:
        # --no-record: recording is run()'s test; here only the exit codes, the summary and the docs.
        passed = runner.invoke(quality_app, ["check", "--table", "silver.users", "--date", D.isoformat(), "--no-record"])
        failed = runner.invoke(quality_app, ["check", "--table", "silver.users", "--date", LATER.isoformat(),
                                             "--no-record"])
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", partitions)  # the CLI applies the profile's value
    assert passed.exit_code == 0, passed.output
    assert f"silver.users {D}: passed" in passed.output
    assert failed.exit_code == 1, failed.output
    assert f"silver.users {LATER}: FAILED (1 errors" in failed.output
    assert "FAIL expect_column_values_to_not_be_null(user_key)" in failed.output
    docs = runner.invoke(quality_app, ["docs"])
    assert docs.exit_code == 0, docs.output
    folder = Path(docs.output.strip())
    assert (folder / "silver.users" / f"{LATER}.html").is_file()
    assert f"silver.users/{LATER}.html" in (folder / "index.html").read_text()


# --------------------------------------------------------------------------------------------------
# silver.items through run(): results recorded, docs built, QualityError on an unknown category


@pytest.mark.spark
def test_run_records_results_builds_docs_and_raises_on_unknown_category(spark, lake):
    from pathlib import Path

    from jobs.common.delta import read_table, replace_dates
    from jobs.quality import RESULTS_TABLE, QualityError, run

    result = run(spark, lake, D, ("silver.items",))
    assert result.details["validated"] == "silver.items" and result.details["rows"] == {"silver.items": 8}
    assert Path(result.details["docs"]).is_file()

    bad = replace_column(item_rows(LATER), ITEMS_SCHEMA, 2, "category", "spaceships")
    replace_dates(spark.createDataFrame(bad, ITEMS_SCHEMA), lake, "silver.items", [LATER])
    with pytest.raises(QualityError) as caught:
        run(spark, lake, LATER, ("silver.items",))
    message = str(caught.value)
    assert f"silver.items {LATER}: FAILED (1 errors" in message
    assert "FAIL expect_column_values_to_be_in_set(category) [category]" in message and "spaceships" in message
    assert message.count("bad row:") == 1
    assert failures(caught.value.reports[0]) == {"expect_column_values_to_be_in_set(category)"}

    stored = read_table(spark, lake, RESULTS_TABLE).where("table_name = 'silver.items'").collect()
    by_date = {(r["run_date"], r["check_id"]): r for r in stored}
    assert by_date[(D, "expect_column_values_to_be_in_set(category)")]["success"] is True
    failed = by_date[(LATER, "expect_column_values_to_be_in_set(category)")]
    assert failed["success"] is False and failed["severity"] == "error" and failed["table_success"] is False
    assert "spaceships" in failed["sample_rows"]
    assert (Path(lake.lakehouse_root).parent / "quality_docs" / "silver.items" / f"{LATER}.html").is_file()


# --------------------------------------------------------------------------------------------------
# gold


USER_FEATURES_SCHEMA = ", ".join(
    ["user_key string", "age_band string", "gender string", "city string"]
    + [f"{c} double" for c in (
        "n_events_7d", "n_events_30d", "n_views_30d", "n_clicks_30d", "n_carts_30d", "n_purchases_30d",
        "n_searches_30d", "active_days_30d", "recency_days", "n_purchases_90d", "monetary_90d",
        "avg_purchase_price_90d", "conversion_30d", "avg_rating", "price_index")]
    + ["category_affinity array<double>", "as_of_date date", "feature_version string"])


def user_feature_rows() -> list[tuple]:
    even = [1 / len(TOP_LEVEL)] * len(TOP_LEVEL)
    return [(k, "25-34", "F", "Chengdu", 5.0, 20.0, 10.0, 4.0, 2.0, 1.0, 3.0, 6.0, 1.0, 2.0, 300.0, 150.0,
             0.1, 4.0, 1.1, even, D, "1") for k in (U1, U2, U3, U4)]


@pytest.mark.spark
@pytest.mark.parametrize("defect", [None, "affinity_above_one"])
def test_gold_user_features(spark, lake, defect):
    from jobs.quality import validate

    rows = user_feature_rows()
    if defect:
        rows = replace_column(rows, USER_FEATURES_SCHEMA, 1, "category_affinity", [1.5] + [0.0] * (len(TOP_LEVEL) - 1))
    report = validate(spark, lake, "gold.user_features", D, df=spark.createDataFrame(rows, USER_FEATURES_SCHEMA))
    if defect is None:
        assert report.success and failures(report) == set(), report.summary()
        assert not report.result("exists_in(user_key)").skipped
    else:
        assert_only(report, "array_values(category_affinity)")
        assert report.result("array_values(category_affinity)").sample[0]["user_key"] == U2


@pytest.mark.spark
@pytest.mark.parametrize("defect", [None, "price_position_above_one"])
def test_gold_item_features(spark, lake, defect):
    from jobs.quality import validate

    if defect is None:
        report = validate(spark, lake, "gold.item_features", D)
        assert report.success and failures(report) == set(), report.summary()
        return
    rows = replace_column(item_feature_rows(D), ITEM_FEATURES_SCHEMA, 0, "price_pct_in_category", 1.2)
    report = validate(spark, lake, "gold.item_features", D, df=spark.createDataFrame(rows, ITEM_FEATURES_SCHEMA))
    assert_only(report, "expect_column_values_to_be_between(price_pct_in_category)")


# --------------------------------------------------------------------------------------------------
# publish


@pytest.mark.spark
@pytest.mark.parametrize("defect, check_id", [
    (None, None),
    ("unknown_segment", "expect_column_values_to_be_in_set(segment_id)"),
    ("user_not_in_silver", "exists_in(user_key)"),
])
def test_publish_user_profile(spark, lake, defect, check_id):
    from jobs.quality import validate

    if defect is None:
        report = validate(spark, lake, "publish.user_profile", D)
        assert report.success and failures(report) == set(), report.summary()
        return
    dim = int(lake.get("model.embedding_dim"))
    rows = profile_rows(D, dim)
    if defect == "unknown_segment":
        rows = replace_column(rows, PROFILE_SCHEMA, 0, "segment_id", "vip")
    else:
        rows = rows + profile_rows(D, dim, (key("stranger"),))
    report = validate(spark, lake, "publish.user_profile", D, df=spark.createDataFrame(rows, PROFILE_SCHEMA))
    assert_only(report, check_id)
    if defect == "user_not_in_silver":
        assert report.result(check_id).sample[0]["user_key"] == key("stranger")


RECS_SCHEMA = ("user_key string, as_of_date date, rank int, item_id string, score double, reason string, "
               "model_version string")


def rec_rows(defect: str | None) -> list[tuple]:
    lists = {  # user -> [(rank, item, score)]; u3 has only two candidates, which is allowed
        U1: [(1, "i1", 0.9), (2, "i2", 0.8), (3, "i3", 0.7)],
        U2: [(1, "i2", 0.6), (2, "i4", 0.5), (3, "i5", 0.4)],
        U3: [(1, "i1", 0.3), (2, "i3", 0.2)],
    }
    if defect == "gap_in_ranks":
        lists[U3] = [(1, "i1", 0.3), (3, "i3", 0.2)]
    elif defect == "duplicate_item":
        lists[U1] = [(1, "i1", 0.9), (2, "i1", 0.8), (3, "i3", 0.7)]
    elif defect == "increasing_score":
        lists[U2] = [(1, "i2", 0.4), (2, "i4", 0.5), (3, "i5", 0.6)]
    elif defect == "bought_item":
        lists[U1] = [(1, "i1", 0.9), (2, "i2", 0.8), (3, "i6", 0.7)]
    return [(user, D, rank, item, score, "popular in electronics", "3")
            for user, recs in lists.items() for rank, item, score in recs]


@pytest.mark.spark
@pytest.mark.parametrize("defect, check_id", [
    (None, None),
    ("gap_in_ranks", "ranks_contiguous(user_key,rank)"),
    ("duplicate_item", "expect_compound_columns_to_be_unique(user_key,item_id)"),
    ("increasing_score", "non_increasing(score)"),
    ("bought_item", "not_recently_bought(user_key,item_id)"),
])
def test_publish_recommendations(spark, lake, defect, check_id):
    from jobs.quality import validate

    frame = spark.createDataFrame(rec_rows(defect), RECS_SCHEMA)
    report = validate(spark, lake, "publish.recommendations", D, df=frame)
    if defect is None:
        assert report.success and failures(report) == set(), report.summary()
        assert report.result("rows_per_key(user_key)").observed_value["allowed"] == [None, K]
        return
    assert_only(report, check_id)
    sample = report.result(check_id).sample
    if defect == "bought_item":
        assert [(r["user_key"], r["item_id"]) for r in sample] == [(U1, "i6")]
    if defect == "gap_in_ranks":
        assert sample == [{"user_key": U3, "ranks": [1, 3]}]


@pytest.mark.spark
def test_a_staged_day_is_held_to_the_published_suite_and_refers_to_its_own_staged_profile(spark, lake):
    from jobs.common.catalog import TABLES
    from jobs.common.delta import replace_dates
    from jobs.quality import expand_tables, validate

    if "staging.recommendations" not in TABLES:
        pytest.skip("the catalog has no staging tables")
    assert expand_tables("staging") == ("staging.user_profile", "staging.recommendations")
    staged = profile_rows(D, int(lake.get("model.embedding_dim")), (U1, U2))  # u3 is published, not staged
    replace_dates(spark.createDataFrame(staged, PROFILE_SCHEMA), lake, "staging.user_profile", [D])
    report = validate(spark, lake, "staging.recommendations", D,
                      df=spark.createDataFrame(rec_rows(None), RECS_SCHEMA))
    assert report.table == "staging.recommendations"
    assert failures(report) == {"exists_in(user_key)"}, report.summary()
    assert report.result("exists_in(user_key)").observed_value == {"missing_in_staging.user_profile": 2}
