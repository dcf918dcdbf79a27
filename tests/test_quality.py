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
EARLIER = D - dt.timedelta(days=3)  # inside the look-back window of bought items, outside day-to-day checks
K = 3


def key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


U1, U2, U3, U4 = (key(f"user{i}") for i in range(1, 5))

# --------------------------------------------------------------------------------------------------
# Suites as files (no Spark)


SUITES = ("bronze.events", "bronze.users", "bronze.items", "bronze.quarantine", "silver.events", "silver.users",
          "silver.items", "gold.user_features", "gold.item_features", "gold.user_sequences", "publish.user_profile",
          "publish.recommendations")


def test_every_suite_loads_and_names_only_known_parameters_and_columns(cfg):
    from jobs.clean import SILVER_EVENT_COLUMNS
    from jobs.quality import SPARK_CHECKS, load_suite, suite_parameters, suite_tables

    parameters = suite_parameters(cfg, D)
    assert set(SUITES) <= set(suite_tables())
    for table in SUITES:
        suite = load_suite(table)
        assert suite.name == table
        column_sets = [e for e in suite.expectations if e.expectation_type == "expect_table_columns_to_match_set"]
        assert len(column_sets) == 1, f"{table}: one schema expectation"
        # Required columns, not an exact set: a column a step adds is reported (unlisted_columns), not fatal.
        assert column_sets[0].exact_match is False, table
        schema = set(column_sets[0].column_set)
        for e in suite.expectations:
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
        # Fields a dataset may lack are contract fields; a field a check requires is layer.table.column.
        assert set(suite.meta.get("optional_fields", [])) <= schema, table
        for item in suite.expectations:
            for required in (item.configuration.meta or {}).get("requires", []):
                assert required.rpartition(".")[0] in suite_tables(), (table, required)
        unlisted = [c for c in suite.meta["spark_checks"] if c["type"] == "unlisted_columns"]
        assert len(unlisted) == 1, table
        optional = set(unlisted[0]["kwargs"].get("optional", []))
        assert set(suite.meta.get("redact_columns", [])) <= schema | optional, table
    silver_events = load_suite("silver.events")
    required = set(silver_events.expectations[0].column_set)
    unlisted = next(c for c in silver_events.meta["spark_checks"] if c["type"] == "unlisted_columns")
    optional = set(unlisted["kwargs"]["optional"])
    # The suite requires no column clean does not write, and knows every column it does write.
    assert required <= set(SILVER_EVENT_COLUMNS) <= required | optional
    assert {"name", "email", "phone"} <= set(load_suite("bronze.users").meta["redact_columns"])


def test_every_check_states_its_severity():
    """Severity is a decision per check: no suite leaves it to the default."""
    from jobs.quality import suite_path

    for table in SUITES:
        data = json.loads(suite_path(table).read_text())
        for item in data["expectations"] + data["meta"]["spark_checks"]:
            severity = item.get("meta", {}).get("severity")
            if isinstance(severity, dict):  # a spark check may take it from a setting, typed in QualityParams
                assert item in data["meta"]["spark_checks"] and severity == {"$config": "quality.constant_severity"}
                continue
            assert severity in ("error", "warn"), (table, item)


def test_quarantine_reasons_cover_the_contract_and_the_steps_constants(cfg):
    import jobs.clean
    import jobs.collect
    from jobs.quality import suite_parameters

    parameters = suite_parameters(cfg, D)
    reasons = set(parameters["quarantine_reasons"])
    assert {"unparseable_json", "wrong_column_count", "bad_encoding", "missing_event_id", "unparseable_parquet",
            "control_characters", "bad_number",
            "missing_user_id", "unknown_event_type", "bad_timestamp", "price_out_of_range", "quantity_out_of_range",
            "rating_out_of_range", "unknown_item", "unknown_user", "held_unknown_item", "held_unknown_user",
            "bot_rate", "impossible_sequence", "outlier", "too_late", "negative_price", "bad_quantity"} <= reasons
    defined = {v for m in (jobs.collect, jobs.clean) for k, v in vars(m).items()
               if k.startswith("REASON_") and isinstance(v, str)}
    assert defined <= reasons
    assert set(parameters["parse_errors"]) <= reasons and "negative_price" not in parameters["parse_errors"]
    assert parameters["quarantine_steps"] == ["collect", "clean"]


def test_allowed_age_bands_follow_the_profile(cfg):
    from jobs.quality import suite_parameters

    privacy = pytest.importorskip("jobs.common.privacy")
    if not hasattr(getattr(privacy, "Generalisation", None), "from_config"):
        pytest.skip("age bands are not configurable in this version")
    data = copy.deepcopy(dict(cfg.data))
    data.setdefault("privacy", {})["generalise"] = {"age_band_edges": [20, 40, 60]}
    coarse = Config(profile=cfg.profile, root=cfg.root, data=data)
    assert suite_parameters(coarse, D)["age_bands"] == ["<20", "20-39", "40-59", "60+", "unknown"]
    assert "25-34" in suite_parameters(cfg, D)["age_bands"]


def test_tables_can_be_named_one_by_one_or_by_layer():
    from jobs.common.errors import ConfigError
    from jobs.quality import expand_tables

    assert expand_tables("silver") == ("silver.events", "silver.users", "silver.items")
    assert expand_tables("bronze") == ("bronze.events", "bronze.users", "bronze.items", "bronze.quarantine")
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
    "price double, quantity long, query string, review_text string, rating double, device string, "
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
                "tent" if kind == "search" else None, None, 4.0 if kind == "rating" else None,
                "ios", "organic", "Shanghai", day,
            ))
    return rows


