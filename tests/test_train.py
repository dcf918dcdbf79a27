"""Training: labels by hand, the retrain cadence, the gate against the champion on the same holdout,
and bad input that fails clearly without touching the registry. Real MLflow (SQLite in tmp), real
Keras training on tiny synthetic snapshots."""

import datetime as dt
import shutil

import pytest

from jobs.common.errors import ConfigError, InputDataError, PortraitError
from jobs.common.feature_windows import FeatureWindows
from ml.registry import CHALLENGER, CHAMPION, configure_mlflow
from tests.conftest import make_config

D = dt.date(2026, 11, 14)


def _cfg(tmp_path, **model):
    env = {f"PORTRAIT__MODEL__{k.upper()}": str(v) for k, v in model.items()}
    env.setdefault("PORTRAIT__MODEL__SEQUENCE_LENGTH", "10")
    env.setdefault("PORTRAIT__MODEL__BATCH_SIZE", "64")
    env.setdefault("PORTRAIT__MODEL__DEVICE", "cpu")
    env.setdefault("PORTRAIT__MODEL__HIDDEN_UNITS", "32")
    env.setdefault("PORTRAIT__MODEL__GRU_UNITS", "16")
    env.setdefault("PORTRAIT__MODEL__ITEM_EMBEDDING_DIM", "16")
    env.setdefault("PORTRAIT__MODEL__EMBEDDING_DIM", "16")
    env.setdefault("PORTRAIT__MODEL__HISTORY_CODE_DIM", "8")
    env.setdefault("PORTRAIT__MODEL__POSITIVES_PER_ROW", "2")
    return make_config(tmp_path, **env)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    from ml.synthetic import synthetic_snapshot

    return synthetic_snapshot(tmp_path_factory.mktemp("snapshot"), users=240, items=120, sequence_length=10)


def _registry(cfg):
    from mlflow import MlflowClient

    configure_mlflow(cfg)
    client = MlflowClient()
    name = cfg.get("mlflow.registered_model")
    versions = client.search_model_versions(f"name='{name}'")
    return client, name, versions


# --- the gate on the same holdout -----------------------------------------------------------------

def test_a_worse_configuration_does_not_move_champion(tmp_path, snapshot):
    from ml.train import load_holdout, train_and_register

    holdout = load_holdout(snapshot, 10_000)
    good = train_and_register(_cfg(tmp_path, epochs=3, learning_rate=0.01), snapshot, holdout, {}, D)
    assert (good.alias, good.version) == (CHAMPION, "1")
    assert "no champion yet" in good.reason

    worse = train_and_register(_cfg(tmp_path, epochs=1, learning_rate=1e-7, refit="false"), snapshot, holdout, {}, D)
    assert worse.alias == CHALLENGER
    assert "does not beat champion" in worse.reason
    # The champion was scored again on this very holdout, and scores what it scored when it was trained.
    assert worse.champion_metrics["ndcg_at_k"] == pytest.approx(good.metrics["ndcg_at_k"], abs=1e-9)
    assert worse.metrics["ndcg_at_k"] < good.metrics["ndcg_at_k"]

    client, name, versions = _registry(_cfg(tmp_path))
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "1"
    assert str(client.get_model_version_by_alias(name, CHALLENGER).version) == "2"
    assert "does not beat champion" in client.get_model_version("portrait-profile", "2").tags["gate_reason"]
    run = client.get_run(worse.run_id)
    assert run.data.tags["gate_alias"] == CHALLENGER
    assert run.data.metrics["champion_ndcg_at_k"] == pytest.approx(good.metrics["ndcg_at_k"])
    # The paired difference and its bootstrap interval over the holdout users: in the run and on the version.
    difference = run.data.metrics["gate_diff_champion"]
    assert difference == pytest.approx(worse.metrics["ndcg_at_k"] - good.metrics["ndcg_at_k"])
    assert run.data.metrics["gate_diff_champion_low"] <= difference <= run.data.metrics["gate_diff_champion_high"]
    assert f"over {len(holdout.truth)} users" in worse.reason
    assert (run.data.params["model.gate_bootstrap.samples"], run.data.params["model.gate_min_users"]) == ("1000", "30")
    assert client.get_model_version("portrait-profile", "2").tags["gate_diff_champion"].startswith(
        f"difference {difference:+.4f}, 95% CI [")
    assert "val_ndcg_at_k" in run.data.metrics and run.data.params["data_version.synthetic"] == "0"
    # Without the users' histories the item-item term is neither tuned nor used.
    assert (run.data.params["item_item_scale"], run.data.params["item_item_validation"]) == ("0.0", "none")
    # The repeat multiplier and the neighbour scale: every multiplier was tried without the neighbour
    # term, every neighbour scale at some multiplier, and the best pair tried is the one kept.
    from ml.train import NEIGHBOUR_SCALES, REPEAT_MULTIPLIERS

    tried = {}
    for name, value in run.data.metrics.items():
        if name.startswith("val_ndcg_at_k_repeat_x"):
            multiplier, scale = name.removeprefix("val_ndcg_at_k_repeat_x").split("_neighbour_")
            tried[(float(multiplier), float(scale))] = value
    assert {m for m, c in tried if c == 0} == set(REPEAT_MULTIPLIERS)
    assert {c for m, c in tried} == set(NEIGHBOUR_SCALES)
    chosen = (float(run.data.params["repeat_scale_multiplier"]), float(run.data.params["neighbour_scale"]))
    assert tried[chosen] == max(tried.values())
    artifacts = {a.path for a in client.list_artifacts(good.run_id, "plots")}
    assert artifacts == {"plots/training_curves.png", "plots/per_tag_f1.png", "plots/calibration.png"}

    # The registered model loads through the alias and scores gold-shaped rows.
    from ml.score import load_champion

    scorer = load_champion(_cfg(tmp_path))
    scores = scorer.score(holdout.table.slice(0, 5))
    assert scores.tag_scores.shape == (5, len(scorer.spec.tags)) and scores.embeddings.shape == (5, 17)


