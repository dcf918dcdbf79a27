"""`portrait evaluate`: the splits (exact rows), the held-out file, the truth and the scorer's inputs, and
(slow) the whole evaluation through the real pipeline on a small generated dataset."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.splits import SplitParams, keep_masks, leave_last_out, random_split, split, temporal_split

DAY0 = pd.Timestamp("2026-11-01 12:00", tz="UTC")


def tiny_interactions() -> pd.DataFrame:
    """u1 has 4 interactions (rows 0-3), u2 has 8 (rows 4-11), u3 has 3 (rows 12-14), one a day from DAY0."""
    rows = []
    for user, n in (("u1", 4), ("u2", 8), ("u3", 3)):
        for i in range(n):
            rows.append(("ratings", len(rows), user, f"m{i}", DAY0 + pd.Timedelta(days=i)))
    return pd.DataFrame(rows, columns=["source", "row", "user_id", "item_id", "ts"])


def held_rows(frame: pd.DataFrame, held_out: pd.Series) -> list[tuple[str, int]]:
    return sorted((u, int(r)) for u, r in frame.loc[held_out, ["user_id", "row"]].itertuples(index=False))


def test_random_split_holds_out_a_quarter_of_each_user_by_a_seeded_hash():
    frame = tiny_interactions()
    held = random_split(frame, seed=42, test_share=0.25)
    # floor(0.25 x n): u1 1 of 4, u2 2 of 8, u3 none of 3 (fewer than 4 interactions keep all for training).
    assert held_rows(frame, held) == [("u1", 2), ("u2", 6), ("u2", 8)]
    # The same rows whatever the order the frame comes in; another seed picks others.
    shuffled = frame.sample(frac=1.0, random_state=3)
    assert held_rows(shuffled, random_split(shuffled, seed=42, test_share=0.25)) == [("u1", 2), ("u2", 6), ("u2", 8)]
    assert held_rows(frame, random_split(frame, seed=7, test_share=0.25)) == [("u1", 3), ("u2", 4), ("u2", 5)]
    with pytest.raises(ValueError, match="test_share"):
        random_split(frame, seed=42, test_share=1.0)


def test_temporal_split_holds_out_the_last_days_and_leave_last_out_each_users_last():
    frame = tiny_interactions()
    held, cutoff = temporal_split(frame, test_days=2)
    # The last day is DAY0 + 7 (u2's row 11): the cut-off is DAY0 + 5, so days 6 and 7 are held out.
    assert cutoff == dt.date(2026, 11, 6)
    assert held_rows(frame, held) == [("u2", 10), ("u2", 11)]
    assert held_rows(frame, leave_last_out(frame)) == [("u1", 3), ("u2", 11), ("u3", 14)]
    # A user with a single interaction keeps it; equal timestamps fall to the larger row.
    one = pd.DataFrame([("r", 0, "a", "x", DAY0), ("r", 1, "b", "x", DAY0), ("r", 2, "b", "y", DAY0)],
                       columns=["source", "row", "user_id", "item_id", "ts"])
    assert held_rows(one, leave_last_out(one)) == [("b", 2)]
    with pytest.raises(ValueError, match="test_days"):
        temporal_split(frame, test_days=0)


def test_split_by_protocol_and_bad_input():
    frame = tiny_interactions()
    params = SplitParams(seed=42, test_share=0.25, test_days=2, leave_last_out=False)
    held, description = split(frame, "temporal", params)
    assert held_rows(frame, held) == [("u2", 10), ("u2", 11)] and "2026-11-06" in description
    held, _ = split(frame, "temporal", SplitParams(42, 0.25, 2, leave_last_out=True))
    assert held_rows(frame, held) == [("u1", 3), ("u2", 11), ("u3", 14)]
    with pytest.raises(ValueError, match="unknown protocol 'randm'"):
        split(frame, "randm", params)
    with pytest.raises(ValueError, match="lack column.*ts"):
        random_split(frame.drop(columns="ts"), 42, 0.25)
    with pytest.raises(ValueError, match="source 'ratings' row 3 twice"):
        random_split(pd.concat([frame, frame.iloc[[3]]]), 42, 0.25)
    with pytest.raises(ValueError, match="test_share"):
        SplitParams(seed=1, test_share=0.0, test_days=1, leave_last_out=False)


def test_keep_masks_mark_held_out_rows_of_their_own_source_only():
    frame = pd.DataFrame([("ratings", 0, "u", "a", DAY0), ("ratings", 2, "u", "b", DAY0), ("tags", 1, "u", "a", DAY0)],
                         columns=["source", "row", "user_id", "item_id", "ts"])
    held = pd.Series([False, True, True])
    masks = keep_masks(frame, held, {"ratings": 4, "tags": 2, "movies": 3})
    assert {s: m.tolist() for s, m in masks.items()} == {
        "ratings": [True, True, False, True], "tags": [True, False], "movies": [True, True, True]}
    with pytest.raises(ValueError, match="source 'ratings' name row 2, but its raw table has 2 rows"):
        keep_masks(frame, held, {"ratings": 2, "tags": 2})
    with pytest.raises(ValueError, match="no raw table"):
        keep_masks(frame, held, {"ratings": 4})


def test_override_settings_become_environment_variables(tmp_path):
    from portrait.evaluate import work_environment

    env = work_environment(tmp_path, "movielens-latest-small",
                           {"model": {"baselines": [], "gate_baselines": ["als"]}, "recommend": {"k": 5},
                            "spark": {"conf": {"spark.sql.ansi.enabled": False}}})
    assert env["PORTRAIT_DATASET"] == "movielens-latest-small"
    assert env["PORTRAIT__LAKEHOUSE_ROOT"] == str(tmp_path / "lakehouse")
    assert (env["PORTRAIT__MODEL__BASELINES"], env["PORTRAIT__MODEL__GATE_BASELINES"], env["PORTRAIT__RECOMMEND__K"]) \
        == ("[]", "[als]", "5")
    assert env["PORTRAIT__SPARK__CONF__spark.sql.ansi.enabled"] == "false"


@pytest.mark.spark
def test_heldout_users_are_pseudonymised_like_clean_does(spark):
    from pyspark.sql import functions as F

    from jobs.common.privacy import pseudonymise
    from portrait.evaluate import heldout_frame
    from tests.conftest import TEST_HMAC_KEY

    key = TEST_HMAC_KEY.encode()
    frame = pd.DataFrame([("r", 0, 17, "m1", DAY0), ("r", 1, 17, None, DAY0), ("r", 2, 5, "m2", DAY0)],
                         columns=["source", "row", "user_id", "item_id", "ts"])
    out = heldout_frame(frame, pd.Series([True, True, False]), key)
    assert list(out.columns) == ["user_key", "item_id", "ts", "source", "row"]
    assert out[["item_id", "row"]].values.tolist() == [["m1", 0]]            # no item: no truth; row 2 trains
    # Integer ids are pseudonymised as the text bronze holds ("17"), by the same HMAC as clean's Spark column.
    spark_key = spark.createDataFrame([("17",)], "user_id string").select(
        pseudonymise(key, F.col("user_id")).alias("k")).collect()[0]["k"]
    assert out["user_key"].tolist() == [spark_key]


EVENTS = "user_key string, item_id string, event_type string, event_date date"


@pytest.mark.spark
def test_truth_leaves_out_unknown_users_and_pairs_already_in_training(spark):
    from portrait.evaluate import seen_share, truth_pairs

    d = dt.date(2026, 11, 1)
    train = spark.createDataFrame([("a", "x", "rating", d), ("a", "y", "rating", d), ("b", "x", "purchase", d),
                                   ("b", None, "search", d)], EVENTS)
    heldout = spark.createDataFrame([("a", "z"), ("a", "z"), ("a", "x"), ("b", "y"), ("c", "x")],
                                    "user_key string, item_id string")
    # a: z (x is in training); b: y; c never trained.
    assert sorted(truth_pairs(heldout, train).collect()) == [("a", "z"), ("b", "y")]
    recs = spark.createDataFrame([("a", "z", 1), ("a", "y", 2), ("b", "x", 1), ("b", "z", 2), ("b", "q", 11)],
                                 "user_key string, item_id string, rank int")
    # Top 10: 4 rows, a-y and b-x already in training.
    assert seen_share(recs, train, 10) == pytest.approx(0.5)


# --- the whole evaluation, on a generated dataset that stands in for a public one ----------------------

class GeneratedDataset:
    """The dataset API of portrait.datasets over a landing zone written by `portrait generate`: the raw
    table `events` is every landed event (row = its position), interactions the ones with an item."""

    def __init__(self, folder: Path, users: int = 60, days: int = 12):
        from jobs.generate import generate

        self.source = folder / "source"
        generate(self.source, folder / "truth", users=users, days=days, seed=11, start_date=dt.date(2026, 11, 1))
        files = sorted((self.source / "events").glob("event_date=*/*.jsonl"))
        self.events = pd.concat([pd.read_json(f, lines=True, dtype=False, convert_dates=False).assign(
            _folder=f.parent.name) for f in files], ignore_index=True)

    def dataset_names(self):
        return ["generated-tiny"]

    def raw_tables(self, name):
        return {"events": self.events}

    def interactions(self, name):
        ev = self.events[self.events["item_id"].notna()]
        return pd.DataFrame({"source": "events", "row": ev.index.to_numpy(), "user_id": ev["user_id"].to_numpy(),
                             "item_id": ev["item_id"].to_numpy(), "ts": pd.to_datetime(ev["ts"], utc=True).to_numpy()})

    def write_landing(self, name, landing_dir, keep=None):
        import shutil

        landing_dir = Path(landing_dir)
        for folder in ("users", "items"):
            shutil.copytree(self.source / folder, landing_dir / folder)
        kept = self.events if keep is None else self.events[keep["events"]]
        for folder, day in self.events.groupby("_folder"):
            out = landing_dir / "events" / folder
            out.mkdir(parents=True)
            rows = kept[kept["_folder"] == folder].drop(columns="_folder")
            text = rows.to_json(orient="records", lines=True, force_ascii=False) if len(rows) else ""
            (out / "events-00000.jsonl").write_text(text if text.endswith("\n") or not text else text + "\n",
                                                    encoding="utf-8")


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(3600)
def test_evaluate_runs_the_pipeline_and_scores_it_with_the_baselines(tmp_path):
    """The real pipeline on the training part only; held-out rows never land; one scorer for all.

    The whole DAG with training: 10-15 minutes on 2 cores, so `long` (make test-all), not `make test`."""
    import mlflow

    from portrait.evaluate import evaluate
    from tests.conftest import make_config

    dataset = GeneratedDataset(tmp_path / "dataset")
    cfg = make_config(tmp_path / "caller", PORTRAIT__EVALUATE__WORK_DIR=str(tmp_path / "work"),
                      PORTRAIT__EVALUATE__TEST_SHARE="0.25", PORTRAIT__EVALUATE__PIPELINE_OVERRIDES__MODEL__EPOCHS="1")
    lines: list[str] = []
    record = evaluate("generated-tiny", "random", cfg, datasets=dataset, echo=lines.append)

    work = tmp_path / "work" / "generated-tiny-random"
    heldout = pd.read_parquet(work / "heldout.parquet")
    landed = pd.concat([pd.read_json(f, lines=True, dtype=False) for f in (work / "landing" / "events").rglob("*.jsonl")
                        if f.stat().st_size])
    held_rows_ = dataset.interactions("generated-tiny").set_index("row").loc[heldout["row"]]
    # Not one held-out event reached the landing zone.
    assert not set(dataset.events.loc[held_rows_.index, "event_id"]) & set(landed["event_id"])
    assert record["facts"]["held_out"] == len(dataset.events.loc[held_rows_.index])
    assert set(record["results"]) == {"model", "popularity", "cooccurrence", "als", "ease"}
    for name, r in record["results"].items():
        assert 0.0 <= r["ndcg_at_k"] <= 1.0 and r["users"] == record["facts"]["truth_users"], name
    assert record["facts"]["truth_users_with_a_list"] > 0
    assert record["results"]["ease"]["seen_share"] == 0.0
    assert json.loads((work / "evaluation.json").read_text())["results"].keys() == record["results"].keys()
    assert any(line.startswith("| model |") for line in lines)
    run = mlflow.MlflowClient(tracking_uri=cfg.mlflow_tracking_uri).get_run(record["mlflow_run_id"])
    assert run.data.metrics["model_ndcg_at_k"] == pytest.approx(record["results"]["model"]["ndcg_at_k"])
    assert run.data.tags["protocol"] == "random"
    assert np.isfinite(record["step_seconds"]["train"])


@pytest.mark.spark
def test_real_data_smoke_movielens_sample_through_the_split_and_the_scorer(spark):
    """20 MovieLens raters through evaluate's split, held-out file, truth and scorer (no pipeline run)."""
    from pyspark.sql import functions as F

    import portrait.datasets as datasets
    from ml.baselines import ease, evaluate_recommender, popularity
    from portrait.evaluate import heldout_frame, seen_share, truth_pairs
    from tests.conftest import TEST_HMAC_KEY

    name = "movielens-latest-small"
    everything = datasets.interactions(name)
    users = sorted(everything["user_id"].unique(), key=int)[:20]
    sample = everything[everything["user_id"].isin(users)]
    held = random_split(sample, seed=42, test_share=0.25)
    per_user = pd.DataFrame({"user": sample["user_id"], "held": held}).groupby("user")["held"].agg(["sum", "size"])
    assert (per_user["sum"] == per_user["size"] // 4).all()            # every rater has >= 20 ratings
    masks = keep_masks(sample, held, {s: len(t) for s, t in datasets.raw_tables(name).items()})
    assert int((~masks["ratings"]).sum()) == int(held.sum())

    key = TEST_HMAC_KEY.encode()
    truth_rows = spark.createDataFrame(heldout_frame(sample, held, key)[["user_key", "item_id"]])
    train_rows = heldout_frame(sample, ~held, key)
    train = spark.createDataFrame(train_rows.assign(event_type="rating", event_date=train_rows["ts"].dt.date)
                                  [["user_key", "item_id", "event_type", "event_date"]])
    truth = truth_pairs(truth_rows, train)
    assert truth.select("user_key").distinct().count() == 20
    catalog = train.select("item_id").distinct().count()
    for recs in (popularity(train, truth.select("user_key").distinct(), 10, remove_seen=True),
                 ease(train, 10, l2=500.0, max_items=3000, remove_seen=True)):
        metrics = evaluate_recommender(recs, truth, 10, catalog)
        assert metrics["users"] == 20
        assert all(0.0 <= metrics[m] <= 1.0 for m in ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k"))
        assert recs.groupBy("user_key").count().where(F.col("count") != 10).count() == 0
        assert seen_share(recs, train, 10) == 0.0


def test_baselines_only_trains_on_the_training_interactions_with_the_sources_event_type(tmp_path):
    from jobs.common.privacy import pseudonymise_py
    from portrait.evaluate import training_events
    from tests.conftest import TEST_HMAC_KEY, make_config

    frame = pd.DataFrame([("ratings", 0, "7", "m1", DAY0), ("ratings", 1, "7", "m2", DAY0 + pd.Timedelta(days=1)),
                          ("orders", 0, "8", "p1", DAY0)], columns=["source", "row", "user_id", "item_id", "ts"])
    key = TEST_HMAC_KEY.encode()
    lake = make_config(tmp_path, PORTRAIT__COLLECT__SOURCES__RATINGS__CONSTANTS__EVENT_TYPE="rating")
    rows = training_events(frame, pd.Series([False, True, False]), key, lake)
    # Row 1 is held out; a source without a constant event type counts as purchases.
    assert rows.values.tolist() == [[pseudonymise_py(key, "7"), "m1", "rating", dt.date(2026, 11, 1)],
                                    [pseudonymise_py(key, "8"), "p1", "purchase", dt.date(2026, 11, 1)]]


# --- diversity beside accuracy: every row of the table, the model's included -------------------------

@pytest.mark.spark
def test_score_measures_the_diversity_of_every_recommender(spark, tmp_path):
    """score() on a hand-made lakehouse: the model's lists from publish.recommendations, categories from
    silver.items, popularity from silver.events; the figures of the model and popularity by hand."""
    from jobs.common.delta import table_path
    from ml.splits import SplitParams
    from portrait.evaluate import DIVERSITY, EvaluateParams, score, table_markdown
    from tests.conftest import make_config

    lake = make_config(tmp_path / "lake")
    d = dt.date(2026, 11, 1)
    tables = {
        # Training: a has x, y; b has x, z; c has x: popularity x 3, y 1, z 1 of 3 users; w is never trained.
        "silver.events": spark.createDataFrame(
            [("a", "x", "purchase", d), ("a", "y", "purchase", d), ("b", "x", "purchase", d),
             ("b", "z", "purchase", d), ("c", "x", "purchase", d)],
            "user_key string, item_id string, event_type string, event_date date"),
        "silver.items": spark.createDataFrame(
            [("x", ["drama"], d), ("y", ["comedy"], d), ("z", ["drama", "thriller"], d), ("w", ["unknown"], d),
             ("z", ["horror"], d + dt.timedelta(days=1))],      # a later snapshot than the run date: not read
            "item_id string, categories array<string>, snapshot_date date"),
        "publish.recommendations": spark.createDataFrame(
            [("a", "z", 1, d), ("a", "w", 2, d), ("b", "y", 1, d), ("b", "w", 2, d), ("c", "x", 1, d),
             ("c", "z", 2, d), ("c", "y", 3, d), ("a", "y", 1, d - dt.timedelta(days=1))],
            "user_key string, item_id string, rank int, as_of_date date"),
    }
    for name, frame in tables.items():
        frame.write.format("delta").save(table_path(lake, name))
    heldout = tmp_path / "heldout.parquet"
    pd.DataFrame({"user_key": ["a", "a", "b", "c", "c"], "item_id": ["z", "w", "y", "y", "z"]}).to_parquet(heldout)
    params = EvaluateParams(split=SplitParams.from_config(lake), k=2, work_dir=str(tmp_path), experiment="e",
                            ease_l2=1.0, ease_max_items=None, als_rank=2, als_max_iter=2, pipeline_timeout_minutes=1)

    results, facts, tags = score(spark, lake, heldout, d, params)

    assert tags == {"skipped": f"publish.user_profile is missing under {lake.lakehouse_root}"}

    assert facts["catalog_items"] == 3 and facts["catalog_items_listed_outside_training"] == 1   # w
    assert facts["train_users"] == 3 and facts["items_with_a_category"] == 3                     # w is unknown
    log3 = np.log2(3)
    # The model's top 2: a z, w; b y, w; c x, z. Catalogue x, y, z + w = 4, all shown: coverage 1.
    # Counts z 2, w 2, y 1, x 1: sorted 1, 1, 2, 2, sum (2i - 5) c = -3 - 1 + 2 + 6 = 4, Gini 4 / (4 * 6) = 1/6.
    # ILD: a and b pair an item with w (no category): skipped; c: {drama} vs {drama, thriller}: 1/2.
    # Novelty: a (log2 3 [z] + log2 3 [w, as one user]) / 2, b likewise, c (0 [x] + log2 3) / 2.
    assert {m: results["model"][m] for m in DIVERSITY} == pytest.approx(
        {"coverage": 1.0, "gini": 1 / 6, "intra_list_diversity": 0.5, "novelty": (log3 + log3 + log3 / 2) / 3,
         "distinct_items": 4.0})
    # Popularity without the user's training items: a z; b y; c y, z. Coverage 2/4; counts 0, 0, 2, 2:
    # Gini (-3*0 - 1*0 + 1*2 + 3*2) / (4 * 4) = 1/2; ILD only c: comedy vs drama|thriller, 1;
    # every listed item has 1 training user: log2 3.
    assert {m: results["popularity"][m] for m in DIVERSITY} == pytest.approx(
        {"coverage": 0.5, "gini": 0.5, "intra_list_diversity": 1.0, "novelty": log3, "distinct_items": 2.0})
    for name in ("cooccurrence", "als", "ease"):
        r = results[name]
        assert set(DIVERSITY) <= set(r) and 1 <= r["distinct_items"] <= 3 and 0.0 <= r["gini"] <= 0.75, name
    table = table_markdown(results, 2)
    assert "| coverage | Gini | ILD | novelty (bits) | distinct items |" in table
    assert "| popularity | " in table and "| 0.5000 | 0.5000 | 1.0000 | 1.58 | 2 | 0.0000 |" in table


def test_table_markdown_says_n_a_where_a_figure_has_nothing_to_measure():
    from portrait.evaluate import table_markdown

    row = {"precision_at_k": 0.1, "recall_at_k": 0.2, "ndcg_at_k": 0.3, "map_at_k": 0.05, "coverage": 0.25,
           "gini": 0.5, "intra_list_diversity": float("nan"), "novelty": 3.14159, "distinct_items": 1234.0,
           "seen_share": 0.0, "users": 12.0, "seconds": 1.5}
    lines = table_markdown({"ease": row}, 10).splitlines()
    assert lines[2] == ("| ease | 0.1000 | 0.2000 | 0.3000 | 0.0500 | 0.2500 | 0.5000 | n/a | 3.14 | 1,234 | "
                        "0.0000 | 12 | 1.5 |")
    assert len(lines[0].split("|")) == len(lines[1].split("|")) == len(lines[2].split("|"))
    with pytest.raises(KeyError):
        table_markdown({"ease": {k: v for k, v in row.items() if k != "ndcg_at_k"}}, 10)


def test_every_recommenders_diversity_goes_to_mlflow(tmp_path):
    import mlflow

    from portrait.evaluate import log_to_mlflow
    from tests.conftest import make_config

    cfg = make_config(tmp_path)
    figures = {"ndcg_at_k": 0.3, "coverage": 0.25, "gini": 0.5, "intra_list_diversity": float("nan"),
               "novelty": 3.5, "distinct_items": 12.0}
    record = {"split": "random", "k": 10, "collect_days": 3, "facts": {"run_date": "2026-11-01", "truth_users": 4},
              "results": {"model": figures, "ease": {**figures, "gini": 0.75}}, "step_seconds": {},
              "model_quality": {}, "wall_seconds": 1.0}
    run_id = log_to_mlflow(cfg, "diversity-test", "tiny", "random", record, [])
    metrics = mlflow.MlflowClient(tracking_uri=cfg.mlflow_tracking_uri).get_run(run_id).data.metrics
    assert {m: v for m, v in metrics.items() if m.startswith(("model_", "ease_"))} == {
        "model_ndcg_at_k": 0.3, "model_coverage": 0.25, "model_gini": 0.5, "model_novelty": 3.5,
        "model_distinct_items": 12.0, "ease_ndcg_at_k": 0.3, "ease_coverage": 0.25, "ease_gini": 0.75,
        "ease_novelty": 3.5, "ease_distinct_items": 12.0}     # NaN (no category) is left out, not logged as 0
