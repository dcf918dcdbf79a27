"""The table catalog: every Delta table of the lakehouse, named once as layer.table."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.common.config import Config
from jobs.common.errors import ConfigError


@dataclass(frozen=True)
class TableSpec:
    name: str                      # layer.table
    partition_by: tuple[str, ...]  # the date column a run replaces
    keys: tuple[str, ...]          # unique together within a partition
    description: str

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def table(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def date_column(self) -> str:
        return self.partition_by[0]


_SPECS = [
    TableSpec("bronze.events", ("event_date",), ("_source_file", "_line"),
              "Every landed event record as it came, typed where it parses, with source file, line and ingest time."),
    TableSpec("bronze.users", ("snapshot_date",), ("user_id",),
              "User master data as landed, including raw PII; never read past the silver step."),
    TableSpec("bronze.items", ("snapshot_date",), ("item_id",), "Item master data as landed."),
    TableSpec("bronze.social_edges", ("event_date",), ("_source_file", "_line"),
              "Landed social edges (follow, share_to) between raw user ids; never read past the silver step."),
    TableSpec("bronze.quarantine", ("event_date",), ("step", "_source_file", "_line"),
              "Landed records that could not be used, with the step, file, line and reason."),
    TableSpec("silver.events", ("event_date",), ("event_id",),
              "Deduplicated, typed, UTC events with pseudonymous user keys; partitioned by the UTC date of ts, "
              "a rerun replaces the rows of its landed_date."),
    TableSpec("silver.users", ("snapshot_date",), ("user_key",),
              "Users without direct identifiers: pseudonymous key and generalised demographics."),
    TableSpec("silver.items", ("snapshot_date",), ("item_id",), "Items with their category path and tag-level categories, read as the catalogue settings say."),
    TableSpec("silver.user_contacts", ("snapshot_date",), ("user_key",),
              "Keyed HMAC pseudonyms of each user's email and phone; never the contact itself."),
    TableSpec("silver.held_events", ("landed_date",), ("event_id",),
              "Events waiting for late master data (unknown user or item), with their status; see docs/cleaning.md."),
    TableSpec("silver.user_flags", ("landed_date",), ("user_key",),
              "Per user and landing day: events, purchases, spend, their robust z-scores and the outlier flag."),
    TableSpec("silver.social_edges", ("event_date",), ("src_key", "dst_key", "edge_type", "ts"),
              "Follow and share-to edges between pseudonymous users; a rerun replaces its landing dates."),
    TableSpec("gold.user_features", ("as_of_date",), ("user_key",),
              "One feature vector per user per as-of date (events up to the end of that day)."),
    TableSpec("gold.item_features", ("as_of_date",), ("item_id",),
              "Item popularity, conversion and price position per as-of date."),
    TableSpec("gold.category_vocab", ("as_of_date",), ("category",),
              "Per as-of date: the tag-level categories that interest tags and affinities use, most used first, "
              "capped with an `other` bucket (jobs/common/catalogue.py)."),
    TableSpec("gold.user_feature_state", ("as_of_date",), ("user_key",),
              "Per active user and as-of date: window totals and decayed sums the next day's features continue from."),
    TableSpec("gold.user_sequences", ("as_of_date",), ("user_key",),
              "Each user's last N item interactions up to the as-of date, in time order, for the model."),
    TableSpec("staging.user_profile", ("as_of_date",), ("user_key",),
              "The scored profile of a day before validation; publish.user_profile gets it only if it passes."),
    TableSpec("staging.recommendations", ("as_of_date",), ("user_key", "rank"),
              "Scored recommendations of a day before validation."),
    TableSpec("publish.user_profile", ("as_of_date",), ("user_key",),
              "The daily user profile that analysts query."),
    TableSpec("publish.recommendations", ("as_of_date",), ("user_key", "rank"),
              "Top-K ranked items per user per day, with a reason."),
    TableSpec("ops.run_audit", ("run_date",), ("step", "table_name"),
              "Row accounting of every step and table for each run date."),
    TableSpec("ops.feature_report", ("run_date",), ("feature",),
              "Per run date and feature: relevance to next week's labels, near-constant and correlation flags, keep/drop."),
    TableSpec("ops.forget_requests", ("request_date",), ("request_id",),
              "Every `portrait forget` request: the pseudonym, when, who and why, and rows removed per table."),
    TableSpec("ops.validation_results", ("run_date",), ("table_name", "check_id"),
              "One row per check of every validated table and date: severity, outcome, observed value, bad rows."),
    TableSpec("ops.field_profile", ("run_date",), ("table_name", "column_name"),
              "Per validated table, date and contract field: the share of rows with a value, and whether the "
              "dataset has the field at all (present, missing_today, absent_in_dataset)."),
]

TABLES: dict[str, TableSpec] = {spec.name: spec for spec in _SPECS}


def spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise ConfigError(f"unknown table '{name}'; known tables: {', '.join(TABLES)}") from None


def table_path(cfg: Config, name: str) -> str:
    table = spec(name)
    return f"{cfg.lakehouse_root.rstrip('/')}/{table.layer}/{table.table}"
