import pytest

from ml.registry import CHALLENGER, CHAMPION, apply_gate, configure_mlflow, decide
from tests.conftest import make_config


def m(recall: float, ndcg: float) -> dict[str, float]:
    return {"recall_at_k": recall, "ndcg_at_k": ndcg}


def test_first_model_becomes_champion_when_it_beats_the_baselines():
    decision = decide(m(0.3, 0.5), None, 0.01, "ndcg_at_k", {"popularity": m(0.1, 0.2), "als": m(0.2, 0.4)})
    assert (decision.alias, decision.champion_metric) == (CHAMPION, None)
    assert decision.reason == ("beats baselines als, popularity on recall_at_k, ndcg_at_k; "
                               "no champion yet; ndcg_at_k=0.5000")


def test_candidate_must_beat_the_champion_by_the_margin():
    assert decide(m(0.3, 0.705), m(0.3, 0.70), 0.01, "ndcg_at_k").alias == CHALLENGER
    assert decide(m(0.3, 0.71), m(0.3, 0.70), 0.01, "ndcg_at_k").alias == CHAMPION
    worse = decide(m(0.3, 0.65), m(0.3, 0.70), 0.0, "ndcg_at_k")
    assert (worse.alias, worse.champion_metric) == (CHALLENGER, 0.70)
    assert worse.reason == "ndcg_at_k 0.6500 does not beat champion 0.7000 by 0.0"


def test_candidate_must_beat_every_baseline_on_both_metrics():
    # Better than the champion, better than popularity, but not than co-occurrence on recall.
    decision = decide(m(0.24, 0.52), m(0.2, 0.4), 0.0, "ndcg_at_k",
                      {"popularity": m(0.04, 0.08), "cooccurrence": m(0.25, 0.50)})
    assert decision.alias == CHALLENGER
    assert decision.reason == "recall_at_k 0.2400 does not beat baseline cooccurrence 0.2500"
    tie = decide(m(0.25, 0.52), None, 0.0, "ndcg_at_k", {"cooccurrence": m(0.25, 0.50)})
    assert tie.alias == CHALLENGER  # a tie does not beat


def test_a_champion_that_cannot_score_the_holdout_is_recorded():
    note = "champion version 3 could not score this holdout (InputDataError: feature set changed)"
    decision = decide(m(0.3, 0.5), None, 0.0, "ndcg_at_k", {}, champion_note=note)
    assert decision.alias == CHAMPION and note in decision.reason


def test_gate_moves_the_alias_in_a_real_mlflow_store(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    cfg = make_config(tmp_path)
    configure_mlflow(cfg)
    client = MlflowClient()
    name = cfg.get("mlflow.registered_model")
    client.create_registered_model(name)
    versions = []
    for _ in range(3):
        with mlflow.start_run() as run:
            mlflow.log_metric("test_ndcg_at_k", 0.5)
        versions.append(client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version)
    champion = None
    for version, ndcg in zip(versions, (0.70, 0.60, 0.80)):
        decision = decide(m(0.3, ndcg), champion, 0.0, "ndcg_at_k")
        apply_gate(cfg, version, decision)
        if decision.alias == CHAMPION:
            champion = m(0.3, ndcg)
        if version == versions[1]:
            # the worse model did not move champion
            assert client.get_model_version_by_alias(name, CHAMPION).version == versions[0]
            assert client.get_model_version_by_alias(name, CHALLENGER).version == versions[1]
            assert client.get_model_version(name, versions[1]).tags["gate_alias"] == CHALLENGER
    assert client.get_model_version_by_alias(name, CHAMPION).version == versions[2]
    assert "beats champion 0.7000" in client.get_model_version(name, versions[2]).tags["gate_reason"]
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()


def test_require_champion_says_what_to_do(tmp_path):
    from jobs.common.errors import PortraitError
    from ml.registry import require_champion

    cfg = make_config(tmp_path)
    configure_mlflow(cfg)
    with pytest.raises(PortraitError, match="no 'champion' version of model portrait-profile .* run the train step first"):
        require_champion(cfg)

    # A version the gate refused: the error says which, why, and how to publish it anyway.
    import mlflow
    from mlflow import MlflowClient

    from ml.registry import GateDecision
    client = MlflowClient()
    client.create_registered_model("portrait-profile")
    with mlflow.start_run() as run:
        mlflow.log_metric("test_ndcg_at_k", 0.0)
    version = client.create_model_version("portrait-profile", source=f"{run.info.artifact_uri}/model",
                                          run_id=run.info.run_id).version
    apply_gate(cfg, version, GateDecision(CHALLENGER, "recall_at_k 0.0000 does not beat baseline als 0.0000", None))
    with pytest.raises(PortraitError) as refused:
        require_champion(cfg)
    assert f"the gate did not promote version {version} (run " in str(refused.value)
    assert "recall_at_k 0.0000 does not beat baseline als 0.0000" in str(refused.value)
    assert "give it the 'champion' alias" in str(refused.value)
    assert MlflowClient().get_model_version_by_alias("portrait-profile", CHALLENGER).version == version