def test_a_candidate_that_loses_to_a_baseline_stays_challenger(tmp_path, snapshot):
    from ml.train import load_holdout, train_and_register

    from ml.evaluate import DiversityInputs, gini_coefficient, intra_list_diversity

    holdout = load_holdout(snapshot, 10_000)
    perfect = {user: sorted(items) for user, items in holdout.truth.items()}
    # Diversity inputs by hand: each item's category is the last character of its id; every item has
    # 1 of 2 training users (unknown items count as 1 too), so every list's novelty is log2(2/1) = 1 bit.
    item_ids = holdout.items.column("item_id").to_pylist()
    diversity = DiversityInputs({i: frozenset({i[-1]}) for i in item_ids}, {i: 1 for i in item_ids}, 2)
    cfg = _cfg(tmp_path, epochs=1, refit="false", gate_baselines="[oracle]", gate_min_users=1000)
    outcome = train_and_register(cfg, snapshot, holdout, {"oracle": perfect}, D, diversity=diversity)
    assert outcome.alias == CHALLENGER
    assert "does not beat baseline oracle" in outcome.reason
    assert f"holdout of {len(holdout.truth)} users is below model.gate_min_users=1000" in outcome.reason
    assert outcome.baselines["oracle"]["recall_at_k"] > outcome.metrics["recall_at_k"]
    oracle = outcome.baselines["oracle"]
    assert oracle["novelty"] == pytest.approx(1.0) and outcome.metrics["novelty"] == pytest.approx(1.0)
    assert oracle["gini"] == pytest.approx(gini_coefficient(perfect, len(item_ids), 10))
    assert oracle["intra_list_diversity"] == pytest.approx(intra_list_diversity(perfect, diversity.item_category, 10))
    assert oracle["distinct_items"] == len({i for items in perfect.values() for i in items[:10]})
    assert 0.0 <= outcome.metrics["gini"] < 1.0 and outcome.metrics["distinct_items"] >= 1
    client, name, _ = _registry(_cfg(tmp_path))
    logged = client.get_run(outcome.run_id).data.metrics
    assert logged["baseline_oracle_gini"] == pytest.approx(oracle["gini"])
    assert logged["test_novelty"] == pytest.approx(1.0) and "test_intra_list_diversity" in logged
    with pytest.raises(Exception):
        client.get_model_version_by_alias(name, CHAMPION)


