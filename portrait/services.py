"""`portrait up` / `portrait down`: Airflow standalone and the MLflow UI on this machine, for people."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from jobs.common.config import Config
from jobs.common.errors import EnvironmentSetupError


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    health_url: str
    ui_url: str


def services(cfg: Config, env: dict[str, str], host: str = "127.0.0.1",
             airflow_port: int = 8080, mlflow_port: int = 5000) -> list[Service]:
    from ml.registry import configure_mlflow

    configure_mlflow(cfg)  # creates the SQLite store and experiment so the UI opens on something
    bin_dir = Path(sys.executable).parent
    root = cfg.location("mlflow.artifact_root")
    artifacts = root if "://" in root else Path(root).as_uri()
    env["AIRFLOW__API__PORT"] = str(airflow_port)
    env["AIRFLOW__API__HOST"] = host
    return [
        Service("airflow", [str(bin_dir / "airflow"), "standalone"],
                f"http://{host}:{airflow_port}/api/v2/monitor/health", f"http://{host}:{airflow_port}"),
        Service("mlflow", [str(bin_dir / "mlflow"), "server", "--backend-store-uri", cfg.mlflow_tracking_uri,
                           "--default-artifact-root", artifacts, "--host", host, "--port", str(mlflow_port),
                           "--workers", "1"],
                f"http://{host}:{mlflow_port}/health", f"http://{host}:{mlflow_port}"),
    ]


def _pid_file(env: dict[str, str], name: str) -> Path:
    return Path(env["AIRFLOW_HOME"]) / f"{name}.pid"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def up(cfg: Config, env: dict[str, str], wait_s: float = 240.0) -> list[str]:
    """Start what is not running yet, wait until each answers its health check, return report lines."""
    lines = []
    for service in services(cfg, env):
        pid_file = _pid_file(env, service.name)
        if _healthy(service.health_url):
            lines.append(f"{service.name}: already running at {service.ui_url}")
            continue
        log = open(Path(env["AIRFLOW_HOME"]) / f"{service.name}.log", "ab")
        process = subprocess.Popen(service.command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=cfg.root)
        pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + wait_s
        while not _healthy(service.health_url):
            if process.poll() is not None:
                raise EnvironmentSetupError(f"{service.name} exited with {process.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                raise EnvironmentSetupError(f"{service.name} did not become healthy in {wait_s:.0f}s; see {log.name}")
            time.sleep(2)
        lines.append(f"{service.name}: {service.ui_url}  (log {log.name})")
    passwords = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    if passwords.exists():
        users = json.loads(passwords.read_text())
        lines.append("airflow login: " + ", ".join(f"{user} / {password}" for user, password in users.items()))
    return lines


def down(env: dict[str, str]) -> list[str]:
    lines = []
    for name in ("airflow", "mlflow"):
        pid_file = _pid_file(env, name)
        if not pid_file.exists():
            lines.append(f"{name}: not started by `portrait up`")
            continue
        pid = int(pid_file.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(30):
                os.killpg(pid, 0)
                time.sleep(1)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pid_file.unlink()
        lines.append(f"{name}: stopped")
    return lines
