"""`portrait forget`: one person leaves every layer, old versions are unreadable, the request is recorded."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.common.privacy import pseudonymise_py
from tests.conftest import REPO, TEST_HMAC_KEY, lake_overrides, make_config

pytestmark = pytest.mark.spark
KEY = TEST_HMAC_KEY.encode()
D = dt.date(2026, 11, 3)
GONE, KEPT, NEIGHBOUR = "u1", "u10", "u2"  # u10 contains u1: the match must be on whole ids
PORTRAIT = str(Path(sys.executable).with_name("portrait"))


def key(raw):
    return pseudonymise_py(KEY, raw)


def _line(user, event_id):
    return json.dumps({"event_id": event_id, "user_id": user, "event_type": "view"})


# table -> (schema, rows); each person-bearing table holds the forgotten person and others.
def _tables():
    return {
        "bronze.events": (
            "event_id string, user_id string, _raw string, event_date date",
            [("e1", GONE, _line(GONE, "e1"), D), ("e2", KEPT, _line(KEPT, "e2"), D),
             ("e3", NEIGHBOUR, _line(NEIGHBOUR, "e3"), D), (None, None, '{"user_id": "u1", broken', D)],
        ),
        "bronze.users": (
            "user_id string, name string, email string, snapshot_date date",
            [(GONE, "张三", "z@example.com", D), (KEPT, "Li", "l@example.com", D)],
        ),
        "bronze.quarantine": (
            "step string, reason string, _raw string, event_date date",
            [("clean", "bot_rate", _line(GONE, "e9"), D), ("clean", "too_late", _line(KEPT, "e8"), D)],
        ),
        "silver.events": (
            "event_id string, user_key string, event_date date",
            [("e1", key(GONE), D), ("e2", key(KEPT), D), ("e3", key(NEIGHBOUR), D)],
        ),
        "silver.held_events": (
            "event_id string, user_key string, landed_date date",
            [("e4", key(GONE), D), ("e5", key(KEPT), D)],
        ),
        "silver.social_edges": (
            "src_key string, dst_key string, edge_type string, event_date date",
            [(key(GONE), key(KEPT), "follow", D), (key(KEPT), key(GONE), "follow", D),
             (key(KEPT), key(NEIGHBOUR), "follow", D)],
        ),
        "gold.user_features": (
            "user_key string, n_events_30d double, as_of_date date",
            [(key(GONE), 3.0, D), (key(KEPT), 1.0, D)],
        ),
        "staging.user_profile": ("user_key string, as_of_date date", [(key(GONE), D), (key(KEPT), D)]),
        "publish.user_profile": ("user_key string, as_of_date date", [(key(GONE), D), (key(KEPT), D)]),
        "publish.recommendations": (
            "user_key string, rank int, item_id string, as_of_date date",
            [(key(GONE), 1, "i1", D), (key(GONE), 2, "i2", D), (key(KEPT), 1, "i1", D)],
        ),
        "ops.validation_results": (
            "run_date date, table_name string, check_id string, sample_rows string",
            [(D, "silver.events", "1", json.dumps([{"user_key": key(GONE)}])),
             (D, "silver.events", "2", json.dumps([{"user_key": key(KEPT)}]))],
        ),
    }


EXPECTED_REMOVED = {
    "bronze.events": 2, "bronze.users": 1, "bronze.quarantine": 1, "silver.events": 1, "silver.held_events": 1,
    "silver.social_edges": 2, "gold.user_features": 1, "staging.user_profile": 1, "publish.user_profile": 1,
    "publish.recommendations": 2, "ops.validation_results": 1,
}


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    from jobs.common.delta import replace_dates, table_version

    cfg = make_config(tmp_path_factory.mktemp("forget_lake"))
    for name, (schema, rows) in _tables().items():
        replace_dates(spark.createDataFrame(rows, schema), cfg, name, [D])
    versions = {name: table_version(spark, cfg, name) for name in _tables()}
    return cfg, versions


@pytest.fixture(scope="module")
def forgotten(spark, lake):
    from jobs.forget import forget_user

    cfg, _ = lake
    return forget_user(spark, cfg, f"  {GONE} ", reason="GDPR art. 17", requested_by="dpo@shop")


def _rows(spark, cfg, name):
    from jobs.common.delta import read_table

    return [tuple(r) for r in read_table(spark, cfg, name).collect()]


def test_dry_run_counts_and_changes_nothing(spark, lake):
    from jobs.forget import forget_user

    cfg, versions = lake
    counted = forget_user(spark, cfg, GONE, dry_run=True)
    assert {t: n for t, n in counted.rows_removed.items() if n} == EXPECTED_REMOVED
    from jobs.common.delta import table_version

    assert {name: table_version(spark, cfg, name) for name in versions} == versions
    assert counted.request_id is None


def test_the_person_leaves_every_layer_and_nobody_else_does(spark, lake, forgotten):
    cfg, _ = lake
    assert forgotten.user_key == key(GONE)
    assert {t: n for t, n in forgotten.rows_removed.items() if n} == EXPECTED_REMOVED
    assert sorted(r[0] for r in _rows(spark, cfg, "bronze.events")) == ["e2", "e3"]
    assert [r[0] for r in _rows(spark, cfg, "bronze.users")] == [KEPT]
    assert [r[1] for r in _rows(spark, cfg, "bronze.quarantine")] == ["too_late"]
    assert sorted(r[0] for r in _rows(spark, cfg, "silver.events")) == ["e2", "e3"]
    assert [r[0] for r in _rows(spark, cfg, "silver.held_events")] == ["e5"]
    assert _rows(spark, cfg, "silver.social_edges") == [(key(KEPT), key(NEIGHBOUR), "follow", D)]
    for name in ("gold.user_features", "staging.user_profile", "publish.user_profile", "publish.recommendations"):
        assert {r[0] for r in _rows(spark, cfg, name)} == {key(KEPT)}, name
    samples = {r[2]: r[3] for r in _rows(spark, cfg, "ops.validation_results")}
    assert samples == {"1": None, "2": json.dumps([{"user_key": key(KEPT)}])}  # the check row stays, blanked


def test_old_versions_are_unreadable_after_the_vacuum(spark, lake, forgotten):
    from jobs.common.catalog import table_path

    cfg, versions = lake
    for name in ("bronze.events", "silver.events", "publish.user_profile"):
        old = spark.read.format("delta").option("versionAsOf", versions[name]).load(table_path(cfg, name))
        with pytest.raises(Exception, match=r"(?i)(FileNotFound|does not exist|DELTA_FILE_NOT_FOUND|not found)"):
            old.collect()
    assert set(forgotten.tables_vacuumed) == set(EXPECTED_REMOVED)


def test_no_data_file_left_anywhere_holds_the_person(lake, forgotten):
    import pyarrow.parquet as pq

    cfg, _ = lake
    requests = Path(cfg.lakehouse_root) / "ops" / "forget_requests"  # holds the pseudonym, by design
    files = [p for p in Path(cfg.lakehouse_root).rglob("*.parquet") if requests not in p.parents]
    assert len(files) >= len(EXPECTED_REMOVED)
    for path in files:
        table = pq.read_table(path)
        for column in table.column_names:
            values = [v for v in table.column(column).to_pylist() if isinstance(v, str)]
            assert not any(v == GONE or key(GONE) in v or f'"{GONE}"' in v for v in values), (path, column)


def test_the_request_is_recorded_with_the_pseudonym_only(spark, lake, forgotten):
    from jobs.common.delta import read_table

    cfg, _ = lake
    rows = read_table(spark, cfg, "ops.forget_requests").where(f"request_id = '{forgotten.request_id}'").collect()
    assert len(rows) == 1
    row = rows[0]
    assert (row["user_key"], row["requested_by"], row["reason"], row["total_rows"]) == (
        key(GONE), "dpo@shop", "GDPR art. 17", sum(EXPECTED_REMOVED.values()))
    assert {t: n for t, n in row["rows_removed"].items() if n} == EXPECTED_REMOVED
    assert GONE not in json.dumps(row.asDict(), default=str).replace(key(GONE), "")


def test_an_unknown_person_removes_nothing_but_is_recorded(spark, lake, forgotten):
    from jobs.common.delta import read_table
    from jobs.forget import forget_user

    cfg, _ = lake
    before = {name: sorted(_rows(spark, cfg, name)) for name in ("silver.events", "bronze.events")}
    result = forget_user(spark, cfg, "u999", reason="not a customer")
    assert result.total_rows == 0
    assert "no rows of this person were found in any table" in "\n".join(result.lines())
    assert {name: sorted(_rows(spark, cfg, name)) for name in before} == before
    recorded = read_table(spark, cfg, "ops.forget_requests").where(f"user_key = '{key('u999')}'").collect()
    assert len(recorded) == 1 and recorded[0]["total_rows"] == 0


def test_cli_refuses_an_empty_id_before_spark_starts(tmp_path):
    env = {**os.environ, "PORTRAIT_ENV": "ci", "PORTRAIT_HOME": str(REPO), **lake_overrides(tmp_path)}
    done = subprocess.run([PORTRAIT, "forget", "--user", "  "], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "forget needs the person's user id (--user); it was empty" in done.stderr


def test_cli_without_a_key_says_how_to_make_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PORTRAIT_HMAC_KEY"}
    env.update({"PORTRAIT_ENV": "ci", "PORTRAIT_HOME": str(REPO), **lake_overrides(tmp_path),
                "PORTRAIT__PRIVACY__HMAC_KEY_FILE": str(tmp_path / "absent.key")})
    done = subprocess.run([PORTRAIT, "forget", "--user", "u1"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no pseudonymisation key: set PORTRAIT_HMAC_KEY" in done.stderr
