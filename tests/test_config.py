from pathlib import Path

import pytest

from jobs.common.config import load_config
from jobs.common.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_default_profile_is_local_with_paths_under_the_project():
    cfg = load_config(environ={})
    assert cfg.profile == "local"
    assert cfg.lakehouse_root == str(REPO / "lakehouse")
    assert cfg.landing_zone == str(REPO / "data" / "landing")
    assert cfg.mlflow_tracking_uri == f"sqlite:///{REPO / 'mlruns' / 'mlflow.db'}"
    assert cfg.get("spark.master") == "local[2]"


def test_ci_profile_extends_local_and_overrides_only_what_it_names():
    cfg = load_config(environ={"PORTRAIT_ENV": "ci"})
    assert cfg.get("spark.conf")["spark.sql.shuffle.partitions"] == "2"
    assert cfg.get("spark.conf")["spark.sql.session.timeZone"] == "UTC"  # inherited
    assert cfg.get("generate.users") == 120
    assert cfg.get("mlflow.experiment") == "portrait-profile"


def test_cluster_profile_keeps_uris_as_they_are():
    cfg = load_config("cluster", environ={})
    assert cfg.lakehouse_root == "s3a://portrait-lakehouse/lakehouse"
    assert cfg.mlflow_tracking_uri == "http://mlflow:5000"
    assert cfg.get("spark.master") == "spark://spark-master:7077"


def test_environment_overrides_nested_keys_with_typed_values():
    cfg = load_config(environ={
        "PORTRAIT__MODEL__EPOCHS": "3",
        "PORTRAIT__SPARK__MASTER": "spark://10.1.2.3:7077",
        "PORTRAIT__SPARK__CONF__spark.executor.memory": "2g",
        "PORTRAIT__LAKEHOUSE_ROOT": "/data/lake",
    })
    assert cfg.get("model.epochs") == 3
    assert cfg.get("spark.master") == "spark://10.1.2.3:7077"
    assert cfg.get("spark.conf")["spark.executor.memory"] == "2g"
    assert cfg.lakehouse_root == "/data/lake"


def test_unknown_profile_says_which_exist():
    with pytest.raises(ConfigError, match=r"unknown profile 'prod'.*one of: ci, cluster, local"):
        load_config(environ={"PORTRAIT_ENV": "prod"})


def test_missing_setting_names_the_key():
    with pytest.raises(ConfigError, match="no setting 'spark.nope'"):
        load_config(environ={}).get("spark.nope")


@pytest.mark.parametrize(("variable", "value", "key", "kind"), [
    ("PORTRAIT__MODEL__EPOCHS", "ten", "model.epochs", "a number"),
    ("PORTRAIT__CLEAN__LATE_MAX_DAYS", "7d", "clean.late_max_days", "a number"),
])
def test_a_non_numeric_override_of_a_number_is_one_config_error_naming_key_and_value(variable, value, key, kind):
    with pytest.raises(ConfigError) as error:
        load_config(environ={variable: value})
    message = str(error.value)
    assert "\n" not in message
    assert f"{variable}={value!r}" in message and f"'{key}'" in message and kind in message


def test_an_override_of_a_switch_must_be_true_or_false():
    with pytest.raises(ConfigError, match=r"PORTRAIT__MODEL__ITEM_ID_IN_ITEM_TOWER='maybe'.*true or false"):
        load_config(environ={"PORTRAIT__MODEL__ITEM_ID_IN_ITEM_TOWER": "maybe"})


def test_numbers_may_replace_numbers():
    cfg = load_config(environ={"PORTRAIT__MODEL__EPOCHS": "2.0", "PORTRAIT__CLEAN__LATE_MAX_DAYS": "3"})
    assert (cfg.get("model.epochs"), cfg.get("clean.late_max_days")) == (2.0, 3)
    # YAML 1.1 reads an exponent without a dot as text; it is a number here, as Python writes it
    cfg = load_config(environ={"PORTRAIT__MODEL__LEARNING_RATE": "1e-07", "PORTRAIT__MODEL__DROPOUT": "-2.5E+0"})
    assert (cfg.get("model.learning_rate"), cfg.get("model.dropout")) == (1e-07, -2.5)


def test_integer_accessor_names_the_key_and_value():
    cfg = load_config(environ={})
    assert cfg.integer("model.epochs") == 8
    bad = type(cfg)(profile=cfg.profile, root=cfg.root, data={"model": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"model.epochs is 'ten' in profile 'local'; write a whole number"):
        bad.integer("model.epochs")
    with pytest.raises(ConfigError, match=r"model.epochs is 2.5"):
        type(cfg)(profile="local", root=cfg.root, data={"model": {"epochs": 2.5}}).integer("model.epochs")


@pytest.mark.parametrize("value", ["20261104", "2026-11-04xyz", "2026-11-4", " 2026-11-04 junk", "2026-13-01"])
def test_a_run_date_is_yyyy_mm_dd_and_nothing_else(value):
    from jobs.common.dates import parse_date

    with pytest.raises(ConfigError, match=r"run date .* is not a date; use YYYY-MM-DD"):
        parse_date(value, "run date")


def test_a_run_date_may_be_a_full_iso_instant_as_airflow_passes_it():
    import datetime as dt

    from jobs.common.dates import parse_date

    assert parse_date("2026-11-04") == dt.date(2026, 11, 4)
    assert parse_date("2026-11-04T00:00:00+00:00") == dt.date(2026, 11, 4)
    assert parse_date(" 2026-11-04 ") == dt.date(2026, 11, 4)