def u3_purchases() -> list[tuple]:
    """u3 bought i3..i8 three days before D: of the 8 items of the day only i1 and i2 are left for it."""
    ts = dt.datetime.combine(EARLIER, dt.time(12), tzinfo=dt.timezone.utc)
    return [(f"eb{i}", U3, "sb", "purchase", f"i{i}", ts + dt.timedelta(minutes=i), 10.0 * i, 1, None, None, None,
             "ios", "organic", "Shanghai", EARLIER) for i in range(3, 9)]


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


ITEMS_SCHEMA = ("item_id string, title string, category_path string, category string, categories array<string>, "
                "brand string, price double, snapshot_date date")


def item_rows(day: dt.date) -> list[tuple]:
    """i1..i7 electronics and i8 beauty: the profile's interest tags name categories that have items."""
    return [(f"i{i}", f"item {i}", "beauty>skincare" if i == 8 else "electronics>headphones",
             "beauty" if i == 8 else "electronics", ["beauty" if i == 8 else "electronics"], "Sony", 10.0 * i, day)
            for i in range(1, 9)]


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

    write("silver.events", event_rows(P, "p") + event_rows(D, "d") + u3_purchases(), EVENTS_SCHEMA, [P, D, EARLIER])
    write("bronze.events", bronze_rows(40), BRONZE_SCHEMA, [D])
    write("bronze.users", bronze_user_rows(D), BRONZE_USERS_SCHEMA, [D])
    write("bronze.items", bronze_item_rows(D), BRONZE_ITEMS_SCHEMA, [D])
    write("bronze.quarantine", quarantine_rows(D), QUARANTINE_SCHEMA, [D])
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
    "price double, quantity long, query string, review_text string, rating double, device string, "
    "channel string, geo string, _raw string, _source_file string, event_date date, _parse_error string, "
    "_ingested_at timestamp"
)


SOURCE = f"file:/landing/events/event_date={D}/events-00000.jsonl"
INGESTED = dt.datetime(2031, 3, 11, 2, 0)


def bronze_rows(n: int = 10) -> list[tuple]:
    rows = []
    for i in range(n):
        raw = json.dumps({"event_id": f"e{i}", "user_id": f"u{i:07d}", "event_type": "view"})
        rows.append((f"e{i}", f"u{i:07d}", "s1", "view", "i1", f"{D}T10:{i:02d}:00+08:00", 10.0, None, None, None,
                     None, "ios", "organic", "Shanghai", raw, SOURCE, D, None, INGESTED))
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
# bronze.users, bronze.items, bronze.quarantine


BRONZE_USERS_SCHEMA = (
    "user_id string, name string, email string, phone string, age long, gender string, occupation string, "
    "city string, signup_date string, _source_file string, _ingested_at timestamp, snapshot_date date"
)


def bronze_user_rows(day: dt.date, n: int = 4) -> list[tuple]:
    return [(f"u{i:07d}", f"Name {i}", f"given.name{i}@example.org", f"1380000000{i}", 30 + i, "FMU"[i % 3],
             "teacher", "Chengdu", "2030-01-01", "file:/landing/users/users.jsonl", INGESTED, day)
            for i in range(n)]


@pytest.mark.spark
@pytest.mark.parametrize("defect, check_id", [
    (None, None),
    ("null_user_id", "expect_column_values_to_not_be_null(user_id)"),
    ("dropped_column", "expect_table_columns_to_match_set"),
    ("wrong_snapshot_date", "expect_column_values_to_be_in_set(snapshot_date)"),
])
def test_bronze_users(spark, lake, defect, check_id):
    from jobs.quality import REDACTED, validate

    if defect is None:
        report = validate(spark, lake, "bronze.users", D)
        assert report.success and failures(report) == set(), report.summary()
        assert report.row_count == 4 and report.result("unlisted_columns").observed_value == {"unlisted": []}
        return
    rows = bronze_user_rows(D)
    if defect == "null_user_id":
        rows = replace_column(rows, BRONZE_USERS_SCHEMA, 2, "user_id", None)
    elif defect == "wrong_snapshot_date":
        rows = replace_column(rows, BRONZE_USERS_SCHEMA, 1, "snapshot_date", P)
    frame = spark.createDataFrame(rows, BRONZE_USERS_SCHEMA)
    if defect == "dropped_column":
        frame = frame.drop("city")
    report = validate(spark, lake, "bronze.users", D, df=frame)
    assert_only(report, check_id)
    if defect == "dropped_column":
        assert report.result(check_id).observed_value == {"missing": ["city"]}
        assert report.result("expect_column_values_to_be_of_type(city)").skipped
    if defect == "null_user_id":
        # The bad row is shown, but never the person's name, email or phone.
        row = report.result(check_id).sample[0]
        assert row["user_id"] is None and row["age"] == 32 and row["occupation"] == "teacher"
        assert row["name"] == row["email"] == row["phone"] == REDACTED
        assert "given.name2@example.org" not in report.summary() and report.gx_result is None


@pytest.mark.spark
def test_bronze_users_duplicates_and_new_columns_only_warn(spark, lake):
    from jobs.quality import validate

    rows = bronze_user_rows(D)
    rows = replace_column(rows, BRONZE_USERS_SCHEMA, 3, "user_id", rows[0][0])
    frame = spark.createDataFrame(rows, BRONZE_USERS_SCHEMA).withColumn("loyalty_tier", spark_lit("gold"))
    report = validate(spark, lake, "bronze.users", D, df=frame)
    assert report.success, report.summary()
    assert failures(report) == {"expect_column_values_to_be_unique(user_id)", "unlisted_columns"}
    assert {r.severity for r in report.warnings} == {"warn"}
    assert report.result("unlisted_columns").observed_value == {"unlisted": ["loyalty_tier"]}
    assert not report.result("expect_table_columns_to_match_set").failed  # extra columns are allowed


def spark_lit(value):
    from pyspark.sql import functions as F

    return F.lit(value)


