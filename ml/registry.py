"""MLflow set-up and the registry gate: `champion` moves only to a version that earns it."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jobs.common.config import Config
from jobs.common.errors import ConfigError, PortraitError

CHAMPION = "champion"
CHALLENGER = "challenger"


TRACKING_SETTING = "mlflow.tracking_uri (PORTRAIT__MLFLOW__TRACKING_URI)"
ARTIFACT_SETTING = "mlflow.artifact_root (PORTRAIT__MLFLOW__ARTIFACT_ROOT)"
_checked: set[tuple[str, str]] = set()  # stores already found reachable in this process


@dataclass(frozen=True)
class TrackingConnection:
    """How long MLflow may try a tracking server (`mlflow.connect_timeout_s`, `mlflow.http_*`), typed once."""

    connect_timeout_s: float
    http_max_retries: int
    http_timeout_s: int

    @classmethod
    def from_config(cls, cfg: Config) -> "TrackingConnection":
        try:
            settings = cls(float(cfg.get("mlflow.connect_timeout_s")), int(cfg.get("mlflow.http_max_retries")),
                           int(cfg.get("mlflow.http_timeout_s")))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"mlflow.connect_timeout_s, mlflow.http_max_retries and mlflow.http_timeout_s are "
                              f"numbers (conf/local.yaml): {exc}") from None
        if settings.connect_timeout_s <= 0 or settings.http_max_retries < 0 or settings.http_timeout_s < 1:
            raise ConfigError(f"mlflow.connect_timeout_s must be > 0, mlflow.http_max_retries >= 0 and "
                              f"mlflow.http_timeout_s >= 1, got {settings}")
        return settings


def check_tracking_store(cfg: Config) -> None:
    """Fail in seconds with one line when the tracking store cannot be used: an HTTP server that does not
    answer within mlflow.connect_timeout_s, or a SQLite or file store (or local artifact root) that cannot
    be written. Also bounds MLflow's own retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES / _TIMEOUT) so that a
    server lost later fails in about a minute, not after five of back-off. Once per store and process."""
    import urllib.error
    import urllib.request

    from jobs.common.errors import EnvironmentSetupError
    from jobs.common.storage import is_local, probe_writable

    uri, artifacts = cfg.mlflow_tracking_uri, cfg.location("mlflow.artifact_root")
    connection = TrackingConnection.from_config(cfg)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(connection.http_max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(connection.http_timeout_s)
    if (uri, artifacts) in _checked:
        return
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=connection.connect_timeout_s).close()
        except urllib.error.HTTPError:
            pass  # the server answered (a proxy without /health): reachable
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EnvironmentSetupError(
                f"MLflow tracking server {uri} is unreachable ({reason}; waited at most "
                f"{connection.connect_timeout_s:g} s): start it (make up starts the local one) or set "
                f"{TRACKING_SETTING} to a server that runs, then rerun the date") from None
    elif cfg.mlflow_sqlite_path is not None:
        probe_writable(str(cfg.mlflow_sqlite_path.parent), "MLflow tracking store", TRACKING_SETTING)
    elif uri.startswith(("file://", "/", "./", "../")):
        probe_writable(uri, "MLflow tracking store", TRACKING_SETTING)
    if is_local(artifacts):
        probe_writable(artifacts, "MLflow artifact root", ARTIFACT_SETTING)
    _checked.add((uri, artifacts))


def configure_mlflow(cfg: Config) -> str:
    """Point MLflow at the profile's store and make sure the experiment keeps artifacts where we say."""
    import mlflow

    check_tracking_store(cfg)
    uri = cfg.mlflow_tracking_uri
    if cfg.mlflow_sqlite_path is not None:
        cfg.mlflow_sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = str(cfg.get("mlflow.experiment"))
    if mlflow.get_experiment_by_name(name) is None:
        root = cfg.location("mlflow.artifact_root")
        location = root if "://" in root else Path(root).as_uri()
        mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(name)
    return name


def model_name(cfg: Config) -> str:
    return str(cfg.get("mlflow.registered_model"))


def champion_uri(cfg: Config) -> str:
    return f"models:/{model_name(cfg)}@{CHAMPION}"


