"""The multi-node deployment (docker-compose.yml, deploy/) agrees with the Compose spec and conf/cluster.yaml.

Fast and engine-free. The file is checked three ways:
- against the Compose Specification JSON schema, vendored in tests/schemas/compose-spec.json from the
  PyPI package check-jsonschema 0.39.0 (check_jsonschema/builtin_schemas/vendor/compose-spec.json,
  sha256 d549057e...0e64, Apache-2.0: tests/schemas/LICENSE.compose-spec);
- with `docker compose config` when a Compose v2 CLI is installed (it needs no engine for that);
- by the checkers below, each a pure function returning a list of problems, run on the file as written
  and on what `docker compose config` renders from it. Every checker has a test that breaks a copy
  and expects the problem to be reported, so none of them can pass by accident.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from jobs.common.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / "deploy" / ".env.example"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
POSTGRES_INIT = REPO / "deploy" / "postgres" / "init-databases.sh"
SCHEMA_FILE = Path(__file__).parent / "schemas" / "compose-spec.json"
PORTRAIT_DOCKERFILE = "deploy/Dockerfile"
GPU_QUEUE = "gpu"

# What the Compose services need from the Python environment that only the `cluster` extra brings.
CLUSTER_PACKAGES = {
    "apache-airflow-providers-celery": "AIRFLOW__CORE__EXECUTOR=CeleryExecutor",
    "psycopg2-binary": "postgresql+psycopg2:// URLs of Airflow and MLflow",
    "redis": "the Celery broker redis://",
    "boto3": "MLflow artifacts on s3://",
}

# ------------------------------------------------------------------------------------------------
# Reading the files


def load_compose() -> dict:
    """The file as Compose reads it before interpolation: anchors and `<<` merges resolved by YAML."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name.strip()] = value.strip()
    return values


_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariables(Exception):
    pass