BRONZE_ITEMS_SCHEMA = ("item_id string, title string, category_path string, brand string, price double, "
                       "_source_file string, _ingested_at timestamp, snapshot_date date")


def bronze_item_rows(day: dt.date) -> list[tuple]:
    return [(f"i{i:06d}", f"Sony item {i}", "electronics>headphones", "Sony", 10.0 * i,
             "file:/landing/items/items.jsonl", INGESTED, day) for i in range(1, 9)]


@pytest.mark.spark
@pytest.mark.parametrize("defect, check_id", [
    (None, None),
    ("null_item_id", "expect_column_values_to_not_be_null(item_id)"),
    ("price_as_text", "expect_column_values_to_be_of_type(price)"),
])
def test_bronze_items(spark, lake, defect, check_id):
    from jobs.quality import validate

    if defect is None:
        report = validate(spark, lake, "bronze.items", D)
        assert report.success and failures(report) == set(), report.summary()
        return
    rows = bronze_item_rows(D)
    schema = BRONZE_ITEMS_SCHEMA
    if defect == "null_item_id":
        rows = replace_column(rows, schema, 0, "item_id", None)
    else:  # a landed file whose prices came as text
        schema = schema.replace("price double", "price string")
        rows = [r[:4] + (f"{r[4]:.2f}",) + r[5:] for r in rows]
    report = validate(spark, lake, "bronze.items", D, df=spark.createDataFrame(rows, schema))
    if defect == "price_as_text":  # the type fails the day; GX's range check cannot read text either (a warning)
        assert failures(report) == {check_id, "expect_column_values_to_be_between(price)"}, report.summary()
        assert [r.check_id for r in report.errors] == [check_id] and not report.success
        assert report.result(check_id).observed_value == "StringType"
    else:
        assert_only(report, check_id)


@pytest.mark.spark
def test_bronze_items_non_positive_price_only_warns(spark, lake):
    from jobs.quality import validate

    rows = replace_column(bronze_item_rows(D), BRONZE_ITEMS_SCHEMA, 4, "price", 0.0)
    report = validate(spark, lake, "bronze.items", D, df=spark.createDataFrame(rows, BRONZE_ITEMS_SCHEMA))
    assert report.success and failures(report) == {"expect_column_values_to_be_between(price)"}, report.summary()
    assert report.result("expect_column_values_to_be_between(price)").severity == "warn"


QUARANTINE_SCHEMA = ("step string, reason string, _source_file string, _raw string, event_date date, "
                     "_ingested_at timestamp")


def quarantine_rows(day: dt.date) -> list[tuple]:
    """Two lines of the day's 40 set aside (5%, the most that does not warn): one by collect, one by clean."""
    return [("collect", "unparseable_json", SOURCE, '{"event_id": "e9", "user_', day, INGESTED),
            ("clean", "unknown_event_type", SOURCE, '{"event_id": "e7", "event_type": "teleport"}', day, INGESTED)]


@pytest.mark.spark
@pytest.mark.parametrize("defect, check_id", [
    (None, None),
    ("empty_day", None),
    ("unknown_reason", "expect_column_values_to_be_in_set(reason)"),
    ("null_source_file", "expect_column_values_to_not_be_null(_source_file)"),
    ("unknown_step", "expect_column_values_to_be_in_set(step)"),
    ("many_set_aside", "row_share_of"),
])
def test_bronze_quarantine(spark, lake, defect, check_id):
    from jobs.quality import validate

    if defect is None:
        report = validate(spark, lake, "bronze.quarantine", D)
        assert report.success and failures(report) == set(), report.summary()
        assert report.result("row_share_of").observed_value["share"] == 0.05
        return
    rows = quarantine_rows(D)
    if defect == "empty_day":
        rows = []
    elif defect == "unknown_reason":
        rows = replace_column(rows, QUARANTINE_SCHEMA, 1, "reason", "cosmic_rays")
    elif defect == "null_source_file":
        rows = replace_column(rows, QUARANTINE_SCHEMA, 0, "_source_file", None)
    elif defect == "unknown_step":
        rows = replace_column(rows, QUARANTINE_SCHEMA, 0, "step", "features")
    elif defect == "many_set_aside":
        rows = rows + rows
    report = validate(spark, lake, "bronze.quarantine", D, df=spark.createDataFrame(rows, QUARANTINE_SCHEMA))
    if defect == "empty_day":  # a day with nothing set aside is the good case
        assert report.success and failures(report) == set() and report.row_count == 0, report.summary()
    elif defect == "many_set_aside":  # reported, never fatal: the lines are kept with their reasons
        assert report.success and failures(report) == {check_id}
        assert report.result(check_id).observed_value["share"] == 0.1
    else:
        assert_only(report, check_id)
        if defect == "unknown_reason":
            assert report.result(check_id).observed_value["values"] == ["cosmic_rays"]


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
    elif defect == "half_star_below_the_range":
        rating = next(i for i, r in enumerate(rows) if r[3] == "rating")
        rows = replace_column(rows, EVENTS_SCHEMA, rating, "rating", 0.5)
    frame = spark.createDataFrame(rows, EVENTS_SCHEMA)
    if defect == "bigint_rating":  # as a lakehouse from before ratings were numbers holds it
        from pyspark.sql import functions as F

        frame = frame.withColumn("rating", F.col("rating").cast("long"))
    return frame.drop("geo") if defect == "dropped_column" else frame