def _sequence_histories(snapshot, as_of):
    """Every row's sequence items as its whole history at `as_of` (the item-item term's input)."""
    from ml.dataset import read_table

    table = read_table(snapshot.files([as_of]), columns=["user_key", "seq_item_ids"])
    return {str(u): sorted(set(s or [])) for u, s in zip(table.column("user_key").to_pylist(),
                                                         table.column("seq_item_ids").to_pylist())}


def test_the_item_item_scale_is_chosen_on_validation_and_used_by_the_gate(tmp_path, snapshot):
    from dataclasses import replace

    import mlflow

    from ml.train import ITEM_ITEM_SCALES, load_holdout, train_and_register

    plan = snapshot.plan
    histories = {d: _sequence_histories(snapshot, d) for d in (plan.validation_as_of, plan.test_as_of)}
    holdout = replace(load_holdout(snapshot, 10_000), history=histories[plan.test_as_of])
    cfg = _cfg(tmp_path, epochs=1, refit="false", gate_baselines="[]")
    outcome = train_and_register(cfg, snapshot, holdout, {}, D, histories=histories)
    configure_mlflow(cfg)
    run = mlflow.get_run(outcome.run_id)
    tried = {float(n.removeprefix("val_ndcg_at_k_itemitem_")): v for n, v in run.data.metrics.items()
             if n.startswith("val_ndcg_at_k_itemitem_")}
    assert set(tried) == set(ITEM_ITEM_SCALES)
    chosen = float(run.data.params["item_item_scale"])
    assert chosen == max(tried, key=lambda e: (tried[e], -e))
    from ml.score import load_scorer

    spec = load_scorer(f"models:/portrait-profile/{outcome.version}").spec
    assert spec.item_item_scale == chosen
    assert spec.item_item == ({"history_days": 90, "l2": 500.0, "max_items": 5000, "min_users": 2,
                              "validation_min_users": 50} if chosen else {})
    # The MMR weight: every weight re-ranked on validation, the most diverse within the tolerance kept.
    from ml.train import MMR_LAMBDAS, choose_mmr_lambda

    mmr = {float(n.removeprefix("val_ndcg_at_k_mmr_")): v for n, v in run.data.metrics.items()
           if n.startswith("val_ndcg_at_k_mmr_")}
    assert set(mmr) == set(MMR_LAMBDAS)
    assert spec.mmr_lambda == float(run.data.params["mmr_lambda"]) == choose_mmr_lambda(mmr, 0.02)
    assert run.data.params["item_item_validation"].startswith("next days (")
    # Too few users back in the validation days: the scale is chosen within users.
    within = train_and_register(_cfg(tmp_path / "within", epochs=1, refit="false", gate_baselines="[]",
                                     item_item="{validation_min_users: 100000}"),
                                snapshot, holdout, {}, D, histories=histories)
    assert mlflow.get_run(within.run_id).data.params["item_item_validation"].startswith("within user (")


# --- bad input ------------------------------------------------------------------------------------

def _copy(snapshot, tmp_path):
    from ml.dataset import Snapshot

    root = tmp_path / "copy"
    shutil.copytree(snapshot.root, root)
    return Snapshot(str(root), snapshot.plan, dict(snapshot.rows), dict(snapshot.table_versions))


def test_a_corrupt_training_file_fails_clearly_and_leaves_the_registry_untouched(tmp_path, snapshot):
    from ml.train import load_holdout, train_and_register

    broken = _copy(snapshot, tmp_path)
    victim = broken.files([broken.plan.train_as_of[0]])[0]
    with open(victim, "wb") as handle:
        handle.write(b"PAR1 not parquet at all")
    cfg = _cfg(tmp_path, epochs=1)
    with pytest.raises((InputDataError, Exception), match=r"part-00000\.parquet"):
        train_and_register(cfg, broken, load_holdout(broken, 10_000), {}, D)
    _, _, versions = _registry(cfg)
    assert versions == []
    import mlflow

    assert mlflow.search_runs(experiment_names=[cfg.get("mlflow.experiment")]).empty