def interpolate(node, env: dict[str, str]):
    """Compose's variable substitution (${X}, ${X:-d}, ${X-d}, ${X:?msg}, ${X?msg}, $$), on every string."""
    missing: list[str] = []

    def substitute(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        op, arg, value = match["op"], match["arg"] or "", env.get(name)
        unset_or_empty = not value
        if op in (":-", "-"):
            return arg if (unset_or_empty if op == ":-" else value is None) else value
        if op in (":?", "?"):
            if unset_or_empty if op == ":?" else value is None:
                missing.append(f"{name} ({arg})" if arg else name)
                return ""
            return value
        if op in (":+", "+"):
            return arg if not (unset_or_empty if op == ":+" else value is None) else ""
        return value or ""

    def walk(item):
        if isinstance(item, str):
            return _REFERENCE.sub(substitute, item)
        if isinstance(item, dict):
            return {key: walk(value) for key, value in item.items()}
        if isinstance(item, list):
            return [walk(value) for value in item]
        return item

    result = walk(node)
    if missing:
        raise MissingVariables("required variables are not set: " + ", ".join(sorted(set(missing))))
    return result


def references(node) -> list[tuple[str, str]]:
    """Every ${NAME...} reference in the document as (NAME, whole reference)."""
    found = []
    if isinstance(node, str):
        for match in _REFERENCE.finditer(node):
            if match["braced"] or match["plain"]:
                found.append((match["braced"] or match["plain"], match.group(0)))
    elif isinstance(node, dict):
        for value in node.values():
            found += references(value)
    elif isinstance(node, list):
        for value in node:
            found += references(value)
    return found


# ------------------------------------------------------------------------------------------------
# One service, in either the short form we write or the long form `docker compose config` renders


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_tokens(service: dict) -> list[str]:
    """Words of the command, including those of a `bash -c` script."""
    command = service.get("command") or []
    parts = [command] if isinstance(command, str) else [str(c) for c in command]
    tokens: list[str] = []
    for part in parts:
        try:
            tokens += shlex.split(part, comments=True)
        except ValueError:
            tokens += part.split()
    return tokens


def option(tokens: list[str], *names: str) -> str | None:
    for i, token in enumerate(tokens):
        for name in names:
            if token == name and i + 1 < len(tokens):
                return tokens[i + 1]
            if token.startswith(name + "="):
                return token[len(name) + 1:]
    return None


def container_ports(service: dict) -> set[int]:
    ports = {int(str(p).split("/")[0]) for p in service.get("expose") or []}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def portrait_services(compose: dict) -> dict[str, dict]:
    """Services that run the image built from deploy/Dockerfile."""
    services = compose["services"]
    images = {
        s.get("image") for s in services.values()
        if isinstance(s.get("build"), dict) and s["build"].get("dockerfile") == PORTRAIT_DOCKERFILE
    }
    return {name: s for name, s in services.items() if s.get("image") in images}


def airflow_services(compose: dict) -> dict[str, dict]:
    return {n: s for n, s in portrait_services(compose).items() if "airflow" in command_tokens(s)}


def celery_workers(compose: dict) -> dict[str, dict]:
    def is_worker(tokens: list[str]) -> bool:
        return any(a == "celery" and b == "worker" for a, b in zip(tokens, tokens[1:]))

    return {n: s for n, s in compose["services"].items() if is_worker(command_tokens(s))}


def worker_queues(service: dict) -> set[str]:
    queues = option(command_tokens(service), "--queues", "-q")
    default = env_of(service).get("AIRFLOW__OPERATORS__DEFAULT_QUEUE", "default")
    return set(queues.split(",")) if queues else {default}


def has_nvidia_gpu(service: dict) -> bool:
    devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
    return any(d.get("driver") == "nvidia" and GPU_QUEUE in (d.get("capabilities") or []) for d in devices or [])


def host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    default = {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.hostname or "", parsed.port or default


def spark_bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)([kmgt]?)b?", str(size).strip().lower())
    if not match:
        raise ValueError(f"not a Spark memory size: {size!r}")
    return int(match[1]) * 1024 ** "bkmgt".index(match[2] or "b")


def service_port_problems(compose: dict, url: str, what: str) -> list[str]:
    host, port = host_port(url)
    service = compose["services"].get(host)
    if service is None:
        return [f"{what} {url}: no service named '{host}' in docker-compose.yml"]
    problems = []
    if port not in container_ports(service):
        problems.append(f"{what} {url}: service '{host}' exposes {sorted(container_ports(service))}, not {port}")
    declared = option(command_tokens(service), "--port", "-p")
    if declared is not None and declared != str(port):
        problems.append(f"{what} {url}: service '{host}' listens on --port {declared}")
    return problems


# ------------------------------------------------------------------------------------------------
# Checkers: compose (already interpolated) x conf/cluster.yaml -> problems


def spark_problems(compose: dict, cfg: Config) -> list[str]:
    master = str(cfg.get("spark.master"))
    if not master.startswith("spark://"):
        return [f"spark.master {master} is not a standalone spark:// URL"]
    problems = service_port_problems(compose, master.replace("spark://", "http://", 1), "spark.master")
    host, port = host_port(master.replace("spark://", "http://", 1))
    if host in compose["services"]:
        tokens = command_tokens(compose["services"][host])
        declared_host = option(tokens, "--host", "-h")
        if declared_host not in (None, host):
            problems.append(f"spark.master {master}: the master advertises --host {declared_host}")
    workers = {n: s for n, s in compose["services"].items()
               if "org.apache.spark.deploy.worker.Worker" in command_tokens(s)}
    if not workers:
        problems.append("no Spark worker service (org.apache.spark.deploy.worker.Worker)")
    replicas = sum(int((s.get("deploy") or {}).get("replicas", 1)) for s in workers.values())
    if workers and replicas < 2:
        problems.append(f"{replicas} Spark worker(s); the deployment promises two")
    executor_cores = int(cfg.get("spark.conf").get("spark.executor.cores", 1))
    executor_memory = spark_bytes(cfg.get("spark.conf").get("spark.executor.memory", "1g"))
    for name, service in workers.items():
        tokens = command_tokens(service)
        if master not in tokens:
            problems.append(f"Spark worker '{name}' does not register with {master}")
        cores, memory = option(tokens, "--cores", "-c"), option(tokens, "--memory", "-m")
        if cores is None or int(cores) < executor_cores:
            problems.append(f"Spark worker '{name}' offers {cores} cores; spark.executor.cores is {executor_cores}")
        if memory is None or spark_bytes(memory) < executor_memory:
            problems.append(f"Spark worker '{name}' offers {memory} memory; spark.executor.memory is "
                            f"{cfg.get('spark.conf').get('spark.executor.memory')}")
    return problems


def mlflow_problems(compose: dict, cfg: Config) -> list[str]:
    uri = cfg.mlflow_tracking_uri
    problems = service_port_problems(compose, uri, "mlflow.tracking_uri")
    host, port = host_port(uri)
    server_env = env_of(compose["services"].get(host, {}))
    allowed = server_env.get("MLFLOW_SERVER_ALLOWED_HOSTS")
    if allowed is not None and not any(
        fnmatch.fnmatch(f"{host}:{port}", pattern.strip()) for pattern in allowed.split(",")
    ):
        problems.append(f"MLflow server answers only Host {allowed}; clients send {host}:{port}")
    for name, service in portrait_services(compose).items():
        value = env_of(service).get("MLFLOW_TRACKING_URI")
        if value != uri:
            problems.append(f"service '{name}' has MLFLOW_TRACKING_URI={value}, conf/cluster.yaml says {uri}")
    return problems


def s3_problems(compose: dict, cfg: Config) -> list[str]:
    spark_conf = cfg.get("spark.conf")
    endpoint = spark_conf.get("spark.hadoop.fs.s3a.endpoint")
    if not endpoint:
        return ["conf/cluster.yaml sets no spark.hadoop.fs.s3a.endpoint"]
    problems = service_port_problems(compose, endpoint, "spark.hadoop.fs.s3a.endpoint")
    env_provider = "EnvironmentVariableCredentialsProvider" in str(
        spark_conf.get("spark.hadoop.fs.s3a.aws.credentials.provider", ""))
    for name, service in portrait_services(compose).items():
        env = env_of(service)
        if env.get("MLFLOW_S3_ENDPOINT_URL") != endpoint:
            problems.append(f"service '{name}' has MLFLOW_S3_ENDPOINT_URL={env.get('MLFLOW_S3_ENDPOINT_URL')}, "
                            f"not the s3a endpoint {endpoint}")
        if env_provider and not (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")):
            problems.append(f"service '{name}' lacks AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, which s3a reads")
    return problems


_MC_MB = re.compile(r"\bmc\s+mb\b(?:\s+-[-\w]+)*\s+['\"]?[\w.-]+/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])")


def buckets_needed(compose: dict, cfg: Config) -> dict[str, str]:
    """bucket -> the setting that names it."""
    needed = {}
    for key in ("lakehouse_root", "landing_zone", "ground_truth_dir", "mlflow.artifact_root"):
        parsed = urlparse(str(cfg.get(key, "")))
        if parsed.scheme in ("s3", "s3a"):
            needed.setdefault(parsed.netloc, key)
    for name, service in compose["services"].items():
        destination = option(command_tokens(service), "--artifacts-destination")
        if destination and urlparse(destination).scheme in ("s3", "s3a"):
            needed.setdefault(urlparse(destination).netloc, f"{name} --artifacts-destination")
    return needed


def bucket_problems(compose: dict, cfg: Config) -> list[str]:
    init = compose["services"].get("minio-init")
    if init is None:
        return ["no minio-init service to create the buckets"]
    script = " ".join(str(c) for c in ([init.get("command")] if isinstance(init.get("command"), str)
                                         else init.get("command") or []))
    created = set(_MC_MB.findall(script))
    return [f"bucket '{bucket}' ({setting}) is not created by minio-init"
            for bucket, setting in sorted(buckets_needed(compose, cfg).items()) if bucket not in created]


def profile_problems(compose: dict, cfg: Config) -> list[str]:
    problems = []
    services = portrait_services(compose)
    if not services:
        return [f"no service is built from {PORTRAIT_DOCKERFILE}"]
    homes = set()
    for name, service in services.items():
        env = env_of(service)
        if env.get("PORTRAIT_ENV") != cfg.profile:
            problems.append(f"service '{name}' has PORTRAIT_ENV={env.get('PORTRAIT_ENV')}, not {cfg.profile}")
        homes.add(env.get("PORTRAIT_HOME"))
    if len(homes) != 1 or None in homes:
        problems.append(f"Portrait services disagree on PORTRAIT_HOME: {sorted(map(str, homes))}")
        return problems
    home = homes.pop()
    jars_dir = str(cfg.get("spark.jars_dir"))
    if not jars_dir.startswith(home.rstrip("/") + "/"):
        problems.append(f"spark.jars_dir {jars_dir} is outside PORTRAIT_HOME {home}, so the image has no jars there")
    for name, service in airflow_services(compose).items():
        env = env_of(service)
        expected = {
            "AIRFLOW_HOME": str(cfg.get("airflow.home")),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": f"{home.rstrip('/')}/dags",
            "AIRFLOW__CORE__PARALLELISM": str(cfg.get("airflow.parallelism")),
        }
        for key, value in expected.items():
            if env.get(key) != value:
                problems.append(f"service '{name}' has {key}={env.get(key)}, expected {value}")
    hmac_env = str(cfg.get("privacy.hmac_key_env", "PORTRAIT_HMAC_KEY"))
    for name, service in celery_workers(compose).items():
        if not env_of(service).get(hmac_env):
            problems.append(f"Celery worker '{name}' runs the steps but has no {hmac_env}")
    return problems


def gpu_worker_problems(compose: dict) -> list[str]:
    workers = celery_workers(compose)
    if not workers:
        return ["no Celery worker service (airflow celery worker)"]
    problems = []
    gpu_workers = {n for n, s in workers.items() if GPU_QUEUE in worker_queues(s)}
    if not gpu_workers:
        problems.append(f"no Celery worker consumes the '{GPU_QUEUE}' queue")
    for name in sorted(gpu_workers):
        if not has_nvidia_gpu(workers[name]):
            problems.append(f"Celery worker '{name}' consumes '{GPU_QUEUE}' but reserves no nvidia gpu device")
    default_queue = "default"
    if not any(default_queue in worker_queues(s) for n, s in workers.items() if n not in gpu_workers):
        problems.append(f"no CPU Celery worker consumes the '{default_queue}' queue")
    return problems


def image_problems(compose: dict) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        image = service.get("image")
        if not image:
            problems.append(f"service '{name}' names no image (built images need a name:tag too)")
            continue
        reference = image.split("@", 1)[0]
        tag = reference.rsplit(":", 1)[1] if ":" in reference.rsplit("/", 1)[-1] else None
        if tag is None and "@" not in image:
            problems.append(f"service '{name}' image {image} has no tag")
        elif tag == "latest":
            problems.append(f"service '{name}' image {image} is pinned to 'latest'")
    return problems


def healthcheck_problems(compose: dict) -> list[str]:
    services = compose["services"]
    problems = []
    for name, service in services.items():
        one_shot = str(service.get("restart", "no")) == "no"
        checked = service.get("healthcheck") and not service["healthcheck"].get("disable")
        if not one_shot and not checked:
            problems.append(f"long-running service '{name}' has no healthcheck")
        for target, condition in depends_on(service).items():
            if target not in services:
                problems.append(f"service '{name}' depends on unknown service '{target}'")
            elif condition == "service_healthy" and not services[target].get("healthcheck"):
                problems.append(f"service '{name}' waits for '{target}' to be healthy, which has no healthcheck")
            elif condition == "service_completed_successfully" and str(services[target].get("restart")) != "no":
                problems.append(f"service '{name}' waits for '{target}' to complete, but it restarts")
    return problems


CONSISTENCY_CHECKS: dict[str, Callable[[dict, Config], list[str]]] = {
    "spark": spark_problems,
    "mlflow": mlflow_problems,
    "s3": s3_problems,
    "buckets": bucket_problems,
    "profile": profile_problems,
    "gpu": lambda compose, cfg: gpu_worker_problems(compose),
    "images": lambda compose, cfg: image_problems(compose),
    "healthchecks": lambda compose, cfg: healthcheck_problems(compose),
}

# ------------------------------------------------------------------------------------------------
# Checkers on the raw file: secrets


_SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|HMAC|ACCESS_KEY|(^|_)KEY($|_)", re.IGNORECASE)
_REQUIRED_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?\?[^}]*\}")
_URL_PASSWORD = re.compile(r"://[^/\s:@]*:([^@\s]+)@")
_SECRET_FLAG = re.compile(r"--[\w-]*(?:pass|secret|token)[\w-]*(?:=|\s+)(\S+)", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not name.upper().endswith(("_FILE", "_FILES"))


def secret_problems(raw: dict) -> list[str]:
    """Secrets may only enter as required ${VAR:?...} references: no literal, no default value."""
    problems = []
    for name, service in raw["services"].items():
        for key, value in env_of(service).items():
            if is_secret_name(key) and not _REQUIRED_REFERENCE.fullmatch(value):
                problems.append(f"service '{name}' sets {key} to a literal, not a ${{VAR:?...}} reference")
    for variable, reference in references(raw):
        if is_secret_name(variable) and not _REQUIRED_REFERENCE.fullmatch(reference):
            problems.append(f"{reference} gives secret {variable} a default or lets it be empty; use ${{{variable}:?...}}")

    def strings(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)

    commands = [" ".join(command_tokens(service)) for service in raw["services"].values()]
    for text in [*strings(raw), *commands]:
        for password in _URL_PASSWORD.findall(text):
            if not _REQUIRED_REFERENCE.fullmatch(password):
                problems.append(f"a URL carries the literal password {password[:2]}...: {text[:60]}")
        for value in _SECRET_FLAG.findall(text):
            if "$" not in value:
                problems.append(f"a command passes the literal secret {value[:2]}... on its command line")
    return sorted(set(problems))


def env_example_problems(raw: dict, example: dict[str, str]) -> list[str]:
    required = {name for name, reference in references(raw) if _REQUIRED_REFERENCE.fullmatch(reference)}
    problems = [f"deploy/.env.example does not set {name}, which docker-compose.yml requires"
                for name in sorted(required - set(example))]
    problems += [f"deploy/.env.example holds a value for {name} that is not a change-me placeholder"
                 for name, value in sorted(example.items()) if is_secret_name(name) and "change-me" not in value]
    return problems


# ------------------------------------------------------------------------------------------------
# The image


def dockerfile_problems(dockerfile: str, compose: dict, cfg: Config, requires_python: str) -> list[str]:
    problems = []
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", dockerfile, flags=re.MULTILINE))
    for base in re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE):
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), base)
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            problems.append(f"deploy/Dockerfile base image {image} is not pinned to a tag")
        if image.startswith("python:"):
            python = re.match(r"python:(\d+\.\d+)", image)
            wanted = re.search(r"(\d+\.\d+)", requires_python)
            if not python or not wanted or python[1] != wanted[1]:
                problems.append(f"deploy/Dockerfile builds on {image}; pyproject.toml requires Python {requires_python}")
    if not re.search(r"uv sync --frozen\b", dockerfile):
        problems.append("deploy/Dockerfile does not install from the committed lock (uv sync --frozen)")
    homes = {env_of(s).get("PORTRAIT_HOME") for s in portrait_services(compose).values()}
    jars = re.search(r"PORTRAIT_ENV=(\S+)\s+PORTRAIT_HOME=(\S+)\s+\S*python\S*\s+-m\s+jobs\.common\.jars", dockerfile)
    if not jars:
        problems.append("deploy/Dockerfile does not fetch the Delta jars with `python -m jobs.common.jars`")
    elif jars[1] != cfg.profile or {jars[2]} != homes:
        problems.append(f"deploy/Dockerfile fetches jars for PORTRAIT_ENV={jars[1]} PORTRAIT_HOME={jars[2]}; "
                        f"the services run {cfg.profile} in {sorted(map(str, homes))}")
    if "hadoop-aws" not in dockerfile:
        problems.append("deploy/Dockerfile adds no hadoop-aws jar, so s3a:// paths cannot be read")
    return problems