@pytest.mark.spark
@pytest.mark.parametrize("defect, check_id", [
    (None, None),
    ("duplicate_key", "expect_column_values_to_be_unique(event_id)"),
    ("unknown_event_type", "expect_column_values_to_be_in_set(event_type)"),
    ("dropped_column", "expect_table_columns_to_match_set"),
    ("drifted_prices", "mean_band(price)"),
    ("half_star_below_the_range", "expect_column_values_to_be_between(rating)"),
    ("bigint_rating", "expect_column_values_to_be_of_type(rating)"),
])
def test_silver_events(spark, lake, defect, check_id):
    from jobs.quality import validate

    if defect is None:  # clean: the stored partition, compared with the stored previous day
        report = validate(spark, lake, "silver.events", D)
        assert report.success and failures(report) == set(), report.summary()
        assert report.row_count == 40
        # Two earlier days (40 rows on P, 6 on EARLIER): a band, but too little history to fail on.
        volume = report.result("row_count_band").observed_value
        assert volume["history_days"] == 2 and volume["method"] == "median" and volume["allowed"][0] == 0.0
        assert "quality.min_history_days" in volume["note"]
        assert not report.result("freshness(ts)").skipped
        assert report.result("psi_vs_previous(event_type)").observed_value["psi"] == pytest.approx(0, abs=1e-6)
        return
    report = validate(spark, lake, "silver.events", D, df=_events_defect(spark, defect))
    if defect == "drifted_prices":  # outside the band of the two earlier days' means, but two days only warn
        assert failures(report) == {check_id} and report.success, report.summary()
        assert report.result(check_id).severity == "warn"
        assert "quality.min_history_days" in report.result(check_id).observed_value["note"]
        return
    assert_only(report, check_id)
    if defect == "dropped_column":
        assert report.result(check_id).observed_value == {"missing": ["geo"]}
        assert report.result("expect_column_values_to_be_of_type(geo)").skipped
    if defect == "unknown_event_type":
        assert report.result(check_id).sample[0]["event_type"] == "teleport"
    if defect == "half_star_below_the_range":
        assert report.result(check_id).unexpected_count == 1 and report.result(check_id).sample[0]["rating"] == 0.5


@pytest.mark.spark
def test_the_silver_rating_range_is_clean_ranges_rating(spark, lake, qcfg):
    """A half star of 0.5 fails the default 1..5 (above) and passes where the profile's range starts at 0.5."""
    from jobs.quality import suite_parameters, validate

    data = copy.deepcopy(dict(qcfg.data))
    data["clean"]["ranges"]["rating"] = {"min": 0.5, "max": 5.0, "step": 0.5}
    half_stars = Config(profile=qcfg.profile, root=qcfg.root, data=data)
    parameters = suite_parameters(half_stars, D)
    assert (parameters["rating_min"], parameters["rating_max"], parameters["avg_rating_min"]) == (0.5, 5.0, 0.0)
    report = validate(spark, half_stars, "silver.events", D, df=_events_defect(spark, "half_star_below_the_range"))
    assert not report.result("expect_column_values_to_be_between(rating)").failed, report.summary()


@pytest.mark.spark
def test_psi_on_an_empty_day_is_skipped_not_a_crash(spark, lake):
    """A day that cleaning emptied (every row quarantined) has no distribution to compare: skipped, and the
    volume band still judges the day."""
    from jobs.quality import validate

    report = validate(spark, lake, "silver.events", D, df=_events_defect(spark, None).limit(0))
    psi = report.result("psi_vs_previous(event_type)")
    assert psi.skipped and psi.observed_value["skipped"].startswith(f"no rows on {D}")
    assert report.row_count == 0


@pytest.mark.spark
def test_an_empty_landing_day_is_validated_and_recorded_not_a_crash(spark, lake):
    """A day folder holding one empty file (the contract allows it) gives empty bronze and silver partitions
    the day after a full one: every check answers, PSI is skipped with its reason, and the results are
    recorded before the verdict."""
    from jobs.common.delta import read_table
    from jobs.quality import RESULTS_TABLE, QualityError, run

    empty = D + dt.timedelta(days=1)
    try:
        result = run(spark, lake, empty, ("bronze.events", "silver.events"))
        reports = result.details
    except QualityError as caught:  # an empty day may fail its volume band: a verdict, not a crash
        reports = caught.reports
    assert reports is not None
    stored = {(r["table_name"], r["check_id"]): r for r in read_table(spark, lake, RESULTS_TABLE).where(
        f"run_date = '{empty}'").collect()}
    assert {t for t, _ in stored} == {"bronze.events", "silver.events"}
    psi = stored[("silver.events", "psi_vs_previous(event_type)")]
    assert psi["success"] is True and f"no rows on {empty}" in psi["observed_value"]


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


def test_quality_cli_check_needs_tables_or_all_but_not_both():
    from typer.testing import CliRunner

    from portrait.quality_cli import quality_app

    runner = CliRunner()
    neither = runner.invoke(quality_app, ["check", "--date", D.isoformat()])
    both = runner.invoke(quality_app, ["check", "--all", "--table", "silver", "--date", D.isoformat()])
    unknown = runner.invoke(quality_app, ["check", "--table", "silver.nothing", "--date", D.isoformat()])
    for result in (neither, both):
        assert result.exit_code == 2 and "--table" in result.output and "--all" in result.output, result.output
    assert unknown.exit_code == 2 and "'silver.nothing' is neither a table nor a layer" in unknown.output


@pytest.mark.spark
def test_quality_cli_checks_several_tables_and_warnings_keep_exit_code_zero(spark, lake, monkeypatch):
    from typer.testing import CliRunner

    from jobs.common.delta import replace_dates
    from portrait.quality_cli import quality_app

    rows = replace_column(bronze_item_rows(LATER), BRONZE_ITEMS_SCHEMA, 4, "price", 0.0)
    replace_dates(spark.createDataFrame(rows, BRONZE_ITEMS_SCHEMA), lake, "bronze.items", [LATER])
    monkeypatch.setenv("PORTRAIT__LAKEHOUSE_ROOT", lake.lakehouse_root)
    partitions = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        result = CliRunner().invoke(quality_app, ["check", "--table", "bronze.items,bronze.quarantine",
                                                  "--date", LATER.isoformat(), "--no-record"])
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", partitions)
    assert result.exit_code == 0, result.output
    assert f"bronze.items {LATER}: passed (0 errors, 1 warnings" in result.output
    assert "warn expect_column_values_to_be_between(price) [price]" in result.output
    assert f"bronze.quarantine {LATER}: passed (0 errors, 0 warnings" in result.output
    assert f"2 of 2 tables passed for {LATER}; 1 warnings" in result.output
    assert "reports: " in result.output and "index.html" in result.output


