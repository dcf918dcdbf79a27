"""The cluster execution mode: a step as `spark-submit jobs/runner.py STEP DATE ...` against the profile's master.

Imported by dags/profile_daily.py only when airflow.execution is spark_submit. The application is the
same entry point as the in-process mode (jobs.runner), so both modes run identical code.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from jobs.common.config import Config
from jobs.common.errors import PortraitError
from jobs.runner import RUN_PARAMS

# The run date and the trigger params as spark-submit arguments, rendered by Airflow at run time.
RUN_DATE = "{{ (dag_run.logical_date or dag_run.run_after).strftime('%Y-%m-%d') }}"
_ERROR_LINE = re.compile(r"portrait: error: .*")


class StepFailed(PortraitError):
    """The step exited with `portrait: error: ...`: bad input or settings, so no retry."""


def application_args(step: str, fixed: dict[str, str]) -> list[str]:
    args = [step, RUN_DATE]
    for name in RUN_PARAMS:
        args += [f"--{name.replace('_', '-')}", f"{{{{ params.{name} }}}}"]
    for name, value in fixed.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def spark_conf(cfg: Config) -> dict[str, str]:
    """What build_spark sets, as --conf: it must be known when spark-submit starts the driver JVM."""
    python = str(cfg.get("spark_submit.python", None) or sys.executable)
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
    }
    conf.update({str(k): str(v) for k, v in (cfg.get("spark.conf", {}) or {}).items()})
    return conf


class PortraitSparkSubmitOperator(SparkSubmitOperator):
    """SparkSubmitOperator for a Portrait step: master from the profile, Delta jars from the cache.

    The master comes from `spark.master` unless `spark_submit.conn_id` names an Airflow connection, so
    the profile stays the one place that says where Spark runs.
    """

    def __init__(self, *, step: str, fixed: dict[str, str], cfg: Config, **kwargs: Any) -> None:
        conn_id = cfg.get("spark_submit.conn_id", None) or "portrait_spark"
        self._master = None if cfg.get("spark_submit.conn_id", None) else str(cfg.get("spark.master"))
        super().__init__(
            application=str(cfg.root / "jobs" / "runner.py"),
            application_args=application_args(step, fixed),
            conf=spark_conf(cfg),
            conn_id=conn_id,
            deploy_mode=str(cfg.get("spark_submit.deploy_mode", "client")),
            name=f"portrait-{step}",
            executor_memory=cfg.get("spark_submit.executor_memory", None),
            total_executor_cores=cfg.get("spark_submit.total_executor_cores", None),
            env_vars={"PORTRAIT_ENV": cfg.profile, "PORTRAIT_HOME": str(cfg.root)},
            **kwargs,
        )
        self.portrait_step = step

    def execute(self, context: Any) -> None:
        from jobs.common.config import load_config
        from jobs.common.jars import fetch_jars

        cfg = load_config()
        self.jars = ",".join(str(p) for p in fetch_jars(cfg))
        if self._master:
            # An environment connection, read by the hook in this process only.
            variable = f"AIRFLOW_CONN_{self._conn_id.upper()}"
            os.environ.setdefault(variable, json.dumps({"conn_type": "spark", "host": self._master}))
        try:
            super().execute(context)
        except Exception as exc:
            found = _ERROR_LINE.findall(str(exc))
            if found:
                raise StepFailed(found[-1].removeprefix("portrait: error: ")) from None
            raise
