"""SQL access: the same query through Spark SQL and through delta-rs + DuckDB gives the same rows; clear errors."""

import datetime as dt

import pytest
from typer.testing import CliRunner

from portrait.sql import duckdb_connection, duckdb_query, parse_versions, render, rows, spark_query
from tests.conftest import make_config

pytestmark = pytest.mark.spark
D1, D2 = dt.date(2026, 11, 13), dt.date(2026, 11, 14)
PROFILE = ("user_key string, as_of_date date, interest_tags array<struct<tag:string,score:double>>, "
           "segment_id string, value_score double, churn_risk double, user_embedding array<float>")
RECS = "user_key string, as_of_date date, rank int, item_id string, score double, reason string"

QUERIES = [
    "SELECT user_key, as_of_date, segment_id, value_score, churn_risk FROM publish.user_profile "
    "ORDER BY as_of_date, user_key",
    "SELECT segment_id, count(*) AS users, sum(value_score) AS total, max(churn_risk) AS worst "
    "FROM publish.user_profile WHERE as_of_date = DATE '2026-11-14' GROUP BY segment_id ORDER BY segment_id",
    "SELECT p.user_key, r.rank, r.item_id, r.reason FROM publish.user_profile p JOIN publish.recommendations r "
    "ON p.user_key = r.user_key AND p.as_of_date = r.as_of_date WHERE r.rank <= 2 ORDER BY p.user_key, r.rank",
    "SELECT user_key, interest_tags, user_embedding FROM publish.user_profile WHERE as_of_date = DATE '2026-11-14' "
    "ORDER BY user_key",
]


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """publish.user_profile with two commits (D1 and D2, then D2 rewritten) and publish.recommendations."""
    from jobs.common.delta import replace_dates

    cfg = make_config(tmp_path_factory.mktemp("sql_lake"))
    day1 = [("k1", D1, [("sports_outdoors", 0.75)], "regular", 10.5, 0.25, [0.5, -1.0]),
            ("k2", D1, [("beauty", 0.5)], "browser", 0.0, None, [1.0, 0.0])]
    day2 = [("k1", D2, [("sports_outdoors", 0.75), ("pets", 0.5)], "regular", 12.25, 0.125, [0.5, -1.0]),
            ("k2", D2, [("beauty", 0.5)], "browser", 0.0, 0.5, [1.0, 0.0]),
            ("k3", D2, [], "dormant", 1.5, 1.0, [0.0, 0.0])]
    replace_dates(spark.createDataFrame(day1 + day2, PROFILE), cfg, "publish.user_profile", [D1, D2])   # version 0
    rewritten = [r if r[0] != "k3" else ("k3", D2, [], "at_risk", 2.0, 0.875, [0.0, 0.0]) for r in day2]
    replace_dates(spark.createDataFrame(rewritten, PROFILE), cfg, "publish.user_profile", [D2])       # version 1
    recs = [("k1", D2, 1, "i1", 0.9, "matches your interest in 运动户外/sports outdoors"),
            ("k1", D2, 2, "i2", 0.5, "similar to an item you viewed"),
            ("k1", D2, 3, "i3", 0.25, "fits your taste profile in 宠物用品/pets"),
            ("k2", D2, 1, "i4", 1.0, "matches your interest in 美妆护肤/beauty")]
    replace_dates(spark.createDataFrame(recs, RECS), cfg, "publish.recommendations", [D2])
    return cfg


@pytest.mark.parametrize("query", QUERIES)
def test_spark_sql_and_duckdb_over_delta_rs_return_the_same_rows(spark, lake, query):
    from_spark = rows(spark_query(spark, lake, query))
    from_duckdb = rows(duckdb_query(lake, query))
    assert from_spark == from_duckdb
    assert from_spark  # every query has rows here, so an empty pair cannot pass


