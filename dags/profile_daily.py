"""profile_daily: collect, clean, features, train, score and publish, each layer validated before use.

collect -> validate_bronze -> clean -> validate_silver -> features -> validate_gold -> train -> score
-> validate_staging -> publish: a failed validation stops everything after it, so publish.* keeps the
previous good day. The run for day D starts when D is over (a daily data interval) and processes D.

Trigger form: `collect_days` or `reload_from` (the range collect and clean reload), `retrain`
(auto | always | never), `sample_users` (train on a sample). publish updates the Assets
publish.user_profile and publish.recommendations, which downstream DAGs schedule on
(dags/profile_consumers.py). A long history: one run for its last day with reload_from (collect and clean
load the range as one job each; `portrait backfill` without Airflow). Published days for a range:
`airflow backfill create --dag-id profile_daily --from-date ...` (one run per day; docs/operations.md).

Wiring only: the steps and their order come from jobs.runner.PIPELINE (a new step is a line there);
airflow.execution in the profile picks in-process tasks (local) or spark-submit against spark.master
(spark_submit). Nothing heavy is imported at parse time.
"""

from __future__ import annotations

from airflow.sdk import chain, dag, task
from airflow.sdk import CronDataIntervalTimetable

from jobs.runner import PIPELINE, task_id
from portrait.dag_support import (config, default_args, execution_mode, published_assets, schedule_bounds,
                                  task_timeout, trigger_params)

CFG = config()
START, END = schedule_bounds(CFG)


@task
def step(name: str, fixed: dict, **context):
    from portrait.dag_support import run_task

    return run_task(name, context, **fixed)


@dag(
    dag_id="profile_daily",
    description="Daily user profiles and recommendations from shop events",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=START,
    end_date=END,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(CFG),
    tags=["portrait", "profile", "daily"],
    params=trigger_params(),
    doc_md=__doc__,
)
def profile_daily():
    tasks = []
    for name, fixed in PIPELINE:
        outlets = published_assets(CFG) if name == "publish" else []
        settings = {"task_id": task_id(name, fixed), "outlets": outlets, "execution_timeout": task_timeout(CFG, name)}
        if execution_mode(CFG) == "spark_submit":
            from portrait.spark_submit import PortraitSparkSubmitOperator

            tasks.append(PortraitSparkSubmitOperator(step=name, fixed=fixed, cfg=CFG, **settings))
        else:
            tasks.append(step.override(**settings)(name, fixed))
    chain(*tasks)


profile_daily()
