"""What the DAG files share: default args, trigger params, published assets, the failure callback, task bodies.

Imported at DAG parse time, so it stays light: Airflow's SDK, the YAML config and jobs.runner's tables of
steps. Spark, pandas and the step modules are imported inside the task bodies only.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import Asset, Param
from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule

from jobs.common.catalog import TABLES, table_path
from jobs.common.config import Config, load_config
from jobs.runner import RUN_PARAMS, one_line

log = logging.getLogger("portrait")

EXECUTION_MODES = ("local", "spark_submit")
# Libraries that log hundreds of INFO lines per task (GX registers its plug-ins one line each).
QUIET_LOGGERS = ("great_expectations", "py4j")
# publish makes these visible; downstream DAGs schedule on their Assets.
PUBLISHED_TABLES: tuple[str, ...] = tuple(name for name in TABLES if name.startswith("publish."))


def config() -> Config:
    return load_config()


def execution_mode(cfg: Config) -> str:
    mode = str(cfg.get("airflow.execution", "local"))
    if mode not in EXECUTION_MODES:
        from jobs.common.errors import ConfigError

        raise ConfigError(f"airflow.execution is '{mode}' in profile {cfg.profile}; use one of {EXECUTION_MODES}")
    return mode


def schedule_bounds(cfg: Config) -> tuple[dt.datetime, dt.datetime | None]:
    """start_date and end_date of the schedule (UTC midnights); end_date None = open-ended."""
    def utc(value: Any) -> dt.datetime | None:
        if value in (None, ""):
            return None
        day = dt.date.fromisoformat(str(value))
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)

    return utc(cfg.get("airflow.start_date")), utc(cfg.get("airflow.end_date", None))


def default_args(cfg: Config) -> dict[str, Any]:
    """Retries with exponential back-off for what may pass on a second try (a lost executor, a busy store).

    A PortraitError (bad input, a failed validation, a wrong setting, a read-only or full lakehouse, an
    unreachable MLflow server) fails at once: a retry would fail the same way and only delay the alert.
    """
    return {
        "owner": "portrait",
        "retries": int(cfg.get("airflow.retries", 2)),
        "retry_delay": dt.timedelta(seconds=int(cfg.get("airflow.retry_delay_seconds", 60))),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=20),
        "retry_policy": ExceptionRetryPolicy(rules=[RetryRule(
            exception="jobs.common.errors.PortraitError", action=RetryAction.FAIL,
            reason="bad input, failed validation, wrong setting or broken storage/MLflow: a retry would fail the "
                   "same way")]),
        "execution_timeout": task_timeout(cfg, "default"),
        "on_failure_callback": on_task_failure,
    }


def task_timeout(cfg: Config, step: str) -> dt.timedelta:
    minutes = cfg.get("airflow.timeout_minutes", {}) or {}
    return dt.timedelta(minutes=float(minutes.get(step, minutes.get("default", 60))))


def trigger_params() -> dict[str, Param]:
    """The trigger form of profile_daily; each step takes the ones it declares (jobs.runner.STEP_PARAMS)."""
    params = {
        "collect_days": Param(
            None, type=["null", "integer"], minimum=1, maximum=400, title="Days to (re)load",
            description="collect and clean (re)load this many days ending at the logical date; "
                        "empty = pipeline.collect_days of the profile"),
        "reload_from": Param(
            None, type=["null", "string"], format="date", title="Reload from",
            description="first day to (re)load, YYYY-MM-DD: collect and clean reload from it up to the "
                        "logical date (overrides Days to (re)load)"),
        "retrain": Param(
            "auto", type="string", enum=["auto", "always", "never"], title="Retrain",
            description="auto: the train step decides (a candidate on the configured cadence or when there is "
                        "no champion yet); always: train a candidate now; never: keep the current champion"),
        "sample_users": Param(
            None, type=["null", "integer"], minimum=10, title="Train on a sample of users",
            description="train on at most this many users for a quick retrain; features, scores and the "
                        "published tables always cover every user"),
    }
    assert set(params) == set(RUN_PARAMS), "trigger form and jobs.runner.RUN_PARAMS must agree"
    return params


def table_uri(cfg: Config, name: str) -> str:
    """The table's location as a URI: s3a://... as it is, a local folder as file://."""
    location = table_path(cfg, name)
    return location if "://" in location else f"file://{location}"


def published_assets(cfg: Config) -> list[Asset]:
    """One Asset per published table, named like the table, its URI the table's location."""
    return [Asset(name=name, uri=table_uri(cfg, name), group="portrait",
                  extra={"format": "delta", "layer": name.split(".")[0]}) for name in PUBLISHED_TABLES]


def run_date_of(context: Any) -> dt.date:
    """The day a run processes: its logical date (a run triggered without one uses when it was due)."""
    run = context["dag_run"]
    return (run.logical_date or run.run_after).date()


def run_task(step: str, context: Any, **fixed: Any) -> dict[str, Any]:
    """Body of every local task: run the step for the run's date with the trigger params; tag published assets."""
    from jobs.runner import run_step

    for noisy in QUIET_LOGGERS:  # keep the task log to what the step says
        logging.getLogger(noisy).setLevel(logging.WARNING)
    params = {name: context["params"].get(name) for name in RUN_PARAMS}
    result = run_step(step, run_date_of(context), **params, **fixed)
    if step == "publish":
        rows = {t["table"]: t["rows_out"] for t in result["tables"]}
        for asset in published_assets(config()):
            context["outlet_events"][asset].extra = {"as_of_date": result["run_date"], "rows": rows.get(asset.name)}
    return result


def failure_line(task_id: str, run_date: Any, error: BaseException | str | None) -> str:
    cause = one_line(error) if isinstance(error, BaseException) else (error or "unknown cause (see the task log)")
    return f"portrait: {task_id} failed for {run_date}: {cause}"


def on_task_failure(context: Any) -> str:
    """on_failure_callback: one line in the task log that says which task failed, for which day, and why."""
    try:
        day = run_date_of(context)
    except Exception:  # a callback must never hide the failure it reports
        day = "unknown date"
    line = failure_line(context["ti"].task_id, day, context.get("exception"))
    log.error(line)
    return line
