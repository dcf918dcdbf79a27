"""profile_consumers: an example downstream DAG, run whenever profile_daily has published both tables.

It schedules on the Assets publish.user_profile and publish.recommendations (updated by profile_daily's
publish task) and reports the published day's row counts, read with delta-rs (no Spark): the place to
hang exports, dashboards refreshes or CRM syncs that must only ever see validated data.

Wiring only; the work is portrait.status.published_counts.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from portrait.dag_support import config, published_assets

CFG = config()


@dag(
    dag_id="profile_consumers",
    description="Example consumer of the published profile tables (Airflow Assets)",
    schedule=published_assets(CFG),  # both assets updated since the last run
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    default_args={"owner": "portrait", "retries": 1},
    tags=["portrait", "consumer", "assets"],
    doc_md=__doc__,
)
def profile_consumers():
    @task
    def report_published_counts(**context):
        from portrait.status import published_counts_for_events

        return published_counts_for_events(context["triggering_asset_events"])

    report_published_counts()


profile_consumers()