def lock_problems(dockerfile: str, pyproject: dict, lock: dict) -> list[str]:
    problems = []
    declared = pyproject["project"].get("optional-dependencies", {})
    extras = re.findall(r"--extra[= ](\S+)", dockerfile)
    for extra in sorted(set(extras)):
        if extra not in declared:
            problems.append(f"deploy/Dockerfile installs the extra '{extra}', which pyproject.toml does not declare")
    root = next((p for p in lock.get("package", []) if p["name"] == pyproject["project"]["name"]), {})
    locked_extras = set((root.get("optional-dependencies") or {}).keys())
    for extra in sorted(set(extras) & set(declared)):
        if extra not in locked_extras:
            problems.append(f"uv.lock has no extra '{extra}': run `uv lock` after editing pyproject.toml")
    locked = {p["name"] for p in lock.get("package", [])}
    for package, why in CLUSTER_PACKAGES.items():
        if package not in locked:
            problems.append(f"uv.lock has no {package}, needed for {why}")
    return problems


# ------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def cluster_cfg() -> Config:
    return load_config("cluster", environ={})


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw_compose, env_example) -> dict:
    """The file interpolated with deploy/.env.example: what Compose runs after `cp deploy/.env.example .env`."""
    return interpolate(raw_compose, env_example)