@pytest.mark.spark
def test_severity_decides_the_verdict_of_the_same_failure(spark, lake, tmp_path):
    """The same null key fails the day as `error` and is only reported as `warn`."""
    import shutil

    from jobs.quality import load_suite, validate

    shutil.copytree(lake.root / "expectations", tmp_path / "expectations")
    path = tmp_path / "expectations" / "bronze" / "items.json"
    text = path.read_text()
    line = ('{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "item_id"}, '
            '"meta": {"severity": "error"')
    assert text.count(line) == 1
    path.write_text(text.replace(line, line.replace('"error"', '"warn"')))
    relaxed = Config(profile=lake.profile, root=tmp_path, data=lake.data)
    check = "expect_column_values_to_not_be_null(item_id)"

    rows = replace_column(bronze_item_rows(D), BRONZE_ITEMS_SCHEMA, 0, "item_id", None)
    strict = validate(spark, lake, "bronze.items", D, df=spark.createDataFrame(rows, BRONZE_ITEMS_SCHEMA))
    warned = validate(spark, relaxed, "bronze.items", D, df=spark.createDataFrame(rows, BRONZE_ITEMS_SCHEMA))
    assert not strict.success and [r.check_id for r in strict.errors] == [check]
    assert warned.success and warned.errors == [] and [r.check_id for r in warned.warnings] == [check]
    assert warned.result(check).unexpected_count == strict.result(check).unexpected_count == 1
    # GX's own severity follows ours, for its renderers.
    severities = {e.configuration.kwargs.get("column"): e.severity
                  for e in load_suite("bronze.items", tmp_path).expectations
                  if e.expectation_type == "expect_column_values_to_not_be_null"}
    assert str(severities["item_id"].value) == "warning" and str(severities["snapshot_date"].value) == "critical"


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


@pytest.mark.spark
def test_a_shops_own_category_names_pass_when_the_taxonomy_is_none(spark, lake):
    """With `catalogue.taxonomy: none` any category name is the shop's own: the category set checks are
    skipped with the reason (not failed, not handed to GX with no set), the rest of the suite still runs."""
    from jobs.common.delta import replace_dates
    from jobs.quality import validate

    data = copy.deepcopy(dict(lake.data))
    data["catalogue"] = {**data.get("catalogue", {}), "taxonomy": "none"}
    own = Config(profile=lake.profile, root=lake.root, data=data)
    named = replace_column(item_rows(LATER), ITEMS_SCHEMA, 2, "category", "Film-Noir")
    replace_dates(spark.createDataFrame(named, ITEMS_SCHEMA), lake, "silver.items", [LATER])

    report = validate(spark, own, "silver.items", LATER)
    by_id = {r.check_id: r for r in report.results}
    in_set = by_id["expect_column_values_to_be_in_set(category)"]
    assert report.success and in_set.skipped and in_set.success
    assert "item_categories" in in_set.observed_value["skipped"]
    assert not by_id["expect_column_values_to_not_be_null(item_id)"].skipped

    builtin = validate(spark, lake, "silver.items", LATER)  # the builtin taxonomy still refuses a name outside it
    refused = {r.check_id: r for r in builtin.results}["expect_column_values_to_be_in_set(category)"]
    assert not builtin.success and not refused.success and not refused.skipped


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
    from jobs.features import FEATURE_VERSION

    even = [1 / len(TOP_LEVEL)] * len(TOP_LEVEL)
    return [(k, "25-34", "F", "Chengdu", 5.0, 20.0, 10.0, 4.0, 2.0, 1.0, 3.0, 6.0, 1.0, 2.0, 300.0, 150.0,
             0.1, 4.0, 1.1, even, D, FEATURE_VERSION) for k in (U1, U2, U3, U4)]


@pytest.mark.spark
@pytest.mark.parametrize("defect", [None, "affinity_above_one", "affinity_not_over_the_vocabulary"])
def test_gold_user_features(spark, lake, defect):
    from jobs.common.delta import replace_dates
    from jobs.quality import validate

    rows = user_feature_rows()
    if defect == "affinity_above_one":
        rows = replace_column(rows, USER_FEATURES_SCHEMA, 1, "category_affinity", [1.5] + [0.0] * (len(TOP_LEVEL) - 1))
    if defect == "affinity_not_over_the_vocabulary":  # the date's vocabulary has 3 entries, the arrays 22
        vocab = [(c, i, 1, 1, 1, D) for i, c in enumerate(("beauty", "pets", "other"))]
        replace_dates(spark.createDataFrame(vocab, "category string, position int, n_items long, n_events long, "
                                                   "n_members long, as_of_date date"), lake, "gold.category_vocab", [D])
    report = validate(spark, lake, "gold.user_features", D, df=spark.createDataFrame(rows, USER_FEATURES_SCHEMA))
    if defect is None:
        assert report.success and failures(report) == set(), report.summary()
        assert not report.result("exists_in(user_key)").skipped
    elif defect == "affinity_above_one":
        assert_only(report, "array_values(category_affinity)")
        assert report.result("array_values(category_affinity)").sample[0]["user_key"] == U2
    else:
        assert_only(report, "array_values(category_affinity)")
        assert report.result("array_values(category_affinity)").unexpected_count == 4


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


