"""The real DAG, run by real Airflow (`airflow dags test`), on a tiny generated dataset."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import lake_overrides, make_config

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PORTRAIT = str(Path(sys.executable).with_name("portrait"))
USERS, DAYS = 80, 9
START = dt.date(2026, 11, 1)
LAST = START + dt.timedelta(days=DAYS - 1)


@pytest.fixture(scope="module")
def run_env(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    cfg = make_config(base)
    env = {**os.environ, "PORTRAIT_ENV": "ci", "PORTRAIT_HOME": str(REPO), **lake_overrides(base)}
    done = subprocess.run([PORTRAIT, "generate", "--users", str(USERS), "--days", str(DAYS), "--seed", "11",
                           "--start-date", START.isoformat()], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return cfg, env


def _dags_test(env, *extra):
    command = [PORTRAIT, "airflow", "dags", "test", "profile_daily", LAST.isoformat(),
               "--conf", json.dumps({"collect_days": DAYS}), *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "DagRun Finished" in done.stdout + done.stderr
    assert "state=success" in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]


def _table(cfg, name):
    from deltalake import DeltaTable

    from jobs.common.catalog import table_path

    return DeltaTable(table_path(cfg, name)).to_pandas()


def test_dag_run_publishes_profiles_and_recommendations_and_reruns_identically(run_env):
    cfg, env = run_env
    _dags_test(env)

    users = _table(cfg, "silver.users")
    profile = _table(cfg, "publish.user_profile")
    recs = _table(cfg, "publish.recommendations")
    assert len(users) == USERS
    day = profile[profile["as_of_date"] == LAST]
    assert len(day) == USERS and day["user_key"].is_unique
    assert set(day["user_key"]) == set(users["user_key"])  # every published user exists in silver
    assert not day["user_key"].str.match(r"^u\d+$").any()  # pseudonymous keys, not raw ids
    assert day["interest_tags"].map(len).min() >= 1
    assert set(day["segment_id"]) <= {"dormant", "at_risk", "browser", "bargain_hunter", "premium_shopper", "regular"}
    k = int(cfg.get("recommend.k"))
    assert not recs.duplicated(["user_key", "rank"]).any() and not recs.duplicated(["user_key", "item_id"]).any()
    for _, ranks in recs.groupby("user_key")["rank"]:
        assert sorted(ranks) == list(range(1, len(ranks) + 1)) and len(ranks) <= k

    audit = _table(cfg, "ops.run_audit")
    assert set(audit["step"]) == {"collect", "clean", "features", "score", "publish"}
    assert audit["balanced"].all(), audit[~audit["balanced"]]
    events = _table(cfg, "bronze.events")
    assert audit.loc[audit["table_name"] == "bronze.events", "rows_in"].item() == len(events)

    from mlflow import MlflowClient

    from ml.registry import CHAMPION, configure_mlflow

    configure_mlflow(cfg)
    champion = MlflowClient().get_model_version_by_alias(cfg.get("mlflow.registered_model"), CHAMPION)
    assert set(day["model_version"]) == {str(champion.version)}

    # Re-running the same date (the model already trained) gives the same tables, never duplicates.
    counts_before = {n: len(_table(cfg, n)) for n in ("bronze.events", "silver.events", "gold.user_features",
                                                      "publish.user_profile", "publish.recommendations")}
    profile_before = _canonical(day)
    _dags_test(env, "--mark-success-pattern", "^(train|validate_.*)$")
    counts_after = {n: len(_table(cfg, n)) for n in counts_before}
    assert counts_after == counts_before
    again = _table(cfg, "publish.user_profile")
    assert _canonical(again[again["as_of_date"] == LAST]) == profile_before


def _canonical(frame):
    cols = ["user_key", "segment_id", "price_band", "activity_level", "churn_risk", "value_score"]
    tags = frame["interest_tags"].map(lambda ts: tuple((t["tag"], round(t["score"], 3)) for t in ts))
    return sorted(zip(*(frame[c].tolist() for c in cols), tags.tolist()))