def with_setting(cfg: Config, dotted: str, value) -> Config:
    data = copy.deepcopy(dict(cfg.data))
    node = data
    keys = dotted.split(".") if not dotted.startswith("spark.conf.") else ["spark", "conf", dotted[len("spark.conf."):]]
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return Config(profile=cfg.profile, root=cfg.root, data=data)


def compose_cli() -> list[str] | None:
    """`docker compose` (plugin) or a standalone Compose v2 `docker-compose`; config needs no engine."""
    candidates = []
    if shutil.which("docker"):
        candidates.append([shutil.which("docker"), "compose"])
    if shutil.which("docker-compose"):
        candidates.append([shutil.which("docker-compose")])
    for cli in candidates:
        done = subprocess.run([*cli, "version", "--short"], capture_output=True, text=True, timeout=60)
        version = re.search(r"v?(\d+)\.\d+", done.stdout)
        if done.returncode == 0 and version and int(version[1]) >= 2:
            return cli
    return None


def run_compose_config(cli: list[str], env_file: Path, *extra: str) -> subprocess.CompletedProcess:
    # A clean environment: a developer's exported POSTGRES_PASSWORD must not hide a missing .env entry.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "--profile", GPU_QUEUE, "config", *extra],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )


# ------------------------------------------------------------------------------------------------
# Validity