@pytest.mark.spark
@pytest.mark.parametrize("defect, check_id", [
    (None, None),
    ("negative_gap", "array_values(gaps)"),
    ("too_long", "expect_column_values_to_be_between(length)"),
    ("unknown_event_type", "array_values(event_types)"),
])
def test_gold_user_sequences(spark, lake, defect, check_id):
    from jobs.quality import validate
    from jobs.sequences import SEQUENCE_SCHEMA, sequence_length

    cap = sequence_length(lake)
    rows = [(k, ["i1", "i2"], [TOP_LEVEL[0], "unknown"], ["view", "purchase"], [0, 60], 2, D) for k in (U1, U2, U3)]
    if defect == "negative_gap":
        rows[1] = (U2, ["i1", "i2"], [TOP_LEVEL[0], TOP_LEVEL[1]], ["view", "click"], [0, -5], 2, D)
    elif defect == "too_long":
        rows[1] = (U2, ["i1"] * (cap + 1), [TOP_LEVEL[0]] * (cap + 1), ["view"] * (cap + 1), [0] * (cap + 1), cap + 1, D)
    elif defect == "unknown_event_type":
        rows[1] = (U2, ["i1"], [TOP_LEVEL[0]], ["teleport"], [0], 1, D)
    report = validate(spark, lake, "gold.user_sequences", D, df=spark.createDataFrame(rows, SEQUENCE_SCHEMA))
    if defect is None:
        assert report.success and failures(report) == set(), report.summary()
        assert not report.result("exists_in(user_key)").skipped
    else:
        assert_only(report, check_id)


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


def with_value(rows: list[tuple], column: str, value) -> list[tuple]:
    """Profile rows with `column` set to `value` in every row."""
    for i in range(len(rows)):
        rows = replace_column(rows, PROFILE_SCHEMA, i, column, value)
    return rows


def varied_profile_rows(day: dt.date, embedding_dim: int) -> list[tuple]:
    """Four users whose segment, price band and activity level differ: a profile that makes sense."""
    names = segment_names()
    segments, bands, levels = list(names), ["budget", "mid", "premium"], ["high", "medium", "low"]
    keys = (U1, U2, U3, U4)
    return [(k, day, "25-34", "F", "Chengdu", [("electronics", 0.8), ("beauty", 0.4)], ["electronics"],
             bands[i % 3], 1.02, levels[i % 3], 4.5, segments[i % len(segments)], names[segments[i % len(segments)]],
             0.25, 120.5, [0.1] * embedding_dim, "3", "1") for i, k in enumerate(keys)]


NO_ITEMS = next(c for c in TOP_LEVEL if c not in ("electronics", "beauty"))  # a known category with no items


@pytest.fixture(scope="module")
def nonsense_cfg(lake) -> Config:
    """The test lake with constant columns judged above 3 users (the four of varied_profile_rows)."""
    data = copy.deepcopy(dict(lake.data))
    data["quality"]["constant_min_users"] = 3
    return Config(profile=lake.profile, root=lake.root, data=data)


@pytest.mark.spark
@pytest.mark.parametrize("defect, expected", [
    (None, {}),
    ("tag_without_items", {"array_exists_in(interest_tags.tag)": "error"}),
    ("other_tag", {}),    # the vocabulary's bucket for categories past the cap is not a category without items
    ("top_category_without_items", {"array_exists_in(top_categories)": "error"}),
    ("one_price_band", {"not_constant(price_band)": "warn"}),
    ("one_price_band_as_error", {"not_constant(price_band)": "error"}),
    ("one_segment", {"not_constant(segment_id)": "warn"}),
    ("churn_without_its_event", {"churn_event_present(churn_risk)": "error"}),
])
def test_nonsense_outputs_are_caught(spark, lake, nonsense_cfg, defect, expected):
    """Valid-looking outputs that say nothing: a tag for a category without items, one band for everybody,
    a churn risk on data without the event churn is defined on. Each fires alone; none fires on a good profile."""
    from jobs.quality import validate

    rows = varied_profile_rows(D, int(lake.get("model.embedding_dim")))
    cfg = nonsense_cfg
    if defect == "tag_without_items":
        rows = replace_column(rows, PROFILE_SCHEMA, 2, "interest_tags", [("electronics", 0.8), (NO_ITEMS, 0.3)])
    elif defect == "other_tag":
        rows = replace_column(rows, PROFILE_SCHEMA, 2, "interest_tags", [("electronics", 0.8), ("other", 0.3)])
    elif defect == "top_category_without_items":
        rows = replace_column(rows, PROFILE_SCHEMA, 3, "top_categories", [NO_ITEMS])
    elif defect in ("one_price_band", "one_price_band_as_error"):
        rows = with_value(rows, "price_band", "budget")  # a real band, the same for everybody
        if defect.endswith("as_error"):
            data = copy.deepcopy(dict(cfg.data))
            data["quality"]["constant_severity"] = "error"
            cfg = Config(profile=cfg.profile, root=cfg.root, data=data)
    elif defect == "one_segment":
        names = segment_names()
        first = next(iter(names))
        rows = with_value(with_value(rows, "segment_id", first), "segment_name", names[first])
    elif defect == "churn_without_its_event":  # churn defined on an event type the shop never sends
        data = copy.deepcopy(dict(cfg.data))
        data.setdefault("model", {})["churn_events"] = ["subscribe"]
        cfg = Config(profile=cfg.profile, root=cfg.root, data=data)
    report = validate(spark, cfg, "publish.user_profile", D, df=spark.createDataFrame(rows, PROFILE_SCHEMA))
    fired = {r.check_id: r.severity for r in report.results if r.failed}
    assert fired == expected, report.summary()
    assert report.success == ("error" not in expected.values())
    if defect == "tag_without_items":
        observed = report.result("array_exists_in(interest_tags.tag)").observed_value
        assert observed == {"values_not_in_silver.items.categories": [NO_ITEMS], "elements": 1}
        assert report.result("array_exists_in(interest_tags.tag)").sample[0]["user_key"] == U3
    if defect == "one_price_band":
        assert report.result("not_constant(price_band)").observed_value == {"distinct_values": ["budget"], "rows": 4}
    if defect == "churn_without_its_event":
        observed = report.result("churn_event_present(churn_risk)").observed_value
        assert observed["churn_events"] == ["subscribe"] and observed["found_in_window"] is False
    if defect is None:  # with the default quality.constant_min_users (50) four users are too few to judge
        default = validate(spark, lake, "publish.user_profile", D,
                           df=spark.createDataFrame(with_value(rows, "price_band", "mid"), PROFILE_SCHEMA))
        assert default.result("not_constant(price_band)").skipped
        assert "quality.constant_min_users" in default.result("not_constant(price_band)").observed_value["skipped"]


