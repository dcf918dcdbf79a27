"""`portrait`: the one command-line entry point for people who run Portrait."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.common.errors import ConfigError, PortraitError

app = typer.Typer(
    help="Portrait: user profiles and recommendations from shop events (Spark + Delta + Airflow + Keras + MLflow).\n\n"
    "The profile comes from PORTRAIT_ENV (local, ci, cluster; default local); any setting can be "
    "overridden with PORTRAIT__SECTION__KEY=value.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


from portrait.quality_cli import quality_app  # noqa: E402  (light: imports jobs.quality lazily)

app.add_typer(quality_app, name="quality", help="Validate tables with the GX suites; build the quality report.")

from portrait.datasets_cli import datasets_app  # noqa: E402  (light: imports portrait.datasets lazily)

app.add_typer(datasets_app, name="datasets", help="Public real datasets: list them, land one (docs/datasets.md).")


@app.callback()
def _options(
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="lay conf/datasets/NAME.yaml over the profile (as PORTRAIT_DATASET=NAME does): "
                                "its landing zone, lakehouse, MLflow store, dates and sources"),
) -> None:
    if dataset:
        from jobs.common.config import ENV_DATASET, read_dataset, project_root

        read_dataset(project_root(), dataset)  # an unknown name fails here, listing the known ones
        os.environ[ENV_DATASET] = dataset  # also reaches the Airflow and spark-submit processes started from here


def _config():
    from jobs.common.config import load_config

    return load_config()


def _fail(message: str) -> None:
    typer.secho(f"portrait: error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _date(value: Optional[str], what: str = "--date") -> Optional[dt.date]:
    from jobs.common.dates import parse_date

    return None if value is None else parse_date(value, what)


@app.command()
def generate(
    users: Optional[int] = typer.Option(None, help="number of users (default: generate.users in the profile)"),
    days: Optional[int] = typer.Option(None, help="number of days of events"),
    seed: Optional[int] = typer.Option(None, help="random seed; the same seed gives the same files"),
    start_date: Optional[str] = typer.Option(None, help="first day, YYYY-MM-DD"),
    # Annotated, so that `demo` can call this function without naming them.
    dirty: Annotated[str, typer.Option(help="plant defects in known numbers: none, light or heavy "
                                            "(the truth goes to <ground_truth_dir>/dirty_manifest.json)")] = "none",
    file_format: Annotated[str, typer.Option("--format", help="landing files as jsonl, csv or parquet")] = "jsonl",
    gzip: Annotated[bool, typer.Option("--gzip", help="gzip the jsonl or csv files (.gz)")] = False,
    social_edges: Annotated[bool, typer.Option("--social-edges", help="also write social_edges/ (follow, share_to)")
                            ] = False,
) -> None:
    """Write a deterministic sample landing zone (and its planted ground truth)."""
    from jobs.generate import generate as run_generate

    cfg = _config()
    start = _date(start_date or str(cfg.get("generate.start_date")), "--start-date")
    summary = run_generate(
        Path(cfg.landing_zone), Path(cfg.ground_truth_dir),
        users=users or int(cfg.get("generate.users")), days=days or int(cfg.get("generate.days")),
        seed=int(cfg.get("generate.seed")) if seed is None else seed, start_date=start,
        dirty=dirty, file_format=file_format, gzip=gzip, social_edges=social_edges,
    )
    typer.echo(f"wrote {summary.events:,} events of {summary.users:,} users and {summary.items:,} items "
               f"for {len(summary.events_per_day)} days to {cfg.landing_zone}")
    if summary.dirty != "none":
        typer.echo(f"planted {sum(summary.defects.values()):,} defects ({summary.dirty}): "
                   f"{summary.paths['dirty_manifest']}")
    typer.echo(f"ground truth (never read by the pipeline): {cfg.ground_truth_dir}")


@app.command("run-step")
def run_step_cmd(
    step: str = typer.Argument(..., help="one of jobs.runner.STEPS: collect, clean, features, sequences, feature_report, train, score, validate, publish"),
    date: str = typer.Option(..., "--date", help="logical date, YYYY-MM-DD"),
    collect_days: Optional[int] = typer.Option(None, help="collect/clean: days ending at --date to (re)load"),
) -> None:
    """Run one pipeline step for a date in this process (what an Airflow task does)."""
    from jobs.runner import run_step

    result = run_step(step, date, collect_days=collect_days)
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
def run(
    date: str = typer.Option(..., "--date", help="logical date, YYYY-MM-DD"),
    collect_days: Optional[int] = typer.Option(None, help="days ending at --date to (re)load"),
    start: Optional[str] = typer.Option(None, "--resume", help="start at this task (an Airflow task id, e.g. "
                                        "validate_silver or features) instead of collect: re-run from a failed step"),
) -> None:
    """Run every step for a date in this process, in DAG order with its validations, without Airflow."""
    _run_pipeline(date, start, "--resume", collect_days=collect_days)


def _first_task(start: Optional[str], option: str) -> int:
    """The PIPELINE index of task id `start` (None = collect); an unknown one names the tasks."""
    from jobs.runner import PIPELINE, task_id

    tasks = [task_id(step, params) for step, params in PIPELINE]
    if start is not None and start not in tasks:
        raise ConfigError(f"{option} {start}: not a task of the pipeline; use one of {', '.join(tasks)}")
    return tasks.index(start) if start else 0


def _run_pipeline(date: str, start: Optional[str], option: str, **run_params) -> None:
    """Every PIPELINE task from `start` (a task id; None = collect) for `date`, one summary line each."""
    from jobs.runner import PIPELINE, run_step

    for step, params in PIPELINE[_first_task(start, option):]:
        result = run_step(step, date, **run_params, **params)
        tables = ", ".join(f"{t['table']}={t['rows_out']:,}" for t in result["tables"])
        typer.echo(f"{step} ({result['details']['seconds']}s): {tables or result['details']}")


@app.command()
def backfill(
    first: str = typer.Option(..., "--from", help="first day to load, YYYY-MM-DD"),
    last: str = typer.Option(..., "--to", help="last day to load and the day scored and published, YYYY-MM-DD"),
    resume: Optional[str] = typer.Option(None, "--resume", help="start at this task (e.g. features) instead of "
                                         "collect: re-run a failed backfill from its failed step"),
    retrain: Optional[str] = typer.Option(None, help="train: auto (default), always or never"),
) -> None:
    """Load a history in one run: collect and clean FROM..TO as one Spark job each, then validate, features, train (which writes the gold snapshots of the dates it trains on), score and publish TO.

    Every day of the range lands in bronze and silver, counted in ops.run_audit under TO; only TO is scored and published. For a published earlier day, run `portrait run --date DAY` afterwards. The same as a DAG run for TO with reload_from FROM; docs/operations.md compares it with Airflow's backfill, one run per day.
    """
    start, end = _date(first, "--from"), _date(last, "--to")
    if start > end:
        raise ConfigError(f"--from {start} is after --to {end}; the range must run forwards (--from <= --to)")
    _first_task(resume, "--resume")
    typer.echo(f"backfill {start}..{end}: {(end - start).days + 1} days loaded, {end} published")
    _run_pipeline(end.isoformat(), resume, "--resume", reload_from=start.isoformat(), retrain=retrain)


@app.command()
def evaluate(
    dataset: str = typer.Option(..., "--dataset", help="a dataset of `portrait datasets list`, e.g. movielens-latest-small"),
    protocol: str = typer.Option(..., "--protocol", help="random (per-user 75/25, fixed seed) or temporal (last days)"),
    leave_last_out: bool = typer.Option(False, "--leave-last-out",
                                        help="temporal: hold out each user's last interaction instead of the last days"),
    test_days: Optional[int] = typer.Option(None, help="temporal: days held out after the cut-off (evaluate.test_days)"),
    rescore: bool = typer.Option(False, "--rescore", help="score a finished evaluation's run again, without "
                                 "landing or running the pipeline"),
    baselines_only: bool = typer.Option(False, "--baselines-only", help="no landing, no pipeline: only the "
                                        "baselines (temporal: BG/NBD and recency for churn), trained on the "
                                        "training interactions as the dataset gives them"),
) -> None:
    """Split a dataset before it lands, run the real pipeline on the training part, and score
    publish.recommendations and four baselines (popularity, co-occurrence, ALS, EASE) on the held-out part.

    temporal also scores publish.user_profile.churn_risk of the run date, BG/NBD (lifetimes) and recency
    against "no purchase in model.churn_horizon_days" (AUC, ECE, calibration plot); the held-out days must
    cover that horizon. A one-item dataset (cdnow) skips recommendations and holds out the horizon.
    Both protocols score publish.user_profile.interest_tags, the user's own top categories and the popular
    ones against the categories of the held-out items (top evaluate.tags.k: precision, recall, F1, hit rate).

    Prints the table (P/R/nDCG/MAP@k, coverage, share of already-seen items) and logs it to an MLflow run
    of the experiment evaluate.experiment; everything else lands under evaluate.work_dir.
    """
    from jobs.common.config import load_config
    from portrait.evaluate import evaluate as run_evaluation

    extra = {}
    if leave_last_out:
        extra["PORTRAIT__EVALUATE__LEAVE_LAST_OUT"] = "true"
    if test_days is not None:
        extra["PORTRAIT__EVALUATE__TEST_DAYS"] = str(test_days)
    run_evaluation(dataset, protocol, load_config(environ={**os.environ, **extra}), echo=typer.echo, rescore=rescore,
                   baselines_only=baselines_only)


@app.command()
def status(date: Optional[str] = typer.Option(None, "--date", help="also count rows of this date")) -> None:
    """Rows and versions of every lakehouse table, and the champion model."""
    from portrait.status import format_status, lakehouse_status

    cfg = _config()
    on = _date(date)
    typer.echo(f"profile {cfg.profile} · lakehouse {cfg.lakehouse_root}")
    typer.echo(format_status(lakehouse_status(cfg, on), on))
    typer.echo(_model_line(cfg))


def _model_line(cfg) -> str:
    from ml.registry import CHAMPION, champion_version, configure_mlflow, model_name

    configure_mlflow(cfg)
    version = champion_version(cfg)
    if version is None:
        return f"model: no champion yet in {cfg.mlflow_tracking_uri}"
    return (f"model {model_name(cfg)} @{CHAMPION}: version {version.version}, run {version.run_id} "
            f"({cfg.mlflow_tracking_uri})")


@app.command()
def sql(
    query: str = typer.Argument(..., help='e.g. "SELECT segment_name, count(*) FROM publish.user_profile GROUP BY 1"'),
    fmt: str = typer.Option("table", "--format", help="table, csv, or json (one object per line)"),
    as_of_version: list[str] = typer.Option([], "--as-of-version", metavar="TABLE=VERSION",
                                            help="read a table as of a Delta version (repeatable)"),
    limit: int = typer.Option(1000, help="at most this many rows; 0 = all"),
    engine: str = typer.Option("spark", help="spark (Spark SQL) or duckdb (delta-rs + DuckDB, no JVM)"),
) -> None:
    """Query the lakehouse with SQL; every table is there by its catalog name (publish.user_profile)."""
    from jobs.common.errors import ConfigError, PortraitError
    from portrait.sql import duckdb_query, parse_versions, render, spark_query

    try:
        cfg = _config()
        versions = parse_versions(as_of_version)
        if engine == "duckdb":
            frame = duckdb_query(cfg, query, versions)
            frame = frame.head(limit) if limit else frame
        elif engine == "spark":
            from jobs.common.spark import build_spark

            frame = spark_query(build_spark(cfg, app_suffix="sql"), cfg, query, versions, limit or None)
        else:
            raise PortraitError(f"--engine must be spark or duckdb, not '{engine}'")
        typer.echo(render(frame, fmt))
    except PortraitError as exc:
        _fail(str(exc))
    if limit and len(frame) >= limit:
        typer.echo(f"(first {limit} rows; --limit 0 for all)", err=True)


@app.command()
def forget(
    user: str = typer.Option(..., "--user", help="the person's user id as the shop sends it (the raw id)"),
    reason: Optional[str] = typer.Option(None, help="why, recorded in ops.forget_requests"),
    by: Optional[str] = typer.Option(None, "--by", help="who asks; default the login name"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count the person's rows, change nothing"),
) -> None:
    """Remove one person from every layer (Delta DELETE + VACUUM), from never committed files, training
    snapshots and quality reports, and record the request (docs/cleaning.md)."""
    from jobs.forget import run_forget

    for line in run_forget(_config(), user, reason=reason, requested_by=by, dry_run=dry_run).lines():
        typer.echo(line)


@app.command()
def migrate(
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would change, change nothing"),
) -> None:
    """Bring an older lakehouse to the current column types (rating bigint -> double; docs/cleaning.md)."""
    from jobs.common.migrations import migrate_lakehouse
    from jobs.common.spark import build_spark

    try:
        cfg = _config()
        done = migrate_lakehouse(build_spark(cfg, app_suffix="migrate"), cfg, dry_run=dry_run)
    except PortraitError as exc:
        _fail(str(exc))
    if not done:
        typer.echo(f"{cfg.lakehouse_root}: nothing to migrate")
    for table, changes in done.items():
        what = ", ".join(f"{m.column} {m.old_type} -> {m.new_type}" for m in changes)
        typer.echo(f"{table}: {what}" + (" (dry run: not changed)" if dry_run else " (rewritten)"))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def airflow(ctx: typer.Context) -> None:
    """Run the airflow CLI with the profile's AIRFLOW_HOME, DAG folder and database (migrated on first use).

    Example: portrait airflow dags test profile_daily 2026-11-14
    """
    from portrait.airflow_env import airflow_bin, airflow_env, ensure_airflow_db

    env = airflow_env(_config())
    ensure_airflow_db(env)
    raise typer.Exit(subprocess.call([airflow_bin(), *ctx.args], env=env))


@app.command()
def up() -> None:
    """Start Airflow (standalone) and the MLflow UI on 127.0.0.1 and print their URLs and login."""
    from portrait.airflow_env import airflow_env, ensure_airflow_db
    from portrait.services import up as start

    from portrait.status import latest_date

    cfg = _config()
    landing = Path(cfg.landing_zone)
    if "://" not in cfg.landing_zone and not any(landing.glob("events/*")):
        typer.echo(f"the landing zone {landing} is empty: generating the sample data first")
        generate(users=None, days=None, seed=None, start_date=None)
    env = airflow_env(cfg)
    ensure_airflow_db(env)
    for line in start(cfg, env):
        typer.echo(line)
    published = latest_date(cfg, "publish.user_profile")
    if published:
        typer.echo(f"published up to {published}: .venv/bin/portrait sql \"SELECT * FROM publish.user_profile LIMIT 5\"")
    else:
        last = _date(str(cfg.get("generate.start_date"))) + dt.timedelta(days=int(cfg.get("generate.days")) - 1)
        typer.echo(f"nothing published yet: in the Airflow UI unpause profile_daily and trigger it for {last} "
                   f"with reload_from {cfg.get('generate.start_date')} (or run `make demo`); docs/operations.md")
    typer.echo("stop them with: make down")


@app.command()
def down() -> None:
    """Stop what `portrait up` started."""
    from portrait.airflow_env import airflow_env
    from portrait.services import down as stop

    for line in stop(airflow_env(_config())):
        typer.echo(line)


@app.command()
def setup() -> None:
    """Check Java, fetch the Delta jars, create the local secret and the Airflow database."""
    from jobs.common.jars import fetch_jars
    from jobs.common.spark import check_java
    from portrait.airflow_env import airflow_env, ensure_airflow_db

    cfg = _config()
    typer.echo(f"java {check_java()} ok")
    for jar in fetch_jars(cfg):
        typer.echo(f"jar {jar}")
    _ensure_local_secret(cfg)
    env = airflow_env(cfg)
    ensure_airflow_db(env)
    typer.echo(f"airflow home {env['AIRFLOW_HOME']} ok")


def _ensure_local_secret(cfg) -> None:
    """A random key for this checkout only, unless the environment already provides one."""
    import secrets

    env_name = str(cfg.get("privacy.hmac_key_env"))
    if os.environ.get(env_name):
        typer.echo(f"hmac key from ${env_name}")
        return
    path = Path(cfg.location("privacy.hmac_key_file"))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32) + "\n")
        path.chmod(0o600)
        typer.echo(f"created a random hmac key in {path}")
    else:
        typer.echo(f"hmac key file {path}")


@app.command()
def demo(
    users: Optional[int] = typer.Option(None, help="number of users to generate"),
    days: Optional[int] = typer.Option(None, help="days of history to generate and load"),
) -> None:
    """Generate sample data, run profile_daily for its last day with `airflow dags test`, print a summary."""
    from portrait.airflow_env import airflow_bin, airflow_env, ensure_airflow_db
    from portrait.status import format_status, lakehouse_status

    cfg = _config()
    days = days or int(cfg.get("generate.days"))
    generate(users=users, days=days, seed=None, start_date=None)
    last = _date(str(cfg.get("generate.start_date"))) + dt.timedelta(days=days - 1)
    env = airflow_env(cfg)
    ensure_airflow_db(env)
    command = [airflow_bin(), "dags", "test", "profile_daily", last.isoformat(),
               "--conf", json.dumps({"collect_days": days})]
    typer.echo("$ " + " ".join(command))
    log_path = Path(env["AIRFLOW_HOME"]) / "demo-dags-test.log"
    with open(log_path, "w") as log:
        code = subprocess.call(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    state = _print_task_states(log_path)
    # `airflow dags test` may exit 0 for a failed run: the run's own final state decides.
    if code != 0 or state != "success":
        _fail(f"the DAG run failed (exit {code}, state {state or 'unknown'}); the full log is {log_path}")
    typer.echo("")
    typer.echo(format_status(lakehouse_status(cfg, last), last))
    typer.echo(_model_line(cfg))
    typer.echo(f"\nlakehouse: {cfg.lakehouse_root}\nairflow log: {log_path}\n"
               f"try: .venv/bin/portrait status --date {last}   ·   make up  (Airflow and MLflow UIs)")


def _print_task_states(log_path: Path) -> str | None:
    """Echo each step's one-line summary and the run's final state from the airflow log; return that state."""
    import re

    final = None
    for line in log_path.read_text(errors="replace").splitlines():
        step = re.search(r"\] (.+?) \[portrait\]", line)
        if step:
            typer.echo(f"  task {step.group(1)}")
        elif "DagRun Finished" in line:
            state = re.search(r"state=(\w+)", line)
            final = state.group(1) if state else None
            typer.echo(f"  DAG run finished: {final or line.strip()[-120:]}")
    return final


def main() -> None:
    try:
        app()
    except PortraitError as exc:
        typer.secho(f"portrait: error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
