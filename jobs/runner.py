"""Run one pipeline step for a date: the single entry point that the DAG, the CLI and spark-submit share."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import logging
import sys
import time
from typing import Any

from jobs.common.config import Config, load_config
from jobs.common.dates import parse_date
from jobs.common.delta import concurrent_write_error, is_write_conflict
from jobs.common.errors import ConfigError, PortraitError, lost_service
from jobs.common.runlock import run_lock
from jobs.common.storage import probe_writable, storage_error

log = logging.getLogger("portrait")
LAKEHOUSE_SETTING = "lakehouse_root (PORTRAIT__LAKEHOUSE_ROOT)"

# step name -> module with run(spark, cfg, run_date, **params).
STEPS: dict[str, str] = {
    "collect": "jobs.collect",
    "clean": "jobs.clean",
    "features": "jobs.features",
    "sequences": "jobs.sequences",
    "feature_report": "jobs.feature_report",
    "train": "ml.train",
    "score": "jobs.score",
    "validate": "jobs.quality",
    "publish": "jobs.publish",
}
# The daily order, validation included. dags/profile_daily.py builds one task per entry (task id
# `step` or `step_<param>`, see task_id) and `portrait run` follows it without Airflow, so adding a
# step is its STEPS line plus its line here.
PIPELINE: tuple[tuple[str, dict[str, str]], ...] = (
    ("collect", {}), ("validate", {"tables": "bronze"}), ("clean", {}), ("validate", {"tables": "silver"}),
    ("features", {}), ("validate", {"tables": "gold"}), ("train", {}), ("score", {}),
    ("validate", {"tables": "staging"}), ("publish", {}),
)
# Parameters a step accepts besides the date.
STEP_PARAMS: dict[str, tuple[str, ...]] = {
    "collect": ("collect_days",), "clean": ("collect_days",), "validate": ("tables",),
    "train": ("retrain", "sample_users"),
}
# What a DAG run's trigger form offers (dags/profile_daily.py); each step takes the ones it declares.
# reload_from is not a step parameter: it becomes collect_days for the steps that take that.
RUN_PARAMS: tuple[str, ...] = ("collect_days", "reload_from", "retrain", "sample_users")


def task_id(step: str, params: dict[str, str]) -> str:
    """The Airflow task id of a PIPELINE entry: validate + {"tables": "silver"} -> validate_silver."""
    return "_".join([step, *(str(v) for v in params.values())])


def resolve_params(step: str, day: dt.date, params: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """The parameters `step` declares, with reload_from turned into collect_days and defaults filled in."""
    params = {k: v for k, v in params.items() if v is not None and v != ""}
    declared = STEP_PARAMS.get(step, ())
    if "reload_from" in params and "collect_days" in declared:
        first = parse_date(params["reload_from"], "reload_from")
        if first > day:
            raise ConfigError(f"reload_from {first} is after the run date {day}; pick a day on or before it")
        params["collect_days"] = (day - first).days + 1
    accepted = {k: v for k, v in params.items() if k in declared}
    if "collect_days" in declared and "collect_days" not in accepted:
        accepted["collect_days"] = int(cfg.get("pipeline.collect_days", 1))
    return accepted


def _supported(step: str, run: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Drop (loudly) a declared parameter the step's run() does not take yet, instead of a TypeError."""
    signature = inspect.signature(run).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
        return params
    for name in [k for k in params if k not in signature]:
        log.warning("%s: %s.run takes no '%s' yet; %s=%r is ignored", step, STEPS[step], name, name, params[name])
        params = {k: v for k, v in params.items() if k != name}
    return params