@pytest.mark.spark
def test_a_churn_risk_not_published_is_not_judged(spark, lake):
    """No churn risk at all (and never before): the field is absent, its checks are skipped with the reason."""
    from jobs.quality import validate

    rows = with_value(profile_rows(D, int(lake.get("model.embedding_dim"))), "churn_risk", None)
    report = validate(spark, lake, "publish.user_profile", D, df=spark.createDataFrame(rows, PROFILE_SCHEMA))
    assert report.success and failures(report) == set(), report.summary()
    assert report.result("churn_event_present(churn_risk)").skipped
    assert report.result("expect_column_values_to_not_be_null(churn_risk)").skipped
    assert "absent_in_dataset" in {f["status"] for f in report.fields if f["column"] == "churn_risk"}


RECS_SCHEMA = ("user_key string, as_of_date date, rank int, item_id string, score double, reason string, "
               "model_version string")


def rec_rows(defect: str | None) -> list[tuple]:
    """K = 3 per user; u3 has only two candidates left (it bought i3..i8), so exactly two."""
    lists = {  # user -> [(rank, item, score)]
        U1: [(1, "i1", 0.9), (2, "i2", 0.8), (3, "i3", 0.7)],
        U2: [(1, "i2", 0.6), (2, "i4", 0.5), (3, "i5", 0.4)],
        U3: [(1, "i1", 0.3), (2, "i2", 0.2)],
        U4: [(1, "i5", 0.5), (2, "i6", 0.5), (3, "i8", 0.1)],  # a tie is not a rise; u4 bought i7
    }
    if defect == "gap_in_ranks":
        lists[U3] = [(1, "i1", 0.3), (3, "i2", 0.2)]
    elif defect == "duplicate_item":
        lists[U1] = [(1, "i1", 0.9), (2, "i1", 0.8), (3, "i3", 0.7)]
    elif defect == "increasing_score":
        lists[U2] = [(1, "i2", 0.4), (2, "i4", 0.5), (3, "i5", 0.6)]
    elif defect == "bought_item":
        lists[U1] = [(1, "i1", 0.9), (2, "i2", 0.8), (3, "i6", 0.7)]
    elif defect == "short_list":  # u2 has 8 candidates but got 2
        lists[U2] = lists[U2][:2]
    elif defect == "short_of_candidates":  # u3 has 2 candidates but got 1
        lists[U3] = lists[U3][:1]
    elif defect == "user_without_list":  # u4 is in the day's profile, with 7 candidates, and got nothing
        del lists[U4]
    return [(user, D, rank, item, score, "popular in electronics", "3")
            for user, recs in lists.items() for rank, item, score in recs]


