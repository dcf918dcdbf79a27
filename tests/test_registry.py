import pytest

from ml.registry import CHALLENGER, CHAMPION, apply_gate, configure_mlflow, current_champion_metric, decide
from tests.conftest import make_config


def test_first_model_becomes_champion():
    assert decide(0.61, None, 0.01, "auc").alias == CHAMPION


def test_candidate_must_beat_champion_by_the_margin():
    assert decide(0.705, 0.70, 0.01, "auc").alias == CHALLENGER
    assert decide(0.71, 0.70, 0.01, "auc").alias == CHAMPION
    worse = decide(0.65, 0.70, 0.0, "auc")
    assert (worse.alias, worse.champion_metric) == (CHALLENGER, 0.70)
    assert "does not beat champion 0.7000" in worse.reason


def test_gate_moves_the_alias_in_a_real_mlflow_store(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    cfg = make_config(tmp_path)
    configure_mlflow(cfg)
    client = MlflowClient()
    name = cfg.get("mlflow.registered_model")
    client.create_registered_model(name)
    versions = []
    for auc in (0.70, 0.60, 0.80):
        with mlflow.start_run() as run:
            mlflow.log_metric("val_tag_auc", auc)
        versions.append(client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version)
    for version, auc in zip(versions, (0.70, 0.60, 0.80)):
        apply_gate(cfg, version, decide(auc, current_champion_metric(cfg, "val_tag_auc"), 0.0, "val_tag_auc"))
        if version == versions[1]:
            # the worse model did not move champion
            assert client.get_model_version_by_alias(name, CHAMPION).version == versions[0]
            assert client.get_model_version_by_alias(name, CHALLENGER).version == versions[1]
    assert client.get_model_version_by_alias(name, CHAMPION).version == versions[2]
    assert current_champion_metric(cfg, "val_tag_auc") == pytest.approx(0.80)
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
