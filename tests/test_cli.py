"""Bad invocations stop with one line that says what to do, never a stack trace."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = str(Path(sys.executable).with_name("portrait"))


def _portrait(*args, env_extra=None, env=None):
    env = dict(env if env is not None else os.environ)
    env.update(env_extra or {})
    return subprocess.run([PORTRAIT, *args], capture_output=True, text=True, env=env, timeout=120, cwd=REPO)


def _one_error_line(done):
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_unknown_profile():
    line = _one_error_line(_portrait("status", env_extra={"PORTRAIT_ENV": "prod"}))
    assert line.startswith("portrait: error: unknown profile 'prod'") and "ci, cluster, local" in line


def test_missing_landing_zone(tmp_path):
    done = _portrait("run-step", "collect", "--date", "2026-11-05",
                     env_extra={"PORTRAIT__LANDING_ZONE": str(tmp_path / "nowhere"),
                                "PORTRAIT__LAKEHOUSE_ROOT": str(tmp_path / "lake")})
    line = _one_error_line(done)
    assert f"no events for 2026-11-05 at {tmp_path}/nowhere/events/event_date=2026-11-05" in line
    assert "portrait generate" in line


def test_no_java(tmp_path):
    # A PATH with the venv but no java, and a JAVA_HOME that holds nothing.
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env.update({"PATH": str(Path(sys.executable).parent), "JAVA_HOME": str(tmp_path / "no-jdk")})
    line = _one_error_line(_portrait("setup", env=env))
    assert "no Java found: Spark 4.2 needs Java 17 or 21" in line


def test_bad_date_and_unknown_step():
    assert "is not a date; use YYYY-MM-DD" in _one_error_line(_portrait("run-step", "clean", "--date", "14/11/2026"))
    assert "unknown step 'cleanup'" in _one_error_line(_portrait("run-step", "cleanup", "--date", "2026-11-14"))


def test_run_from_an_unknown_task_names_the_tasks():
    line = _one_error_line(_portrait("run", "--date", "2026-11-14", "--resume", "validate_gold_twice"))
    assert "--resume validate_gold_twice: not a task of the pipeline" in line
    assert "collect, validate_bronze, clean, validate_silver, features" in line and line.endswith("publish")


def test_help_lists_the_commands():
    done = _portrait("--help")
    assert done.returncode == 0
    for command in ("generate", "run-step", "status", "demo", "airflow"):
        assert command in done.stdout


def test_backfill_refuses_a_backwards_range_a_bad_date_and_an_unknown_task():
    line = _one_error_line(_portrait("backfill", "--from", "2026-11-05", "--to", "2026-11-01"))
    assert line == "portrait: error: --from 2026-11-05 is after --to 2026-11-01; the range must run forwards (--from <= --to)"
    assert "--to '14/11/2026' is not a date; use YYYY-MM-DD" in _one_error_line(
        _portrait("backfill", "--from", "2026-11-01", "--to", "14/11/2026"))
    line = _one_error_line(_portrait("backfill", "--from", "2026-11-01", "--to", "2026-11-05", "--resume", "scoring"))
    assert "--resume scoring: not a task of the pipeline" in line and "validate_silver" in line