def test_compose_file_matches_the_compose_specification(raw_compose):
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(raw_compose)]
    assert errors == []


def test_schema_check_rejects_a_broken_file(raw_compose):
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    broken = copy.deepcopy(raw_compose)
    broken["services"]["redis"]["restart"] = ["always"]
    broken["services"]["postgres"]["healthcheck"]["intervall"] = "5s"
    paths = {".".join(map(str, e.absolute_path)) for e in validator.iter_errors(broken)}
    assert {"services.redis.restart", "services.postgres.healthcheck"} <= paths


def test_docker_compose_config_accepts_the_file_and_demands_every_secret(tmp_path):
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Compose v2 CLI (`docker compose` plugin or `docker-compose`); schema and checkers still ran")
    done = run_compose_config(cli, ENV_EXAMPLE, "--quiet")
    assert done.returncode == 0, done.stderr
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = run_compose_config(cli, empty, "--quiet")
    assert refused.returncode != 0
    assert "in .env" in refused.stderr  # the ${VAR:?set VAR in .env} message reaches the user


def test_docker_compose_rendering_passes_the_same_checks(cluster_cfg):
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Compose v2 CLI (`docker compose` plugin or `docker-compose`)")
    done = run_compose_config(cli, ENV_EXAMPLE, "--format", "json")
    assert done.returncode == 0, done.stderr
    rendered = json.loads(done.stdout)
    assert GPU_QUEUE in {q for s in celery_workers(rendered).values() for q in worker_queues(s)}
    problems = {name: check(rendered, cluster_cfg) for name, check in CONSISTENCY_CHECKS.items()}
    assert problems == {name: [] for name in CONSISTENCY_CHECKS}


