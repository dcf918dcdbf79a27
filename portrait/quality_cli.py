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
    table: str = typer.Option(None, "--table",
                              help="layer.table (silver.events), a layer (silver), or several, comma-separated"),
    all_tables: bool = typer.Option(False, "--all", help="every table of the bronze, silver, gold and publish layers"),
    date: str = typer.Option(..., "--date", help="the partition to check, YYYY-MM-DD"),
    record: bool = typer.Option(True, "--record/--no-record", help="keep the results in ops.validation_results"),
) -> None:
    """Validate tables' partitions for a date; exit 1 when an error-severity check fails, 0 when all pass.

    Warnings are printed but never change the exit code; 2 means the check could not run.
    """
    from jobs.common.config import load_config
    from jobs.common.dates import parse_date
    from jobs.common.errors import ConfigError
    from jobs.common.spark import build_spark
    from jobs.quality import ALL_LAYERS, build_docs, expand_tables, validate
    from jobs.quality import record as record_results

    try:
        if bool(table) == all_tables:
            raise ConfigError("name the tables with --table (tables or layers, comma-separated) or give --all")
        cfg = load_config()
        day = parse_date(date, "--date")
        # Typos and tables without a suite fail here, before Spark starts.
        names = expand_tables(ALL_LAYERS if all_tables else table, cfg.root)
        spark = build_spark(cfg, app_suffix="quality")
        reports = [validate(spark, cfg, name, day) for name in names]
        if record:
            record_results(spark, cfg, reports)
        folder = build_docs(cfg, reports)
    except PortraitError as exc:
        _error(str(exc))
        return
    for report in reports:
        typer.echo(report.summary())
    failed = [r for r in reports if not r.success]
    if len(reports) > 1:
        warned = sum(len(r.warnings) for r in reports)
        typer.echo(f"{len(reports) - len(failed)} of {len(reports)} tables passed for {day}"
                   + (f"; failed: {', '.join(r.table for r in failed)}" if failed else "")
                   + (f"; {warned} warnings" if warned else ""))
        typer.echo(f"reports: {folder / 'index.html'}")
    else:
        typer.echo(f"report: {folder / reports[0].table / (day.isoformat() + '.html')}")
    if failed:
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
