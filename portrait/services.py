"""`portrait up` / `portrait down`: Airflow standalone and the MLflow UI on this machine, and a REST v2 client.

The tests start Airflow the same way (start_service on a free port of 127.0.0.1) and drive it through
AirflowAPI, as a person or a CI job would.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.common.config import Config
from jobs.common.errors import EnvironmentSetupError, PortraitError

log = logging.getLogger(__name__)

PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    health_url: str
    ui_url: str


def airflow_service(env: dict[str, str], host: str = "127.0.0.1", port: int = 8080) -> Service:
    """`airflow standalone` (API server, scheduler, DAG processor, triggerer) on host:port."""
    env["AIRFLOW__API__PORT"] = str(port)
    env["AIRFLOW__API__HOST"] = host
    env.setdefault("AIRFLOW__API__BASE_URL", f"http://{host}:{port}")
    env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://{host}:{port}/execution/")
    bin_dir = Path(sys.executable).parent
    return Service("airflow", [str(bin_dir / "airflow"), "standalone"],
                   f"http://{host}:{port}/api/v2/monitor/health", f"http://{host}:{port}")


def services(cfg: Config, env: dict[str, str], host: str = "127.0.0.1",
             airflow_port: int = 8080, mlflow_port: int = 5000) -> list[Service]:
    from ml.registry import configure_mlflow

    configure_mlflow(cfg)  # creates the SQLite store and experiment so the UI opens on something
    bin_dir = Path(sys.executable).parent
    root = cfg.location("mlflow.artifact_root")
    artifacts = root if "://" in root else Path(root).as_uri()
    return [
        airflow_service(env, host, airflow_port),
        Service("mlflow", [str(bin_dir / "mlflow"), "server", "--backend-store-uri", cfg.mlflow_tracking_uri,
                           "--default-artifact-root", artifacts, "--host", host, "--port", str(mlflow_port),
                           "--workers", "1"],
                f"http://{host}:{mlflow_port}/health", f"http://{host}:{mlflow_port}"),
    ]


def _pid_file(env: dict[str, str], name: str) -> Path:
    return Path(env["AIRFLOW_HOME"]) / f"{name}.pid"


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def start_service(service: Service, env: dict[str, str], cwd: Path, wait_s: float = 240.0) -> subprocess.Popen:
    """Start one service in its own process group, wait for its health check, record its pid."""
    log_path = Path(env["AIRFLOW_HOME"]) / f"{service.name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(service.command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=cwd)
    _pid_file(env, service.name).write_text(str(process.pid))
    deadline = time.monotonic() + wait_s
    while not healthy(service.health_url):
        if process.poll() is not None:
            raise EnvironmentSetupError(f"{service.name} exited with {process.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            stop_service(env, service.name)
            raise EnvironmentSetupError(f"{service.name} did not become healthy in {wait_s:.0f}s; see {log_path}")
        time.sleep(2)
    return process


def stop_service(env: dict[str, str], name: str, grace_s: int = 30) -> bool:
    """SIGTERM the service's process group, SIGKILL after grace_s; False when it was not started here.

    Airflow runs each task in a session of its own, so task processes (and their Spark JVMs) that outlive
    the scheduler are found by the AIRFLOW_HOME they were started with and stopped too.
    """
    pid_file = _pid_file(env, name)
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(grace_s):
            os.killpg(pid, 0)
            time.sleep(1)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for leftover in processes_started_under(env["AIRFLOW_HOME"]):
        try:
            os.kill(leftover, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pid_file.unlink()
    return True


def processes_started_under(airflow_home: str) -> list[int]:
    """Pids of this user's processes whose environment has AIRFLOW_HOME=airflow_home (Linux /proc; else none)."""
    marker = f"AIRFLOW_HOME={airflow_home}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int(entry.name) not in _ancestors() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def _ancestors() -> set[int]:
    """This process and its parents (a shell that exported AIRFLOW_HOME must survive `portrait down`)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def airflow_login(env: dict[str, str]) -> tuple[str, str] | None:
    """The (user, password) that airflow standalone generated on its first start, if any."""
    passwords = Path(env["AIRFLOW_HOME"]) / PASSWORDS_FILE
    if not passwords.exists():
        return None
    users = json.loads(passwords.read_text())
    return next(iter(users.items())) if users else None


def up(cfg: Config, env: dict[str, str], wait_s: float = 240.0) -> list[str]:
    """Start what is not running yet, wait until each answers its health check, return report lines."""
    lines = []
    for service in services(cfg, env):
        if healthy(service.health_url):
            lines.append(f"{service.name}: already running at {service.ui_url}")
            continue
        start_service(service, env, cfg.root, wait_s)
        lines.append(f"{service.name}: {service.ui_url}  (log {Path(env['AIRFLOW_HOME']) / (service.name + '.log')})")
    login = airflow_login(env)
    if login:
        lines.append(f"airflow login: {login[0]} / {login[1]}")
    return lines


def down(env: dict[str, str]) -> list[str]:
    return [f"{name}: stopped" if stop_service(env, name) else f"{name}: not started by `portrait up`"
            for name in ("airflow", "mlflow")]


class AirflowAPIError(PortraitError):
    """The Airflow REST API answered with an error (`status`: the HTTP code, None when there was no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AirflowAPI:
    """A small client of Airflow's REST API v2, logged in through the simple auth manager's /auth/token."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._login = {"username": username, "password": password}
        self._token: str | None = None

    def _send(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:1000]
            raise AirflowAPIError(f"{method} {path} answered {exc.code}: {detail}", exc.code) from None
        return json.loads(text) if text.strip().startswith(("{", "[")) else text

    def token(self) -> str:
        if self._token is None:
            self._token = self._send("POST", "/auth/token", self._login, auth=False)["access_token"]
        return self._token

    def get(self, path: str, attempts: int = 4) -> Any:
        """GET, tried again after a timeout or a dropped connection (a busy API server on a small machine)."""
        for attempt in range(1, attempts + 1):
            try:
                return self._send("GET", path)
            except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
                if attempt == attempts:
                    raise AirflowAPIError(f"GET {path} failed {attempts} times; last: {exc}") from None
                time.sleep(5 * attempt)

    def post(self, path: str, body: Any) -> Any:
        return self._send("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self._send("PATCH", path, body)

    def wait_for_dag(self, dag_id: str, timeout_s: float = 180) -> dict:
        """Until the DAG processor has parsed and stored the DAG."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.get(f"/api/v2/dags/{dag_id}")
            except AirflowAPIError:
                if time.monotonic() > deadline:
                    errors = self.get("/api/v2/importErrors")
                    raise AirflowAPIError(f"DAG {dag_id} did not appear in {timeout_s:.0f}s; import errors: {errors}")
                time.sleep(3)

    def unpause(self, dag_id: str) -> None:
        self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, logical_date: str, conf: dict | None = None) -> str:
        run = self.post(f"/api/v2/dags/{dag_id}/dagRuns",
                        {"logical_date": f"{logical_date}T00:00:00Z", "conf": conf or {}})
        return run["dag_run_id"]

    def backfill(self, dag_id: str, from_date: str, to_date: str, conf: dict | None = None,
                 reprocess: str = "none", max_active_runs: int = 1, attempts: int = 8,
                 backoff_s: float = 5.0) -> dict:
        """Create a backfill (POST /api/v2/backfills, what the UI's backfill form sends); returns it.

        On the embedded SQLite metadata database the scheduler holds the write lock now and then: the
        `airflow backfill create` CLI then fails with "database is locked" and the API answers 503.
        A 503 is tried again with back-off; a 409 after such a try means the backfill got created
        after all, and the active one is returned.
        """
        body = {"dag_id": dag_id, "from_date": f"{from_date}T00:00:00Z", "to_date": f"{to_date}T00:00:00Z",
                "dag_run_conf": conf or {}, "reprocess_behavior": reprocess, "max_active_runs": max_active_runs}
        for attempt in range(1, attempts + 1):
            try:
                return self.post("/api/v2/backfills", body)
            except AirflowAPIError as exc:
                if exc.status == 409 and attempt > 1:
                    active = [b for b in self.get(f"/api/v2/backfills?dag_id={dag_id}")["backfills"]
                              if not b.get("completed_at")]
                    if active:
                        return active[-1]
                if exc.status != 503 or attempt == attempts:
                    raise
                log.info("backfill of %s: the metadata database is busy (try %d of %d)", dag_id, attempt, attempts)
                time.sleep(backoff_s * attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=logical_date")["dag_runs"]

    def wait_for_runs(self, dag_id: str, run_ids: list[str] | None = None, count: int | None = None,
                      timeout_s: float = 900) -> list[dict]:
        """Until the given runs (or `count` runs) have finished; returns them in logical-date order."""
        deadline = time.monotonic() + timeout_s
        while True:
            runs = [r for r in self.runs(dag_id) if run_ids is None or r["dag_run_id"] in run_ids]
            wanted = len(run_ids) if run_ids is not None else count
            done = [r for r in runs if r["state"] in ("success", "failed")]
            if wanted is not None and len(done) >= wanted and len(done) == len(runs):
                return done
            if time.monotonic() > deadline:
                states = {r["dag_run_id"]: r["state"] for r in runs}
                raise AirflowAPIError(f"{dag_id}: runs not finished in {timeout_s:.0f}s: {states}")
            time.sleep(5)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        quoted = urllib.parse.quote(run_id, safe="")
        items = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances?limit=100")["task_instances"]
        return {t["task_id"]: t["state"] for t in items}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        quoted = urllib.parse.quote(run_id, safe="")
        body = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/logs/{try_number}"
                        "?full_content=true")
        content = body.get("content", body) if isinstance(body, dict) else body
        if isinstance(content, list):
            return "\n".join(c.get("event", "") if isinstance(c, dict) else str(c) for c in content)
        return str(content)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        quoted = urllib.parse.quote(run_id, safe="")
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/{key}"
                        "?deserialize=true")["value"]