def test_interpolation_refuses_to_run_without_the_secrets(raw_compose, env_example):
    with pytest.raises(MissingVariables) as missing:
        interpolate(raw_compose, {})
    for name in ("POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "PORTRAIT_HMAC_KEY",
                 "MINIO_ROOT_PASSWORD", "PORTRAIT_S3_SECRET_KEY"):
        assert name in str(missing.value)
    assert interpolate("${A:-x} ${B:?need B} $$HOME", {"B": "b"}) == "x b $HOME"


# ------------------------------------------------------------------------------------------------
# Consistency with conf/cluster.yaml, and the checks failing when it breaks


@pytest.mark.parametrize("check", sorted(CONSISTENCY_CHECKS))
def test_compose_agrees_with_cluster_profile(check, compose, cluster_cfg):
    assert CONSISTENCY_CHECKS[check](compose, cluster_cfg) == []


def test_the_cluster_values_are_the_ones_the_services_use(compose, cluster_cfg):
    # Spelled out once, so a reader sees the mapping the checkers enforce.
    assert cluster_cfg.get("spark.master") == "spark://spark-master:7077"
    assert 7077 in container_ports(compose["services"]["spark-master"])
    assert cluster_cfg.mlflow_tracking_uri == "http://mlflow:5000"
    assert cluster_cfg.get("spark.conf")["spark.hadoop.fs.s3a.endpoint"] == "http://minio:9000"
    assert set(buckets_needed(compose, cluster_cfg)) == {"portrait-lakehouse", "portrait-mlflow"}
    assert cluster_cfg.get("spark.jars_dir") == "/opt/portrait/jars"
    assert cluster_cfg.get("airflow.home") == "/opt/airflow"