@dataclass(frozen=True)
class GateSettings:
    """The gate's settings (`model.gate_*` in conf/), typed once."""

    margin: float                      # the lower bound of candidate - other must exceed this
    min_users: int                     # fewer holdout users than this: no comparison means anything
    baselines: tuple[str, ...]         # the baselines the candidate must beat (the others are only logged)
    samples: int                       # bootstrap resamples of the holdout users
    confidence: float                  # of the interval, e.g. 0.95
    seed: int

    @classmethod
    def from_config(cls, cfg: Config) -> "GateSettings":
        bootstrap = cfg.get("model.gate_bootstrap")
        if not isinstance(bootstrap, Mapping) or set(bootstrap) != {"samples", "confidence", "seed"}:
            raise ConfigError(f"model.gate_bootstrap takes samples, confidence and seed, got {bootstrap!r} "
                              "(docs/model.md, 'MLflow and the gate')")
        settings = cls(margin=float(cfg.get("model.gate_margin")), min_users=int(cfg.get("model.gate_min_users")),
                       baselines=tuple(cfg.get("model.gate_baselines") or ()), samples=int(bootstrap["samples"]),
                       confidence=float(bootstrap["confidence"]), seed=int(bootstrap["seed"]))
        if settings.samples < 1 or not 0 < settings.confidence < 1 or settings.min_users < 1:
            raise ConfigError(f"model.gate_bootstrap.samples ({settings.samples}) and model.gate_min_users "
                              f"({settings.min_users}) must be at least 1, and model.gate_bootstrap.confidence "
                              f"({settings.confidence}) must lie strictly between 0 and 1")
        return settings


@dataclass(frozen=True)
class Scored:
    """One recommender on the holdout: its metrics, and the gate metric of each holdout user."""

    metrics: Mapping[str, float]
    per_user: Mapping[Hashable, float]


@dataclass(frozen=True)
class PairedInterval:
    """candidate - other on the gate metric, with its bootstrap confidence interval over the users."""

    other: str                         # "popularity", ..., or "champion"
    candidate: float                   # the candidate's mean over the users
    baseline: float                    # the other's mean over the same users
    low: float
    high: float
    users: int
    confidence: float

    @property
    def difference(self) -> float:
        return self.candidate - self.baseline

    def describe(self) -> str:
        return (f"difference {self.difference:+.4f}, {self.confidence:.0%} CI [{self.low:+.4f}, {self.high:+.4f}] "
                f"over {self.users} users")


def paired_bootstrap(candidate: Mapping[Hashable, float], other: Mapping[Hashable, float], samples: int,
                     confidence: float, seed: int) -> tuple[float, float]:
    """Percentile interval of mean(candidate - other) over users resampled with replacement.

    Paired: each resample draws users, and both recommenders are scored on the users drawn, so what
    varies is the difference, not each mean on its own. The users are taken in sorted order, so a seed
    draws the same users for every comparison of one holdout.
    """
    if set(candidate) != set(other):
        missing = sorted(map(str, set(candidate) ^ set(other)))[:3]
        raise ValueError(f"the two recommenders were scored on different users (e.g. {', '.join(missing)}); "
                         "score both on the same holdout")
    if not candidate:
        raise ValueError("no users to resample: the holdout has no user with a relevant item")
    users = sorted(candidate, key=str)
    differences = np.array([candidate[u] - other[u] for u in users], dtype=float)
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for i in range(samples):           # one resample at a time: samples x users indices would not fit for 50k users
        means[i] = differences[rng.integers(0, len(users), len(users))].mean()
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_interval(name: str, candidate: Scored, other: Scored, settings: GateSettings) -> PairedInterval:
    low, high = paired_bootstrap(candidate.per_user, other.per_user, settings.samples, settings.confidence,
                                 settings.seed)
    return PairedInterval(name, float(np.mean(list(candidate.per_user.values()))),
                          float(np.mean(list(other.per_user.values()))), low, high, len(candidate.per_user),
                          settings.confidence)


@dataclass(frozen=True)
class GateDecision:
    alias: str
    reason: str
    champion_metric: float | None
    intervals: tuple[PairedInterval, ...] = ()     # every baseline's and the champion's, gated or not


GATED_METRICS = ("recall_at_k", "ndcg_at_k")


def _verdict(interval: PairedInterval, label: str, metric: str, margin: float) -> tuple[bool, str]:
    """(beaten?, the sentence): beaten only when the whole interval lies above `margin`."""
    by = f" by more than model.gate_margin={margin:g}" if margin else ""
    head = f"{metric} {interval.candidate:.4f}"
    if interval.low > margin and interval.difference > margin:
        return True, f"{head} beats {label} {interval.baseline:.4f}{by}: {interval.describe()}"
    if interval.high < 0:
        where = "lies below 0"
    elif interval.low <= 0:
        where = "includes 0"
    else:
        where = f"has its lower bound at or below model.gate_margin={margin:g}"
    return False, f"{head} does not beat {label} {interval.baseline:.4f}{by}: {interval.describe()} {where}"