def run_step(step: str, run_date: Any, cfg: Config | None = None, **params: Any) -> dict[str, Any]:
    """Run `step` for `run_date`; returns the StepResult as a dict (small, fit for XCom).

    `params` may hold any of RUN_PARAMS and the PIPELINE parameters; the step gets the ones it declares.
    """
    if step not in STEPS:
        raise ConfigError(f"unknown step '{step}'; steps are: {', '.join(STEPS)}")
    cfg = cfg or load_config()
    day = parse_date(run_date, "run date")
    module = importlib.import_module(STEPS[step])
    accepted = _supported(step, module.run, resolve_params(step, day, params, cfg))
    lakehouse = cfg.lakehouse_root
    try:
        # Cheap checks first: a read-only or full lakehouse, or a missing input, should not cost a Spark
        # start (and minutes of retried writes) to report.
        probe_writable(lakehouse, "lakehouse", LAKEHOUSE_SETTING)
        # Then the date's lock: a second run of the date says so at once, whatever else it would find.
        with run_lock(cfg, day, holder=step):
            if hasattr(module, "preflight"):
                module.preflight(cfg, day, **{k: v for k, v in accepted.items()
                                              if k in inspect.signature(module.preflight).parameters})

            from jobs.common.spark import build_spark

            spark = build_spark(cfg)
            started = time.monotonic()
            result = module.run(spark, cfg, day, **accepted)
    except PortraitError:
        raise
    except Exception as exc:
        if is_write_conflict(exc):
            raise concurrent_write_error(_conflicting_table(cfg, exc, step), [day], exc) from None
        # The disk filling up or turning read-only in the middle of a Spark write, or the MLflow server lost
        # after the step's check: one line, no retry.
        mapped = storage_error(exc, "lakehouse", lakehouse, LAKEHOUSE_SETTING) or lost_service(
            exc, "MLflow tracking server", cfg.mlflow_tracking_uri, "mlflow.tracking_uri (PORTRAIT__MLFLOW__TRACKING_URI)")
        if mapped is None:
            raise
        log.debug("%s failed on storage", step, exc_info=exc)
        raise mapped from None
    result.details["seconds"] = round(time.monotonic() - started, 1)
    log.info("%s in %.1fs", result.summary(), result.details["seconds"])
    return result.to_dict()


def _conflicting_table(cfg: Config, exc: BaseException, step: str) -> str:
    """The catalog table whose folder the conflict's message names, else `a table written by <step>`."""
    from jobs.common.catalog import TABLES, table_path

    text = str(exc)
    named = [name for name in TABLES if table_path(cfg, name) in text]
    return max(named, key=lambda n: len(table_path(cfg, n))) if named else f"a table written by {step}"


def _optional(kind: type):
    """argparse type for templated values: "", "None" and "null" (an empty trigger field) mean unset."""

    def convert(text: str):
        return None if text.strip() in ("", "None", "null") else kind(text)

    convert.__name__ = kind.__name__
    return convert


def main(argv: list[str] | None = None) -> None:
    """`python -m jobs.runner STEP DATE` (or `spark-submit jobs/runner.py STEP DATE`): one step, result as JSON.

    Exits 2 with one line `portrait: error: ...` on bad input or configuration, a run of the date already in
    progress or a lost commit conflict (jobs/common/runlock.py, jobs/common/delta.py), which the spark-submit
    task turns into a failure without retries; anything else (a lost executor) exits 1 and is retried.
    """
    parser = argparse.ArgumentParser(prog="python -m jobs.runner", description=main.__doc__)
    parser.add_argument("step", choices=list(STEPS))
    parser.add_argument("date", help="logical date, YYYY-MM-DD")
    parser.add_argument("--collect-days", type=_optional(int), default=None)
    parser.add_argument("--reload-from", type=_optional(str), default=None, help="first day to reload, YYYY-MM-DD")
    parser.add_argument("--tables", type=_optional(str), default=None, help="validate: layers or tables, comma-separated")
    parser.add_argument("--retrain", type=_optional(str), default=None, help="train: auto, always or never")
    parser.add_argument("--sample-users", type=_optional(int), default=None, help="train: at most this many users")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = {k: v for k, v in vars(args).items() if k not in ("step", "date")}
    try:
        result = run_step(args.step, args.date, **params)
    except PortraitError as exc:
        print(f"portrait: error: {one_line(exc)}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(json.dumps(result, default=str), flush=True)


def one_line(exc: BaseException, limit: int = 500) -> str:
    """The first lines of an error message as one line, for logs and callbacks."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " | ".join(lines[:2]) if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


if __name__ == "__main__":
    main()
