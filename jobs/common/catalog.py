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
    TableSpec("bronze.events", ("event_date",), ("_source_file", "_raw"),
              "Every landed event line as it came, typed where it parses, with source file and ingest time."),
    TableSpec("bronze.users", ("snapshot_date",), ("user_id",),
              "User master data as landed, including raw PII; never read past the silver step."),
    TableSpec("bronze.items", ("snapshot_date",), ("item_id",), "Item master data as landed."),
    TableSpec("bronze.quarantine", ("event_date",), ("_source_file", "_raw"),
              "Landed lines that could not be used, with the reason."),
    TableSpec("silver.events", ("event_date",), ("event_id",),
              "Deduplicated, typed, UTC events with pseudonymous user keys."),
    TableSpec("silver.users", ("snapshot_date",), ("user_key",),
              "Users without direct identifiers: pseudonymous key and generalised demographics."),
    TableSpec("silver.items", ("snapshot_date",), ("item_id",), "Items mapped onto the taxonomy."),
    TableSpec("gold.user_features", ("as_of_date",), ("user_key",),
              "One feature vector per user per as-of date (events up to the end of that day)."),
    TableSpec("gold.item_features", ("as_of_date",), ("item_id",),
              "Item popularity, conversion and price position per as-of date."),
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
    TableSpec("ops.validation_results", ("run_date",), ("table_name", "check_id"),
              "One row per check of every validated table and date: severity, outcome, observed value, bad rows."),
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
