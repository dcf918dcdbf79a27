"""MLflow set-up and the registry gate: `champion` moves only to a version that earns it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jobs.common.config import Config
from jobs.common.errors import PortraitError

CHAMPION = "champion"
CHALLENGER = "challenger"


def configure_mlflow(cfg: Config) -> str:
    """Point MLflow at the profile's store and make sure the experiment keeps artifacts where we say."""
    import mlflow

    uri = cfg.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
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
class GateDecision:
    alias: str
    reason: str
    champion_metric: float | None


GATED_METRICS = ("recall_at_k", "ndcg_at_k")


def decide(candidate: Mapping[str, float], champion: Mapping[str, float] | None, margin: float, metric: str,
           baselines: Mapping[str, Mapping[str, float]] | None = None, baseline_metrics: tuple[str, ...] = GATED_METRICS,
           champion_note: str = "") -> GateDecision:
    """Pure gate rule: `champion` only when the candidate beats every baseline on every baseline
    metric AND beats the champion's `metric` on the same holdout by `margin` (or there is none).

    `candidate`, `champion` and each baseline map metric names to values measured on one holdout.
    `champion` is None when there is no champion or it could not score this holdout
    (`champion_note` says why, and the reason records it).
    """
    value = float(candidate[metric])
    failures = []
    for name, scores in sorted((baselines or {}).items()):
        for m in baseline_metrics:
            if not float(candidate[m]) > float(scores[m]):
                failures.append(f"{m} {float(candidate[m]):.4f} does not beat baseline {name} {float(scores[m]):.4f}")
    champion_value = None if champion is None else float(champion[metric])
    if champion_value is not None and value < champion_value + margin:
        failures.append(f"{metric} {value:.4f} does not beat champion {champion_value:.4f} by {margin}")
    if failures:
        return GateDecision(CHALLENGER, "; ".join(failures), champion_value)
    beaten = f"beats baselines {', '.join(sorted(baselines))} on {', '.join(baseline_metrics)}; " if baselines else ""
    if champion_value is None:
        why = champion_note or "no champion yet"
        return GateDecision(CHAMPION, f"{beaten}{why}; {metric}={value:.4f}", None)
    return GateDecision(CHAMPION, f"{beaten}{metric} {value:.4f} beats champion {champion_value:.4f} by >= {margin}",
                        champion_value)


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
