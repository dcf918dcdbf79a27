import numpy as np
import pytest

from ml.registry import (
    CHALLENGER, CHAMPION, GateSettings, Scored, apply_gate, configure_mlflow, decide, paired_bootstrap,
)
from tests.conftest import make_config


USERS = ("u1", "u2", "u3", "u4")


def s(recall: float, ndcg: list[float]) -> Scored:
    """A recommender's recall and its nDCG per user (u1, u2, ...), as the train step measures them."""
    return Scored({"recall_at_k": recall, "ndcg_at_k": float(np.mean(ndcg))}, dict(zip(USERS, ndcg)))


def settings(min_users: int = 1, margin: float = 0.0, baselines: tuple[str, ...] = ("popularity", "als", "oracle"),
             samples: int = 1000) -> GateSettings:
    return GateSettings(margin=margin, min_users=min_users, baselines=baselines, samples=samples, confidence=0.95,
                        seed=0)


# Resampling 4 users whose differences are +d, +d, -e, -e: the mean counts j of the 4 draws at +d,
# j ~ Binomial(4, 1/2), so each extreme (j = 0 or 4) has probability 1/16 = 6.25% > 2.5%. With 1000
# resamples both extremes occur ~62 times, so the 95% interval is exactly [-e, +d].

def test_paired_bootstrap_by_hand():
    low, high = paired_bootstrap(dict(zip(USERS, [0.6, 0.6, 0.1, 0.1])), dict(zip(USERS, [0.3] * 4)), 1000, 0.95, 0)
    assert (low, high) == (pytest.approx(-0.2), pytest.approx(0.3))
    # Paired: the two means vary a lot over the users, their difference (0.1 for everyone) not at all.
    assert paired_bootstrap(dict(zip(USERS, [0.9, 0.1, 0.9, 0.1])), dict(zip(USERS, [0.8, 0.0, 0.8, 0.0])),
                            1000, 0.95, 0) == (pytest.approx(0.1), pytest.approx(0.1))
    # The same seed draws the same users: the interval is reproducible.
    skewed = dict(zip(USERS, [0.9, 0.2, 0.0, 0.1]))
    assert paired_bootstrap(skewed, dict(zip(USERS, [0.0] * 4)), 200, 0.9, 3) == \
        paired_bootstrap(skewed, dict(zip(USERS, [0.0] * 4)), 200, 0.9, 3)


def test_paired_bootstrap_refuses_different_users():
    with pytest.raises(ValueError, match="scored on different users .*u9"):
        paired_bootstrap({"u1": 0.1}, {"u9": 0.1}, 10, 0.95, 0)
    with pytest.raises(ValueError, match="no users to resample"):
        paired_bootstrap({}, {}, 10, 0.95, 0)


def test_an_identical_candidate_never_promotes():
    same = s(0.3, [0.5, 0.4, 0.2, 0.1])
    decision = decide(same, same, {}, settings())
    assert (decision.alias, decision.champion_metric) == (CHALLENGER, pytest.approx(0.3))
    assert decision.reason == ("ndcg_at_k 0.3000 does not beat champion 0.3000: difference +0.0000, "
                               "95% CI [+0.0000, +0.0000] over 4 users includes 0")
    assert decide(s(0.4, [0.5, 0.4, 0.2, 0.1]), None, {"popularity": same}, settings()).alias == CHALLENGER


def test_a_clearly_better_candidate_promotes_with_its_intervals():
    decision = decide(s(0.3, [0.6, 0.6, 0.8, 0.8]), None,
                      {"popularity": s(0.1, [0.5, 0.5, 0.5, 0.5]), "als": s(0.2, [0.4, 0.4, 0.4, 0.4])}, settings())
    assert (decision.alias, decision.champion_metric) == (CHAMPION, None)
    assert decision.reason == (
        "beats baselines als, popularity on recall_at_k; "
        "ndcg_at_k 0.7000 beats baseline als 0.4000: difference +0.3000, 95% CI [+0.2000, +0.4000] over 4 users; "
        "ndcg_at_k 0.7000 beats baseline popularity 0.5000: difference +0.2000, 95% CI [+0.1000, +0.3000] "
        "over 4 users; "
        "no champion yet; ndcg_at_k=0.7000 over 4 users")
    assert [(i.other, round(i.low, 6), round(i.high, 6)) for i in decision.intervals] == [
        ("als", 0.2, 0.4), ("popularity", 0.1, 0.3)]


