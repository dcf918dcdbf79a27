"""profile_daily: collect, clean, features, train, score and publish, each layer validated before use.

collect -> validate_bronze -> clean -> validate_silver -> features -> validate_gold -> train -> score
-> validate_staging -> publish: a failed validation stops everything after it, so publish.* keeps the
previous good day.

Wiring only. Every task is one call into jobs.runner; nothing heavy is imported at parse time.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import Param, dag, task

DEFAULT_ARGS = {
    "owner": "portrait",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=20),
    "execution_timeout": dt.timedelta(hours=2),
}


@dag(
    dag_id="profile_daily",
    description="Daily user profiles and recommendations from shop events",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["portrait", "profile", "daily"],
    params={
        "collect_days": Param(
            None, type=["null", "integer"], minimum=1, maximum=400,
            description="Days ending at the logical date to (re)load; empty = the profile's pipeline.collect_days",
        ),
    },
    doc_md=__doc__,
)
def profile_daily():
    @task
    def collect(**context):
        from jobs.runner import run_step

        return run_step("collect", context["ds"], collect_days=context["params"].get("collect_days"))

    @task
    def clean(**context):
        from jobs.runner import run_step

        return run_step("clean", context["ds"], collect_days=context["params"].get("collect_days"))

    @task
    def features(**context):
        from jobs.runner import run_step

        return run_step("features", context["ds"])

    @task
    def train(**context):
        from jobs.runner import run_step

        return run_step("train", context["ds"])

    @task
    def score(**context):
        from jobs.runner import run_step

        return run_step("score", context["ds"])

    @task
    def publish(**context):
        from jobs.runner import run_step

        return run_step("publish", context["ds"])

    @task
    def validate_bronze(**context):
        from jobs.runner import run_step

        return run_step("validate", context["ds"], tables="bronze")

    @task
    def validate_silver(**context):
        from jobs.runner import run_step

        return run_step("validate", context["ds"], tables="silver")

    @task
    def validate_gold(**context):
        from jobs.runner import run_step

        return run_step("validate", context["ds"], tables="gold")

    @task
    def validate_staging(**context):
        from jobs.runner import run_step

        return run_step("validate", context["ds"], tables="staging")

    (collect() >> validate_bronze() >> clean() >> validate_silver() >> features() >> validate_gold()
     >> train() >> score() >> validate_staging() >> publish())


profile_daily()