def test_training_input_without_labels_fails_clearly_and_leaves_the_registry_untouched(tmp_path, snapshot):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ml.train import load_holdout, train_and_register

    emptied = _copy(snapshot, tmp_path)
    for day in emptied.plan.train_as_of:
        for path in emptied.files([day]):
            table = pq.read_table(path)
            column = table.schema.get_field_index("positives")
            table = table.set_column(column, "positives", pa.array([[]] * table.num_rows, pa.list_(pa.string())))
            pq.write_table(table, path)
    cfg = _cfg(tmp_path, epochs=1)
    with pytest.raises(InputDataError, match="no training example as of .* has an item in its label window"):
        train_and_register(cfg, emptied, load_holdout(emptied, 10_000), {}, D)
    _, _, versions = _registry(cfg)
    assert versions == []


# --- retrain cadence ------------------------------------------------------------------------------

def _register_champion(cfg, run_date: dt.date, feature_version: str):
    import mlflow
    from mlflow import MlflowClient

    configure_mlflow(cfg)
    client = MlflowClient()
    name = cfg.get("mlflow.registered_model")
    client.create_registered_model(name)
    with mlflow.start_run() as run:
        mlflow.log_params({"run_date": run_date.isoformat(), "feature_version": feature_version})
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, CHAMPION, version.version)


@pytest.mark.parametrize("value", ["0", "-5", "ten", "2.5"])
def test_a_bad_neighbour_top_n_is_refused_by_name(tmp_path, value):
    from jobs.common.errors import ConfigError
    from ml.dataset import neighbour_top_n

    # text is refused when the profile loads (jobs.common.config); a number that is not a count, by the reader
    expected = ("'model.neighbour_top_n' is a number (the profile has 100); write a number" if value == "ten"
                else f"model.neighbour_top_n must be a whole number of at least 1, got {value}$")
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)") if value == "ten" else expected):
        neighbour_top_n(_cfg(tmp_path, neighbour_top_n=value))
    assert neighbour_top_n(_cfg(tmp_path, neighbour_top_n="40")) == 40


def test_retrain_cadence(tmp_path):
    from jobs.features import FEATURE_VERSION
    from ml.train import retrain_needed

    cfg = _cfg(tmp_path, retrain_every_days=7)
    configure_mlflow(cfg)
    assert retrain_needed(cfg, D, "auto") == (True, "no champion yet")
    with pytest.raises(PortraitError, match="retrain=never .* has no champion"):
        retrain_needed(cfg, D, "never")
    with pytest.raises(ConfigError, match="use one of auto, always, never"):
        retrain_needed(cfg, D, "sometimes")

    _register_champion(cfg, D - dt.timedelta(days=6), FEATURE_VERSION)
    needed, why = retrain_needed(cfg, D, "auto")
    assert not needed and "6 day(s) before 2026-11-14 (< model.retrain_every_days=7)" in why
    assert retrain_needed(cfg, D + dt.timedelta(days=1), "auto")[0]          # 7 days old: retrain
    assert retrain_needed(cfg, D, "always") == (True, "retrain=always")
    assert retrain_needed(cfg, D + dt.timedelta(days=30), "never")[0] is False


def test_retrain_when_the_champion_saw_another_feature_version(tmp_path):
    from ml.train import retrain_needed

    cfg = _cfg(tmp_path)
    _register_champion(cfg, D, "0")
    needed, why = retrain_needed(cfg, D, "auto")
    assert needed and "feature version 0" in why


# --- labels, by hand (Spark) ----------------------------------------------------------------------