def test_a_marginal_candidate_with_a_wide_interval_is_refused():
    # Better on average (+0.05) and on recall, but two users of four lose 0.2 each.
    decision = decide(s(0.3, [0.6, 0.6, 0.1, 0.1]), None, {"popularity": s(0.1, [0.3, 0.3, 0.3, 0.3])}, settings())
    assert decision.alias == CHALLENGER
    assert decision.reason == ("ndcg_at_k 0.3500 does not beat baseline popularity 0.3000: difference +0.0500, "
                               "95% CI [-0.2000, +0.3000] over 4 users includes 0")
    # Against the champion, with a margin: the whole interval must clear it.
    above = decide(s(0.3, [0.45, 0.45, 0.55, 0.55]), s(0.3, [0.4] * 4), {}, settings(margin=0.1))
    assert above.alias == CHALLENGER
    assert above.reason == ("ndcg_at_k 0.5000 does not beat champion 0.4000 by more than model.gate_margin=0.1: "
                            "difference +0.1000, 95% CI [+0.0500, +0.1500] over 4 users has its lower bound at or "
                            "below model.gate_margin=0.1")
    assert decide(s(0.3, [0.55, 0.55, 0.65, 0.65]), s(0.3, [0.4] * 4), {}, settings(margin=0.1)).alias == CHAMPION
    worse = decide(s(0.3, [0.1, 0.1, 0.2, 0.2]), s(0.3, [0.4] * 4), {}, settings())
    assert worse.reason.endswith("95% CI [-0.3000, -0.2000] over 4 users lies below 0")


def test_a_holdout_below_the_minimum_decides_nothing():
    better = s(0.3, [0.6, 0.6, 0.8, 0.8])
    decision = decide(better, None, {"popularity": s(0.1, [0.5] * 4)}, settings(min_users=5))
    assert decision.alias == CHALLENGER
    assert decision.reason == ("holdout of 4 users is below model.gate_min_users=5; widen the test window "
                               "(model.label_horizon_days), raise model.eval_max_users if it caps the holdout, or "
                               "train on more data")
    assert "below model.gate_min_users=5" in decide(better, s(0.3, [0.1] * 4), {}, settings(min_users=5)).reason
    assert decide(better, None, {"popularity": s(0.1, [0.5] * 4)}, settings(min_users=4)).alias == CHAMPION


def test_without_gated_baselines_or_champion_the_candidate_is_published_and_intervals_still_logged():
    # gate_baselines: [] (the public datasets): nothing to compare, so neither the size nor a baseline
    # that scores higher keeps the first model from being published; the intervals are still computed.
    note = "champion version 3 could not score this holdout (InputDataError: feature set changed)"
    decision = decide(s(0.1, [0.1, 0.1, 0.0, 0.0]), None, {"popularity": s(0.3, [0.3] * 4)},
                      settings(min_users=100, baselines=()), champion_note=note)
    assert decision.alias == CHAMPION
    assert decision.reason == f"{note}; ndcg_at_k=0.0500 over 4 users"
    (interval,) = decision.intervals
    assert (interval.other, interval.difference, interval.users) == ("popularity", pytest.approx(-0.25), 4)
    assert (interval.low, interval.high) == (pytest.approx(-0.3), pytest.approx(-0.2))


def test_candidate_must_beat_every_gated_baseline_on_recall_too():
    decision = decide(s(0.24, [0.6, 0.6, 0.8, 0.8]), None,
                      {"popularity": s(0.04, [0.1] * 4), "cooccurrence": s(0.25, [0.2] * 4)},
                      settings(baselines=("popularity", "cooccurrence")))
    assert decision.alias == CHALLENGER
    assert decision.reason == "recall_at_k 0.2400 does not beat baseline cooccurrence 0.2500"
    tie = decide(s(0.25, [0.6, 0.6, 0.8, 0.8]), None, {"cooccurrence": s(0.25, [0.2] * 4)},
                 settings(baselines=("cooccurrence",)))
    assert tie.alias == CHALLENGER  # a tie does not beat


def test_gate_settings_are_typed_from_config(tmp_path):
    from jobs.common.errors import ConfigError

    assert GateSettings.from_config(make_config(tmp_path)) == GateSettings(
        margin=0.0, min_users=30, baselines=(), samples=1000, confidence=0.95, seed=0)
    with pytest.raises(ConfigError, match="model.gate_bootstrap.confidence .*1.5.* strictly between 0 and 1"):
        GateSettings.from_config(make_config(tmp_path, PORTRAIT__MODEL__GATE_BOOTSTRAP__CONFIDENCE="1.5"))
    with pytest.raises(ConfigError, match="model.gate_bootstrap takes samples, confidence and seed"):
        GateSettings.from_config(make_config(tmp_path, PORTRAIT__MODEL__GATE_BOOTSTRAP__SAMPLE="10"))


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
        candidate = s(0.3, [ndcg, ndcg - 0.05, ndcg + 0.05, ndcg])
        decision = decide(candidate, champion, {}, settings())
        apply_gate(cfg, version, decision)
        if decision.alias == CHAMPION:
            champion = candidate
        if version == versions[1]:
            # the worse model did not move champion
            assert client.get_model_version_by_alias(name, CHAMPION).version == versions[0]
            assert client.get_model_version_by_alias(name, CHALLENGER).version == versions[1]
            assert client.get_model_version(name, versions[1]).tags["gate_alias"] == CHALLENGER
    assert client.get_model_version_by_alias(name, CHAMPION).version == versions[2]
    assert "beats champion 0.7000" in client.get_model_version(name, versions[2]).tags["gate_reason"]
    # The interval is written next to the reason: the paired differences are all +0.1.
    assert client.get_model_version(name, versions[2]).tags["gate_diff_champion"] == \
        "difference +0.1000, 95% CI [+0.1000, +0.1000] over 4 users"
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