def _set(service: str, key: str, value) -> Callable[[dict], None]:
    return lambda compose: compose["services"][service].__setitem__(key, value)


def _set_env(service: str, key: str, value: str) -> Callable[[dict], None]:
    return lambda compose: compose["services"][service]["environment"].__setitem__(key, value)


def _set_option(service: str, flag: str, value: str) -> Callable[[dict], None]:
    def change(compose: dict) -> None:
        command = compose["services"][service]["command"]
        command[command.index(flag) + 1] = value
    return change


def _drop(service: str, key: str) -> Callable[[dict], None]:
    return lambda compose: compose["services"][service].pop(key)


BREAKAGES = [
    # (what breaks, change to the compose copy, change to the profile, checker, expected problem)
    ("master renamed", None, ("spark.master", "spark://spark-head:7077"), "spark", "no service named 'spark-head'"),
    ("master port", None, ("spark.master", "spark://spark-master:7078"), "spark", "not 7078"),
    ("worker too small", _set_option("spark-worker", "--memory", "4g"), None, "spark", "spark.executor.memory"),
    ("one worker", _set("spark-worker", "deploy", {"replicas": 1}), None, "spark", "promises two"),
    ("mlflow port", None, ("mlflow.tracking_uri", "http://mlflow:5001"), "mlflow", "not 5001"),
    ("mlflow host header", _set_env("mlflow", "MLFLOW_SERVER_ALLOWED_HOSTS", "localhost:*"), None, "mlflow",
     "clients send mlflow:5000"),
    ("s3 endpoint", None, ("spark.conf.spark.hadoop.fs.s3a.endpoint", "http://s3:9000"), "s3", "no service named 's3'"),
    ("lakehouse bucket", None, ("lakehouse_root", "s3a://portrait-lake/lakehouse"), "buckets",
     "bucket 'portrait-lake' (lakehouse_root)"),
    ("artifact bucket", None, ("mlflow.artifact_root", "s3://portrait-models/artifacts"), "buckets",
     "bucket 'portrait-models' (mlflow.artifact_root)"),
    ("profile", _set_env("spark-worker", "PORTRAIT_ENV", "local"), None, "profile",
     "'spark-worker' has PORTRAIT_ENV=local"),
    ("airflow home", None, ("airflow.home", "/srv/airflow"), "profile", "expected /srv/airflow"),
    ("jars outside the image", None, ("spark.jars_dir", "/jars"), "profile", "outside PORTRAIT_HOME"),
    ("gpu device", _drop("airflow-worker-gpu", "deploy"), None, "gpu", "reserves no nvidia gpu device"),
    ("gpu queue", _set_option("airflow-worker-gpu", "-c", "exec airflow celery worker --queues default"), None, "gpu",
     "no Celery worker consumes the 'gpu' queue"),
    ("latest", _set("redis", "image", "redis:latest"), None, "images", "'latest'"),
    ("untagged", _set("minio", "image", "quay.io/minio/minio"), None, "images", "has no tag"),
    ("healthcheck", _drop("postgres", "healthcheck"), None, "healthchecks", "'postgres' has no healthcheck"),
]


@pytest.mark.parametrize(("change_compose", "change_profile", "check", "expected"),
                         [b[1:] for b in BREAKAGES], ids=[b[0] for b in BREAKAGES])