@pytest.mark.spark
def test_examples_and_labels_by_hand(spark):
    from ml.dataset import transform_examples
    from ml.segments import SEGMENTS

    t = dt.date(2026, 11, 10)
    day = lambda n: t + dt.timedelta(days=n)  # noqa: E731
    events = spark.createDataFrame([
        ("a", "purchase", "i1", day(-1)),        # before the as-of date: bought, not a label
        ("a", "view", "i2", day(1)),             # in the 2-day window
        ("a", "view", "i3", day(2)),
        ("a", "view", "i2", day(2)),
        ("a", "view", "i4", day(3)),             # after the window: not a label
        ("b", "search", None, day(0)),           # b is known but does nothing afterwards
        ("c", "purchase", "i3", day(3)),         # c buys inside the 3-day churn window but after the tag window
    ], "user_key string, event_type string, item_id string, event_date date")
    items = spark.createDataFrame([("i1", "beauty"), ("i2", "pets"), ("i3", "beauty"), ("i4", "toys_hobbies")],
                                  "item_id string, category string")
    features = spark.createDataFrame([("a", 1.0), ("b", 2.0), ("c", 3.0)], "user_key string, f double")
    future = spark.createDataFrame([("a", 0.0, 0.0, 0.0, 1.0), ("b", 5.0, 9.0, 0.0, 1.0)],
                                   "user_key string, n_events_30d double, recency_days double, "
                                   "n_purchases_90d double, price_index double")
    sequences = spark.createDataFrame([("a", ["i1"], ["beauty"], ["purchase"], [0])],
                                      "user_key string, item_ids array<string>, categories array<string>, "
                                      "event_types array<string>, gaps array<long>")
    rows = {r["user_key"]: r.asDict() for r in transform_examples(
        features, sequences, events, items, future, t, horizon_days=2, churn_horizon_days=3,
        last_day=day(3), windows=FeatureWindows()).collect()}
    a, b, c = rows["a"], rows["b"], rows["c"]
    from jobs.common.taxonomy import TOP_LEVEL

    tags = lambda *names: [1.0 if n in names else 0.0 for n in TOP_LEVEL]  # noqa: E731
    assert (a["tag_labels"], a["positives"], a["bought"], a["known"]) == (tags("pets", "beauty"), ["i2", "i3"], ["i1"], True)
    assert (a["churn_label"], a["churn_until"]) == (1.0, day(3))   # no purchase in (t, t + 3]
    assert a["segment_label"] == SEGMENTS.index("dormant")        # n_events_30d = 0 on t + 2
    assert a["seq_item_ids"] == ["i1"] and a["f"] == 1.0 and a["as_of_date"] == t
    assert (b["tag_labels"], b["positives"], b["known"], b["churn_label"]) == (tags(), [], True, 1.0)
    assert b["segment_label"] == SEGMENTS.index("at_risk")        # quiet for 9 days on t + 2
    assert b["seq_item_ids"] is None
    assert (c["positives"], c["churn_label"], c["known"], c["segment_label"]) == ([], 0.0, False, -1)
    with pytest.raises(ValueError, match="after the last day"):
        transform_examples(features, sequences, events, items, future, t, 2, 3, last_day=day(1), windows=FeatureWindows())

    # A shop's own tags: each of an item's categories counts, one outside the tags counts as `other`;
    # churn on ratings; a label about an event the data never holds is masked (churn_until null).
    genres = spark.createDataFrame([("i1", ["drama"]), ("i2", ["drama", "thriller"]), ("i3", ["anime"]),
                                    ("i4", ["drama"])], "item_id string, categories array<string>")
    rated = events.unionByName(spark.createDataFrame([("c", "rating", "i1", day(1))], events.schema))
    own = {r["user_key"]: r.asDict() for r in transform_examples(
        features, sequences, rated, genres, future, t, 2, 3, day(3), tags=["drama", "thriller", "other"],
        churn_on=["rating"], windows=FeatureWindows()).collect()}
    assert own["a"]["tag_labels"] == [1.0, 1.0, 1.0] and own["c"]["tag_labels"] == [1.0, 0.0, 0.0]
    assert (own["a"]["churn_label"], own["c"]["churn_label"], own["c"]["churn_until"]) == (1.0, 0.0, day(3))
    masked = transform_examples(features, sequences, events, genres, future, t, 2, 3, day(3), tags=["drama"],
                                churn_on=["rating"], churn_observable=False, windows=FeatureWindows()).collect()
    assert [r["churn_until"] for r in masked] == [None, None, None]


def test_churn_events_are_checked_by_name():
    from jobs.common.config import Config
    from ml.dataset import churn_events

    assert churn_events(Config("t", None, {"model": {"churn_events": ["rating", "review"]}})) == ("rating", "review")
    assert churn_events(Config("t", None, {"model": {}})) == ("purchase",)
    for bad in (["teleport"], [], "nothing"):
        with pytest.raises(ConfigError, match="model.churn_events"):
            churn_events(Config("t", None, {"model": {"churn_events": bad}}))
