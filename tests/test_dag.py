"""DAG integrity: fast parse with nothing heavy, the pipeline wired in order, params, retries, assets, both modes."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs.runner import PIPELINE, RUN_PARAMS, task_id

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("pyspark", "tensorflow", "keras", "mlflow", "great_expectations", "pandas", "deltalake",
         "jobs.collect", "jobs.quality", "ml.train")

PROBE = r"""
import inspect, json, os, sys, time
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
from jobs.common.errors import EnvironmentSetupError, InputDataError
from jobs.common.storage import StorageError

def policy(task, exc):
    return task.retry_policy.evaluate(exc, 1, 3).action.value if task.retry_policy else None

def describe(task):
    info = {"type": type(task).__name__, "retries": task.retries, "upstream": sorted(task.upstream_task_ids),
            "timeout_min": task.execution_timeout.total_seconds() / 60 if task.execution_timeout else None,
            "backoff": task.retry_exponential_backoff, "callback": bool(task.on_failure_callback),
            "on_bad_input": policy(task, InputDataError("x")), "on_crash": policy(task, RuntimeError("x")),
            "on_full_disk": policy(task, StorageError("x")), "on_lost_mlflow": policy(task, EnvironmentSetupError("x")),
            "outlets": [[a.name, a.uri] for a in task.outlets]}
    if hasattr(task, "python_callable"):
        info["source"] = inspect.getsource(task.python_callable)
        info["op_args"] = list(task.op_args)
    if hasattr(task, "application"):
        info["application"] = task.application
        info["application_args"] = task.application_args
        info["conf"] = task.conf
        info["conn_id"] = task._conn_id
    return info

results = []
for variant in json.loads(sys.argv[3]):
    os.environ.update(variant)
    started = time.monotonic()
    bag = DagBag(dag_folder=sys.argv[1])
    seconds = time.monotonic() - started
    heavy = [m for m in sys.argv[2].split(",") if m in sys.modules]
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "tags": sorted(dag.tags), "schedule": repr(dag.timetable), "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs, "start": str(dag.start_date), "end": str(dag.end_date),
            "params": {k: dag.params.get_param(k).dump() for k in dag.params},
            "tasks": {t.task_id: describe(t) for t in dag.tasks},
            "asset_schedule": [getattr(a, "name", None) for a in
                               getattr(getattr(dag.timetable, "asset_condition", None), "objects", [])],
        }
    results.append({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "seconds": seconds,
                    "heavy": heavy, "dags": dags})
print(json.dumps(results, default=str))
"""

SPARK_SUBMIT = {"PORTRAIT__AIRFLOW__EXECUTION": "spark_submit", "PORTRAIT__SPARK__MASTER": "spark://10.1.2.3:7077"}
BAD_MODE = {"PORTRAIT__AIRFLOW__EXECUTION": "yarn"}


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    """The DAG folder parsed by Airflow's DagBag in a fresh process: local mode, spark_submit mode, a bad mode."""
    tmp_path = tmp_path_factory.mktemp("dags")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PORTRAIT_ENV": "ci", "PORTRAIT__LAKEHOUSE_ROOT": str(tmp_path / "lake")}
    variants = [{}, SPARK_SUBMIT, BAD_MODE]
    done = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "dags"), ",".join(HEAVY), json.dumps(variants)],
                          capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    local, spark_submit, bad = json.loads(done.stdout.strip().splitlines()[-1])
    return {"local": local, "spark_submit": spark_submit, "bad": bad}


@pytest.fixture(scope="module")
def local_dags(parsed):
    return parsed["local"]


ORDER = [task_id(step, fixed) for step, fixed in PIPELINE]


def test_dag_folder_parses_fast_without_heavy_imports(local_dags):
    assert local_dags["errors"] == {}
    assert local_dags["heavy"] == [], f"parse time imported {local_dags['heavy']}"
    assert local_dags["seconds"] < 5, f"DAG folder took {local_dags['seconds']:.1f}s to parse"
    assert set(local_dags["dags"]) == {"profile_daily", "profile_consumers"}


