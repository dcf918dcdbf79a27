"""Shared fixtures: one Spark session per test run, and a throw-away lakehouse under tmp."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

# A fixed test key: pseudonyms in tests are reproducible, and no real key is ever needed here.
TEST_HMAC_KEY = "portrait-test-key-0123456789abcdef"
os.environ.setdefault("PORTRAIT_ENV", "ci")
os.environ["PORTRAIT_HMAC_KEY"] = TEST_HMAC_KEY

REPO = Path(__file__).resolve().parents[1]


def lake_overrides(base: Path) -> dict[str, str]:
    """Environment that puts every location of a run under `base`, for config and for subprocesses."""
    return {
        "PORTRAIT__LAKEHOUSE_ROOT": str(base / "lakehouse"),
        "PORTRAIT__LANDING_ZONE": str(base / "landing"),
        "PORTRAIT__GROUND_TRUTH_DIR": str(base / "ground_truth"),
        "PORTRAIT__MLFLOW__TRACKING_URI": f"sqlite:///{base / 'mlruns' / 'mlflow.db'}",
        "PORTRAIT__MLFLOW__ARTIFACT_ROOT": str(base / "mlruns" / "artifacts"),
        "PORTRAIT__AIRFLOW__HOME": str(base / "airflow"),
        "PORTRAIT__MODEL__SNAPSHOT_DIR": str(base / "cache" / "training"),
        "AIRFLOW_HOME": str(base / "airflow"),
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for services a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(base: Path, **extra: str):
    from jobs.common.config import load_config

    return load_config(environ={**os.environ, "PORTRAIT_ENV": "ci", **lake_overrides(base), **extra})


@pytest.fixture(scope="session")
def cfg(tmp_path_factory):
    return make_config(tmp_path_factory.mktemp("lake"))


@pytest.fixture(scope="session")
def spark(cfg):
    from jobs.common.spark import build_spark

    session = build_spark(cfg, app_suffix="tests")
    session.conf.set("spark.sql.shuffle.partitions", "1")
    yield session
    session.stop()


# The longest files first: with `pytest -n 2 --dist loadfile` the Airflow end-to-end run then starts at once
# in one worker while the other works through the unit tests, instead of starting last.
_FIRST = ("test_end_to_end.py", "test_cluster.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: 0 if item.path.name in _FIRST else 1)   # stable: file order kept otherwise
