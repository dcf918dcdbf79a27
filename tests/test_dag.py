"""DAG integrity: imports fast, nothing heavy at parse time, tags, retries, every task calls jobs.runner."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("pyspark", "tensorflow", "keras", "mlflow", "great_expectations", "pandas", "jobs.collect", "ml.train")

PROBE = r"""
import inspect, json, sys, time
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
started = time.monotonic()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.monotonic() - started
dag = bag.dags.get("profile_daily")
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "seconds": seconds,
    "heavy": [m for m in sys.argv[2].split(",") if m in sys.modules],
    "tags": sorted(dag.tags) if dag else [],
    "schedule": str(dag.schedule) if dag else None,
    "tasks": {t.task_id: {"retries": t.retries, "upstream": sorted(t.upstream_task_ids),
                          "source": inspect.getsource(t.python_callable)} for t in (dag.tasks if dag else [])},
}))
"""


def _probe(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "dags"), ",".join(HEAVY)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_profile_daily_is_wired_as_designed(tmp_path):
    info = _probe(tmp_path)
    assert info["errors"] == {}
    assert info["heavy"] == [], f"parse time imported {info['heavy']}"
    assert info["seconds"] < 5, f"DAG folder took {info['seconds']:.1f}s to parse"
    assert {"portrait", "daily"} <= set(info["tags"])
    assert info["schedule"] == "@daily"
    tasks = info["tasks"]
    order = ["collect", "validate_bronze", "clean", "validate_silver", "features", "validate_gold",
             "train", "score", "validate_staging", "publish"]
    assert sorted(tasks) == sorted(order)
    for before, after in zip(order, order[1:]):
        assert tasks[after]["upstream"] == [before]
    for task_id, task in tasks.items():
        assert task["retries"] >= 2, task_id
        body = [line.strip() for line in task["source"].splitlines()[2:] if line.strip()]
        # one import and one call into the jobs package: no logic lives in the DAG
        assert body[0] == "from jobs.runner import run_step", task_id
        step = task_id.split("_")[0]
        assert body[1].startswith(f'return run_step("{step}"'), task_id
        if step == "validate":
            assert body[1].endswith(f'tables="{task_id.split("_", 1)[1]}")'), task_id
        assert len(body) == 2, task_id