def test_profile_daily_runs_the_pipeline_in_order(local_dags):
    dag = local_dags["dags"]["profile_daily"]
    assert {"portrait", "daily"} <= set(dag["tags"])
    # the run for day D starts once D is over and processes D
    assert dag["schedule"] == "CronDataIntervalTimetable(expression='0 0 * * *', timezone='UTC')"
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert dag["start"].startswith("2026-11-01 00:00:00") and dag["end"] == "None"
    tasks = dag["tasks"]
    assert ORDER[:3] == ["collect", "validate_bronze", "clean"] and ORDER[-2:] == ["validate_staging", "publish"]
    assert sorted(tasks) == sorted(ORDER)
    assert tasks[ORDER[0]]["upstream"] == []
    for before, after in zip(ORDER, ORDER[1:]):
        assert tasks[after]["upstream"] == [before], after


def test_every_task_is_one_call_into_the_runner(local_dags):
    tasks = local_dags["dags"]["profile_daily"]["tasks"]
    for (step, fixed), tid in zip(PIPELINE, ORDER):
        task = tasks[tid]
        assert task["type"] == "_PythonDecoratedOperator", tid
        body = [line.strip() for line in task["source"].splitlines()[2:] if line.strip()]
        # one import and one call: no logic lives in the DAG
        assert body == ["from portrait.dag_support import run_task", "return run_task(name, context, **fixed)"], tid
        assert task["op_args"] == [step, fixed], tid


def test_retries_back_off_but_bad_input_fails_at_once(local_dags):
    for tid, task in local_dags["dags"]["profile_daily"]["tasks"].items():
        assert task["retries"] >= 2 and task["backoff"], tid
        assert task["on_bad_input"] == "fail", tid   # a PortraitError: retrying cannot help
        assert task["on_crash"] == "default", tid    # anything else: the normal retries
        # A read-only or full lakehouse, an unreachable MLflow server: a retry a minute later cannot help.
        assert task["on_full_disk"] == task["on_lost_mlflow"] == "fail", tid
        assert task["callback"], tid
        assert task["timeout_min"] == (120 if tid == "train" else 60), tid


def test_publish_updates_the_published_assets_and_the_consumer_schedules_on_them(local_dags, tmp_path):
    dags = local_dags["dags"]
    outlets = dags["profile_daily"]["tasks"]["publish"]["outlets"]
    assert [name for name, _ in outlets] == ["publish.user_profile", "publish.recommendations"]
    for name, uri in outlets:
        assert uri.startswith("file:///") and uri.endswith("/lake/" + name.replace(".", "/")), uri
    assert all(not t["outlets"] for tid, t in dags["profile_daily"]["tasks"].items() if tid != "publish")
    assert "report_published_counts" in dags["profile_consumers"]["tasks"]
    assert dags["profile_consumers"]["asset_schedule"] == ["publish.user_profile", "publish.recommendations"]
    assert dags["profile_consumers"]["schedule"].startswith("AssetTriggeredTimetable")


def test_trigger_form_offers_date_range_retrain_and_sample(local_dags):
    params = local_dags["dags"]["profile_daily"]["params"]
    assert set(params) == set(RUN_PARAMS)
    assert params["retrain"]["value"] == "auto" and params["retrain"]["schema"]["enum"] == ["auto", "always", "never"]
    assert params["reload_from"]["schema"]["format"] == "date"
    assert params["collect_days"]["value"] is None and params["sample_users"]["value"] is None


