"""`portrait quality`: validate a table's partition for a date, and find the quality docs."""

from __future__ import annotations

import typer

from jobs.common.errors import PortraitError

quality_app = typer.Typer(
    help="Data quality: run a table's expectation suite for a date; show where the reports are.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _error(message: str) -> None:
    typer.secho(f"portrait: error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@quality_app.command()
def check(
    table: str = typer.Option(..., "--table", help="layer.table, for example silver.events"),
    date: str = typer.Option(..., "--date", help="the partition to check, YYYY-MM-DD"),
    record: bool = typer.Option(True, "--record/--no-record", help="keep the results in ops.validation_results"),
) -> None:
    """Validate one table's partition; exit 1 when an error-severity check fails, 0 when all pass."""
    from jobs.common.catalog import spec
    from jobs.common.config import load_config
    from jobs.common.dates import parse_date
    from jobs.common.errors import ConfigError
    from jobs.common.spark import build_spark
    from jobs.quality import build_docs, suite_for, suite_path, validate
    from jobs.quality import record as record_results

    try:
        cfg = load_config()
        day = parse_date(date, "--date")
        spec(table)  # typos and tables without a suite fail here, before Spark starts
        suite = suite_path(suite_for(table, cfg.root), cfg.root)
        if not suite.is_file():
            raise ConfigError(f"{table} has no expectation suite: {suite} does not exist")
        spark = build_spark(cfg, app_suffix="quality")
        report = validate(spark, cfg, table, day)
        if record:
            record_results(spark, cfg, report)
        folder = build_docs(cfg, [report])
    except PortraitError as exc:
        _error(str(exc))
        return
    typer.echo(report.summary())
    typer.echo(f"report: {folder / report.table / (day.isoformat() + '.html')}")
    if not report.success:
        raise typer.Exit(code=1)


@quality_app.command()
def docs() -> None:
    """Rebuild the index of the quality reports and print their folder."""
    from jobs.common.config import load_config
    from jobs.quality import build_docs

    try:
        folder = build_docs(load_config(), [])
    except PortraitError as exc:
        _error(str(exc))
        return
    typer.echo(str(folder))
