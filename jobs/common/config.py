"""Configuration: conf/<profile>.yaml chosen by PORTRAIT_ENV, a dataset's conf/datasets/<name>.yaml laid
over it when PORTRAIT_DATASET names one, then PORTRAIT__* variables."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jobs.common.errors import ConfigError

DEFAULT_PROFILE = "local"
ENV_PROFILE = "PORTRAIT_ENV"
ENV_HOME = "PORTRAIT_HOME"
ENV_OVERRIDE_PREFIX = "PORTRAIT__"
ENV_DATASET = "PORTRAIT_DATASET"
DATASETS_DIR = "datasets"  # conf/datasets/<name>.yaml
# Settings a dataset replaces as a whole instead of merging key by key: its sources are the only ones.
_DATASET_REPLACES = (("collect", "sources"),)

_MISSING = object()


def project_root() -> Path:
    """The folder that holds conf/: PORTRAIT_HOME when set, else this checkout."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser().resolve()
    return Path(__file__).resolve().parents[2]


def available_profiles(root: Path | None = None) -> list[str]:
    conf_dir = (root or project_root()) / "conf"
    return sorted(p.stem for p in conf_dir.glob("*.yaml"))


def _deep_merge(base: dict, override: Mapping) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_mapping(path: Path) -> dict:
    """A YAML file that must hold a mapping (a profile or a dataset); a ConfigError naming the file otherwise."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


def _read_profile(root: Path, profile: str, seen: tuple[str, ...] = ()) -> dict:
    path = root / "conf" / f"{profile}.yaml"
    if not path.is_file():
        known = ", ".join(available_profiles(root)) or "none"
        raise ConfigError(
            f"unknown profile '{profile}': no {path}; set {ENV_PROFILE} to one of: {known}"
        )
    if profile in seen:
        raise ConfigError(f"profile '{profile}' extends itself through {' -> '.join(seen)}")
    data = _read_mapping(path)
    parent = data.pop("extends", None)
    if parent:
        return _deep_merge(_read_profile(root, parent, (*seen, profile)), data)
    return data


def available_datasets(root: Path | None = None) -> list[str]:
    return sorted(p.stem for p in ((root or project_root()) / "conf" / DATASETS_DIR).glob("*.yaml"))


def read_dataset(root: Path, name: str) -> dict:
    """conf/datasets/<name>.yaml as a mapping; a ConfigError naming the known datasets for an unknown name."""
    path = root / "conf" / DATASETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(available_datasets(root)) or "none"
        raise ConfigError(f"unknown dataset '{name}': no {path}; known datasets: {known} "
                          "(`portrait datasets list` describes them)")
    return _read_mapping(path)


def overlay_dataset(profile: dict, dataset: Mapping) -> dict:
    """The profile with a dataset's settings on top; the dataset's collect.sources replace the profile's."""
    merged = _deep_merge(profile, dataset)
    for path in _DATASET_REPLACES:
        node: Any = dataset
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is not None:
            target = merged
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = copy.deepcopy(node)
    return merged


def _env_overrides(environ: Mapping[str, str], profile: Mapping[str, Any] | None = None) -> dict:
    """PORTRAIT__SPARK__MASTER=x becomes {"spark": {"master": "x"}}; values parse as YAML scalars.

    An override of a setting the profile holds as a number or a switch must be one too (null unsets):
    `PORTRAIT__MODEL__EPOCHS=ten` is a ConfigError here, not a ValueError deep inside a step.
    """
    overrides: dict = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_OVERRIDE_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_OVERRIDE_PREFIX):].split("__") if k]
        if not keys:
            continue
        # Spark option names carry dots and mixed case; they are written with "." in the variable.
        if keys[0] == "spark" and len(keys) == 3 and keys[1] == "conf":
            keys[2] = name[len(ENV_OVERRIDE_PREFIX):].split("__")[2]
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            value = float(value)     # YAML 1.1 reads 1e-07 (no dot) as text; Python writes floats that way
        _check_override_type(name, raw, keys, value, profile or {})
        node = overrides
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return overrides


_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_override_type(name: str, raw: str, keys: list[str], value: Any, profile: Mapping[str, Any]) -> None:
    current: Any = profile
    for key in keys:
        if not isinstance(current, Mapping) or key not in current:
            return  # a setting the profile does not hold: its reader types it
        current = current[key]
    if value is None:
        return
    dotted = ".".join(keys)
    if isinstance(current, bool) and not isinstance(value, bool):
        raise ConfigError(f"{name}={raw!r}: '{dotted}' is a switch; write true or false")
    if _is_number(current) and not _is_number(value):
        raise ConfigError(f"{name}={raw!r}: '{dotted}' is a number (the profile has {current}); write a number")


@dataclass(frozen=True)
class Config:
    """One resolved profile. Read values with cfg.get("spark.master") or the properties below."""

    profile: str
    root: Path
    data: Mapping[str, Any] = field(repr=False)
    dataset: str | None = None  # the conf/datasets/<name>.yaml laid over the profile, if any

    def get(self, dotted: str, default: Any = _MISSING) -> Any:
        node: Any = self.data
        for key in dotted.split("."):
            if not isinstance(node, Mapping) or key not in node:
                if default is _MISSING:
                    raise ConfigError(f"profile '{self.profile}' has no setting '{dotted}'")
                return default
            node = node[key]
        return node

    def number(self, dotted: str, default: Any = _MISSING) -> float:
        """A numeric setting as a float; a ConfigError naming the key and the value otherwise."""
        value = self.get(dotted, default)
        if not _is_number(value):
            raise ConfigError(f"{dotted} is {value!r} in profile '{self.profile}'; write a number")
        return float(value)

    def integer(self, dotted: str, default: Any = _MISSING) -> int:
        """A whole-number setting (`8` or `8.0`); a ConfigError naming the key and the value otherwise."""
        value = self.get(dotted, default)
        if not _is_number(value) or value != int(value):
            raise ConfigError(f"{dotted} is {value!r} in profile '{self.profile}'; write a whole number")
        return int(value)

    def location(self, dotted: str) -> str:
        """A path-like setting: URIs (s3a://, sqlite://) stay as they are, local paths become absolute."""
        value = str(self.get(dotted))
        if "://" in value:
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (self.root / path).resolve())

    @property
    def lakehouse_root(self) -> str:
        return self.location("lakehouse_root")

    @property
    def landing_zone(self) -> str:
        return self.location("landing_zone")

    @property
    def ground_truth_dir(self) -> str:
        return self.location("ground_truth_dir")

    @property
    def mlflow_tracking_uri(self) -> str:
        uri = str(self.get("mlflow.tracking_uri"))
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
            # sqlite:///./x.db is relative to the project root, not to whatever the cwd is.
            return prefix + str((self.root / uri[len(prefix):]).resolve())
        return uri

    @property
    def mlflow_sqlite_path(self) -> Path | None:
        """The database file of a SQLite tracking store (sqlite:///...), None for any other store."""
        uri, prefix = self.mlflow_tracking_uri, "sqlite:///"
        return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


def load_config(profile: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    root = Path(environ[ENV_HOME]).expanduser().resolve() if environ.get(ENV_HOME) else project_root()
    profile = profile or environ.get(ENV_PROFILE) or DEFAULT_PROFILE
    data = _read_profile(root, profile)
    dataset = environ.get(ENV_DATASET) or None
    if dataset:
        data = overlay_dataset(data, read_dataset(root, dataset))
    data = _deep_merge(data, _env_overrides(environ, data))
    return Config(profile=profile, root=root, data=data, dataset=dataset)