def test_spark_submit_mode_runs_the_same_entry_point(parsed):
    info = parsed["spark_submit"]
    assert info["errors"] == {} and info["heavy"] == []
    tasks = info["dags"]["profile_daily"]["tasks"]
    assert sorted(tasks) == sorted(ORDER)
    for before, after in zip(ORDER, ORDER[1:]):
        assert tasks[after]["upstream"] == [before]
    for (step, fixed), tid in zip(PIPELINE, ORDER):
        task = tasks[tid]
        assert task["type"] == "PortraitSparkSubmitOperator", tid
        assert task["application"] == str(REPO / "jobs" / "runner.py")
        args = task["application_args"]
        assert args[0] == step and "logical_date" in args[1], tid
        assert args[args.index("--retrain") + 1] == "{{ params.retrain }}"
        if fixed:
            assert args[-2:] == ["--tables", fixed["tables"]], tid
        assert task["conf"]["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
        assert task["conf"]["spark.pyspark.python"] == sys.executable
        assert task["on_bad_input"] == "fail" and task["retries"] >= 2
    assert [n for n, _ in tasks["publish"]["outlets"]] == ["publish.user_profile", "publish.recommendations"]


def test_an_unknown_execution_mode_is_a_named_import_error(parsed):
    errors = " ".join(parsed["bad"]["errors"].values())
    assert set(parsed["bad"]["errors"]) == {str(REPO / "dags" / "profile_daily.py")}
    assert "airflow.execution is 'yarn'" in errors and "spark_submit" in errors


# --- the failure callback and the runner's parameters, without Airflow ----------------------------

def test_failure_callback_logs_one_line_with_task_date_and_cause():
    from jobs.common.errors import InputDataError
    from portrait.dag_support import on_task_failure

    context = {"ti": SimpleNamespace(task_id="validate_silver"),
               "dag_run": SimpleNamespace(logical_date=dt.datetime(2026, 11, 10, tzinfo=dt.timezone.utc),
                                          run_after=None),
               "exception": InputDataError("data quality failed for silver.events 2026-11-10\n"
                                           "silver.events: user_key null in 5 of 5 rows\nmore detail")}
    # the real task log carries this line too: tests/test_end_to_end.py reads it back through the REST API
    assert on_task_failure(context) == (
        "portrait: validate_silver failed for 2026-11-10: data quality failed for silver.events 2026-11-10"
        " | silver.events: user_key null in 5 of 5 rows")
    assert on_task_failure({"ti": SimpleNamespace(task_id="train"), "dag_run": None, "exception": None}) == (
        "portrait: train failed for unknown date: unknown cause (see the task log)")


def test_runner_turns_reload_from_into_collect_days_and_passes_only_declared_params(cfg):
    from jobs.common.errors import ConfigError
    from jobs.runner import resolve_params

    day = dt.date(2026, 11, 14)
    assert resolve_params("collect", day, {"reload_from": "2026-11-01", "retrain": "never"}, cfg) == {"collect_days": 14}
    assert resolve_params("clean", day, {"collect_days": None}, cfg) == {"collect_days": 1}
    assert resolve_params("train", day, {"retrain": "never", "sample_users": 50, "collect_days": 3}, cfg) == {
        "retrain": "never", "sample_users": 50}
    assert resolve_params("validate", day, {"tables": "silver", "reload_from": ""}, cfg) == {"tables": "silver"}
    with pytest.raises(ConfigError, match="reload_from 2026-11-15 is after the run date 2026-11-14"):
        resolve_params("collect", day, {"reload_from": "2026-11-15"}, cfg)


def test_runner_drops_a_declared_param_the_step_does_not_take_yet(caplog):
    from jobs.runner import _supported

    def run(spark, cfg, run_date, retrain="auto"):
        return None

    with caplog.at_level("WARNING", logger="portrait"):
        assert _supported("train", run, {"retrain": "never", "sample_users": 5}) == {"retrain": "never"}
    assert "takes no 'sample_users' yet" in caplog.text


def test_runner_main_fails_with_one_line_and_exit_2_on_bad_input(tmp_path):
    env = {**os.environ, "PORTRAIT_ENV": "ci", "PORTRAIT__LANDING_ZONE": str(tmp_path / "empty")}
    done = subprocess.run([sys.executable, "-m", "jobs.runner", "collect", "2026-11-14", "--collect-days", "None"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("portrait: error: no events for 2026-11-14 at ")
    assert "Traceback" not in done.stderr
