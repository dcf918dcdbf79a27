"""The real DAG in a real Airflow: `airflow standalone` on 127.0.0.1, driven through the REST API v2.

One Airflow and one generated dataset for the whole module, and every DAG run pulls its weight:

1. trigger profile_daily for FIRST through the REST API (reload_from = the first generated day, the model
   trains): every task green, the published tables right, the asset-scheduled profile_consumers DAG runs;
2. a backfill of FIRST..LAST through the REST API (POST /api/v2/backfills) with retrain=never: three
   runs, three published partitions, and the re-run of FIRST (reprocess "completed") leaves its
   published day identical;
3. a broken day BROKEN (every event without user id) lands and is triggered: the run fails before
   publish, the failure callback names the task, the day and the cause, publish.* keeps the newest good
   day it had before.

Steps 2 and 3 are marked `long` (about 25 and 3 more minutes on 2 cores; the DAG runs one day at a
time): `make test` (and CI) runs step 1, `make test-all` all three, and `-k broken` steps 1 and 3.

With PORTRAIT_E2E_KEEP set, the run's folder (lakehouse, landing zone, MLflow, Airflow home) is kept there
with run.json ({"date": the newest day a run published, "env": {...}}) for CI's data-quality check (.ci/run).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobs.runner import PIPELINE, task_id
from tests.conftest import free_port, lake_overrides, make_config

# How long to wait for runs, scaled up on a slow or shared machine (PORTRAIT_E2E_WAIT_SCALE=3).
WAIT_SCALE = float(os.environ.get("PORTRAIT_E2E_WAIT_SCALE", "1"))
# the fixtures (Airflow start, the first run, the backfill) count against the first test that needs them
pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(3600 * WAIT_SCALE))]
REPO = Path(__file__).resolve().parents[1]
PORTRAIT = str(Path(sys.executable).with_name("portrait"))
USERS, DAYS = 80, 10
START = dt.date(2026, 11, 1)
LAST = START + dt.timedelta(days=DAYS - 1)            # 2026-11-10
FIRST = LAST - dt.timedelta(days=2)                   # the triggered day, then backfilled with the next two
BROKEN = LAST + dt.timedelta(days=1)
ORDER = [task_id(step, fixed) for step, fixed in PIPELINE]   # the DAG's tasks, publish last
BEFORE_PUBLISH = ORDER[:-1]


@dataclass
class Airflow:
    cfg: object
    env: dict
    api: object
    base: Path
    published: list = field(default_factory=list)   # days a run published, for CI's data-quality check


def _run_folder(tmp_path_factory) -> Path:
    keep = os.environ.get("PORTRAIT_E2E_KEEP")
    if not keep:
        return tmp_path_factory.mktemp("e2e")
    base = Path(keep)
    base.mkdir(parents=True, exist_ok=True)
    if any(base.iterdir()):
        pytest.fail(f"PORTRAIT_E2E_KEEP={base} is not empty; point it at a new folder")
    return base


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    from portrait.airflow_env import airflow_env, ensure_airflow_db
    from portrait.services import AirflowAPI, airflow_login, airflow_service, start_service, stop_service

    base = _run_folder(tmp_path_factory)
    overrides = {**lake_overrides(base), "PORTRAIT__AIRFLOW__END_DATE": BROKEN.isoformat()}
    env = {**os.environ, "PORTRAIT_ENV": "ci", "PORTRAIT_HOME": str(REPO), **overrides,
           "AIRFLOW__CORE__PARALLELISM": "4",
           # parse the two DAG files once, not every 30 s: CPU for the tasks on a 2-core runner
           "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600"}
    done = subprocess.run([PORTRAIT, "generate", "--users", str(USERS), "--days", str(DAYS), "--seed", "11",
                           "--start-date", START.isoformat()], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cfg = make_config(base, PORTRAIT__AIRFLOW__END_DATE=BROKEN.isoformat())
    env = airflow_env(cfg, base=env)
    ensure_airflow_db(env)
    service = airflow_service(env, port=free_port())
    start_service(service, env, REPO, wait_s=420)
    try:
        api = AirflowAPI(service.ui_url, *airflow_login(env))
        for dag_id in ("profile_daily", "profile_consumers"):
            api.wait_for_dag(dag_id)
            api.unpause(dag_id)
        handle = Airflow(cfg, env, api, base)
        yield handle
    finally:
        stop_service(env, "airflow")
    if os.environ.get("PORTRAIT_E2E_KEEP") and handle.published:
        newest = max(handle.published).isoformat()
        (base / "run.json").write_text(json.dumps({"date": newest, "env": overrides}, indent=2))


def _table(cfg, name):
    from deltalake import DeltaTable

    from jobs.common.catalog import table_path

    return DeltaTable(table_path(cfg, name)).to_pandas()


def _canonical(frame):
    cols = ["user_key", "segment_id", "price_band", "activity_level", "churn_risk", "value_score", "model_version"]
    tags = frame["interest_tags"].map(lambda ts: tuple((t["tag"], round(t["score"], 3)) for t in ts))
    return sorted(zip(*(frame[c].tolist() for c in cols), tags.tolist()))


def _on(frame, column, day):
    return frame[frame[column] == day]


@pytest.fixture(scope="module")
def first_run(airflow):
    """profile_daily for FIRST, triggered through the REST API: loads every day up to FIRST and trains."""
    api = airflow.api
    run_id = api.trigger("profile_daily", FIRST.isoformat(), {"reload_from": START.isoformat()})
    [run] = api.wait_for_runs("profile_daily", [run_id], timeout_s=1200 * WAIT_SCALE)
    states = api.task_states("profile_daily", run_id)
    assert run["state"] == "success", states
    airflow.published.append(FIRST)
    return run_id, states


def test_triggered_run_publishes_profiles_and_recommendations(airflow, first_run):
    cfg = airflow.cfg
    run_id, states = first_run
    assert states == {t: "success" for t in ORDER}

    users = _table(cfg, "silver.users")
    assert users["user_key"].nunique() == USERS
    day = _on(_table(cfg, "publish.user_profile"), "as_of_date", FIRST)
    assert len(day) == USERS and day["user_key"].is_unique
    assert set(day["user_key"]) == set(users["user_key"])          # every published user exists in silver
    assert not day["user_key"].str.match(r"^u\d+$").any()          # pseudonymous keys, not raw ids
    assert day["interest_tags"].map(len).min() >= 1
    assert set(day["segment_id"]) <= {"dormant", "at_risk", "browser", "bargain_hunter", "premium_shopper", "regular"}
    recs = _on(_table(cfg, "publish.recommendations"), "as_of_date", FIRST)
    k = int(cfg.get("recommend.k"))
    assert len(recs) > 0
    assert not recs.duplicated(["user_key", "rank"]).any() and not recs.duplicated(["user_key", "item_id"]).any()
    for _, ranks in recs.groupby("user_key")["rank"]:
        assert sorted(ranks) == list(range(1, len(ranks) + 1)) and len(ranks) <= k

    audit = _on(_table(cfg, "ops.run_audit"), "run_date", FIRST)
    assert {"collect", "clean", "features", "score", "publish"} <= set(audit["step"])
    assert audit["balanced"].all(), audit[~audit["balanced"]]
    events = _table(cfg, "bronze.events")
    assert sorted(events["event_date"].unique()) == [START + dt.timedelta(days=i) for i in range(DAYS - 2)]
    assert audit.loc[audit["table_name"] == "bronze.events", "rows_in"].item() == len(events)

    from mlflow import MlflowClient

    from ml.registry import CHAMPION, configure_mlflow

    configure_mlflow(cfg)
    champion = MlflowClient().get_model_version_by_alias(cfg.get("mlflow.registered_model"), CHAMPION)
    assert set(day["model_version"]) == {str(champion.version)}

    # publish returned its counts (XCom) and tagged the asset events with the day
    result = airflow.api.xcom("profile_daily", run_id, "publish")
    assert {t["table"]: t["rows_out"] for t in result["tables"]} == {
        "publish.user_profile": USERS, "publish.recommendations": len(recs)}


def test_published_assets_trigger_the_downstream_dag(airflow, first_run):
    api = airflow.api
    [consumer] = api.wait_for_runs("profile_consumers", count=1, timeout_s=300 * WAIT_SCALE)[:1]
    assert consumer["state"] == "success"
    assert consumer["run_type"] == "asset_triggered"
    counts = api.xcom("profile_consumers", consumer["dag_run_id"], "report_published_counts")
    recs = _on(_table(airflow.cfg, "publish.recommendations"), "as_of_date", FIRST)
    assert counts == {"as_of_date": FIRST.isoformat(),
                      "rows": {"publish.user_profile": USERS, "publish.recommendations": len(recs)}}


@pytest.fixture(scope="module")
def backfill(airflow, first_run):
    """Backfill FIRST..LAST (re-running FIRST) with retrain=never."""
    cfg, api = airflow.cfg, airflow.api
    before = {
        "profile": _canonical(_on(_table(cfg, "publish.user_profile"), "as_of_date", FIRST)),
        "counts": {n: len(_on(_table(cfg, n), c, FIRST)) for n, c in (
            ("bronze.events", "event_date"), ("silver.events", "event_date"), ("gold.user_features", "as_of_date"),
            ("publish.user_profile", "as_of_date"), ("publish.recommendations", "as_of_date"))},
    }
    existing = len(api.runs("profile_daily"))
    api.backfill("profile_daily", FIRST.isoformat(), LAST.isoformat(), {"retrain": "never"},
                 reprocess="completed", max_active_runs=1)
    # FIRST's run is cleared and re-run as part of the backfill: two runs more than before
    runs = api.wait_for_runs("profile_daily", count=existing + 2, timeout_s=1800 * WAIT_SCALE)
    if all(r["state"] == "success" for r in runs if r["run_type"] == "backfill"):
        airflow.published.append(LAST)
    return before, runs


@pytest.fixture(scope="module")
def broken_day(airflow, first_run):
    """A day whose events all lack a user id, triggered on its own; returns its run and the newest good day."""
    newest_good = max(airflow.published)
    _land_broken_day(airflow.cfg)
    broken_id = airflow.api.trigger("profile_daily", BROKEN.isoformat(), {"retrain": "never"})
    [run] = airflow.api.wait_for_runs("profile_daily", [broken_id], timeout_s=1200 * WAIT_SCALE)
    return run, newest_good


def _land_broken_day(cfg):
    """The events of LAST again, moved to BROKEN, with every user id taken away."""
    source = Path(cfg.landing_zone) / "events" / f"event_date={LAST}"
    target = Path(cfg.landing_zone) / "events" / f"event_date={BROKEN}"
    target.mkdir(parents=True)
    for path in source.glob("*.jsonl"):
        lines = []
        for line in path.read_text().splitlines():
            event = json.loads(line)
            event["user_id"] = None
            event["event_id"] = "x" + event["event_id"]
            event["ts"] = event["ts"].replace(LAST.isoformat(), BROKEN.isoformat())
            lines.append(json.dumps(event, ensure_ascii=False))
        (target / path.name).write_text("\n".join(lines) + "\n")


@pytest.mark.long
def test_backfill_of_three_days_publishes_three_partitions_and_rerun_changes_nothing(airflow, backfill):
    cfg = airflow.cfg
    before, runs = backfill
    backfilled = [r for r in runs if r["run_type"] == "backfill"]
    assert sorted(r["logical_date"][:10] for r in backfilled) == [
        FIRST.isoformat(), (FIRST + dt.timedelta(days=1)).isoformat(), LAST.isoformat()]
    assert {r["state"] for r in backfilled} == {"success"}, [(r["dag_run_id"], r["state"]) for r in backfilled]

    profile = _table(cfg, "publish.user_profile")
    recs = _table(cfg, "publish.recommendations")
    days = [FIRST, FIRST + dt.timedelta(days=1), LAST]
    assert sorted(profile["as_of_date"].unique()) == days
    assert sorted(recs["as_of_date"].unique()) == days
    for day in days:
        assert len(_on(profile, "as_of_date", day)) == USERS

    # FIRST ran twice (trigger, then backfill): the same rows, never duplicates
    counts = {n: len(_on(_table(cfg, n), c, FIRST)) for n, c in (
        ("bronze.events", "event_date"), ("silver.events", "event_date"), ("gold.user_features", "as_of_date"),
        ("publish.user_profile", "as_of_date"), ("publish.recommendations", "as_of_date"))}
    assert counts == before["counts"]
    assert _canonical(_on(profile, "as_of_date", FIRST)) == before["profile"]
    audit = _table(cfg, "ops.run_audit")
    assert not audit.duplicated(["run_date", "step", "table_name"]).any()


@pytest.mark.long
def test_a_broken_day_stops_before_publish_and_keeps_the_previous_good_day(airflow, broken_day):
    cfg, api = airflow.cfg, airflow.api
    broken, newest_good = broken_day
    broken_id = broken["dag_run_id"]
    assert broken["state"] == "failed"
    states = api.task_states("profile_daily", broken_id)
    assert states["publish"] == "upstream_failed", states
    failed = [t for t in BEFORE_PUBLISH if states.get(t) == "failed"]
    assert len(failed) == 1, states
    # the failure callback's one line, in the failed task's log; no retry for bad data
    log = api.task_log("profile_daily", broken_id, failed[0], 1)
    assert f"portrait: {failed[0]} failed for {BROKEN}: " in log, log[-3000:]
    ti = api.get(f"/api/v2/dags/profile_daily/dagRuns/{broken_id}/taskInstances/{failed[0]}")
    assert ti["try_number"] == 1

    for name in ("publish.user_profile", "publish.recommendations"):
        published = _table(cfg, name)
        assert BROKEN not in set(published["as_of_date"]), name
        assert max(published["as_of_date"]) == newest_good, name