def decide(candidate: Scored, champion: Scored | None, baselines: Mapping[str, Scored], settings: GateSettings,
           metric: str = "ndcg_at_k", baseline_metrics: tuple[str, ...] = GATED_METRICS,
           champion_note: str = "") -> GateDecision:
    """Pure gate rule: `champion` only when, on a holdout of at least `settings.min_users` users, the
    candidate beats every baseline of `settings.baselines` that was measured and the champion (when
    there is one) on `metric` with the lower bound of the bootstrap interval of the paired difference
    above `settings.margin`, and beats those baselines on the other `baseline_metrics` too.

    `Scored.per_user` holds `metric` per holdout user, the same users for every recommender. Intervals
    are computed for every baseline given, gated or not, so that they are all logged. With nothing to
    compare (no gated baseline, no champion) the candidate is promoted whatever the holdout's size.
    `champion` is None when there is no champion or it could not score this holdout (`champion_note`
    says why, and the reason records it).
    """
    intervals = {name: paired_interval(name, candidate, scores, settings) for name, scores in sorted(baselines.items())}
    champion_interval = None if champion is None else paired_interval(CHAMPION, candidate, champion, settings)
    gated = [name for name in sorted(baselines) if name in settings.baselines]
    users = len(candidate.per_user)
    value = float(np.mean(list(candidate.per_user.values()))) if users else float("nan")
    failures, passed = [], []
    if (gated or champion is not None) and users < settings.min_users:
        failures.append(f"holdout of {users} users is below model.gate_min_users={settings.min_users}; widen the test "
                        "window (model.label_horizon_days), raise model.eval_max_users if it caps the holdout, or "
                        "train on more data")
    for name in gated:
        for m in baseline_metrics:
            if m != metric and not float(candidate.metrics[m]) > float(baselines[name].metrics[m]):
                failures.append(f"{m} {float(candidate.metrics[m]):.4f} does not beat baseline {name} "
                                f"{float(baselines[name].metrics[m]):.4f}")
        beaten, sentence = _verdict(intervals[name], f"baseline {name}", metric, settings.margin)
        (passed if beaten else failures).append(sentence)
    if champion_interval is not None:
        beaten, sentence = _verdict(champion_interval, CHAMPION, metric, settings.margin)
        (passed if beaten else failures).append(sentence)
    logged = tuple(intervals.values()) + (() if champion_interval is None else (champion_interval,))
    champion_value = None if champion_interval is None else champion_interval.baseline
    if failures:
        return GateDecision(CHALLENGER, "; ".join(failures), champion_value, logged)
    others = [m for m in baseline_metrics if m != metric]
    if gated and others:
        passed.insert(0, f"beats baselines {', '.join(gated)} on {', '.join(others)}")
    if champion is None:
        passed.append(f"{champion_note or 'no champion yet'}; {metric}={value:.4f} over {users} users")
    return GateDecision(CHAMPION, "; ".join(passed), champion_value, logged)


def champion_version(cfg: Config):
    """The registry's champion ModelVersion, or None when nothing has been promoted yet."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(model_name(cfg), CHAMPION)
    except MlflowException:
        return None


def champion_run(cfg: Config):
    """(ModelVersion, Run) of the champion, or (None, None)."""
    from mlflow import MlflowClient

    version = champion_version(cfg)
    if version is None:
        return None, None
    return version, MlflowClient().get_run(version.run_id)


def champion_trained_for(cfg: Config) -> dt.date | None:
    """The run date the champion was trained for (its `run_date` param), or None."""
    _, run = champion_run(cfg)
    if run is None or "run_date" not in run.data.params:
        return None
    return dt.date.fromisoformat(run.data.params["run_date"])


def apply_gate(cfg: Config, version: str, decision: GateDecision) -> None:
    """Point the decided alias at `version` and record the reason on the version."""
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_registered_model_alias(model_name(cfg), decision.alias, version)
    client.set_model_version_tag(model_name(cfg), version, "gate_reason", decision.reason)
    client.set_model_version_tag(model_name(cfg), version, "gate_alias", decision.alias)
    for interval in decision.intervals:
        client.set_model_version_tag(model_name(cfg), version, f"gate_diff_{interval.other}", interval.describe())


def require_champion(cfg: Config) -> tuple[str, str]:
    """(version, run_id) of the champion, or a clear error when nothing has been promoted yet."""
    version = champion_version(cfg)
    if version is None:
        raise PortraitError(f"no '{CHAMPION}' version of model {model_name(cfg)} in {cfg.mlflow_tracking_uri}; "
                            + _why_no_champion(cfg))
    return str(version.version), str(version.run_id)


def _why_no_champion(cfg: Config) -> str:
    """What to do about a missing champion: train, or review the latest version the gate refused."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        versions = MlflowClient().search_model_versions(f"name = '{model_name(cfg)}'")
    except MlflowException:
        versions = []
    if not versions:
        return "run the train step first"
    latest = max(versions, key=lambda v: int(v.version))
    reason = (latest.tags or {}).get("gate_reason", "no gate decision recorded")
    return (f"the gate did not promote version {latest.version} (run {latest.run_id}): {reason}. Review it in the "
            f"MLflow registry and give it the '{CHAMPION}' alias to publish it anyway, or train on more data")