def test_checkers_report_a_mismatch(compose, cluster_cfg, change_compose, change_profile, check, expected):
    broken = copy.deepcopy(compose)
    cfg = cluster_cfg
    if change_compose:
        change_compose(broken)
    if change_profile:
        cfg = with_setting(cluster_cfg, *change_profile)
    problems = CONSISTENCY_CHECKS[check](broken, cfg)
    assert any(expected in p for p in problems), problems


# ------------------------------------------------------------------------------------------------
# Secrets


def test_no_secret_is_written_in_the_compose_file(raw_compose):
    assert secret_problems(raw_compose) == []


@pytest.mark.parametrize(("service", "key", "value", "expected"), [
    ("postgres", "POSTGRES_PASSWORD", "hunter2hunter2", "sets POSTGRES_PASSWORD to a literal"),
    ("postgres", "POSTGRES_PASSWORD", "${POSTGRES_PASSWORD:-postgres}", "gives secret POSTGRES_PASSWORD a default"),
    ("airflow-scheduler", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
     "postgresql+psycopg2://airflow:hunter2@postgres:5432/airflow", "a URL carries the literal password"),
    ("redis", "EXTRA", None, "passes the literal secret"),
])
def test_secret_check_catches_a_literal(raw_compose, service, key, value, expected):
    broken = copy.deepcopy(raw_compose)
    target = broken["services"][service]
    if value is None:
        target["command"] = ["redis-server", "--requirepass", "hunter2hunter2"]
    else:
        target["environment"] = {**env_of(target), key: value}
    assert any(expected in p for p in secret_problems(broken)), secret_problems(broken)


def test_env_example_sets_every_required_variable_with_placeholders(raw_compose, env_example):
    assert env_example_problems(raw_compose, env_example) == []
    incomplete = {k: v for k, v in env_example.items() if k != "AIRFLOW_JWT_SECRET"}
    assert env_example_problems(raw_compose, incomplete) == [
        "deploy/.env.example does not set AIRFLOW_JWT_SECRET, which docker-compose.yml requires"]
    leaked = {**env_example, "MINIO_ROOT_PASSWORD": "s3cr3t-from-prod"}
    assert any("MINIO_ROOT_PASSWORD" in p for p in env_example_problems(raw_compose, leaked))


# ------------------------------------------------------------------------------------------------
# The image and the Postgres init script


def test_dockerfile_builds_the_image_the_services_expect(compose, cluster_cfg):
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    requires_python = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert dockerfile_problems(dockerfile, compose, cluster_cfg, requires_python) == []
    broken = dockerfile.replace("PORTRAIT_ENV=cluster", "PORTRAIT_ENV=local").replace("python:3.11", "python:3.12")
    problems = dockerfile_problems(broken, compose, cluster_cfg, requires_python)
    assert any("PORTRAIT_ENV=local" in p for p in problems) and any("python:3.12" in p for p in problems)


def _declares_cluster_extra() -> bool:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return "cluster" in pyproject["project"].get("optional-dependencies", {})


@pytest.mark.xfail(not _declares_cluster_extra(), strict=True,
                   reason="pyproject.toml has no `cluster` extra yet (Celery provider, psycopg2, boto3) "
                          "and uv.lock lacks them; see docs/deployment.md")
def test_lock_holds_what_the_cluster_needs():
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    assert lock_problems(dockerfile, pyproject, lock) == []


def test_lock_check_reports_a_missing_extra():
    problems = lock_problems("RUN uv sync --frozen --extra cluster", {"project": {"name": "portrait"}},
                             {"package": [{"name": "portrait"}]})
    assert "deploy/Dockerfile installs the extra 'cluster', which pyproject.toml does not declare" in problems
    assert any("psycopg2-binary" in p for p in problems)


def test_postgres_init_script_creates_both_databases(raw_compose):
    script = POSTGRES_INIT.read_text(encoding="utf-8")
    assert os.access(POSTGRES_INIT, os.X_OK), "the postgres image sources, not runs, a non-executable script"
    assert re.findall(r"^create_database (\w+) ", script, flags=re.MULTILINE) == ["airflow", "mlflow"]
    mounts = [str(v) for v in raw_compose["services"]["postgres"]["volumes"]]
    assert any(m.startswith("./deploy/postgres/init-databases.sh:/docker-entrypoint-initdb.d/") for m in mounts)
    env = env_of(raw_compose["services"]["postgres"])
    assert {"AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD"} <= set(env)