@pytest.mark.spark
@pytest.mark.parametrize("defect, check_id", [
    (None, None),
    ("short_list", "list_length(user_key,item_id)"),
    ("short_of_candidates", "list_length(user_key,item_id)"),
    ("user_without_list", "list_length(user_key,item_id)"),
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
        assert report.result("list_length(user_key,item_id)").observed_value == {
            "keys_with_wrong_length": 0, "k": K, "candidates": 8, "bought_excluded_days": 90}
        return
    assert_only(report, check_id)
    sample = report.result(check_id).sample
    if defect == "bought_item":
        assert [(r["user_key"], r["item_id"]) for r in sample] == [(U1, "i6")]
    if defect == "gap_in_ranks":
        assert sample == [{"user_key": U3, "ranks": [1, 3]}]
    if defect == "short_list":
        assert sample == [{"user_key": U2, "rows": 2, "eligible": 8, "expected": K}]
    if defect == "short_of_candidates":
        assert sample == [{"user_key": U3, "rows": 1, "eligible": 2, "expected": 2}]
    if defect == "user_without_list":
        assert sample == [{"user_key": U4, "rows": 0, "eligible": 7, "expected": K}]


@pytest.mark.spark
def test_with_the_bought_items_rule_off_bought_items_count_as_candidates(spark, lake):
    """recommend.exclude_bought_days: 0 turns the rule off: a bought item may be recommended, and u3's
    six bought items are candidates again, so its list of two is now too short."""
    from jobs.quality import validate

    data = copy.deepcopy(dict(lake.data))
    data["recommend"]["exclude_bought_days"] = 0
    rule_off = Config(profile=lake.profile, root=lake.root, data=data)
    frame = spark.createDataFrame(rec_rows("bought_item"), RECS_SCHEMA)
    report = validate(spark, rule_off, "publish.recommendations", D, df=frame)
    assert report.result("not_recently_bought(user_key,item_id)").skipped
    assert_only(report, "list_length(user_key,item_id)")
    assert report.result("list_length(user_key,item_id)").sample == [
        {"user_key": U3, "rows": 2, "eligible": 8, "expected": K}]


@pytest.mark.spark
def test_business_rules_shrink_the_candidates(spark, lake):
    """With recommend.rules.max_price 20 only i1 and i2 may be recommended: two rows per user are due."""
    from jobs.quality import validate

    data = copy.deepcopy(dict(lake.data))
    data["recommend"]["rules"] = {"max_price": 20, "exclude_categories": [], "min_price": None}
    capped = Config(profile=lake.profile, root=lake.root, data=data)
    report = validate(spark, capped, "publish.recommendations", D,
                      df=spark.createDataFrame(rec_rows(None), RECS_SCHEMA))
    assert_only(report, "list_length(user_key,item_id)")
    result = report.result("list_length(user_key,item_id)")
    assert result.observed_value["candidates"] == 2
    assert result.sample == [{"user_key": u, "rows": 3, "eligible": 2, "expected": 2}
                             for u in sorted((U1, U2, U4))]  # u3's two rows are right


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
    assert failures(report) == {"exists_in(user_key)"}, report.summary()  # list lengths are right for all four
    assert report.result("exists_in(user_key)").observed_value == {"missing_in_staging.user_profile": 5}


# --------------------------------------------------------------------------------------------------
# Personal data in any text column: the no_pii check, and samples that never show it


RAW_PII = ("13800138000", "min.liu@example.org", "11010519491231002X")


def _shows_raw_pii(report) -> list[str]:
    text = json.dumps([r.__dict__ for r in report.results], default=str, ensure_ascii=False) + report.summary()
    return [value for value in RAW_PII if value in text]


@pytest.mark.spark
def test_pii_in_a_silver_text_column_fails_no_pii_and_the_sample_is_masked(spark, lake):
    from jobs.quality import validate

    rows = event_rows(D, "d")
    rows = replace_column(rows, EVENTS_SCHEMA, 0, "review_text", "call me 13800138000")
    rows = replace_column(rows, EVENTS_SCHEMA, 1, "geo", "min.liu@example.org")
    rows = replace_column(rows, EVENTS_SCHEMA, 2, "query", "order 20261104000123 for 1999.00 on 2026-11-04")
    report = validate(spark, lake, "silver.events", D, df=spark.createDataFrame(rows, EVENTS_SCHEMA))
    assert_only(report, "no_pii")
    found = report.result("no_pii")
    assert found.observed_value["rows_with_pii"] == {"review_text": 1, "geo": 1} and found.unexpected_count == 2
    assert sorted(map(tuple, (s.values() for s in found.sample))) == [
        ("geo", "[email]"), ("review_text", "call me [phone]")]
    assert _shows_raw_pii(report) == []


@pytest.mark.spark
def test_pii_in_gold_and_publish_fails_no_pii(spark, lake):
    from jobs.quality import validate

    features = replace_column(user_feature_rows(), USER_FEATURES_SCHEMA, 0, "city", "11010519491231002X")
    report = validate(spark, lake, "gold.user_features", D, df=spark.createDataFrame(features, USER_FEATURES_SCHEMA))
    # (an earlier test may leave the date's category vocabulary short, so other checks can fail too)
    assert "no_pii" in failures(report) and not report.success
    assert report.result("no_pii").observed_value["rows_with_pii"] == {"city": 1}
    assert report.result("no_pii").sample == [{"column": "city", "value_masked": "[id_card]"}]
    profile = replace_column(profile_rows(D, int(lake.get("model.embedding_dim"))), PROFILE_SCHEMA, 0, "city",
                             "+86 138 0013 8000")
    report = validate(spark, lake, "publish.user_profile", D, df=spark.createDataFrame(profile, PROFILE_SCHEMA))
    assert_only(report, "no_pii")
    assert report.result("no_pii").observed_value["rows_with_pii"] == {"city": 1}


@pytest.mark.spark
def test_samples_recorded_and_documented_never_carry_raw_pii_from_bronze(spark, lake, tmp_path):
    from jobs.common.delta import read_table
    from jobs.quality import build_docs, record, validate

    rows = bronze_rows()
    raw = json.dumps({"event_id": "e3", "user_id": "u0000003", "geo": "13800138000", "q": "min.liu@example.org"})
    rows = replace_column(rows, BRONZE_SCHEMA, 3, "_source_file", None)
    rows = replace_column(rows, BRONZE_SCHEMA, 3, "geo", "13800138000")
    rows = replace_column(rows, BRONZE_SCHEMA, 3, "_raw", raw)
    report = validate(spark, lake, "bronze.events", D, df=spark.createDataFrame(rows, BRONZE_SCHEMA))
    bad = report.result("expect_column_values_to_not_be_null(_source_file)")
    assert bad.failed and bad.sample[0]["event_id"] == "e3" and bad.sample[0]["geo"] == "[phone]"
    assert json.loads(bad.sample[0]["_raw"]) == {"event_id": "e3", "user_id": "u0000003", "geo": "[phone]",
                                                 "q": "[email]"}
    assert _shows_raw_pii(report) == [] and report.gx_result is None
    data = copy.deepcopy(dict(lake.data))  # a lakehouse and docs of its own: the module's lake keeps its results
    data["lakehouse_root"], data["quality"]["docs_dir"] = str(tmp_path / "lake"), str(tmp_path / "docs")
    qcfg = Config(profile=lake.profile, root=lake.root, data=data)
    record(spark, qcfg, report)
    stored = read_table(spark, qcfg, "ops.validation_results").where(f"table_name = 'bronze.events' AND run_date = '{D}'")
    assert stored.count() > 0
    assert not [v for r in stored.collect() for v in RAW_PII if v in (r["sample_rows"] or "") + (r["observed_value"] or "")]
    pages = build_docs(qcfg, report)
    written = "".join(p.read_text(encoding="utf-8") for p in pages.rglob("*") if p.is_file())
    assert "[phone]" in written and not [v for v in RAW_PII if v in written]
