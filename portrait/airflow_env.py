"""The environment that runs Airflow on the embedded default: a project-local home and SQLite database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from jobs.common.config import ENV_HOME, ENV_PROFILE, Config
from jobs.common.errors import EnvironmentSetupError


def airflow_env(cfg: Config, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables already set by the user win; the rest come from the profile."""
    env = dict(os.environ if base is None else base)
    home = Path(env.get("AIRFLOW_HOME") or cfg.location("airflow.home"))
    defaults = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(cfg.root / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(cfg.get("airflow.parallelism", 4)),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        ENV_PROFILE: cfg.profile,
        ENV_HOME: str(cfg.root),
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    # airflow standalone starts its components as `airflow ...` from PATH: make it this venv's.
    bin_dir = str(Path(sys.executable).parent)
    if env.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return env


def airflow_bin() -> str:
    candidate = Path(sys.executable).with_name("airflow")
    if not candidate.exists():
        raise EnvironmentSetupError(f"airflow is not installed next to {sys.executable}; run `make setup`")
    return str(candidate)


def ensure_airflow_db(env: Mapping[str, str]) -> None:
    """Create or upgrade the metadata database once; cheap to call again."""
    marker = Path(env["AIRFLOW_HOME"]) / ".portrait-db-migrated"
    if marker.exists():
        return
    done = subprocess.run([airflow_bin(), "db", "migrate"], env=dict(env), capture_output=True, text=True)
    if done.returncode != 0:
        raise EnvironmentSetupError("`airflow db migrate` failed:\n" + (done.stdout + done.stderr)[-2000:])
    marker.write_text("ok\n")
