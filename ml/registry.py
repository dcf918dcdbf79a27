"""MLflow set-up and the registry gate: `champion` moves only to a version that earns it."""

from __future__ import annotations

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


def decide(candidate: float, champion: float | None, margin: float, metric: str) -> GateDecision:
    """Pure gate rule, tested on its own: the first model is champion; later ones must beat it by `margin`."""
    if champion is None:
        return GateDecision(CHAMPION, f"no champion yet; {metric}={candidate:.4f}", None)
    if candidate >= champion + margin:
        return GateDecision(CHAMPION, f"{metric} {candidate:.4f} beats champion {champion:.4f} by >= {margin}", champion)
    return GateDecision(
        CHALLENGER, f"{metric} {candidate:.4f} does not beat champion {champion:.4f} by {margin}", champion
    )


def champion_version(cfg: Config):
    """The registry's champion ModelVersion, or None when nothing has been promoted yet."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(model_name(cfg), CHAMPION)
    except MlflowException:
        return None


def current_champion_metric(cfg: Config, metric: str) -> float | None:
    from mlflow import MlflowClient

    version = champion_version(cfg)
    if version is None:
        return None
    value = MlflowClient().get_run(version.run_id).data.metrics.get(metric)
    return None if value is None else float(value)


def apply_gate(cfg: Config, version: str, decision: GateDecision) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_registered_model_alias(model_name(cfg), decision.alias, version)
    client.set_model_version_tag(model_name(cfg), version, "gate_reason", decision.reason)


def require_champion(cfg: Config) -> tuple[str, str]:
    """(version, run_id) of the champion, or a clear error when nothing has been promoted yet."""
    version = champion_version(cfg)
    if version is None:
        raise PortraitError(
            f"no '{CHAMPION}' version of model {model_name(cfg)} in {cfg.mlflow_tracking_uri}; run the train step first"
        )
    return str(version.version), str(version.run_id)
