"""Run one pipeline step for a date: the single entry point that the DAG, the CLI and spark-submit share."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import time
from typing import Any

from jobs.common.config import Config, load_config
from jobs.common.dates import parse_date
from jobs.common.errors import ConfigError

log = logging.getLogger("portrait")

# step name -> module with run(spark, cfg, run_date, **params); the order is the DAG's order.
STEPS: dict[str, str] = {
    "collect": "jobs.collect",
    "clean": "jobs.clean",
    "features": "jobs.features",
    "train": "ml.train",
    "score": "jobs.score",
    "validate": "jobs.quality",
    "publish": "jobs.publish",
}
# The daily order, validation included, as the DAG wires it; `portrait run` follows it without Airflow.
PIPELINE: tuple[tuple[str, dict[str, str]], ...] = (
    ("collect", {}), ("validate", {"tables": "bronze"}), ("clean", {}), ("validate", {"tables": "silver"}),
    ("features", {}), ("validate", {"tables": "gold"}), ("train", {}), ("score", {}),
    ("validate", {"tables": "staging"}), ("publish", {}),
)
# Parameters a step accepts besides the date.
STEP_PARAMS: dict[str, tuple[str, ...]] = {
    "collect": ("collect_days",), "clean": ("collect_days",), "validate": ("tables",),
}


def run_step(step: str, run_date: Any, cfg: Config | None = None, **params: Any) -> dict[str, Any]:
    """Run `step` for `run_date`; returns the StepResult as a dict (small, fit for XCom)."""
    if step not in STEPS:
        raise ConfigError(f"unknown step '{step}'; steps are: {', '.join(STEPS)}")
    cfg = cfg or load_config()
    day = parse_date(run_date, "run date")
    accepted = {k: v for k, v in params.items() if k in STEP_PARAMS.get(step, ()) and v is not None}
    if "collect_days" in STEP_PARAMS.get(step, ()) and "collect_days" not in accepted:
        accepted["collect_days"] = int(cfg.get("pipeline.collect_days", 1))

    module = importlib.import_module(STEPS[step])
    if hasattr(module, "preflight"):
        # Cheap checks first: a missing input should not cost a Spark start to report.
        module.preflight(cfg, day, **accepted)

    from jobs.common.spark import build_spark

    spark = build_spark(cfg)
    started = time.monotonic()
    result = module.run(spark, cfg, day, **accepted)
    result.details["seconds"] = round(time.monotonic() - started, 1)
    log.info("%s in %.1fs", result.summary(), result.details["seconds"])
    return result.to_dict()


def main(argv: list[str] | None = None) -> None:
    """`python -m jobs.runner STEP DATE` — how spark-submit runs a step on a cluster."""
    parser = argparse.ArgumentParser(prog="python -m jobs.runner", description=main.__doc__)
    parser.add_argument("step", choices=list(STEPS))
    parser.add_argument("date", help="logical date, YYYY-MM-DD")
    parser.add_argument("--collect-days", type=int, default=None)
    parser.add_argument("--tables", default=None, help="validate: layers or tables, comma-separated")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(run_step(args.step, args.date, collect_days=args.collect_days, tables=args.tables), default=str))


if __name__ == "__main__":
    main()
