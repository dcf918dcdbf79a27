"""Cluster mode for real: a Spark standalone master and two workers on 127.0.0.1, a step through spark-submit.

The DAG's own task runs it (`airflow tasks test` with airflow.execution = spark_submit), so this checks the
PortraitSparkSubmitOperator, the master taken from spark.master, the Delta jars and jobs/runner.py as the
application, and then the Delta table the step wrote.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, lake_overrides, make_config

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(1800)]
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
START = dt.date(2026, 11, 1)
DAYS = 2
LAST = START + dt.timedelta(days=DAYS - 1)
# The Spark distribution inside the pyspark package: bin/, sbin/ scripts and jars/.
SPARK_HOME = str(Path(importlib.util.find_spec("pyspark").origin).parent)


def _master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Master + two workers (1 core, 1g each) from the pyspark install, stopped at the end."""
    base = tmp_path_factory.mktemp("cluster")
    port, ui_port = free_port(), free_port()
    env = {**os.environ, "SPARK_HOME": SPARK_HOME, "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": str(base / "logs"), "SPARK_WORKER_DIR": str(base / "work")}
    spark_class = str(BIN / "spark-class")
    commands = [[spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                 "--port", str(port), "--webui-port", str(ui_port)]]
    for i in range(2):
        commands.append([spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                         "--host", "127.0.0.1", "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()),
                         "--work-dir", str(base / f"work-{i}")])
    processes = []
    try:
        for i, command in enumerate(commands):
            log = open(base / f"daemon-{i}.log", "wb")
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            if i == 0:
                _wait(lambda: _master_state(ui_port), "the master", base, processes)
        _wait(lambda: len([w for w in _master_state(ui_port)["workers"] if w["state"] == "ALIVE"]) == 2,
              "two workers", base, processes)
        yield {"master": f"spark://127.0.0.1:{port}", "ui_port": ui_port, "base": base}
    finally:
        for process in reversed(processes):
            os.killpg(process.pid, 15)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)


def _wait(check, what: str, base: Path, processes, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in sorted(base.glob("daemon-*.log")))
            pytest.fail(f"{what} not up in {timeout_s:.0f}s:\n{logs}")
        time.sleep(1)


@pytest.fixture(scope="module")
def cluster_env(cluster):
    """The ci profile pointed at the standalone master with spark_submit execution, and a tiny landing zone."""
    base = cluster["base"]
    overrides = {**lake_overrides(base), "PORTRAIT__AIRFLOW__EXECUTION": "spark_submit",
                 "PORTRAIT__SPARK__MASTER": cluster["master"],
                 "PORTRAIT__SPARK__CONF__spark.driver.memory": "1g",
                 "PORTRAIT__SPARK_SUBMIT__EXECUTOR_MEMORY": "512m"}
    env = {**os.environ, "PORTRAIT_ENV": "ci", "PORTRAIT_HOME": str(REPO), "SPARK_HOME": SPARK_HOME, **overrides}
    done = subprocess.run([str(BIN / "portrait"), "generate", "--users", "20", "--days", str(DAYS), "--seed", "3",
                           "--start-date", START.isoformat()], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return make_config(base, **{k: v for k, v in overrides.items() if k.startswith("PORTRAIT__")}), env


def _task_test(env, task_id: str, day: dt.date, params: dict, timeout_s: float = 600) -> subprocess.CompletedProcess:
    """`airflow tasks test` of one profile_daily task; on timeout its whole process group goes (spark-submit too)."""
    command = [str(BIN / "portrait"), "airflow", "tasks", "test", "profile_daily", task_id, day.isoformat(),
               "--task-params", json.dumps(params)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        stdout, stderr = process.communicate()
        pytest.fail(f"{task_id} did not finish in {timeout_s:.0f}s:\n{(stdout + stderr)[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_collect_runs_on_the_standalone_cluster_through_spark_submit(cluster, cluster_env):
    cfg, env = cluster_env
    done = _task_test(env, "collect", LAST, {"collect_days": DAYS})
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "new_state=success" in output, output[-5000:]
    assert "spark-submit" in output and cluster["master"] in output   # the operator's command line, logged

    from deltalake import DeltaTable

    from jobs.common.catalog import table_path

    events = DeltaTable(table_path(cfg, "bronze.events")).to_pandas()
    landed = sum(len(p.read_text().splitlines()) for p in Path(cfg.landing_zone).glob("events/*/*.jsonl"))
    assert len(events) == landed > 0
    assert sorted(events["event_date"].unique()) == [START, LAST]

    # the application ran on the cluster, with executors on the workers
    apps = _master_state(cluster["ui_port"])["completedapps"]
    assert len(apps) == 1 and apps[0]["cores"] >= 1, apps


def test_a_step_with_bad_input_fails_once_with_its_one_line_cause(cluster, cluster_env):
    cfg, env = cluster_env
    missing = LAST + dt.timedelta(days=5)
    done = _task_test(env, "collect", missing, {})
    output = done.stdout + done.stderr
    # `airflow tasks test` exits 0 whatever the task's outcome (Airflow 3.3); the state it logs is the truth
    assert "new_state=failed" in output and "new_state=success" not in output, output[-5000:]
    assert "Retry policy decision" in output and "action=fail" in output, output[-5000:]   # no retry for bad input
    assert f"portrait: error: no events for {missing}" in output, output[-5000:]
    assert f"portrait: collect failed for {missing}: no events for {missing}" in output, output[-5000:]