def test_hand_checked_values(spark, lake):
    assert rows(spark_query(spark, lake, QUERIES[1])) == [
        ("at_risk", 1, 2.0, 0.875), ("browser", 1, 0.0, 0.5), ("regular", 1, 12.25, 0.125)]
    assert rows(duckdb_query(lake, QUERIES[3]))[0] == (
        "k1", [{"tag": "sports_outdoors", "score": 0.75}, {"tag": "pets", "score": 0.5}], [0.5, -1.0])


def test_time_travel_reads_an_earlier_version_in_both_engines(spark, lake):
    query = "SELECT user_key, segment_id, value_score FROM publish.user_profile WHERE as_of_date = DATE '2026-11-14' ORDER BY 1"
    then = {"publish.user_profile": 0}
    old_spark, old_duckdb = rows(spark_query(spark, lake, query, then)), rows(duckdb_query(lake, query, then))
    assert old_spark == old_duckdb == [("k1", "regular", 12.25), ("k2", "browser", 0.0), ("k3", "dormant", 1.5)]
    assert rows(duckdb_query(lake, query))[-1] == ("k3", "at_risk", 2.0)
    # Spark SQL's own syntax says the same
    in_sql = query.replace("FROM publish.user_profile", "FROM publish.user_profile VERSION AS OF 0")
    assert rows(spark_query(spark, lake, in_sql)) == old_spark


def test_duckdb_connection_is_usable_from_pandas_without_spark(lake):
    con = duckdb_connection(lake, tables=["publish.recommendations"])
    frame = con.execute("SELECT user_key, count(*) AS n FROM publish.recommendations GROUP BY 1 ORDER BY 1").df()
    assert frame.to_dict("records") == [{"user_key": "k1", "n": 3}, {"user_key": "k2", "n": 1}]


def test_output_formats():
    import pandas as pd

    frame = pd.DataFrame({"user_key": ["k1"], "as_of_date": [D2], "score": [0.5]})
    assert render(frame, "csv") == "user_key,as_of_date,score\nk1,2026-11-14,0.5"
    assert render(frame, "json") == '{"user_key": "k1", "as_of_date": "2026-11-14", "score": 0.5}'
    assert render(frame.iloc[0:0], "table") == "(no rows)  columns: user_key, as_of_date, score"
    with pytest.raises(Exception, match="--format must be one of table, csv, json"):
        render(frame, "xml")


def test_version_option_is_checked():
    from jobs.common.errors import ConfigError

    assert parse_versions(["publish.user_profile=3"]) == {"publish.user_profile": 3}
    with pytest.raises(ConfigError, match="TABLE=VERSION"):
        parse_versions(["publish.user_profile"])
    with pytest.raises(ConfigError, match="unknown table 'publish.nope'"):
        parse_versions(["publish.nope=1"])


# --- the command ----------------------------------------------------------------------------------

def _cli(lake, monkeypatch, *args):
    from portrait.cli import app

    monkeypatch.setenv("PORTRAIT__LAKEHOUSE_ROOT", lake.lakehouse_root)
    return CliRunner().invoke(app, ["sql", *args])


def test_portrait_sql_prints_csv(spark, lake, monkeypatch):
    result = _cli(lake, monkeypatch, "SELECT user_key, rank, item_id FROM publish.recommendations ORDER BY 1, 2",
                  "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["user_key,rank,item_id", "k1,1,i1", "k1,2,i2", "k1,3,i3", "k2,1,i4"]


@pytest.mark.parametrize("engine", ["spark", "duckdb"])
def test_bad_sql_fails_with_one_line_and_exit_2(spark, lake, monkeypatch, engine):
    result = _cli(lake, monkeypatch, "SELECT * FROM publish.nope", "--engine", engine)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("portrait: error: SQL failed: "), result.stderr
    assert "publish.nope" in lines[0] or "nope" in lines[0]
    result = _cli(lake, monkeypatch, "SELEC 1", "--engine", engine)
    assert result.exit_code == 2 and result.stderr.strip().startswith("portrait: error: SQL failed: ")
